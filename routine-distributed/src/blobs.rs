//! The machine cache of what a process reads from the shared store.
//!
//! Large arguments travel by reference: a caller uploads encoded arguments
//! over a threshold to the shared store once, content-addressed, and the
//! request carries their SHA-256; a worker reads them through the cache of
//! its machine, so that a dataset every `fit` reads is downloaded once per
//! machine, not once per call. Large results read from an object store go
//! through the same cache: a copy is kept with the object's ETag, and the
//! next read on the machine asks the store for the object only if it
//! changed (`If-None-Match`), so an unchanged result costs one empty reply.
//!
//! ```text
//! shared store   routine.blobs/sha256/<sha-256 of the bytes>     the bytes, as they were encoded
//! machine cache  <folder>/routine.blobs/sha256/<sha-256>         a file store, least recently used evicted
//!                <folder>/routine.blobs/entry/<sha-256 of the object's path>       a result's entry
//!                <folder>/routine.blobs/entry-etag/<sha-256 of the object's path>  its ETag
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use routine_core::blocking::blocking;
use routine_core::key::Key;
use routine_core::store::gc::{self, GcPolicy};
use routine_core::store::{put_whole, EntryWrite, FileStore, Found, Slot, Store, StoreError};

/// The reserved task name blobs are stored under.
pub const BLOBS: &str = "routine.blobs";
/// The version-like component naming the digest.
const DIGEST: &str = "sha256";
/// The version-like components of results' copies and of their ETags.
const ENTRY: &str = "entry";
const ENTRY_TAG: &str = "entry-etag";

/// Results smaller than this are not kept: the request that asks whether
/// one changed costs as much as reading it.
pub(crate) const CACHED_ENTRY_MIN: u64 = 256 * 1024;

/// The default bound of the machine cache.
pub const MACHINE_CACHE_MAX: u64 = 4 << 30;

/// The machine cache's folder: `ROUTINE_BLOB_CACHE` if set, else
/// `routine-blobs` in the system's temporary folder. Every process of the
/// machine shares it.
pub fn machine_cache_folder() -> PathBuf {
    match std::env::var_os("ROUTINE_BLOB_CACHE") {
        Some(folder) if !folder.is_empty() => PathBuf::from(folder),
        _ => std::env::temp_dir().join("routine-blobs"),
    }
}

/// The content address of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> Key {
    Key::from_bytes(Sha256::digest(bytes).into())
}

/// The address of `bytes`, computed on the blocking pool: a worker's own
/// thread (which runs its routines) is not held up by hashing a large blob.
async fn digest_aside(bytes: Vec<u8>) -> (Vec<u8>, Key) {
    tokio::task::spawn_blocking(move || {
        let address = digest(&bytes);
        (bytes, address)
    })
    .await
    .expect("hashing does not panic")
}

fn slot(digest: &Key) -> Slot<'_> {
    Slot {
        name: BLOBS,
        version: DIGEST,
        key: digest,
    }
}

/// Where the machine cache keeps `kind` (a copy, or its ETag) of the object
/// whose path hashes to `address`.
fn entry_slot<'a>(kind: &'a str, address: &'a Key) -> Slot<'a> {
    Slot {
        name: BLOBS,
        version: kind,
        key: address,
    }
}

/// The reserved task name of parcels: a gang's large messages and outputs,
/// each read once, by its receiver, which removes it.
pub const PARCELS: &str = "routine.parcels";

/// Puts a gang's large message (or output) in the shared store, under
/// the gang's attempt and an address of its own: its receiver takes it.
pub(crate) async fn put_parcel(
    store: &dyn Store,
    gang: &str,
    bytes: Vec<u8>,
) -> Result<Key, StoreError> {
    let address = Key::from_bytes(fresh_address());
    let slot = Slot {
        name: PARCELS,
        version: gang,
        key: &address,
    };
    store.put_async(&slot, Arc::new(bytes)).await?;
    Ok(address)
}

/// Takes a parcel from the shared store: reads it, then removes it.
pub(crate) async fn take_parcel(
    store: &dyn Store,
    gang: &str,
    address: &Key,
) -> Result<Vec<u8>, String> {
    let slot = Slot {
        name: PARCELS,
        version: gang,
        key: address,
    };
    let found = store
        .get_async(&slot)
        .await
        .map_err(|e| format!("cannot read the large message {}: {e}", address.short()))?
        .ok_or_else(|| {
            format!(
                "the large message {} is not in the shared store {store:?}",
                address.short()
            )
        })?;
    let bytes = blocking(|| found.into_bytes())
        .map_err(|e| format!("cannot read the large message {}: {e}", address.short()))?;
    if let Err(e) = blocking(|| store.remove(&slot)) {
        tracing::warn!(parcel = %address.short(), error = %e, "cannot remove a large message read; `cache gc` removes it");
    }
    Ok(bytes)
}

