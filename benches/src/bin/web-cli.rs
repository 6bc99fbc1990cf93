//! routine's command line over the web bench's tasks: the bench serves its
//! store with `web-cli ui`.

/// The web bench's store, as a user's program sees it.
#[routine::main(project = "web")]
async fn main() {
    // Links the tasks into the program, so that the view knows them.
    std::hint::black_box(routine_bench::web::run);
}
