//! The shared store: entries in object storage (S3 and S3-compatible servers,
//! GCS, Azure, a local folder) through the `object_store` crate, under
//! `<prefix>/<name>/<version>/<key-hex>`, the layout and entry format of the
//! file store. A result computed on one machine is a hit on every other.
//!
//! The [`Store`] trait is synchronous (the file store, the hot path, needs no
//! executor); this backend runs its requests on a small runtime of its own
//! and waits for them, inside `block_in_place` when the caller is on a
//! multi-threaded tokio runtime so that its other tasks keep running.
//!
//! Objects appear atomically: a small entry is one `PUT`, a large one a
//! multipart upload completed at commit (aborted if the writer is dropped).
//! A large entry is read back as a stream of chunks, never whole.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures_util::StreamExt;
use object_store::limit::LimitStore;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::runtime::Runtime;

use crate::blobs::{BlobCache, CACHED_ENTRY_MIN};
use routine_core::blocking::blocking;
use routine_core::key::{Key, KeyMap};
use routine_core::redact::redact_url;
use routine_core::store::{
    access_is_stale, check_name, check_slot, check_version, EntryWrite, Found, Listing, Slot,
    Store, StoreError, StoreFuture,
};

/// Entries up to this size are fetched whole; larger ones are streamed.
const FETCH_WHOLE_MAX: u64 = 1024 * 1024;
/// Entries up to this size are uploaded with one `PUT`; larger ones in parts
/// of this size (S3 wants at least 5 MiB per part).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Chunks of a streamed read that may wait in memory for the reader.
const STREAM_DEPTH: usize = 4;
/// Objects have no access time, and rewriting an entry to refresh one would
/// cost its whole size: the use of `<prefix>/<name>/<version>/<key>` is
/// recorded as an empty object `<prefix>/.used/<name>/<version>/<key>`,
/// whose modification time is the last use. The leading dot keeps it out of
/// the entries' namespace (no task name starts with one).
const USE_MARKERS: &str = ".used";
/// Uses this process recorded, to skip re-recording within the resolution;
/// cleared whole when it grows past this many keys.
const RECORDED_USES_MAX: usize = 100_000;

/// Entries in an object store. Cheap to clone.
///
/// ```
/// use routine_core::store::Store;
/// use routine_distributed::ObjectStoreBackend;
///
/// let store = ObjectStoreBackend::from_url("memory:///results").unwrap();
/// assert!(store.list(None, None).unwrap().is_empty());
/// assert_eq!(store.to_string(), "memory:///results");
/// ```
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: Arc<IoRuntime>,
    url: String,
    /// The URL of the bucket (or folder) the prefix is in: objects' paths,
    /// which start with the prefix, are named in messages under it.
    bucket_url: String,
    /// The bucket's name, for messages.
    bucket: String,
    recorded_uses: Arc<Mutex<KeyMap<SystemTime>>>,
    /// Where this machine keeps large results it read, with their ETags.
    machine_cache: Option<Arc<BlobCache>>,
    /// Reads answered by the machine cache after the store said the object
    /// had not changed.
    cached_reads: Arc<AtomicU64>,
}

/// The store's own runtime. It may be dropped from async code (with the last
/// engine), where a plain `Runtime` drop would panic: shut it down in the
/// background instead.
struct IoRuntime(Option<Runtime>);

impl IoRuntime {
    fn get(&self) -> &Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The most requests one process has in flight to a remote store by
/// default. Past it, requests wait their turn: an S3 server (or a proxy in
/// front of one) given thousands of connections at once refuses some, and
/// the calls whose writes it refused fail.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// [`MAX_REQUESTS_IN_FLIGHT`], or `setting` (`ROUTINE_STORE_MAX_REQUESTS`)
/// if set.
fn max_requests_in_flight(setting: Option<&str>) -> Result<usize, String> {
    match setting {
        None => Ok(MAX_REQUESTS_IN_FLIGHT),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "ROUTINE_STORE_MAX_REQUESTS={text:?} is not a positive whole number"
            )),
        },
    }
}

