#[routine::task(name = "patterns", version = "1.0.0")]
async fn patterns((a, b): (u32, u32), _: String) -> u32 {
    a + b
}

fn main() {}
