//! routine's command line over the scale bench's task: what the scale bench
//! times `cache ls`, `cache stats`, `tasks` and `cache gc` with.

/// The scale bench's store, as a user's program sees it.
#[routine::main(project = "scale")]
async fn main() {
    // Links the task into the program, so that `tasks` describes it.
    std::hint::black_box(routine_bench::scale::payload);
}
