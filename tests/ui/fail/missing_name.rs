#[routine::task(version = "1.0.0")]
async fn unnamed(x: u32) -> u32 {
    x
}

fn main() {}
