//! Panics that report a call's failure: a task that failed on a worker,
//! one no worker serves, a result the workers stored where this process
//! cannot read it. The caller of a task that returns `T` (not `Result`)
//! has no other way to hear of it. They are marked, so that a program's
//! panic hook can tell them from bugs with [`take`]: `#[routine::main]`
//! prints them as one `error:` line, without a backtrace.

use std::cell::Cell;

thread_local! {
    static RAISED: Cell<bool> = const { Cell::new(false) };
}

/// Panics with `message`, marked as a call's failure.
pub(crate) fn raise(message: String) -> ! {
    RAISED.with(|raised| raised.set(true));
    std::panic::panic_any(message)
}

/// Whether the panic under way on this thread reports a call's failure;
/// clears the mark. Call it from a panic hook.
///
/// ```
/// assert!(!routine_core::engine::failure::take());
/// ```
pub fn take() -> bool {
    RAISED.with(|raised| raised.replace(false))
}
