//! Blocking without stalling the runtime: long synchronous work on a tokio
//! worker thread runs inside `block_in_place` where tokio allows it, so the
//! thread's other tasks move elsewhere meanwhile.

use std::cell::Cell;

use tokio::runtime::{Handle, RuntimeFlavor};

thread_local! {
    /// Set on threads that run a `LocalSet` (a worker's non-`Send` routines),
    /// where tokio forbids `block_in_place`.
    static LOCAL_SET_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work`, inside `block_in_place` when on a multi-threaded runtime's
/// thread that allows it; inline otherwise.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread && !LOCAL_SET_THREAD.with(Cell::get) {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Marks the current thread as running a `LocalSet` until the guard drops.
pub fn local_set_thread() -> impl Drop {
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            LOCAL_SET_THREAD.with(|flag| flag.set(self.0));
        }
    }
    Guard(LOCAL_SET_THREAD.with(|flag| flag.replace(true)))
}
