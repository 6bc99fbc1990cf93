//! Every accepted shape of task compiles and can be awaited.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Model {
    pub weights: Vec<f64>,
}

/// Docs, visibility and `mut` arguments are kept.
#[routine::task(name = "train", version = "0.0.1")]
pub async fn train(mut epochs: u32, hp: Vec<(String, f64)>) -> Vec<Model> {
    epochs += 1;
    hp.iter().map(|(_, lr)| Model { weights: vec![*lr; epochs as usize] }).collect()
}

#[routine::task(name = "no-args", version = "1.0.0-rc.1+build.5")]
async fn no_args() {}

#[routine::task(name = "sync.v2", version = "2.0.0")]
fn sync_task(text: String) -> std::io::Result<usize> {
    Ok(text.len())
}

type Fallible<T> = Result<T, String>;

#[routine::task(name = "alias_result", version = "1.0.0")]
async fn alias_result(x: u8) -> Fallible<u8> {
    Ok(x)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(routine::Engine::in_memory().scope(async {
        let models: Vec<Model> = train(1, vec![("a".into(), 0.1)]).await;
        assert_eq!(models[0].weights.len(), 2);
        let (): () = no_args().await;
        assert_eq!(sync_task("abc".into()).await.unwrap(), 3);
        assert_eq!(alias_result(3).await, Ok(3));
    }));
}
