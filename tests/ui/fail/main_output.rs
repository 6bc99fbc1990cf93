// `main` must end the program with something it can turn into an exit code.
#[routine::main]
async fn main() -> u32 {
    7
}
