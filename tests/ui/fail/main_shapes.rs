// Each of these is not an entry point routine can run.

mod not_async {
    #[routine::main]
    fn main() {}
}

mod with_arguments {
    #[routine::main]
    async fn main(verbose: bool) {
        let _ = verbose;
    }
}

mod bad_option {
    #[routine::main(name = "x")]
    async fn main() {}
}

fn main() {}
