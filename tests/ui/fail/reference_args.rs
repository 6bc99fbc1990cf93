#[routine::task(name = "borrow", version = "1.0.0")]
async fn borrow(text: &str, counts: &mut Vec<u32>) -> usize {
    counts.push(1);
    text.len()
}

#[routine::task(name = "nested-borrow", version = "1.0.0")]
async fn nested_borrow(items: Vec<&'static str>) -> Option<&'static str> {
    items.first().copied()
}

fn main() {}
