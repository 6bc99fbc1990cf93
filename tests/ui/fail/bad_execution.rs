#[routine::task(name = "a", version = "1.0.0", timeout = "0s")]
async fn zero_timeout(x: u32) -> u32 {
    x
}

#[routine::task(name = "b", version = "1.0.0", timeout = "soon")]
async fn not_a_duration(x: u32) -> u32 {
    x
}

#[routine::task(name = "c", version = "1.0.0", retries = 1000)]
async fn too_many_retries(x: u32) -> u32 {
    x
}

#[routine::task(name = "d", version = "1.0.0", retries = "3")]
async fn retries_as_a_string(x: u32) -> u32 {
    x
}

#[routine::task(name = "e", version = "1.0.0", backoff = "1s")]
async fn backoff_without_retries(x: u32) -> u32 {
    x
}

#[routine::task(name = "f", version = "1.0.0", concurrency = 0)]
async fn no_concurrency(x: u32) -> u32 {
    x
}

#[routine::task(name = "g", version = "1.0.0", retries = 2, retry_errors)]
async fn nothing_to_retry(x: u32) -> u32 {
    x
}

#[routine::task(name = "h", version = "1.0.0", retry_errors)]
async fn retry_errors_without_retries(x: u32) -> Result<u32, String> {
    Ok(x)
}

#[routine::task(name = "i", version = "1.0.0", retries = 2, backoff = "0ms")]
async fn zero_backoff(x: u32) -> u32 {
    x
}

fn main() {}
