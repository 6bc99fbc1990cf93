#[routine::task(name = "../etc/passwd", version = "1.0.0")]
async fn escapes(x: u32) -> u32 {
    x
}

#[routine::task(name = "has space", version = "1.0.0")]
async fn spaced(x: u32) -> u32 {
    x
}

// `+` is a version's character, not a name's (the store refuses it too).
#[routine::task(name = "a+b", version = "1.0.0")]
async fn plus(x: u32) -> u32 {
    x
}

fn main() {}
