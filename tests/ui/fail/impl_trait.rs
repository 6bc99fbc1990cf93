#[routine::task(name = "opaque", version = "1.0.0")]
async fn opaque(items: impl IntoIterator<Item = u32>) -> u32 {
    items.into_iter().sum()
}

#[routine::task(name = "opaque-out", version = "1.0.0")]
async fn opaque_out(n: u32) -> impl std::fmt::Debug {
    n
}

fn main() {}
