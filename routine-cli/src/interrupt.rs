//! Ctrl-C while a workflow runs: the workflow's future is dropped, which
//! cancels the calls it dispatched on the workers running them, and the
//! program exits with 130 once the cancellations are sent (or after a
//! second).

use std::future::Future;
use std::time::Duration;

use routine_core::Engine;

use crate::failure::Failure;

/// How long an interrupted program waits for its cancellations to be sent.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Runs `work` to its end, or until Ctrl-C: then drops it, waits for
/// `engine` to send the cancellations of its dispatched calls, and fails
/// with exit code 130.
pub(crate) async fn unless_interrupted<T>(
    engine: &Engine,
    work: impl Future<Output = T>,
) -> Result<T, Failure> {
    let finished = {
        let work = std::pin::pin!(work);
        tokio::select! {
            output = work => Some(output),
            () = ctrl_c() => None,
        }
    };
    match finished {
        Some(output) => Ok(output),
        None => {
            let sent = tokio::time::timeout(CANCEL_WAIT, engine.settle()).await;
            Err(Failure::interrupted(match sent {
                Ok(()) => "interrupted: the calls in flight were cancelled",
                Err(_) => "interrupted: the calls in flight were cancelled, though some workers may not have been told in time",
            }))
        }
    }
}

/// Resolves at Ctrl-C; never, if the signal cannot be watched.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
