#[routine::task(name = "generic", version = "1.0.0")]
async fn generic<T: serde::Serialize>(value: T) -> usize {
    std::mem::size_of_val(&value)
}

fn main() {}