impl ObjectStoreBackend {
    /// Opens the store at `url`:
    ///
    /// - `s3://bucket/prefix`: credentials, region and endpoint from the
    ///   usual `AWS_*` environment variables (`AWS_ENDPOINT` and
    ///   `AWS_ALLOW_HTTP=true` for an S3-compatible server);
    /// - `gs://bucket/prefix` and `az://container/prefix`: from the
    ///   `GOOGLE_*` and `AZURE_*` variables;
    /// - `file:///absolute/folder`: a local folder (created if missing);
    /// - `memory:///prefix`: in this process only, for tests.
    ///
    /// A remote store gets at most [`MAX_REQUESTS_IN_FLIGHT`] requests at
    /// once from this process (or `ROUTINE_STORE_MAX_REQUESTS`): a
    /// workflow that fans out to thousands of calls queues its lookups here
    /// rather than opening a connection for each.
    pub fn from_url(url: &str) -> Result<ObjectStoreBackend, StoreError> {
        let invalid = |why: String| {
            StoreError::Config(format!(
                "cannot open the store `{}`: {why}",
                redact_url(url)
            ))
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("it is not a URL".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store: Arc<dyn ObjectStore> = match scheme {
            // An S3-compatible server needs credentials, and looking for
            // a cloud machine's instance role instead would only time out
            // (or ask an address that is not the server's).
            "s3" | "s3a"
                if !crate::store_errors::aws_credentials_set()
                    && crate::store_errors::aws_endpoint().is_some() =>
            {
                return Err(StoreError::Remote {
                    op: "open",
                    path: redact_url(url),
                    problem: "no credentials are set for it".into(),
                    hint: Some(crate::store_errors::CREDENTIALS_HINT.into()),
                });
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "az" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "file" => {
                let folder = format!("/{prefix}");
                std::fs::create_dir_all(&folder).map_err(|e| invalid(e.to_string()))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&folder)
                    .map_err(|e| invalid(e.to_string()))?;
                return Ok(ObjectStoreBackend::new(Arc::new(local), "", url));
            }
            "memory" => Arc::new(object_store::memory::InMemory::new()),
            other => {
                return Err(invalid(format!(
                    "unknown scheme `{other}` (use s3, gs, az, file or memory)"
                )))
            }
        };
        let setting = std::env::var("ROUTINE_STORE_MAX_REQUESTS").ok();
        let limit = max_requests_in_flight(setting.as_deref()).map_err(invalid)?;
        let limited = LimitStore::new(store, limit);
        let backend = ObjectStoreBackend::new(Arc::new(limited), prefix, url);
        Ok(match scheme {
            "memory" => backend,
            _ => {
                backend.with_machine_cache(&crate::machine_cache_folder(), crate::MACHINE_CACHE_MAX)
            }
        })
    }

    /// Wraps an object store you built; entries go under `prefix`. `url`
    /// names it in messages (credentials are redacted).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> ObjectStoreBackend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("routine-object-store")
            .enable_all()
            .build()
            .expect("cannot start the object store's I/O threads");
        let url = redact_url(url);
        let bucket_url = url
            .strip_suffix(prefix.trim_matches('/'))
            .unwrap_or(&url)
            .trim_end_matches('/')
            .to_owned();
        let bucket = bucket_url
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .to_owned();
        ObjectStoreBackend {
            inner: store,
            prefix: Path::from(prefix),
            runtime: Arc::new(IoRuntime(Some(runtime))),
            bucket_url,
            bucket,
            url,
            recorded_uses: Arc::default(),
            machine_cache: None,
            cached_reads: Arc::default(),
        }
    }

    /// Reads large results (256 KiB and more) through a cache in `folder`
    /// of at most `max_bytes`, shared by the processes of the machine: a
    /// copy is kept with the object's ETag, and a later read asks the store
    /// for the object only if it changed (`If-None-Match`). [`from_url`]
    /// does this for S3, GCS and Azure, in
    /// [`machine_cache_folder`](crate::machine_cache_folder).
    ///
    /// [`from_url`]: ObjectStoreBackend::from_url
    pub fn with_machine_cache(mut self, folder: &std::path::Path, max_bytes: u64) -> Self {
        self.machine_cache = Some(Arc::new(BlobCache::open(folder, max_bytes)));
        self
    }

    /// Reads this backend answered from the machine cache, the store
    /// having said the object had not changed.
    pub fn cached_reads(&self) -> u64 {
        self.cached_reads.load(Ordering::Relaxed)
    }

    fn location(&self, slot: &Slot<'_>) -> Result<Path, StoreError> {
        check_slot(slot)?;
        Ok(self
            .prefix
            .clone()
            .join(slot.name)
            .join(slot.version)
            .join(slot.key.to_hex().as_str()))
    }

    fn use_marker(&self, slot: &Slot<'_>) -> Path {
        self.prefix
            .clone()
            .join(USE_MARKERS)
            .join(slot.name)
            .join(slot.version)
            .join(slot.key.to_hex().as_str())
    }

    /// Records in the background that an entry written at `written` was just
    /// read, unless a use within the resolution is already recorded. Never
    /// delays the read; a failure only makes the entry look older to `gc`.
    fn record_use(&self, key: Key, marker: Path, written: SystemTime) {
        let now = SystemTime::now();
        if !access_is_stale(written, now) {
            return;
        }
        {
            let mut recorded = self
                .recorded_uses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if recorded
                .get(&key)
                .is_some_and(|at| !access_is_stale(*at, now))
            {
                return;
            }
            if recorded.len() >= RECORDED_USES_MAX {
                recorded.clear();
            }
            recorded.insert(key, now);
        }
        let (store, at) = (Arc::clone(&self.inner), marker);
        self.runtime.get().spawn(async move {
            if let Err(e) = store.put(&at, PutPayload::new()).await {
                tracing::debug!(error = %e, "cannot record the use of a stored entry");
            }
        });
    }

    /// The last uses the `markers` record, by name, version and key.
    fn recorded_uses(
        &self,
        markers: Vec<object_store::ObjectMeta>,
    ) -> HashMap<(String, String, Key), SystemTime> {
        let skip = self.prefix.parts().count() + 1;
        markers
            .into_iter()
            .filter_map(|meta| {
                let (name, version, key) = self.entry_parts(&meta.location, skip)?;
                Some(((name, version, key), SystemTime::from(meta.last_modified)))
            })
            .collect()
    }

    fn list_objects(&self, under: Path) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        let (store, at) = (Arc::clone(&self.inner), under.clone());
        self.wait(async move { store.list(Some(&at)).collect::<Vec<_>>().await })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error("list", &under, e))
    }

    /// Name, version and key of an object `<skipped parts>/<name>/<version>/<key>`.
    fn entry_parts(&self, location: &Path, skip: usize) -> Option<(String, String, Key)> {
        let parts: Vec<String> = location
            .parts()
            .skip(skip)
            .map(|p| p.as_ref().to_owned())
            .collect();
        let [name, version, key] = parts.as_slice() else {
            return None;
        };
        let key = Key::from_hex(key).ok()?;
        (check_name(name).is_ok() && check_version(version).is_ok())
            .then(|| (name.clone(), version.clone(), key))
    }

    fn error(&self, op: &'static str, location: &Path, error: object_store::Error) -> StoreError {
        let path = format!("{}/{location}", self.bucket_url);
        // The server's own answer is for `-v`.
        tracing::info!(object = %path, error = %error, "the store answered with an error");
        let (problem, hint) = crate::store_errors::explain(&error, &self.bucket);
        StoreError::Remote {
            op,
            path,
            problem,
            hint,
        }
    }

    /// Reads the entry at `location`, on the store's runtime: from the
    /// machine cache if the object did not change since it was kept;
    /// else whole when small, as a stream paced by its reader when large
    /// (and then through the machine cache, when it has one). The use is
    /// recorded at `marker`, if given.
    async fn fetch(
        self,
        location: Path,
        key: Key,
        marker: Option<Path>,
    ) -> Result<Option<Found>, StoreError> {
        let cache = self.machine_cache.clone();
        let cached = cache
            .as_ref()
            .and_then(|c| c.cached_entry(location.as_ref()));
        let options = object_store::GetOptions {
            if_none_match: cached.as_ref().map(|(etag, _)| etag.clone()),
            ..Default::default()
        };
        let result = match (self.inner.get_opts(&location, options).await, cached) {
            (Ok(result), _) => result,
            (Err(object_store::Error::NotModified { .. }), Some((_, copy))) => {
                self.cached_reads.fetch_add(1, Ordering::Relaxed);
                // Read now, written whenever: record the use.
                if let Some(marker) = marker {
                    self.record_use(key, marker, SystemTime::UNIX_EPOCH);
                }
                return Ok(Some(copy));
            }
            (Err(object_store::Error::NotFound { .. }), _) => return Ok(None),
            (Err(e), _) => return Err(self.error("read", &location, e)),
        };
        if let Some(marker) = marker {
            self.record_use(key, marker, SystemTime::from(result.meta.last_modified));
        }
        match (cache, result.meta.e_tag.clone()) {
            (Some(cache), Some(etag)) if result.meta.size >= CACHED_ENTRY_MIN => {
                match keep_copy(&cache, &location, &etag, result).await {
                    Ok(copy) => Ok(Some(copy)),
                    Err(e) => {
                        // The download went into a copy that failed: read
                        // the object again, past the cache.
                        tracing::warn!(error = %e, object = %location, "cannot keep a result in the machine cache");
                        let again = self.inner.get(&location).await;
                        self.serve(&location, again).await
                    }
                }
            }
            _ => self.serve(&location, Ok(result)).await,
        }
    }

    /// An object read from the store as an entry: whole when small, else as
    /// a stream paced by its reader.
    async fn serve(
        &self,
        location: &Path,
        result: Result<object_store::GetResult, object_store::Error>,
    ) -> Result<Option<Found>, StoreError> {
        let result = match result {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("read", location, e)),
        };
        let len = result.meta.size;
        if len <= FETCH_WHOLE_MAX {
            let bytes = result
                .bytes()
                .await
                .map_err(|e| self.error("read", location, e))?;
            return Ok(Some(Found::Bytes(Arc::new(bytes.to_vec()))));
        }
        // A bounded channel paces the download to the decoder.
        let (tx, rx) = mpsc::sync_channel(STREAM_DEPTH);
        tokio::spawn(async move {
            let mut chunks = result.into_stream();
            while let Some(chunk) = chunks.next().await {
                let failed = chunk.is_err();
                let tx = tx.clone();
                let chunk = chunk.map(|bytes| bytes.to_vec()).map_err(io::Error::other);
                let sent = tokio::task::spawn_blocking(move || tx.send(chunk))
                    .await
                    .is_ok_and(|sent| sent.is_ok());
                if !sent || failed {
                    break;
                }
            }
        });
        Ok(Some(Found::Stream {
            reader: Box::new(ChunkReader {
                chunks: rx,
                current: Vec::new(),
                at: 0,
            }),
            len,
        }))
    }

    /// Runs `request` on the store's own runtime, awaited from the
    /// caller's without blocking it: the HTTP client then never depends on
    /// how the caller's runtime was built.
    fn on_own_runtime<T: Send + 'static>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let running = self.runtime.get().spawn(request);
        let url = self.url.clone();
        async move {
            running.await.unwrap_or_else(|e| {
                Err(StoreError::Io {
                    op,
                    path: url.into(),
                    source: io::Error::other(format!("the object store's runtime stopped: {e}")),
                })
            })
        }
    }

    /// Runs `request` on the store's runtime and waits for it.
    fn wait<T: Send + 'static>(&self, request: impl Future<Output = T> + Send + 'static) -> T {
        wait_on(self.runtime.get(), request)
    }
}

