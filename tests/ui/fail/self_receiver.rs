struct Trainer;

impl Trainer {
    #[routine::task(name = "method", version = "1.0.0")]
    async fn train(&self, epochs: u32) -> u32 {
        epochs
    }
}

fn main() {}
