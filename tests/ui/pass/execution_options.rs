//! Every execution option at once, and a typed error that crosses the wire.

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum FitError {
    Diverged { epoch: u32 },
}

#[routine::task(
    name = "fit",
    version = "1.0.0",
    timeout = "10m",
    retries = 3,
    backoff = "2s",
    retry_errors,
    concurrency = 1
)]
async fn fit(epochs: u32) -> Result<f64, FitError> {
    if epochs == 0 {
        return Err(FitError::Diverged { epoch: 0 });
    }
    Ok(0.5)
}

#[routine::task(name = "sync-fit", version = "1.0.0", timeout = "1h", concurrency = 4)]
fn sync_fit(epochs: u32) -> f64 {
    f64::from(epochs)
}

fn main() {
    let _ = (fit(1), sync_fit(2));
}