fn wait_on<T: Send + 'static>(
    runtime: &Runtime,
    request: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(request.await);
    });
    let receive = move || rx.recv().expect("the object store's runtime stopped");
    blocking(receive)
}

impl fmt::Display for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectStoreBackend({})", self.url)
    }
}

impl Store for ObjectStoreBackend {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        let location = self.location(slot)?;
        self.wait(
            self.clone()
                .fetch(location, *slot.key, Some(self.use_marker(slot))),
        )
    }

    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        let location = self.location(slot)?;
        self.wait(self.clone().fetch(location, *slot.key, None))
    }

    fn get_async<'a>(&'a self, slot: &Slot<'a>) -> StoreFuture<'a, Option<Found>> {
        let location = match self.location(slot) {
            Ok(location) => location,
            Err(e) => return StoreFuture::ready(Err(e)),
        };
        let fetch = self
            .clone()
            .fetch(location, *slot.key, Some(self.use_marker(slot)));
        StoreFuture::new(self.on_own_runtime("read", fetch))
    }

    fn put_async<'a>(&'a self, slot: &Slot<'a>, entry: Arc<Vec<u8>>) -> StoreFuture<'a, ()> {
        let location = match self.location(slot) {
            Ok(location) => location,
            Err(e) => return StoreFuture::ready(Err(e)),
        };
        let backend = self.clone();
        StoreFuture::new(self.on_own_runtime("write", async move {
            let payload = PutPayload::from(bytes::Bytes::from_owner(SharedEntry(entry)));
            match backend.inner.put(&location, payload).await {
                Ok(_) => Ok(()),
                Err(e) => Err(backend.error("write", &location, e)),
            }
        }))
    }

    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        let location = self.location(slot)?;
        let capacity = usize::try_from(len).unwrap_or(PART_SIZE).min(PART_SIZE);
        Ok(Box::new(ObjectWriter {
            backend: self.clone(),
            location,
            buffer: Vec::with_capacity(capacity),
            upload: None,
        }))
    }

    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        let location = self.location(slot)?;
        let (store, at, marker) = (
            Arc::clone(&self.inner),
            location.clone(),
            self.use_marker(slot),
        );
        // S3 deletes are idempotent and say nothing about existence: ask
        // first, so the answer is true only for a real removal.
        let removed = self.wait(async move {
            match store.head(&at).await {
                Ok(_) => {
                    store.delete(&at).await?;
                    match store.delete(&marker).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                        Err(e) => Err(e),
                    }
                }
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        });
        removed.map_err(|e| self.error("remove", &location, e))
    }

    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        let (mut under, mut markers) = (self.prefix.clone(), self.prefix.clone().join(USE_MARKERS));
        let checked = [
            (name, check_name as fn(&str) -> _),
            (version, check_version),
        ];
        for (part, check) in checked {
            let Some(part) = part else { continue };
            check(part)?;
            under = under.join(part);
            markers = markers.join(part);
        }
        if name.is_none() && version.is_some() {
            return Err(StoreError::Config(
                "a version can only be listed together with its task name".into(),
            ));
        }
        let skip = self.prefix.parts().count();
        let is_marker = |meta: &object_store::ObjectMeta| {
            meta.location
                .parts()
                .nth(skip)
                .is_some_and(|part| part.as_ref() == USE_MARKERS)
        };
        let (markers_listed, metas): (Vec<_>, Vec<_>) =
            self.list_objects(under)?.into_iter().partition(is_marker);
        // The whole prefix holds the markers too; a task's folder does not.
        let markers = match name {
            None => markers_listed,
            Some(_) => self.list_objects(markers)?,
        };
        let mut uses = self.recorded_uses(markers);
        let mut out: Vec<Listing> = metas
            .into_iter()
            .filter_map(|meta| {
                let (name, version, key) = self.entry_parts(&meta.location, skip)?;
                let created = SystemTime::from(meta.last_modified);
                let used = uses.remove(&(name.clone(), version.clone(), key));
                Some(Listing {
                    name: name.into(),
                    version: version.into(),
                    key,
                    size: meta.size,
                    created,
                    accessed: used.map_or(created, |used| used.max(created)),
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// An entry shared with the engine's cache, uploaded without a copy.
struct SharedEntry(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedEntry {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads the chunks of a streamed download.
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match blocking(|| self.chunks.recv()) {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Buffers an entry; uploads it in one `PUT` at commit, or in parts once it
/// outgrows one part.
struct ObjectWriter {
    backend: ObjectStoreBackend,
    location: Path,
    buffer: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
}

impl ObjectWriter {
    fn send_part(&mut self) -> io::Result<()> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let (store, at) = (Arc::clone(&self.backend.inner), self.location.clone());
                let started = self
                    .backend
                    .wait(async move { store.put_multipart(&at).await });
                self.upload.insert(started.map_err(io::Error::other)?)
            }
        };
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.buffer)));
        self.backend.wait(part).map_err(io::Error::other)?;
        self.buffer.reserve(PART_SIZE);
        Ok(())
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = PART_SIZE - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == PART_SIZE {
            self.send_part()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntryWrite for ObjectWriter {
    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let location = self.location.clone();
        let fail = |e: object_store::Error| self.backend.error("write", &location, e);
        match self.upload.take() {
            None => {
                let (store, at) = (Arc::clone(&self.backend.inner), location.clone());
                let payload = PutPayload::from(std::mem::take(&mut self.buffer));
                self.backend
                    .wait(async move { store.put(&at, payload).await })
                    .map(drop)
                    .map_err(fail)
            }
            Some(mut upload) => {
                if !self.buffer.is_empty() {
                    let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.buffer)));
                    if let Err(e) = self.backend.wait(part) {
                        self.upload = Some(upload);
                        return Err(fail(e));
                    }
                }
                let completed = self.backend.wait(async move {
                    let result = upload.complete().await;
                    (upload, result)
                });
                match completed {
                    (_, Ok(_)) => Ok(()),
                    (upload, Err(e)) => {
                        self.upload = Some(upload);
                        Err(fail(e))
                    }
                }
            }
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // An uncommitted multipart upload leaves parts behind on S3 until
        // aborted; nothing is visible either way.
        if let Some(mut upload) = self.upload.take() {
            let _ = self.backend.wait(async move { upload.abort().await });
        }
    }
}

/// Writes the object `result` brings into the machine cache as it arrives,
/// tags it with `etag`, and opens the copy: the entry, read from this
/// machine's disk.
async fn keep_copy(
    cache: &BlobCache,
    location: &Path,
    etag: &str,
    result: object_store::GetResult,
) -> Result<Found, String> {
    let path = location.as_ref();
    let mut writer = cache
        .entry_writer(path, result.meta.size)
        .ok_or("the machine cache cannot be written")?;
    let mut chunks = result.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        blocking(|| writer.write_all(&chunk)).map_err(|e| e.to_string())?;
    }
    blocking(|| writer.commit()).map_err(|e| e.to_string())?;
    blocking(|| cache.tag_entry(path, etag)).map_err(|e| e.to_string())?;
    cache
        .cached_entry(path)
        .map(|(_, copy)| copy)
        .ok_or_else(|| "the copy just kept is gone".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_in_memory() {
        routine_core::store::contract::run(
            &ObjectStoreBackend::from_url("memory:///some/prefix").unwrap(),
        );
    }

    #[test]
    fn contract_local_folder() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        routine_core::store::contract::run(&ObjectStoreBackend::from_url(&url).unwrap());
    }

    #[test]
    fn uses_of_old_entries_are_recorded_beside_them() {
        let store = ObjectStoreBackend::from_url("memory:///p").unwrap();
        let key = Key::of("train", "0.0.1", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        let mut writer = store.create(&slot, 1).unwrap();
        writer.write_all(b"x").unwrap();
        writer.commit().unwrap();
        let marker = || store.list_objects(Path::from("p/.used")).unwrap();
        // A fresh entry's use needs no record.
        store.record_use(key, store.use_marker(&slot), SystemTime::now());
        assert!(marker().is_empty());

        // As if the entry had been written two days ago and read now; the
        // marker is written in the background.
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        store.record_use(key, store.use_marker(&slot), long_ago);
        for _ in 0..200 {
            if !marker().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(marker().len(), 1);
        let listing = store.list(Some("train"), Some("0.0.1")).unwrap();
        assert_eq!(listing.len(), 1, "markers are not entries: {listing:?}");
        assert!(listing[0].accessed >= listing[0].created);
        assert_eq!(store.list(None, None).unwrap().len(), 1);

        assert!(store.remove(&slot).unwrap());
        let left = store.list_objects(Path::from("p")).unwrap();
        assert!(
            left.is_empty(),
            "removing an entry removes its marker: {left:?}"
        );
    }

    #[test]
    fn the_request_bound_is_a_positive_number() {
        assert_eq!(max_requests_in_flight(None), Ok(MAX_REQUESTS_IN_FLIGHT));
        assert_eq!(max_requests_in_flight(Some(" 8 ")), Ok(8));
        for bad in ["0", "-1", "many", ""] {
            let error = max_requests_in_flight(Some(bad)).unwrap_err();
            assert!(error.contains("ROUTINE_STORE_MAX_REQUESTS"), "{error}");
        }
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for url in ["nothing", "ftp://host/x"] {
            let error = ObjectStoreBackend::from_url(url).unwrap_err().to_string();
            assert!(error.contains("cannot open the store"), "{error}");
        }
    }

    /// Reads a large result twice through two backends sharing a machine
    /// cache (two processes of one machine), then after it changed.
    fn large_results_are_read_through_the_machine_cache(open: impl Fn() -> ObjectStoreBackend) {
        let folder = tempfile::tempdir().unwrap();
        let (first, second) = (
            open().with_machine_cache(folder.path(), 64 << 20),
            open().with_machine_cache(folder.path(), 64 << 20),
        );
        let key = Key::of("train", "0.0.1", &2u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        let read =
            |store: &ObjectStoreBackend| store.get(&slot).unwrap().unwrap().into_bytes().unwrap();
        let large = vec![3u8; 1 << 20];
        routine_core::store::put_whole(&first, &slot, &large).unwrap();
        assert_eq!(read(&first), large);
        assert_eq!(first.cached_reads(), 0, "the first read downloads it");
        assert_eq!(read(&second), large);
        assert_eq!(second.cached_reads(), 1, "the second is answered here");

        // Replaced: the store's ETag changes, and the copy is not used.
        let replaced = vec![4u8; 1 << 20];
        routine_core::store::put_whole(&first, &slot, &replaced).unwrap();
        assert_eq!(read(&second), replaced);
        assert_eq!(second.cached_reads(), 1);
        assert_eq!(read(&first), replaced);
        assert_eq!(first.cached_reads(), 1);

        // A small result is never kept: asking costs as much as reading.
        let small_key = Key::of("train", "0.0.1", &3u8).unwrap();
        let small = Slot {
            key: &small_key,
            ..slot
        };
        routine_core::store::put_whole(&first, &small, b"tiny").unwrap();
        for _ in 0..2 {
            assert_eq!(
                first.get(&small).unwrap().unwrap().into_bytes().unwrap(),
                b"tiny"
            );
        }
        assert_eq!(first.cached_reads(), 1);
    }

    #[test]
    fn a_local_object_store_reads_through_the_machine_cache() {
        let dir = tempfile::tempdir().unwrap();
        large_results_are_read_through_the_machine_cache(|| {
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
            ObjectStoreBackend::new(Arc::new(local), "", "file:///test")
        });
    }

    #[test]
    fn s3_reads_through_the_machine_cache() {
        let Some(url) = fresh_s3_url("machine-cache") else {
            return;
        };
        large_results_are_read_through_the_machine_cache(|| {
            ObjectStoreBackend::from_url(&url).unwrap()
        });
    }

    /// A prefix of its own on the S3 server `./scripts/test` starts (it
    /// sets `ROUTINE_TEST_S3_URL`); `None`, said, without one.
    fn fresh_s3_url(label: &str) -> Option<String> {
        let Ok(url) = std::env::var("ROUTINE_TEST_S3_URL") else {
            eprintln!(
                "skipped: ROUTINE_TEST_S3_URL is not set (./scripts/test starts an S3 server and sets it)"
            );
            return None;
        };
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(format!("{url}/{label}-{nanos}"))
    }

    /// The same contract against a real S3-compatible server; `./scripts/test`
    /// starts one and sets `ROUTINE_TEST_S3_URL`.
    #[test]
    fn contract_s3() {
        // A prefix of its own: the contract starts from an empty store.
        let Some(url) = fresh_s3_url("contract") else {
            return;
        };
        let store = ObjectStoreBackend::from_url(&url).unwrap();
        routine_core::store::contract::run(&store);
    }
}
