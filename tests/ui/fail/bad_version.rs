#[routine::task(name = "train", version = "1.0")]
async fn short_version(x: u32) -> u32 {
    x
}

#[routine::task(name = "train", version = "latest")]
async fn word_version(x: u32) -> u32 {
    x
}

#[routine::task(name = "train")]
async fn no_version(x: u32) -> u32 {
    x
}

fn main() {}
