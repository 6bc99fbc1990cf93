//! `crate = ".."` points the expansion at a re-export of routine, and the
//! names the expansion defines never collide with the user's.

mod runtime {
    pub use routine::*;
}

#[routine::task(name = "renamed", version = "1.0.0", crate = "crate::runtime")]
async fn renamed(x: u32) -> u32 {
    x + 1
}

/// Arguments named like the expansion's own locals.
#[routine::task(name = "shadowing", version = "1.0.0")]
async fn shadowing(__routine_key: u32, __routine_json: u32, __routine_output: u32) -> Result<u32, String> {
    let __routine_error = __routine_key + __routine_json;
    Ok(__routine_error + __routine_output)
}

#[routine::trigger(on = "renamed", crate = "crate::runtime")]
async fn on_renamed(done: routine::Completion<u32>) {
    let _ = done.result;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(routine::Engine::in_memory().scope(async {
        assert_eq!(renamed(1).await, 2);
        assert_eq!(shadowing(1, 2, 3).await, Ok(6));
    }));
}
