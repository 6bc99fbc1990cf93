#[routine::task(name = "a", version = "1.0.0", name = "b")]
async fn named_twice(x: u32) -> u32 {
    x
}

#[routine::task(name = "a", version = "1.0.0", retry = 3)]
async fn unknown_option(x: u32) -> u32 {
    x
}

#[routine::task(name = a, version = "1.0.0")]
async fn not_a_string(x: u32) -> u32 {
    x
}

fn main() {}