/// Removes the parcels of gang attempt `gang` that no unit took: an
/// attempt that did not complete (a worker died, a unit failed, the call
/// was dropped) may leave messages posted and never received.
pub(crate) async fn sweep_parcels(store: &Arc<dyn Store>, gang: &str) {
    let store = Arc::clone(store);
    let gang = gang.to_owned();
    let swept = blocking(move || -> Result<(), StoreError> {
        let left = store.list(Some(PARCELS), Some(&gang))?;
        let slots: Vec<Slot<'_>> = left
            .iter()
            .map(|l| Slot {
                name: PARCELS,
                version: &l.version,
                key: &l.key,
            })
            .collect();
        if !slots.is_empty() {
            store.remove_many(&slots)?;
        }
        Ok(())
    });
    if let Err(e) = swept {
        tracing::warn!(error = %e, "cannot remove the large messages of an ended gang; `cache gc` removes them");
    }
}

/// 32 bytes no other parcel has: the clock, the process and a counter,
/// hashed.
fn fresh_address() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(n.to_le_bytes());
    hasher.finalize().into()
}

/// A caller's uploads: each blob is written to the shared store once per
/// process (a second writer of the same content writes the same bytes).
pub(crate) struct Uploads {
    store: Arc<dyn Store>,
    done: Mutex<HashSet<Key>>,
}

impl Uploads {
    pub(crate) fn new(store: Arc<dyn Store>) -> Uploads {
        Uploads {
            store,
            done: Mutex::default(),
        }
    }

    /// The shared store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stores `bytes` in the shared store unless this process did before;
    /// returns their address.
    pub(crate) async fn upload(&self, bytes: Vec<u8>) -> Result<Key, StoreError> {
        let address = blocking(|| digest(&bytes));
        let known = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&address);
        if !known {
            self.store
                .put_async(&slot(&address), Arc::new(bytes))
                .await?;
            self.done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(address);
        }
        Ok(address)
    }
}

/// A worker's cache of blobs read from the shared store: a folder, shared
/// by the worker processes of one machine, bounded in size (least recently
/// used blobs go first). Within a process, one blob is downloaded at a
/// time, so that calls arriving together for the same blob download it
/// once.
pub(crate) struct BlobCache {
    local: Option<FileStore>,
    max_bytes: u64,
    fetching: tokio::sync::Mutex<()>,
    downloads: AtomicU64,
}

impl BlobCache {
    /// A cache in `folder` (created if missing) of at most `max_bytes`;
    /// without a usable folder, every blob is downloaded (with a warning).
    pub(crate) fn open(folder: &Path, max_bytes: u64) -> BlobCache {
        let local = match FileStore::open(folder) {
            Ok(local) => Some(local),
            Err(e) => {
                tracing::warn!(folder = %folder.display(), error = %e,
                    "cannot open the blob cache; large arguments will be downloaded for every call");
                None
            }
        };
        BlobCache {
            local,
            max_bytes,
            fetching: tokio::sync::Mutex::new(()),
            downloads: AtomicU64::new(0),
        }
    }

    /// Blobs downloaded from the shared store by this process.
    pub(crate) fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// The blob at `address`: from this machine's cache, else from
    /// `shared` (and then kept). Its bytes are checked against the address.
    pub(crate) async fn fetch(&self, shared: &dyn Store, address: &Key) -> Result<Vec<u8>, String> {
        let _one_download_at_a_time = self.fetching.lock().await;
        if let Some(bytes) = self.cached(address) {
            let (bytes, read) = digest_aside(bytes).await;
            // A cache file damaged on disk is a miss, replaced below.
            if read == *address {
                return Ok(bytes);
            }
        }
        let found = shared
            .get_async(&slot(address))
            .await
            .map_err(|e| format!("cannot read the large argument {}: {e}", address.short()))?
            .ok_or_else(|| {
                format!(
                    "the large argument {} is not in the shared store {shared:?} (was it collected?)",
                    address.short()
                )
            })?;
        let bytes = blocking(|| found.into_bytes())
            .map_err(|e| format!("cannot read the large argument {}: {e}", address.short()))?;
        let (bytes, read) = digest_aside(bytes).await;
        if read != *address {
            return Err(format!(
                "the large argument {} read back changed: its bytes do not match their address",
                address.short()
            ));
        }
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.keep(address, &bytes);
        Ok(bytes)
    }

