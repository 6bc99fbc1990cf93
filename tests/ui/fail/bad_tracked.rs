#[routine::tracked]
struct Settings {
    scale: f64,
}

#[routine::tracked]
impl (u8, u8) {}

#[routine::tracked(depth = 2)]
fn helper() -> u8 {
    1
}

#[routine::task(name = "a", version = "1.0.0", on_code_change = "sometimes")]
async fn policy(x: u32) -> u32 {
    x
}

fn main() {}
