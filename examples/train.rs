//! The seed's example made real: prepare data, train one small model per
//! hyper-parameter set concurrently, pick the best.
//!
//! ```text
//! cargo run --release --example train      # first run: every task body runs
//! cargo run --release --example train      # second run: everything from storage
//! ROUTINE_STORE=/tmp/elsewhere cargo run --example train
//! ```
//!
//! Results are stored under `./.routine` (or `$ROUTINE_STORE`), one directory
//! per task name and version: `ls .routine/fit/0.0.1`.
//!
//! Distributed (feature `distributed`): with `ROUTINE_BROKER` set to a Redis
//! URL and `ROUTINE_STORE` to a shared object store, the same program trains
//! each model on a worker; `-- worker` makes it serve as one:
//!
//! ```text
//! export ROUTINE_BROKER=redis://127.0.0.1:6379 ROUTINE_STORE=s3://my-bucket/train
//! cargo run --release --features distributed --example train -- worker &
//! cargo run --release --features distributed --example train -- worker &
//! cargo run --release --features distributed --example train
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use routine::{CallOutcome, Engine};
use serde::{Deserialize, Serialize};

/// Features and targets of a synthetic linear problem with noise.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    features: Vec<[f64; 3]>,
    targets: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HyperParams {
    learning_rate: f64,
    l2: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Model {
    weights: [f64; 3],
    bias: f64,
    /// Mean squared error on the training data.
    loss: f64,
    hyper_params: HyperParams,
}

/// Makes `n` noisy samples of `y = 2 x0 - 3 x1 + 0.5 x2 + 1`, reproducibly.
#[routine::task(name = "prepare-data", version = "0.1.0")]
async fn prepare_data(seed: u64, n: u32) -> Data {
    let mut state = seed.max(1);
    let mut uniform = move || {
        // xorshift64*: deterministic, so the task is pure.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut features = Vec::with_capacity(n as usize);
    let mut targets = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let x = [
            uniform() * 2.0 - 1.0,
            uniform() * 2.0 - 1.0,
            uniform() * 2.0 - 1.0,
        ];
        let noise = (uniform() - 0.5) * 0.1;
        targets.push(2.0 * x[0] - 3.0 * x[1] + 0.5 * x[2] + 1.0 + noise);
        features.push(x);
    }
    Data { features, targets }
}

/// Full-batch gradient descent on squared error with L2 regularisation.
/// A plain `fn`: it is CPU-bound, so it runs on the blocking pool.
#[routine::task(name = "fit", version = "0.0.1")]
fn fit(data: Data, epochs: u32, hyper_params: HyperParams) -> Model {
    let n = data.targets.len() as f64;
    let (mut weights, mut bias) = ([0.0f64; 3], 0.0f64);
    for _ in 0..epochs {
        let (mut grad_w, mut grad_b) = ([0.0f64; 3], 0.0f64);
        for (x, y) in data.features.iter().zip(&data.targets) {
            let error = predict(&weights, bias, x) - y;
            for (g, xi) in grad_w.iter_mut().zip(x) {
                *g += error * xi;
            }
            grad_b += error;
        }
        for (w, g) in weights.iter_mut().zip(grad_w) {
            *w -= hyper_params.learning_rate * (2.0 * g / n + 2.0 * hyper_params.l2 * *w);
        }
        bias -= hyper_params.learning_rate * 2.0 * grad_b / n;
    }
    let loss = data
        .features
        .iter()
        .zip(&data.targets)
        .map(|(x, y)| (predict(&weights, bias, x) - y).powi(2))
        .sum::<f64>()
        / n;
    Model {
        weights,
        bias,
        loss,
        hyper_params,
    }
}

fn predict(weights: &[f64; 3], bias: f64, x: &[f64; 3]) -> f64 {
    weights.iter().zip(x).map(|(w, xi)| w * xi).sum::<f64>() + bias
}

/// The seed's workflow: one model per hyper-parameter set, trained
/// concurrently. Each `fit` is memoized on its own, so adding a set to `hp`
/// trains only the new one.
#[routine::task(name = "train", version = "0.0.1")]
async fn train(data: Data, epochs: u32, hp: Vec<HyperParams>) -> Vec<Model> {
    let runs: Vec<_> = hp
        .into_iter()
        .map(|hyper_params| routine::spawn(fit(data.clone(), epochs, hyper_params)))
        .collect();
    let mut models = Vec::with_capacity(runs.len());
    for run in runs {
        models.push(run.await.expect("a training run panicked"));
    }
    models
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = std::env::var("ROUTINE_STORE").unwrap_or_else(|_| ".routine".to_owned());
    let ran = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&ran);
    let report = move |call: &routine::CallReport| {
        let how = match call.outcome {
            CallOutcome::Hit => "from storage",
            CallOutcome::Computed => {
                counter.fetch_add(1, Ordering::Relaxed);
                "ran"
            }
            CallOutcome::Dispatched => "on a worker",
            other => other.as_str(),
        };
        println!(
            "  {:<13} {:<13} {}  {:>9.3} ms",
            how,
            call.task.name(),
            call.key.short(),
            call.elapsed.as_secs_f64() * 1e3
        );
    };

    #[cfg(feature = "distributed")]
    if let Ok(broker) = std::env::var("ROUTINE_BROKER") {
        use routine::broker::{Broker, Retry};
        use routine::engine::{DispatchSettings, Policy};
        let engine = Engine::builder(routine::store::ObjectStoreBackend::from_url(&store)?)
            .on_call(report)
            .broker(
                Broker::connect(&broker, "routine", Retry::default()).await?,
                Policy::SubRoutinesRemote,
                DispatchSettings::default(),
            )
            .build()?;
        if std::env::args().nth(1).as_deref() == Some("worker") {
            println!("routine train example: serving as a worker (Ctrl-C to stop)");
            let config = routine::worker::WorkerConfig::default();
            routine::worker::serve_until_signalled(engine, config).await?;
            return Ok(());
        }
        println!(
            "routine train example, distributed: broker {}, store {store}",
            routine::redact::redact_url(&broker)
        );
        return run(engine, ran).await;
    }

    let engine = Engine::builder(routine::store::FileStore::open(&store)?)
        .on_call(report)
        .build()?;

    println!("routine train example, store: {store}");
    run(engine, ran).await
}

/// Prepares the data, trains, picks the best model and prints the totals.
async fn run(engine: Engine, ran: Arc<AtomicU64>) -> Result<(), Box<dyn std::error::Error>> {
    let best = engine
        .scope(async {
            let data = prepare_data(42, 5_000).await;
            let hp = [0.3, 0.1, 0.03, 0.01]
                .into_iter()
                .map(|learning_rate| HyperParams {
                    learning_rate,
                    l2: 1e-4,
                })
                .collect();
            let models = train(data, 300, hp).await;
            models
                .into_iter()
                .min_by(|a, b| a.loss.total_cmp(&b.loss))
                .expect("at least one model")
        })
        .await;

    let stats = engine.stats();
    println!(
        "best model: learning rate {}, loss {:.5}, weights [{:.3}, {:.3}, {:.3}], bias {:.3}",
        best.hyper_params.learning_rate,
        best.loss,
        best.weights[0],
        best.weights[1],
        best.weights[2],
        best.bias
    );
    println!(
        "totals: {} calls, {} ran, {} from storage, {} on workers, {} failed, {} store errors",
        stats.hits + stats.misses + stats.dispatched,
        ran.load(Ordering::Relaxed),
        stats.hits,
        stats.dispatched,
        stats.failures,
        stats.store_errors
    );
    Ok(())
}
