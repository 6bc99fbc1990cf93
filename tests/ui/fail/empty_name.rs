#[routine::task(name = "", version = "1.0.0")]
async fn empty(x: u32) -> u32 {
    x
}

fn main() {}
