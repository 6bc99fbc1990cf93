//! Firing triggers: each runs as a tokio task of its own in a scope of the
//! engine that completed the routine, never delaying or failing the call.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Current, Engine};
use crate::id::CallOutcome;
use crate::invoke::panic_message;
use crate::trigger::{Occurrence, TriggerSpec};

/// Triggers running now, and what became of those that ended.
#[derive(Default)]
pub(crate) struct TriggerCounters {
    pub(crate) running: AtomicU64,
    pub(crate) fired: AtomicU64,
    pub(crate) failed: AtomicU64,
    settled: tokio::sync::Notify,
}

impl Engine {
    /// Starts each trigger of `occurrence`'s routine that fires for
    /// `outcome`, in a scope of this engine, without waiting for them.
    pub(crate) fn fire(
        &self,
        outcome: CallOutcome,
        occurrence: Occurrence,
        triggers: &[&'static TriggerSpec],
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for trigger in triggers.iter().filter(|t| t.fires_on(outcome)) {
            let counters = &self.inner().triggers;
            counters.running.fetch_add(1, Ordering::Relaxed);
            let scope = Current::outside(self.clone());
            let running = runtime.spawn(scope.scope(trigger.fire(occurrence.clone())));
            let engine = self.clone();
            let (name, routine) = (trigger.name(), occurrence.task.id());
            runtime.spawn(async move {
                let counters = &engine.inner().triggers;
                let failure = match running.await {
                    Ok(Ok(())) => None,
                    Ok(Err(message)) => Some(message),
                    Err(e) if e.is_panic() => {
                        Some(format!("panicked: {}", panic_message(e.into_panic())))
                    }
                    Err(e) => Some(format!("was cancelled: {e}")),
                };
                match failure {
                    None => counters.fired.fetch_add(1, Ordering::Relaxed),
                    Some(message) => {
                        tracing::error!(trigger = name, routine = %routine, error = %message,
                            "a trigger failed; the routine's result is not affected");
                        counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                counters.running.fetch_sub(1, Ordering::Relaxed);
                counters.settled.notify_waiters();
            });
        }
    }

    /// Waits until every trigger this engine started has ended.
    pub(crate) async fn triggers_settled(&self) {
        let counters = &self.inner().triggers;
        loop {
            let settled = counters.settled.notified();
            if counters.running.load(Ordering::Relaxed) == 0 {
                return;
            }
            settled.await;
        }
    }
}
