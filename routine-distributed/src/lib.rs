//! Distributed execution for [routine](https://docs.rs/routine-engine):
//! sub-routine calls travel as messages on Redis Streams to worker processes
//! (the user's own program), which store results in a shared object store.
//!
//! ```text
//! caller's engine ──Dispatch──▶ RedisDispatcher ──XADD──▶ {ns}:work:{name}:{version}
//!        ▲                                                        │ XREADGROUP
//!        │ reads the result                                       ▼
//!   shared store ◀──────────── stores the result ──────────── worker::serve
//! ```
//!
//! | module | idea |
//! |---|---|
//! | `blobs` | the machine cache: large arguments by reference, large results read once per machine |
//! | [`broker`] | Redis Streams: every Redis command of routine lives here |
//! | [`dispatcher`] | the caller's side: [`RedisDispatcher`], routine-core's `Dispatch` over the broker |
//! | [`worker`] | the worker's side: serving routines to other processes |
//! | [`object_store`] | results in S3, GCS, Azure or a folder, through the `object_store` crate |
#![warn(missing_docs)]

use routine_core::dispatch::Policy;
use routine_core::store::{self as local, Store, StoreError};
use routine_core::{Engine, EngineBuilder};
use std::sync::Arc;

mod blobs;
pub mod broker;
pub mod dispatcher;
pub mod object_store;
mod store_errors;
mod trace_context;
pub mod worker;

pub use crate::blobs::{machine_cache_folder, MACHINE_CACHE_MAX, PARCELS};
pub use crate::broker::{Broker, BrokerError, Retry};
pub use crate::dispatcher::{DispatchSettings, RedisDispatcher};
pub use crate::object_store::ObjectStoreBackend;

/// Everything a distributed engine needs; see [`connect`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DistributedConfig {
    /// The Redis URL, `redis://[:password@]host:port[/db]`.
    pub broker_url: String,
    /// The shared store, `s3://bucket/prefix` or `file:///shared/folder`
    /// (see [`open_url`]).
    pub store_url: String,
    /// Prefix of every broker key, so deployments can share a server.
    pub namespace: String,
    /// Where awaited routines run.
    pub policy: Policy,
    /// Waits of dispatched calls.
    pub dispatch: DispatchSettings,
    /// Retries when connecting to the broker.
    pub retry: Retry,
    /// Bound of the in-process result cache, as for a local engine.
    pub cache_capacity: usize,
}

impl DistributedConfig {
    /// Defaults around a broker and a store: namespace `routine`, policy
    /// sub-routines-remote.
    pub fn new(broker_url: impl Into<String>, store_url: impl Into<String>) -> Self {
        DistributedConfig {
            broker_url: broker_url.into(),
            store_url: store_url.into(),
            namespace: "routine".to_owned(),
            policy: Policy::SubRoutinesRemote,
            dispatch: DispatchSettings::default(),
            retry: Retry::default(),
            cache_capacity: routine_core::engine::DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// An engine over a shared object store that sends sub-routines to workers
/// through a Redis broker. The calling code does not change.
///
/// Fails if the store URL is invalid, if the store cannot be used (a probe
/// entry is written, read and removed: a missing bucket fails here, naming
/// the store), or if the broker cannot be reached after the configured
/// retries.
///
/// ```no_run
/// # async fn example() -> Result<(), routine_distributed::Error> {
/// use routine_distributed::{connect, DistributedConfig};
///
/// let engine = connect(DistributedConfig::new("redis://127.0.0.1:6379", "s3://bucket/results")).await?;
/// engine.scope(async { /* task calls here may run on workers */ }).await;
/// # Ok(()) }
/// ```
pub async fn connect(config: DistributedConfig) -> Result<Engine, Error> {
    let store = open_url(&config.store_url)?;
    routine_core::store::probe(&*store).await?;
    let builder = Engine::builder(store).cache_capacity(config.cache_capacity);
    attach(builder, &config).await
}

/// Builds the engine `builder` describes, sending work through the broker
/// `config` names (with its namespace, policy, waits and retries); the
/// builder keeps its own store and cache. [`connect`] is this over the
/// store `config` names; a program's configuration uses it over a store it
/// opened itself.
pub async fn attach(builder: EngineBuilder, config: &DistributedConfig) -> Result<Engine, Error> {
    let broker = Broker::connect(&config.broker_url, &config.namespace, config.retry).await?;
    let dispatcher = RedisDispatcher::start(broker, config.dispatch, Arc::clone(builder.store()));
    Ok(builder.dispatcher(dispatcher, config.policy).build()?)
}

/// The broker a distributed engine sends through, if it has one.
pub fn broker_of(engine: &Engine) -> Option<Broker> {
    let dispatcher = engine
        .dispatcher()?
        .as_any()
        .downcast_ref::<RedisDispatcher>()?;
    Some(dispatcher.broker().clone())
}

/// Opens the store a URL names: `s3://`, `gs://`, `az://` and `memory://`
/// are object stores; `file:///folder` and plain paths are routine-core's
/// local stores ([`routine_core::store::open_url`]).
///
/// ```
/// let store = routine_distributed::open_url("memory:///results").unwrap();
/// assert!(store.list(None, None).unwrap().is_empty());
/// ```
pub fn open_url(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match local::local_path(url) {
        Some(_) => local::open_url(url),
        None => Ok(Arc::new(ObjectStoreBackend::from_url(url)?)),
    }
}

/// Why a distributed engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine could not be built (its store, its tasks).
    #[error(transparent)]
    Engine(#[from] routine_core::Error),
    /// The store URL is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker could not be reached.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
