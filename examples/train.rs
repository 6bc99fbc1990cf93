//! The seed's example made real: prepare data, train one small model per
//! hyper-parameter set concurrently, pick the best.
//!
//! ```text
//! cargo run --release --example train      # first run: every task body runs
//! cargo run --release --example train      # second run: everything from storage
//! cargo run --release --example train -- --help
//! cargo run --release --example train -- tasks
//! cargo run --release --example train -- run prepare-data --arg seed=1 --arg n=3
//! cargo run --release --example train -- cache ls fit
//! cargo run --release --example train -- cache gc --max-size 1MiB
//! cargo run --release --example train -- runs ls
//! ```
//!
//! When a new best model is picked, the trigger `write_report` writes
//! `best-model.md` in the working directory.
//!
//! Results are stored under `./.routine` (or `$ROUTINE_STORE`, or `store` in
//! `routine.toml`): `cache ls` lists them by task and version.
//!
//! Distributed (feature `distributed`): with `ROUTINE_BROKER` set to a Redis
//! URL and `ROUTINE_STORE` to a shared object store, the same program trains
//! each model on a worker; `worker` makes it serve as one:
//!
//! ```text
//! export ROUTINE_BROKER=redis://127.0.0.1:6379 ROUTINE_STORE=s3://my-bucket/train
//! cargo run --release --features distributed --example train -- worker &
//! cargo run --release --features distributed --example train -- worker &
//! cargo run --release --features distributed --example train
//! ```

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

/// Tracked: `fit` calls it, so a change here is a change of `fit`'s code
/// (`tasks --code` lists it under `fit`).
#[routine::tracked]
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

/// Trains one small model per hyper-parameter set on synthetic data and keeps
/// the best. Every step is memoized: run it twice and nothing is recomputed.
#[routine::main]
async fn main() {
    let best = train_and_pick(42, 5_000, 300, vec![0.3, 0.1, 0.03, 0.01]).await;
    println!(
        "best model: learning rate {}, loss {:.5}, weights [{:.3}, {:.3}, {:.3}], bias {:.3}",
        best.hyper_params.learning_rate,
        best.loss,
        best.weights[0],
        best.weights[1],
        best.weights[2],
        best.bias
    );
    let stats = routine::Engine::current().stats();
    println!(
        "totals: {} calls, {} ran, {} from storage, {} on workers, {} failed, {} store errors",
        stats.finished,
        stats.misses,
        stats.hits,
        stats.dispatched,
        stats.failures,
        stats.store_errors
    );
}

/// The whole workflow, three levels deep: prepares the data, trains one
/// model per learning rate (each `fit` on its own), picks the best. One call
/// of it is one run: `runs show` prints its call tree.
#[routine::task(name = "train-and-pick", version = "0.1.0")]
async fn train_and_pick(seed: u64, n: u32, epochs: u32, learning_rates: Vec<f64>) -> Model {
    let data = prepare_data(seed, n).await;
    let hp = learning_rates
        .into_iter()
        .map(|learning_rate| HyperParams {
            learning_rate,
            l2: 1e-4,
        })
        .collect();
    let models = train(data, epochs, hp).await;
    pick_best(models).await
}

/// The model with the lowest loss.
#[routine::task(name = "pick-best", version = "0.1.0")]
async fn pick_best(models: Vec<Model>) -> Model {
    models
        .into_iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .expect("at least one model")
}

/// Writes `best-model.md` each time a new best model is picked (not when the
/// pick comes from storage). It runs after the result is stored, without
/// delaying `main`; the program waits for it before exiting.
#[routine::trigger(on = "pick-best")]
async fn write_report(done: routine::Completion<Model>) -> std::io::Result<()> {
    let Ok(best) = &done.result else {
        return Ok(());
    };
    let candidates = done.arguments["models"].as_array().map_or(0, Vec::len);
    let run = done.run.map(|run| run.to_string()).unwrap_or_default();
    let report = format!(
        "# Best model\n\n\
         - learning rate: {}\n- loss: {:.6}\n- weights: {:?}, bias {:.4}\n\
         - picked from {candidates} models in {:?}\n- run: `{run}` (`train runs show {}`)\n\
         - result key: `{}`\n",
        best.hyper_params.learning_rate,
        best.loss,
        best.weights,
        best.bias,
        done.duration,
        &run[..12.min(run.len())],
        done.key,
    );
    std::fs::write("best-model.md", report)
}
