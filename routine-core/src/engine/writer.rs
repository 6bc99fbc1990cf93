//! Which process stored a result: the writer an entry names by a short ID,
//! and the record the store keeps of what the ID stands for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::entry::WriterId;
use crate::id::process_name;
use crate::store::{RecordKind, Store};

/// The process that stored results, as the store keeps it for `why`.
///
/// ```
/// let writer = routine_core::engine::Writer::this_process(Some(("train", "1.2.0", None)));
/// assert_eq!(writer.program.as_deref(), Some("train"));
/// assert!(writer.process.contains(':'));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// `host:pid`.
    pub process: String,
    /// The program's name, when the engine was told it
    /// ([`EngineBuilder::program`](crate::EngineBuilder::program)).
    pub program: Option<String>,
    /// The program's version.
    pub version: Option<String>,
    /// The git commit it was built from, when the build knew it.
    pub commit: Option<String>,
    /// When the process's engine was built, in seconds since the Unix epoch.
    pub started_unix: u64,
}

impl Writer {
    /// This process, running `program` (name, version, commit) if known.
    pub fn this_process(program: Option<(&str, &str, Option<&str>)>) -> Writer {
        Writer {
            process: process_name().to_owned(),
            program: program.map(|p| p.0.to_owned()),
            version: program.map(|p| p.1.to_owned()),
            commit: program.and_then(|p| p.2).map(str::to_owned),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        }
    }

    /// The short ID entries carry: a digest of the whole record.
    pub fn id(&self) -> WriterId {
        let digest = Sha256::digest(serde_json::to_vec(self).unwrap_or_default());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        WriterId(id)
    }

    /// The writer a store keeps for `id`, if any.
    pub fn of(store: &dyn Store, id: WriterId) -> Option<Writer> {
        let record = store.get_record(RecordKind::Writer, &id.0).ok()??;
        serde_json::from_slice(&record).ok()
    }
}

/// An engine's writer, and whether its store has the record yet.
pub(crate) struct ThisWriter {
    pub(crate) id: WriterId,
    writer: Writer,
    recorded: AtomicBool,
}

impl ThisWriter {
    pub(crate) fn new(writer: Writer) -> ThisWriter {
        ThisWriter {
            id: writer.id(),
            writer,
            recorded: AtomicBool::new(false),
        }
    }

    /// Gives `store` the record, at the first result stored.
    pub(crate) fn record_once(&self, store: &dyn Store) {
        if self.recorded.swap(true, Ordering::Relaxed) {
            return;
        }
        let record = serde_json::to_vec(&self.writer).unwrap_or_default();
        if let Err(e) = store.put_record(RecordKind::Writer, &self.id.0, &record) {
            tracing::debug!(error = %e, "cannot keep the record of this process as a writer");
        }
    }
}
