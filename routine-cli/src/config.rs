//! The configuration of a routine program: where results live, which broker
//! to use, and how.
//!
//! Read from four layers, each overriding the one before:
//!
//! 1. defaults: a file store in `./.routine`, no broker, the local policy;
//! 2. `routine.toml` in the working directory (or the file named by
//!    `ROUTINE_CONFIG` or `--config`);
//! 3. environment variables `ROUTINE_*`;
//! 4. command-line flags.
//!
//! ```toml
//! project = "ml"
//! store = ".routine"              # a folder, file:///folder or s3://bucket/prefix
//! durability = "process"          # or "fsync"
//! layout = "database"             # a new store's: or "files", one file per result (for a network file system)
//! cache_capacity = "64MiB"
//! broker = "redis://127.0.0.1:6379"
//! namespace = "routine"
//! policy = "sub-routines-remote"  # or "local"
//! no_worker_wait = "30s"          # how long a call waits for a worker of its routine
//! gang_start_timeout = "60s"      # how long a multi-unit call waits for slots for all its units
//!
//! [worker]
//! concurrency = 4
//!
//! [tasks]                         # for tasks whose attribute leaves them unset
//! timeout = "1h"
//! retries = 2
//! backoff = "5s"
//! concurrency = 8
//! on_code_change = "warn"         # or "rerun": changed code is a miss
//!
//! [telemetry]                     # feature `telemetry`
//! otlp_endpoint = "http://127.0.0.1:4318"   # export spans over OTLP/HTTP
//! ```
//!
//! ```
//! use routine_cli::config::{Config, Overrides};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("routine.toml"), "store = 'results'\ncache_capacity = '8MiB'\n").unwrap();
//! let config = Config::load_from(dir.path(), "demo", &Overrides::default(), |_| None).unwrap();
//! assert_eq!(config.store, dir.path().join("results").display().to_string());
//! assert_eq!(config.cache_capacity, 8 << 20);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use routine_core::code::OnCodeChange;
use routine_core::dispatch::Policy;
use routine_core::engine::{EngineBuilder, DEFAULT_CACHE_CAPACITY};
use routine_core::execution::{Execution, MAX_RETRIES};
use routine_core::redact::redact_url;
use routine_core::store::{self, Durability, Layout, Store};
use routine_core::Engine;
use routine_core::Error;

/// The configuration file looked for in the working directory.
pub const FILE_NAME: &str = "routine.toml";

/// Where each setting came from, for `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The configuration file.
    File,
    /// An environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Default => "default",
            Origin::File => "the configuration file",
            Origin::Environment => "environment",
            Origin::Flag => "flag",
        })
    }
}

/// A routine program's settings, resolved.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The program's name, shown by `info`.
    pub project: String,
    /// The store: a folder, `file:///folder`, `s3://bucket/prefix`, ...
    pub store: String,
    /// How hard the local store pushes entries to disk.
    pub durability: Durability,
    /// How a local store keeps its results, if set: files, or a database.
    /// Unset, an existing store keeps its own and a new one gets the
    /// default (see [`store::open_local`]).
    pub layout: Option<Layout>,
    /// Bound of the in-process result cache, in bytes.
    pub cache_capacity: u64,
    /// The Redis URL of the broker, if the program sends work to workers.
    pub broker: Option<String>,
    /// Prefix of every broker key.
    pub namespace: String,
    /// How long a dispatched call waits for a worker that serves its
    /// routine before it fails.
    pub no_worker_wait: Duration,
    /// How long a multi-unit call waits for enough free slots to start all
    /// its units together before it fails.
    pub gang_start_timeout: Duration,
    /// Where awaited routines run.
    pub policy: Policy,
    /// Routines a worker runs at once.
    pub concurrency: usize,
    /// Execution options for tasks that leave them unset (`[tasks]`).
    pub execution: Execution,
    /// What tasks that leave `on_code_change` unset do with a result of
    /// other code (`[tasks] on_code_change`, `ROUTINE_ON_CODE_CHANGE`).
    pub on_code_change: OnCodeChange,
    /// Where spans are exported over OTLP/HTTP (`[telemetry]
    /// otlp_endpoint`, `ROUTINE_OTLP_ENDPOINT`): the collector's base URL,
    /// to which `/v1/traces` is added. Needs the `telemetry` feature.
    pub otlp_endpoint: Option<String>,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The program whose engines this configuration builds, named as the
    /// writer of their results (`why`); `#[routine::main]` sets it.
    pub program: Option<ProgramIdentity>,
    /// Where `store`, `broker` and `policy` came from.
    pub origins: Origins,
}

