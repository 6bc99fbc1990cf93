//! Data-parallel training as one multi-unit task: each of four units fits
//! a linear model's gradients on its shard of the data, the gradients are
//! summed across the units every epoch (`all_reduce`), and rank 0 sends the
//! trained model as the call's output. Memoized as one call: the second run
//! trains nothing.
//!
//! ```sh
//! cargo run --release --example data_parallel            # trains, stores
//! cargo run --release --example data_parallel            # from storage
//! cargo run --release --example data_parallel -- run data-parallel-fit \
//!     --arg 'input={"seed": 7, "rows": 2000, "epochs": 100, "learning_rate": 0.1}'
//! ```

use serde::{Deserialize, Serialize};

/// What to train: the data (generated from `seed`) and the schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    seed: u64,
    rows: u32,
    epochs: u32,
    learning_rate: f64,
}

/// A linear model `y = w · x + b` and its mean squared error.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Model {
    weights: [f64; 3],
    bias: f64,
    loss: f64,
}

/// Row `i` of the data set `seed` makes: the same in every unit.
fn row(seed: u64, i: u32) -> ([f64; 3], f64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(i).wrapping_add(1);
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let x = [
        uniform() * 2.0 - 1.0,
        uniform() * 2.0 - 1.0,
        uniform() * 2.0 - 1.0,
    ];
    let noise = (uniform() - 0.5) * 0.05;
    (x, 2.0 * x[0] - 3.0 * x[1] + 0.5 * x[2] + 1.0 + noise)
}

fn predict(weights: &[f64; 3], bias: f64, x: &[f64; 3]) -> f64 {
    weights.iter().zip(x).map(|(w, xi)| w * xi).sum::<f64>() + bias
}

/// Four units train one model; each holds a quarter of the rows.
#[routine::task(name = "data-parallel-fit", version = "1.0.0", units = 4)]
async fn fit(unit: routine::Unit<Plan, Model>) {
    let plan = match unit.rank() {
        0 => Some(unit.receive_input().await),
        _ => None,
    };
    let plan: Plan = unit.broadcast(0, plan).await;
    let shard: Vec<([f64; 3], f64)> = (0..plan.rows)
        .filter(|i| *i as usize % unit.unit_count() == unit.rank())
        .map(|i| row(plan.seed, i))
        .collect();
    let n = f64::from(plan.rows);
    let (mut weights, mut bias) = ([0.0f64; 3], 0.0f64);
    for _ in 0..plan.epochs {
        // This shard's share of the gradient, then everyone's summed.
        let mut gradient = [0.0f64; 4];
        for (x, y) in &shard {
            let error = predict(&weights, bias, x) - y;
            for (g, xi) in gradient.iter_mut().zip(x) {
                *g += 2.0 * error * xi / n;
            }
            gradient[3] += 2.0 * error / n;
        }
        let gradient = unit
            .all_reduce(gradient, |a, b| {
                [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
            })
            .await;
        for (w, g) in weights.iter_mut().zip(gradient) {
            *w -= plan.learning_rate * g;
        }
        bias -= plan.learning_rate * gradient[3];
    }
    let squared: f64 = shard
        .iter()
        .map(|(x, y)| (predict(&weights, bias, x) - y).powi(2))
        .sum();
    let loss = unit.all_reduce(squared, |a, b| a + b).await / n;
    if unit.rank() == 0 {
        unit.send_output(Model {
            weights,
            bias,
            loss,
        });
    }
}

/// Trains a model on 20,000 rows with four units, once.
#[routine::main]
async fn main() {
    let plan = Plan {
        seed: 42,
        rows: 20_000,
        epochs: 200,
        learning_rate: 0.1,
    };
    let model = fit(plan).await;
    println!(
        "model: weights [{:.3}, {:.3}, {:.3}], bias {:.3}, loss {:.5}",
        model.weights[0], model.weights[1], model.weights[2], model.bias, model.loss
    );
    let stats = routine::Engine::current().stats();
    println!(
        "totals: {} calls, {} ran, {} from storage, {} on workers",
        stats.finished, stats.misses, stats.hits, stats.dispatched
    );
}
