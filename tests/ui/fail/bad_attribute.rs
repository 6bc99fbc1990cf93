// A wrong attribute is reported once, at the attribute: the function is
// still a task, so its callers (which `.await` it) see no error.
#[routine::task(name = "parse")]
fn parse(text: String) -> usize {
    text.len()
}

#[routine::task(name = "elsewhere", version = "1.0.0", crate = "crate::nowhere")]
async fn elsewhere() {}

async fn caller() -> usize {
    parse("abc".into()).await
}

fn main() {
    let _ = caller();
}
