//! Benchmarks live in `benches/engine.rs`; run `cargo bench -p routine-bench`.
