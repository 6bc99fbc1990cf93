//! Checkpoints off the writers' path. In WAL mode every commit appends to
//! the WAL, and a checkpoint copies the WAL's pages into the database and
//! syncs both (what makes a power cut lose at most the commits since).
//! Run by the committing thread, as SQLite does by default, a checkpoint
//! would stall one call in every few hundred by milliseconds; here a
//! thread of the store's own runs it, woken when the WAL has grown by
//! [`CHECKPOINT_PAGES`].
//!
//! ```text
//! writer commits ──wal hook: WAL ≥ threshold──▶ due ──▶ checkpoint thread
//!                                                        PRAGMA wal_checkpoint(PASSIVE)
//! ```
//!
//! The thread's checkpoints never block writers, so a writer that never
//! pauses keeps it from ever catching up, and the WAL only starts over
//! once a checkpoint has caught up: at [`BACKSTOP_PAGES`] the committing
//! writer checkpoints itself (setting a hook replaces SQLite's own
//! automatic checkpoint), waiting for a checkpoint of the thread's under
//! way rather than skipping its own, which bounds the WAL however slow the
//! disk is.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

/// The WAL's growth, in pages, that makes a checkpoint due: about 1 MiB,
/// which keeps the WAL (disk the store takes beyond its results) small.
pub(crate) const CHECKPOINT_PAGES: i32 = 256;

/// Past this many pages in the WAL, the committing writer checkpoints
/// itself.
pub(crate) const BACKSTOP_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// How long the writer waits for another checkpoint to end, at the
/// backstop, before it commits on (and tries again at its next commit).
const BACKSTOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The checkpoint thread of one database, started at the first checkpoint
/// due (a store that writes little never starts it); stopped when dropped.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// The WAL's size (pages) at which the next checkpoint is due.
    threshold: AtomicI32,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    due: bool,
    stop: bool,
}

impl Checkpointer {
    /// The checkpointer of the database at `path`.
    pub(crate) fn new(path: PathBuf) -> Checkpointer {
        Checkpointer {
            shared: Arc::new(Shared {
                path,
                state: Mutex::default(),
                wake: Condvar::new(),
                threshold: AtomicI32::new(CHECKPOINT_PAGES),
                thread: Mutex::default(),
            }),
        }
    }

    /// The hook a writer's connection calls after each commit, with the
    /// WAL's size in pages.
    pub(crate) fn hook(
        &self,
    ) -> impl FnMut(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move |wal, pages| {
            if pages >= BACKSTOP_PAGES {
                // A checkpoint under way (the thread's, or another
                // process's) makes this one busy at once, whatever the
                // busy handler: the writer waits for it, then copies every
                // frame (FULL), and the next commit starts the WAL over.
                // Past `BACKSTOP_WAIT` it goes on, and tries again at its
                // next commit.
                let waiting = std::time::Instant::now();
                loop {
                    match wal.checkpoint_v2(rusqlite::wal::CheckpointMode::FULL) {
                        Ok(_) => break,
                        Err(e)
                            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                                && waiting.elapsed() < BACKSTOP_WAIT =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the writer's checkpoint did not run");
                            break;
                        }
                    }
                }
                return Ok(());
            }
            if pages < CHECKPOINT_PAGES {
                // The WAL started over: the next checkpoint is due when it
                // has grown again.
                shared.threshold.store(CHECKPOINT_PAGES, Ordering::Relaxed);
            } else if pages >= shared.threshold.load(Ordering::Relaxed) {
                // Not again until it grows by as much: a checkpoint that
                // cannot finish (a reader holds old pages) is not retried
                // at every commit.
                shared
                    .threshold
                    .store(pages.saturating_add(CHECKPOINT_PAGES), Ordering::Relaxed);
                shared
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .due = true;
                shared.wake.notify_one();
                let mut thread = shared.thread.lock().unwrap_or_else(PoisonError::into_inner);
                if thread.is_none() {
                    let started = std::thread::Builder::new()
                        .name("routine-checkpoint".into())
                        .spawn({
                            let shared = Arc::clone(&shared);
                            move || run(&shared)
                        });
                    match started {
                        Ok(started) => *thread = Some(started),
                        // SQLite's own checkpoint, at the backstop, does it.
                        Err(e) => tracing::debug!(error = %e, "cannot start a checkpoint thread"),
                    }
                }
            }
            Ok(())
        }
    }
}

fn run(shared: &Shared) {
    let path = &shared.path;
    // Opened at the first checkpoint: a store that writes little never
    // opens it.
    let mut connection: Option<Connection> = None;
    loop {
        {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while !state.due && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.due = false;
        }
        if connection.is_none() {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            match Connection::open_with_flags(path, flags).and_then(|conn| {
                conn.pragma_update(None, "mmap_size", 0)?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                Ok(conn)
            }) {
                Ok(conn) => connection = Some(conn),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open the store's database to checkpoint it");
                    continue;
                }
            }
        }
        if let Some(conn) = &connection {
            let checkpointed = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i32>(0)
            });
            if let Err(e) = checkpointed {
                tracing::debug!(error = %e, "cannot checkpoint the store's database");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut state = (self.shared.state.lock()).unwrap_or_else(PoisonError::into_inner);
            state.stop = true;
            self.shared.wake.notify_one();
        }
        let thread = (self
            .shared
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
        .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