    fn cached(&self, address: &Key) -> Option<Vec<u8>> {
        let local = self.local.as_ref()?;
        let found = local.get(&slot(address)).ok()??;
        blocking(|| found.into_bytes()).ok()
    }

    /// Keeps a downloaded blob, then evicts the least recently used beyond
    /// the bound. A failure costs a download later, nothing more.
    fn keep(&self, address: &Key, bytes: &[u8]) {
        let Some(local) = &self.local else {
            return;
        };
        let kept =
            blocking(|| put_whole(local, &slot(address), bytes)).and_then(|()| self.evict(local));
        if let Err(e) = kept {
            tracing::warn!(blob = %address.short(), error = %e, "cannot keep a large argument in the blob cache");
        }
    }

    /// Removes the least recently used beyond the bound.
    fn evict(&self, local: &FileStore) -> Result<(), StoreError> {
        let listing = local.list(Some(BLOBS), None)?;
        let policy = GcPolicy {
            older_than: None,
            max_size: Some(self.max_bytes),
        };
        let plan = gc::plan(listing, &policy, SystemTime::now(), |_| false);
        gc::apply(local, &plan).map(drop)
    }

    /// The copy this machine keeps of the result at `path` of an object
    /// store, and the ETag the object had when it was kept.
    pub(crate) fn cached_entry(&self, path: &str) -> Option<(String, Found)> {
        let local = self.local.as_ref()?;
        let address = digest(path.as_bytes());
        let tag = local.get(&entry_slot(ENTRY_TAG, &address)).ok()??;
        let tag = String::from_utf8(tag.into_bytes().ok()?).ok()?;
        let found = local.get(&entry_slot(ENTRY, &address)).ok()??;
        Some((tag, found))
    }

    /// Where to write a copy of the result at `path`, `len` bytes long;
    /// [`BlobCache::tag_entry`] once it is committed. `None` without a
    /// usable folder.
    pub(crate) fn entry_writer(&self, path: &str, len: u64) -> Option<Box<dyn EntryWrite>> {
        let local = self.local.as_ref()?;
        let address = digest(path.as_bytes());
        // An old tag must not vouch for the new copy while it is written.
        let _ = local.remove(&entry_slot(ENTRY_TAG, &address));
        local.create(&entry_slot(ENTRY, &address), len).ok()
    }

    /// Records the ETag of the copy of `path` just committed, then evicts
    /// beyond the bound.
    pub(crate) fn tag_entry(&self, path: &str, etag: &str) -> Result<(), StoreError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let address = digest(path.as_bytes());
        put_whole(local, &entry_slot(ENTRY_TAG, &address), etag.as_bytes())?;
        self.evict(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routine_core::store::MemoryStore;

    #[tokio::test(flavor = "current_thread")]
    async fn blobs_are_uploaded_once_and_downloaded_once_per_machine() {
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let uploads = Uploads::new(Arc::clone(&shared));
        let data = vec![7u8; 3 << 20];
        let address = uploads.upload(data.clone()).await.unwrap();
        assert_eq!(uploads.upload(data.clone()).await.unwrap(), address);
        assert_eq!(shared.list(Some(BLOBS), None).unwrap().len(), 1);

        let folder = tempfile::tempdir().unwrap();
        let first = BlobCache::open(folder.path(), 64 << 20);
        assert_eq!(first.fetch(&*shared, &address).await.unwrap(), data);
        assert_eq!(first.fetch(&*shared, &address).await.unwrap(), data);
        // Another process of the same machine finds it in the folder.
        let second = BlobCache::open(folder.path(), 64 << 20);
        assert_eq!(second.fetch(&*shared, &address).await.unwrap(), data);
        assert_eq!((first.downloads(), second.downloads()), (1, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_cache_is_bounded_and_checks_what_it_reads() {
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let uploads = Uploads::new(Arc::clone(&shared));
        let folder = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(folder.path(), 5 << 20);
        for n in 0..3u8 {
            let address = uploads.upload(vec![n; 2 << 20]).await.unwrap();
            cache.fetch(&*shared, &address).await.unwrap();
        }
        let kept: u64 = cache
            .local
            .as_ref()
            .unwrap()
            .list(Some(BLOBS), None)
            .unwrap()
            .iter()
            .map(|l| l.size)
            .sum();
        assert!(kept <= 5 << 20, "{kept} bytes kept");

        let missing = digest(b"never uploaded");
        let error = cache.fetch(&*shared, &missing).await.unwrap_err();
        assert!(error.contains("not in the shared store"), "{error}");
    }
}