/// A program as the results it stores name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramIdentity {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The git commit it was built from, if the build knew it.
    pub commit: Option<String>,
}

/// Where the settings `info` shows came from.
#[derive(Debug, Clone, Copy)]
pub struct Origins {
    /// Of [`Config::store`].
    pub store: Origin,
    /// Of [`Config::broker`].
    pub broker: Origin,
    /// Of [`Config::policy`].
    pub policy: Origin,
}

/// Settings given on the command line; `None` leaves the lower layers'.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`: the configuration file.
    pub config: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--broker`.
    pub broker: Option<String>,
    /// `--policy`.
    pub policy: Option<String>,
    /// `--concurrency` of `worker`.
    pub concurrency: Option<usize>,
    /// `--task-timeout`.
    pub task_timeout: Option<String>,
    /// `--task-retries`.
    pub task_retries: Option<String>,
}

/// The file's shape; every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    project: Option<String>,
    store: Option<String>,
    durability: Option<String>,
    layout: Option<String>,
    cache_capacity: Option<SizeSetting>,
    broker: Option<String>,
    namespace: Option<String>,
    policy: Option<String>,
    no_worker_wait: Option<String>,
    gang_start_timeout: Option<String>,
    #[serde(default)]
    worker: WorkerLayer,
    #[serde(default)]
    tasks: TasksLayer,
    #[serde(default)]
    telemetry: TelemetryLayer,
}

/// `[telemetry]`: where spans go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryLayer {
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerLayer {
    concurrency: Option<usize>,
}

/// `[tasks]`: defaults of the execution options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksLayer {
    timeout: Option<String>,
    retries: Option<u32>,
    backoff: Option<String>,
    concurrency: Option<u32>,
    on_code_change: Option<String>,
}

/// A size as `"64MiB"` or a plain number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read the configuration file `{}`: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("the configuration file `{}` is not valid: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A setting has a value it cannot take.
    #[error("{setting} (from {origin}): {message}")]
    Invalid {
        /// The setting, as the user wrote its name.
        setting: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// Loads the configuration for the process: the working directory's
    /// `routine.toml`, the process's environment, then `overrides`.
    pub fn load(project: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Config::load_from(&cwd, project, overrides, |name| std::env::var(name).ok())
    }

    /// Loads the configuration as if run in `dir` with the environment
    /// `env`; relative store paths are resolved against `dir` (or against
    /// the configuration file's folder, for a path written there).
    pub fn load_from(
        dir: &Path,
        project: &str,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let explicit_file = overrides
            .config
            .clone()
            .or_else(|| env("ROUTINE_CONFIG").map(PathBuf::from));
        let file_path = match explicit_file {
            Some(path) => Some(dir.join(path)),
            None => Some(dir.join(FILE_NAME)).filter(|path| path.is_file()),
        };
        let (file, file_dir) = match &file_path {
            Some(path) => (read_file(path)?, path.parent().unwrap_or(dir).to_owned()),
            None => (FileLayer::default(), dir.to_owned()),
        };

        let mut config = Config {
            project: project.to_owned(),
            store: dir.join(".routine").display().to_string(),
            durability: Durability::Process,
            layout: None,
            cache_capacity: DEFAULT_CACHE_CAPACITY as u64,
            broker: None,
            namespace: "routine".to_owned(),
            no_worker_wait: Duration::from_secs(30),
            gang_start_timeout: Duration::from_secs(60),
            policy: Policy::Local,
            concurrency: 4,
            execution: Execution::NONE,
            on_code_change: OnCodeChange::Warn,
            otlp_endpoint: None,
            file: file_path,
            program: None,
            origins: Origins {
                store: Origin::Default,
                broker: Origin::Default,
                policy: Origin::Default,
            },
        };

        // Each layer as (origin, value, base folder of relative paths).
        let layers = [
            Layer {
                origin: Origin::File,
                base: &file_dir,
                project: file.project,
                store: file.store,
                durability: file.durability,
                layout: file.layout,
                cache_capacity: file.cache_capacity.map(|size| match size {
                    SizeSetting::Bytes(bytes) => bytes.to_string(),
                    SizeSetting::Text(text) => text,
                }),
                broker: file.broker,
                namespace: file.namespace,
                policy: file.policy,
                no_worker_wait: file.no_worker_wait,
                gang_start_timeout: file.gang_start_timeout,
                concurrency: file.worker.concurrency.map(|n| n.to_string()),
                task_timeout: file.tasks.timeout,
                task_retries: file.tasks.retries.map(|n| n.to_string()),
                task_backoff: file.tasks.backoff,
                task_concurrency: file.tasks.concurrency.map(|n| n.to_string()),
                on_code_change: file.tasks.on_code_change,
                otlp_endpoint: file.telemetry.otlp_endpoint,
            },
            Layer {
                origin: Origin::Environment,
                base: dir,
                project: env("ROUTINE_PROJECT"),
                store: env("ROUTINE_STORE"),
                durability: env("ROUTINE_DURABILITY"),
                layout: env("ROUTINE_LAYOUT"),
                cache_capacity: env("ROUTINE_CACHE_CAPACITY"),
                broker: env("ROUTINE_BROKER"),
                namespace: env("ROUTINE_NAMESPACE"),
                policy: env("ROUTINE_POLICY"),
                no_worker_wait: env("ROUTINE_NO_WORKER_WAIT"),
                gang_start_timeout: env("ROUTINE_GANG_START_TIMEOUT"),
                concurrency: env("ROUTINE_CONCURRENCY"),
                task_timeout: env("ROUTINE_TASK_TIMEOUT"),
                task_retries: env("ROUTINE_TASK_RETRIES"),
                task_backoff: env("ROUTINE_TASK_BACKOFF"),
                task_concurrency: env("ROUTINE_TASK_CONCURRENCY"),
                on_code_change: env("ROUTINE_ON_CODE_CHANGE"),
                otlp_endpoint: env("ROUTINE_OTLP_ENDPOINT"),
            },
            Layer {
                origin: Origin::Flag,
                base: dir,
                project: None,
                store: overrides.store.clone(),
                durability: None,
                layout: None,
                cache_capacity: None,
                broker: overrides.broker.clone(),
                namespace: None,
                policy: overrides.policy.clone(),
                no_worker_wait: None,
                gang_start_timeout: None,
                concurrency: overrides.concurrency.map(|n| n.to_string()),
                task_timeout: overrides.task_timeout.clone(),
                task_retries: overrides.task_retries.clone(),
                task_backoff: None,
                task_concurrency: None,
                on_code_change: None,
                otlp_endpoint: None,
            },
        ];
        for layer in layers {
            layer.apply(&mut config)?;
        }
        // A broker without a chosen policy means "send work to it".
        if config.broker.is_some() && config.origins.policy == Origin::Default {
            config.policy = Policy::SubRoutinesRemote;
        }
        if config.broker.is_none() && config.policy == Policy::SubRoutinesRemote {
            return Err(ConfigError::Invalid {
                setting: "policy",
                origin: config.origins.policy,
                message: "`sub-routines-remote` sends work to workers, but no broker is set \
                          (set `broker` in routine.toml, ROUTINE_BROKER or --broker)"
                    .into(),
            });
        }
        Ok(config)
    }

    /// Opens the configured store, making it if need be: a folder by the
    /// rule of [`store::open_local`], with the configured layout (if set)
    /// and durability; any other URL goes to the distributed crate's
    /// [`open_url`](routine_distributed::open_url) (or fails, naming the
    /// feature, in a build without it).
    pub fn open_store(&self) -> Result<Arc<dyn Store>, Error> {
        match store::local_path(&self.store) {
            Some(path) => Ok(store::open_local(
                Path::new(path),
                self.layout,
                self.durability,
            )?),
            #[cfg(feature = "distributed")]
            None => Ok(routine_distributed::open_url(&self.store)?),
            #[cfg(not(feature = "distributed"))]
            None => Ok(store::open_url(&self.store)?),
        }
    }

    /// Opens the configured store to read it (`info`, `cache`, `runs`): a
    /// local folder that does not exist is an empty store, and is not made.
    pub fn open_store_to_read(&self) -> Result<Arc<dyn Store>, Error> {
        match store::local_path(&self.store) {
            Some(path) if !Path::new(path).exists() => Ok(Arc::new(store::MemoryStore::new())),
            _ => self.open_store(),
        }
    }

    /// The layout of the configured local store: its own, or the one it
    /// will be made in (then with `true`: a new store); `None` for a store
    /// that is not a folder.
    pub fn local_layout(&self) -> Option<(Layout, bool)> {
        let path = store::local_path(&self.store)?;
        Some(match store::layout_of(Path::new(path)) {
            Some(layout) => (layout, false),
            None => (self.layout.unwrap_or_default(), true),
        })
    }

    /// Where a setting came from, for people: the configuration file by its
    /// name (`routine.toml`, or the one `--config` named).
    pub fn origin_text(&self, origin: Origin) -> String {
        match (origin, &self.file) {
            (Origin::File, Some(file)) => file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            (origin, _) => origin.to_string(),
        }
    }

    /// The store, for messages: credentials redacted.
    pub fn store_display(&self) -> String {
        redact_url(&self.store)
    }

    /// The broker, for messages: credentials redacted.
    pub fn broker_display(&self) -> Option<String> {
        self.broker.as_deref().map(redact_url)
    }

    /// An engine builder over the configured store, with the configured
    /// cache; [`Config::engine`] adds the broker.
    pub fn engine_builder(&self) -> Result<EngineBuilder, Error> {
        let capacity = usize::try_from(self.cache_capacity).unwrap_or(usize::MAX);
        Ok(Engine::builder(self.open_store()?)
            .cache_capacity(capacity)
            .execution(self.execution)
            .on_code_change(self.on_code_change))
        .map(|builder| match &self.program {
            Some(p) => builder.program(&p.name, &p.version, p.commit.as_deref()),
            None => builder,
        })
    }

    /// Builds the engine the configuration describes, connecting to the
    /// broker if one is set. `adjust` adds to the builder (an observer, say).
    pub async fn engine(
        &self,
        adjust: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Result<Engine, Error> {
        let builder = adjust(self.engine_builder()?);
        // A remote store, or one shared with workers: an unusable one (a
        // missing bucket, no credentials) fails now, with one message, not
        // as a warning at every call.
        if self.broker.is_some() || store::local_path(&self.store).is_none() {
            routine_core::store::probe(&**builder.store()).await?;
        }
        match &self.broker {
            None => builder.build(),
            #[cfg(feature = "distributed")]
            Some(url) => {
                let mut distributed = routine_distributed::DistributedConfig::new(url, &self.store);
                distributed.namespace.clone_from(&self.namespace);
                distributed.dispatch.no_worker_wait = self.no_worker_wait;
                distributed.dispatch.gang_start_timeout = self.gang_start_timeout;
                distributed.policy = self.policy;
                routine_distributed::attach(builder, &distributed)
                    .await
                    .map_err(|e| match e {
                        routine_distributed::Error::Engine(e) => e,
                        routine_distributed::Error::Store(e) => Error::Store(e),
                        other => Error::Config(other.to_string()),
                    })
            }
            #[cfg(not(feature = "distributed"))]
            Some(_) => Err(Error::Config(
                "a broker is configured, but this program was built without routine's \
                 `distributed` feature"
                    .into(),
            )),
        }
    }
}

/// One layer's raw values.
struct Layer<'a> {
    origin: Origin,
    base: &'a Path,
    project: Option<String>,
    store: Option<String>,
    durability: Option<String>,
    layout: Option<String>,
    cache_capacity: Option<String>,
    broker: Option<String>,
    namespace: Option<String>,
    policy: Option<String>,
    no_worker_wait: Option<String>,
    gang_start_timeout: Option<String>,
    concurrency: Option<String>,
    task_timeout: Option<String>,
    task_retries: Option<String>,
    task_backoff: Option<String>,
    task_concurrency: Option<String>,
    on_code_change: Option<String>,
    otlp_endpoint: Option<String>,
}

impl Layer<'_> {
    fn apply(self, config: &mut Config) -> Result<(), ConfigError> {
        let origin = self.origin;
        let invalid = |setting: &'static str, message: String| ConfigError::Invalid {
            setting,
            origin,
            message,
        };
        if let Some(project) = self.project {
            config.project = project;
        }
        if let Some(store) = self.store {
            if store.trim().is_empty() {
                return Err(invalid("store", "it is empty".into()));
            }
            config.store = match store.contains("://") {
                true => store,
                false => self.base.join(store).display().to_string(),
            };
            config.origins.store = origin;
        }
        if let Some(durability) = self.durability {
            config.durability = match durability.as_str() {
                "process" => Durability::Process,
                "fsync" => Durability::Fsync,
                other => {
                    return Err(invalid(
                        "durability",
                        format!("unknown durability `{other}`: use `process` or `fsync`"),
                    ))
                }
            };
        }
        if let Some(layout) = self.layout {
            config.layout = Some(layout.parse().map_err(|m| invalid("layout", m))?);
        }
        if let Some(capacity) = self.cache_capacity {
            config.cache_capacity =
                parse_size(&capacity).map_err(|message| invalid("cache_capacity", message))?;
        }
        if let Some(broker) = self.broker {
            // An empty value turns off a broker set by a lower layer.
            config.broker = Some(broker).filter(|b| !b.trim().is_empty());
            config.origins.broker = origin;
        }
        if let Some(namespace) = self.namespace {
            config.namespace = namespace;
        }
        if let Some(wait) = self.no_worker_wait {
            config.no_worker_wait =
                positive_duration(&wait).map_err(|m| invalid("no_worker_wait", m))?;
        }
        if let Some(wait) = self.gang_start_timeout {
            config.gang_start_timeout =
                positive_duration(&wait).map_err(|m| invalid("gang_start_timeout", m))?;
        }
        if let Some(policy) = self.policy {
            config.policy = policy
                .parse()
                .map_err(|message| invalid("policy", message))?;
            config.origins.policy = origin;
        }
        if let Some(concurrency) = self.concurrency {
            config.concurrency = match concurrency.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(invalid(
                        "concurrency",
                        format!("`{concurrency}` is not a positive number of routines"),
                    ))
                }
            };
        }
        if let Some(policy) = self.on_code_change {
            config.on_code_change = policy
                .trim()
                .parse()
                .map_err(|m| invalid("tasks.on_code_change", m))?;
        }
        if let Some(endpoint) = self.otlp_endpoint {
            // An empty value turns off an endpoint set by a lower layer.
            let endpoint = endpoint.trim();
            config.otlp_endpoint = match endpoint {
                "" => None,
                url if url.starts_with("http://") || url.starts_with("https://") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                other => {
                    return Err(invalid(
                        "telemetry.otlp_endpoint",
                        format!("`{other}` is not an http:// or https:// URL of an OTLP collector"),
                    ))
                }
            };
        }
        let execution = &mut config.execution;
        if let Some(timeout) = self.task_timeout {
            execution.timeout =
                Some(positive_duration(&timeout).map_err(|m| invalid("tasks.timeout", m))?);
        }
        if let Some(backoff) = self.task_backoff {
            execution.backoff =
                Some(positive_duration(&backoff).map_err(|m| invalid("tasks.backoff", m))?);
        }
        if let Some(retries) = self.task_retries {
            execution.retries = match retries.trim().parse::<u32>() {
                Ok(n) if n <= MAX_RETRIES => Some(n),
                _ => {
                    return Err(invalid(
                        "tasks.retries",
                        format!("`{retries}` is not a whole number from 0 to {MAX_RETRIES}"),
                    ))
                }
            };
        }
        if let Some(limit) = self.task_concurrency {
            execution.concurrency = match limit.trim().parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(invalid(
                        "tasks.concurrency",
                        format!("`{limit}` is not a positive number of calls"),
                    ))
                }
            };
        }
        Ok(())
    }
}

/// `"10m"`, `"1h 30m"`: a positive duration in humantime's units.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!("`{text}` is zero; give a positive duration such as \"10m\"")),
        Err(e) => Err(format!(
            "`{text}` is not a duration ({e}); write a number and a unit, such as \"90s\" or \"10m\""
        )),
    }
}

fn read_file(path: &Path) -> Result<FileLayer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Parses `"10GiB"`, `"500MB"`, `"64 MiB"`, `"1024"` (bytes). Decimal units
/// (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of
/// 1024.
///
/// ```
/// use routine_cli::config::parse_size;
/// assert_eq!(parse_size("10GiB"), Ok(10 << 30));
/// assert_eq!(parse_size("1.5 kB"), Ok(1500));
/// assert!(parse_size("ten").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}` is not a size: unknown unit `{other}` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write a number and a unit, such as 10GiB"))?;
    let bytes = value * multiplier as f64;
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(dir: &Path, env: &[(&str, &str)], overrides: Overrides) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(dir, "demo", &overrides, |name| env.get(name).cloned())
    }

    #[test]
    fn task_defaults_come_from_every_layer_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "[tasks]\ntimeout = '1h'\nretries = 2\nbackoff = '5s'\nconcurrency = 3\non_code_change = 'rerun'\n",
        )
        .unwrap();
        let config = load(
            dir.path(),
            &[("ROUTINE_TASK_RETRIES", "4")],
            Overrides {
                task_timeout: Some("90s".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let e = config.execution;
        assert_eq!(e.timeout, Some(Duration::from_secs(90)), "the flag wins");
        assert_eq!(e.retries, Some(4), "the environment beats the file");
        assert_eq!(e.backoff, Some(Duration::from_secs(5)));
        assert_eq!(e.concurrency, Some(3));
        assert_eq!(config.on_code_change, OnCodeChange::Rerun);
        let warned = load(
            dir.path(),
            &[("ROUTINE_ON_CODE_CHANGE", "warn")],
            Overrides::default(),
        );
        assert_eq!(
            warned.unwrap().on_code_change,
            OnCodeChange::Warn,
            "the environment beats the file"
        );

        for (name, value, setting) in [
            ("ROUTINE_TASK_TIMEOUT", "soon", "tasks.timeout"),
            ("ROUTINE_TASK_TIMEOUT", "0s", "tasks.timeout"),
            ("ROUTINE_TASK_RETRIES", "101", "tasks.retries"),
            ("ROUTINE_TASK_BACKOFF", "-1s", "tasks.backoff"),
            ("ROUTINE_TASK_CONCURRENCY", "0", "tasks.concurrency"),
            (
                "ROUTINE_ON_CODE_CHANGE",
                "sometimes",
                "tasks.on_code_change",
            ),
            (
                "ROUTINE_OTLP_ENDPOINT",
                "127.0.0.1:4318",
                "telemetry.otlp_endpoint",
            ),
        ] {
            let error = load(dir.path(), &[(name, value)], Overrides::default()).unwrap_err();
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("{setting} (from environment)")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_otlp_endpoint_comes_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("routine.toml"),
            "[telemetry]\notlp_endpoint = 'http://collector:4318/'\n",
        )
        .unwrap();
        let config = load(dir.path(), &[], Overrides::default()).unwrap();
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        let off = load(
            dir.path(),
            &[("ROUTINE_OTLP_ENDPOINT", "")],
            Overrides::default(),
        );
        assert_eq!(
            off.unwrap().otlp_endpoint,
            None,
            "an empty value turns it off"
        );
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = load(dir.path(), &[], Overrides::default()).unwrap();
        assert_eq!(
            defaults.store,
            dir.path().join(".routine").display().to_string()
        );
        assert_eq!(
            (defaults.policy, defaults.origins.store),
            (Policy::Local, Origin::Default)
        );
        assert!(defaults.file.is_none());

        std::fs::write(
            dir.path().join(FILE_NAME),
            "project = 'ml'\nstore = 'from-file'\nbroker = 'redis://file'\n[worker]\nconcurrency = 2\n",
        )
        .unwrap();
        let file = load(dir.path(), &[], Overrides::default()).unwrap();
        assert_eq!(file.project, "ml");
        assert_eq!(
            file.store,
            dir.path().join("from-file").display().to_string()
        );
        assert_eq!(file.concurrency, 2);
        assert_eq!(
            file.policy,
            Policy::SubRoutinesRemote,
            "a broker sends work to workers"
        );

        let env = [
            ("ROUTINE_STORE", "s3://bucket/x"),
            ("ROUTINE_POLICY", "local"),
        ];
        let from_env = load(dir.path(), &env, Overrides::default()).unwrap();
        assert_eq!(
            (from_env.store.as_str(), from_env.origins.store),
            ("s3://bucket/x", Origin::Environment)
        );
        assert_eq!(from_env.policy, Policy::Local);

        let flags = Overrides {
            store: Some("flagged".into()),
            broker: Some(String::new()),
            ..Overrides::default()
        };
        let from_flags = load(dir.path(), &env, flags).unwrap();
        assert_eq!(
            from_flags.store,
            dir.path().join("flagged").display().to_string()
        );
        assert_eq!(from_flags.origins.store, Origin::Flag);
        assert_eq!(
            from_flags.broker, None,
            "an empty flag turns the broker off"
        );
    }

    #[test]
    fn bad_settings_say_what_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let error = load(
            dir.path(),
            &[("ROUTINE_POLICY", "everywhere")],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("policy (from environment)"), "{error}");
        assert!(error.contains("unknown policy `everywhere`"), "{error}");

        let error = load(
            dir.path(),
            &[("ROUTINE_POLICY", "remote")],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("no broker is set"), "{error}");

        std::fs::write(dir.path().join(FILE_NAME), "stroe = 'x'\n").unwrap();
        let error = load(dir.path(), &[], Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `stroe`"), "{error}");
        assert!(error.contains("line 1"), "{error}");

        let missing = Overrides {
            config: Some("nope.toml".into()),
            ..Overrides::default()
        };
        let error = load(dir.path(), &[], missing).unwrap_err().to_string();
        assert!(
            error.contains("cannot read the configuration file"),
            "{error}"
        );
    }

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("0.5GiB"), Ok(512 << 20));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("").is_err());
    }
}
