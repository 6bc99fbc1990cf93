//! The engine's store I/O: reading and verifying entries, encoding and
//! writing them, and what a failure of either means for a call (a miss,
//! logged and counted; never a failed call).
//!
//! ```text
//! lookup:  cache ──miss──▶ store.get_async ──▶ verify ──▶ decode ──▶ cache
//! storing: encode (≤ 4 MiB in memory) ──▶ store.put_async ──▶ cache
//!          encode (> 4 MiB) ──▶ store.create, streamed, under block_in_place
//! ```
//!
//! Small entries go through the store's async interface, so a remote store
//! holds no runtime thread while it answers; the file and memory stores
//! answer at once. Entries over [`LARGE_ENTRY`] stream through the
//! synchronous interface, where a large transfer belongs on its own thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cache::CachedEntry;
use super::Inner;
use crate::blocking::blocking;
use crate::code::Code;
use crate::codec;
use crate::entry::{self, ArgumentDigest, EntryError, EntryMeta, HEADER_LEN, TRAILER_LEN};
use crate::id::{Fingerprint, RunId};
use crate::key::Key;
use crate::lineage::{Miss, RunLog};
use crate::registry::TaskSpec;
use crate::store::{Found, RecordKind, RemovalCause, Slot, StoreError};

/// Entries larger than this are streamed, inside
/// `tokio::task::block_in_place` (on a multi-threaded runtime), so that a
/// large transfer does not stall the other tasks of its worker thread.
/// Smaller ones are encoded in memory and put whole: handing them to
/// another thread costs more than the I/O.
pub(crate) const LARGE_ENTRY: u64 = 4 * 1024 * 1024;

/// Distinct store failures an engine remembers having warned of.
const STORE_WARNINGS_KEPT: usize = 256;

/// Where a result comes from: the run, and the call that awaited it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provenance {
    pub(crate) run: Option<RunId>,
    pub(crate) parent: Option<Key>,
    /// A digest of each argument, to explain the entry later.
    pub(crate) arguments: Vec<ArgumentDigest>,
}

/// A computed value on its way to the store.
pub(crate) enum Encoded {
    /// Encoded in memory, to be put (and then kept in the cache).
    Small {
        entry: Arc<Vec<u8>>,
        created_at: SystemTime,
    },
    /// Too large to hold twice: already streamed into the store, or not
    /// (the failure, logged and counted, says why).
    Streamed(Result<(), String>),
    /// It could not be encoded (logged and counted): why.
    Unencodable(String),
}

/// Why a result could not be stored.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn slot<'a>(task: &'static TaskSpec, key: &'a Key) -> Slot<'a> {
    Slot {
        name: task.name(),
        version: task.version(),
        key,
    }
}

impl Inner {
    /// The value the in-process cache holds for `key`, unless it outlived
    /// the task's ttl. An entry that does not decode is dropped, with a
    /// warning.
    pub(crate) fn cached<T: DeserializeOwned>(
        &self,
        task: &'static TaskSpec,
        key: &Key,
    ) -> Option<T> {
        let cached = self
            .cache
            .get(key)
            .filter(|c| !outlived(task, c.created_at))?;
        match entry::decode_payload(cached.payload()) {
            Ok(value) => {
                self.check_fingerprint(task, &cached.fingerprint);
                Some(value)
            }
            Err(e) => {
                self.cache.remove(key);
                self.corrupt(task, key, &e);
                None
            }
        }
    }

    /// The entry the store holds for `key`; a failure of the store is a
    /// miss, logged and counted.
    pub(crate) async fn read(
        &self,
        task: &'static TaskSpec,
        key: &Key,
    ) -> Result<Option<Found>, ()> {
        match self.store.get_async(&slot(task, key)).await {
            Ok(found) => Ok(found),
            Err(e) => {
                self.store_failed(task, key, "read", &e);
                Err(())
            }
        }
    }

