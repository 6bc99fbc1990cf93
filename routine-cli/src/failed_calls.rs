//! A call that failed where `main` cannot be told by a value (a task that
//! returns `T` failed on a worker, no worker serves it) unwinds `main` with
//! a panic the engine marks (`routine_core::engine::failure`). Such a panic
//! is no bug of the program: its trace is not printed, and the program
//! ends with its message as one `error:` line (exit code 1). Other panics
//! are printed by the hook that was there before.

use std::sync::{Mutex, PoisonError};

/// The message of the last failed call's panic.
static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Installs the panic hook that keeps failed calls' panics quiet.
pub(crate) fn quiet_their_panics() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !routine_core::engine::failure::take() {
            // The last panic is this one: a failed call's message seen
            // before (and handled) does not stand for it.
            *LAST.lock().unwrap_or_else(PoisonError::into_inner) = None;
            return before(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()));
        tracing::debug!(message = message.as_deref().unwrap_or(""), "a call failed");
        *LAST.lock().unwrap_or_else(PoisonError::into_inner) = message;
    }));
}

/// The message of the last failed call's panic, if one unwound.
pub(crate) fn last() -> Option<String> {
    LAST.lock().unwrap_or_else(PoisonError::into_inner).take()
}
