struct Logger;

#[routine::task(name = "a", version = "1.0.0")]
async fn no_default(x: u32, #[routine(skip)] log: Logger) -> u32 {
    let _ = log;
    x
}

#[routine::task(name = "b", version = "1.0.0")]
async fn unknown_option(x: u32, #[routine(ignore)] y: u32) -> u32 {
    x + y
}

fn main() {}
