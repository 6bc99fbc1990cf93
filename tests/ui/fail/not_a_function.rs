#[routine::task(name = "s", version = "1.0.0")]
struct NotAFunction;

fn main() {}