    /// The value in an entry the store found: verified, checked against
    /// the ttl, and kept in the cache. Anything wrong with it makes this a
    /// miss, with a warning.
    pub(crate) fn decode_found<T: DeserializeOwned>(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        found: Found,
    ) -> Result<T, Miss> {
        match found {
            Found::Bytes(bytes) => {
                let decoded = entry::verify(&bytes, key).and_then(|(meta, payload)| {
                    if outlived(task, meta.created_at) {
                        return Ok(None);
                    }
                    Ok(Some((
                        entry::decode_payload(&bytes[payload.clone()])?,
                        meta,
                        payload,
                    )))
                });
                match decoded {
                    Ok(None) => Err(Miss::Expired),
                    Ok(Some((value, meta, payload))) => {
                        self.check_fingerprint(task, &meta.fingerprint);
                        self.cache.insert(
                            *key,
                            CachedEntry {
                                bytes,
                                payload,
                                fingerprint: meta.fingerprint,
                                created_at: meta.created_at,
                            },
                        );
                        Ok(value)
                    }
                    Err(e) => {
                        self.corrupt(task, key, &e);
                        Err(Miss::Corrupt)
                    }
                }
            }
            Found::Stream { reader, len } => {
                match large_io(len, || entry::read(reader, len, key)) {
                    Ok((meta, _)) if outlived(task, meta.created_at) => Err(Miss::Expired),
                    Ok((meta, value)) => {
                        self.check_fingerprint(task, &meta.fingerprint);
                        Ok(value)
                    }
                    Err(EntryError::Io(e)) => {
                        self.store_failed(task, key, "read", &e);
                        Err(Miss::Unreadable)
                    }
                    Err(e) => {
                        self.corrupt(task, key, &e);
                        Err(Miss::Corrupt)
                    }
                }
            }
        }
    }

    /// Encodes a computed value as an entry: in memory when small, else
    /// streamed into the store right here. Never fails the call: a failure
    /// is logged and counted, and the caller still gets its value.
    pub(crate) fn encode<T: Serialize>(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        value: &T,
        run_time: Duration,
        provenance: Provenance,
    ) -> Encoded {
        let meta = match codec::encoded_len(value) {
            Ok(payload_len) => EntryMeta {
                key: *key,
                fingerprint: task.fingerprint(),
                created_at: SystemTime::now(),
                run_time,
                payload_len,
                run: provenance.run,
                parent: provenance.parent,
                writer: Some(self.writer.id),
                arguments: provenance.arguments,
            },
            Err(e) => {
                let e = EntryError::Encode(e);
                self.store_failed(task, key, "encode a result for", &e);
                return Encoded::Unencodable(e.to_string());
            }
        };
        let len = meta.entry_len();
        if len > LARGE_ENTRY {
            let streamed = blocking(|| -> Result<(), SaveError> {
                let writer = self.store.create(&slot(task, key), len)?;
                entry::write(writer, &meta, value)?.commit()?;
                Ok(())
            });
            if let Err(e) = &streamed {
                self.store_failed(task, key, "write", e);
            }
            return Encoded::Streamed(streamed.map_err(|e| e.to_string()));
        }
        match entry::write(Vec::with_capacity(len as usize), &meta, value) {
            Ok(entry) => Encoded::Small {
                entry: Arc::new(entry),
                created_at: meta.created_at,
            },
            Err(e) => {
                self.store_failed(task, key, "encode a result for", &e);
                Encoded::Unencodable(e.to_string())
            }
        }
    }

    /// Puts an entry encoded in memory and keeps it in the cache; a failure
    /// (logged and counted) says why.
    pub(crate) async fn put(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        entry: Arc<Vec<u8>>,
        created_at: SystemTime,
    ) -> Result<(), String> {
        let len = entry.len();
        let payload_start = EntryMeta::header_len(&entry).unwrap_or(HEADER_LEN);
        if let Err(e) = self
            .store
            .put_async(&slot(task, key), Arc::clone(&entry))
            .await
        {
            self.store_failed(task, key, "write", &e);
            return Err(e.to_string());
        }
        if self.cache.admits(len as u64) {
            self.cache.insert(
                *key,
                CachedEntry {
                    bytes: entry,
                    payload: payload_start..len - TRAILER_LEN,
                    fingerprint: task.fingerprint(),
                    created_at,
                },
            );
        }
        Ok(())
    }

