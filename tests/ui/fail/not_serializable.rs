pub struct Opaque {
    pub bytes: Vec<u8>,
}

#[routine::task(name = "in", version = "1.0.0")]
async fn takes(data: Opaque, epochs: u32) -> u32 {
    data.bytes.len() as u32 + epochs
}

#[routine::task(name = "out", version = "1.0.0")]
async fn gives(n: u32) -> Opaque {
    Opaque { bytes: vec![0; n as usize] }
}

fn main() {}
