//! The web view of a routine store: runs, one run's calls, one call (its
//! value, who wrote it, why it would hit or run), tasks, and Prometheus
//! metrics, server-rendered and read-only. A program's `ui` subcommand
//! (feature `ui` of routine-engine) serves it.
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn routine_core::store::Store>) -> Result<(), routine_ui::UiError> {
//! let settings = routine_ui::Settings::new("127.0.0.1:8765".parse().unwrap(), None)?;
//! routine_ui::serve(store, None, settings, std::future::pending()).await
//! # }
//! ```
//!
//! | module | concern |
//! |---|---|
//! | `access` | who may read: loopback, or a token on every request |
//! | `assets` | the vendored scripts (htmx), embedded |
//! | `pages` | the pages, as HTML |
//! | `graph` | a run's lineage, laid out as SVG: by task, or one call's neighbourhood |
//! | `cluster` | what the workers page shows, and the `Cluster` that reads it |
//! | `workers` | `/workers`, and its live table (server-sent events) |
//! | `metrics` | the store's `/metrics` in Prometheus' text format |
//! | `calls` | a process's calls for Prometheus: by task and outcome, durations; a worker's `--metrics` |
//! | `exposition` | Prometheus' text format: headers, labels, content type |

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use routine_core::store::Store;

mod access;
mod assets;
mod calls;
mod cluster;
mod exposition;
mod graph;
mod metrics;
mod pages;
mod workers;

pub use crate::calls::CallMetrics;
pub use crate::cluster::{
    Cluster, ClusterSnapshot, DeadLetterRow, GangRow, Snapshot, WaitingGangRow, WorkerRow,
};

/// Where the view listens, and the token it asks for.
#[derive(Debug, Clone)]
pub struct Settings {
    bind: SocketAddr,
    token: Option<String>,
}

impl Settings {
    /// Checked settings: a non-loopback address needs a token (anyone who
    /// can reach the port could read every stored argument and result).
    ///
    /// ```
    /// use routine_ui::Settings;
    /// assert!(Settings::new("127.0.0.1:8765".parse().unwrap(), None).is_ok());
    /// assert!(Settings::new("0.0.0.0:8765".parse().unwrap(), None).is_err());
    /// assert!(Settings::new("0.0.0.0:8765".parse().unwrap(), Some("s3cret".into())).is_ok());
    /// ```
    pub fn new(bind: SocketAddr, token: Option<String>) -> Result<Settings, UiError> {
        let token = token.filter(|t| !t.is_empty());
        if !bind.ip().is_loopback() && token.is_none() {
            return Err(UiError::TokenRequired(bind));
        }
        Ok(Settings { bind, token })
    }
}

/// The view cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// A non-loopback address without a token.
    #[error(
        "`{0}` is not a loopback address: serving the store there needs a token \
         (--token or ROUTINE_UI_TOKEN), which every request must then carry"
    )]
    TokenRequired(SocketAddr),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the web view stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// What every page reads from.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cluster: Option<Arc<dyn Cluster>>,
}

/// Serves the view of `store` (and of `cluster`'s workers, when the
/// program has a broker) until `shutdown` resolves. The address it listens
/// on is printed (for port 0, the one the system chose).
pub async fn serve(
    store: Arc<dyn Store>,
    cluster: Option<Arc<dyn Cluster>>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let view = View { store, cluster };
    let app = Router::new()
        .route("/", get(pages::runs))
        .route("/events/runs", get(pages::runs_events))
        .route("/runs/{id}", get(pages::run))
        .route("/calls/{name}/{version}/{key}", get(pages::call))
        .route("/tasks", get(pages::tasks))
        .route("/workers", get(workers::page))
        .route("/workers/events", get(workers::events))
        .route("/metrics", get(metrics::metrics))
        .route("/assets/{name}", get(assets::asset))
        .fallback(pages::not_found)
        .with_state(view);
    run(app, settings, "the store's web view", shutdown).await
}

/// Serves `/metrics` of one process's calls (`metrics`, fed by `engine`'s
/// observer) on `settings`' address until `shutdown` resolves: what a
/// worker's `--metrics ADDR:PORT` serves.
pub async fn serve_call_metrics(
    engine: routine_core::Engine,
    metrics: CallMetrics,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.text(&engine);
            async move {
                let content_type = (axum::http::header::CONTENT_TYPE, exposition::CONTENT_TYPE);
                ([content_type], text)
            }
        }),
    );
    run(app, settings, "this worker's metrics", shutdown).await
}

/// Serves `app` on `settings`' address, every request checked for the
/// token, until `shutdown` resolves.
async fn run(
    app: Router,
    settings: Settings,
    what: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|source| UiError::Bind {
            addr: settings.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(UiError::Serve)?;
    tracing::info!(%addr, "serving {what}");
    eprintln!("serving {what} on http://{addr}/");
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(settings.token),
        access::check,
    ));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(UiError::Serve)
}