    /// Stores the record of this process's part of a run, named by
    /// `part`; a failure loses the run's lineage, not the call.
    pub(crate) async fn store_run(&self, log: &RunLog, part: &Key) {
        if let Err(e) = log.store(&*self.store, part).await {
            tracing::warn!(run = %log.id, error = %e, "cannot store the record of a run; its lineage is lost");
        }
    }

    /// Warns, once per task and process, that a result about to be
    /// returned was computed by other code, naming each changed item when
    /// the store kept the old code's record.
    pub(crate) fn check_fingerprint(&self, task: &'static TaskSpec, stored: &Fingerprint) {
        if !task.first_fingerprint_mismatch(stored) {
            return;
        }
        let changes = match self.store.get_record(RecordKind::Code, stored.as_bytes()) {
            Ok(Some(record)) => Code::from_bytes(&record)
                .map(|before| task.code().changes_since(&before))
                .filter(|changes| !changes.is_empty()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the code record of a stored result");
                None
            }
        };
        let changed = match changes {
            Some(changes) => changes
                .iter()
                .map(|change| format!("\n  {change}"))
                .collect::<String>(),
            None => {
                " (the store keeps no record of the older code, so what changed cannot be named)"
                    .to_owned()
            }
        };
        tracing::warn!(
            task = task.name(),
            version = task.version(),
            stored = %stored.short(),
            current = %task.fingerprint().short(),
            "the code of task `{}` changed but its version {} did not: stored results of the older \
             code are still returned. Bump the version if the change alters results, or set \
             `on_code_change = \"rerun\"`. Changed:{changed}",
            task.name(),
            task.version(),
        );
    }

    /// Gives the store the task's code record, once per task and process,
    /// so that a later build can name what changed.
    pub(crate) fn record_code(&self, task: &'static TaskSpec) {
        self.writer.record_once(&*self.store);
        if !task.first_code_record() {
            return;
        }
        let code = task.code();
        let (id, record) = (code.fingerprint.as_bytes(), code.to_bytes());
        if let Err(e) = self.store.put_record(RecordKind::Code, id, &record) {
            tracing::debug!(task = %task.id(), error = %e, "cannot keep the task's code record");
        }
    }

    pub(crate) fn corrupt(&self, task: &'static TaskSpec, key: &Key, error: &EntryError) {
        self.counters
            .corrupt_entries
            .fetch_add(1, Ordering::Relaxed);
        // For `why`, until the recomputed result replaces it.
        let cause = RemovalCause::Corrupt {
            error: error.to_string(),
        };
        if let Err(e) = self.store.note_removals(&[slot(task, key)], &cause) {
            tracing::debug!(error = %e, "cannot note a corrupt entry in the store");
        }
        tracing::warn!(task = task.name(), version = task.version(), key = %key.short(), error = %error,
            "stored entry is unusable; recomputing it");
    }

    /// Counts a failure of the store and says so: a warning the first time
    /// the store fails so, then at debug level (a read-only store fails
    /// every write the same way, and the totals count them all).
    pub(crate) fn store_failed(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        op: &str,
        error: &dyn std::error::Error,
    ) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut warned = (self.store_warnings.lock()).unwrap_or_else(PoisonError::into_inner);
            // Bounded: failures that differ every time all warn.
            warned.len() >= STORE_WARNINGS_KEPT || warned.insert(format!("{op}: {error}"))
        };
        match first {
            true => {
                tracing::warn!(task = task.name(), version = task.version(), key = %key.short(),
                error = %error, "cannot {op} the store; the call goes on without it")
            }
            false => {
                tracing::debug!(task = task.name(), version = task.version(), key = %key.short(),
                error = %error, "cannot {op} the store (again); the call goes on without it")
            }
        }
    }
}

/// Whether a result computed at `created_at` has outlived its task's `ttl`:
/// then it is a miss, and the recomputed result replaces it.
fn outlived(task: &'static TaskSpec, created_at: SystemTime) -> bool {
    task.ttl().is_some() && task.expired(created_at, SystemTime::now())
}

/// Runs `io` where a large transfer will not stall other tasks.
fn large_io<R>(len: u64, io: impl FnOnce() -> R) -> R {
    if len > LARGE_ENTRY {
        blocking(io)
    } else {
        io()
    }
}
