//! `worker` and `status`: this program as a worker, and the broker's view of
//! the workers.

use crate::args::{JsonOnly, WorkerArgs};
use crate::config::Config;
use crate::failure::Failure;
use crate::output::Ui;

#[cfg(feature = "distributed")]
fn no_broker() -> Failure {
    Failure::usage(
        "no broker is configured: set `broker` in routine.toml, ROUTINE_BROKER or --broker \
         (for example redis://127.0.0.1:6379)",
    )
}

#[cfg(not(feature = "distributed"))]
fn not_built() -> Failure {
    Failure::usage(
        "this program was built without routine's `distributed` feature: it cannot talk to a broker",
    )
}

#[cfg(feature = "distributed")]
pub(crate) async fn worker(config: &Config, ui: Ui, args: &WorkerArgs) -> Result<(), Failure> {
    use routine_distributed::worker::{serve_until_signalled, WorkerConfig, WorkerError};

    if config.broker.is_none() {
        return Err(no_broker());
    }
    // With `--metrics`, the worker's calls are counted and served until
    // the worker stops (dropping `_serving` stops the server).
    #[cfg(feature = "ui")]
    let (engine, _serving) = {
        let settings = (args.metrics)
            .map(|bind| routine_ui::Settings::new(bind, std::env::var("ROUTINE_UI_TOKEN").ok()))
            .transpose()
            .map_err(|e| Failure::usage(e.to_string()))?;
        let metrics = routine_ui::CallMetrics::default();
        let engine = config
            .engine(|builder| match settings.is_some() {
                true => builder.on_call(metrics.observer()),
                false => builder,
            })
            .await?;
        let serving = settings.map(|settings| {
            let (serving, stopped) = tokio::sync::oneshot::channel::<()>();
            let served = routine_ui::serve_call_metrics(engine.clone(), metrics, settings, async {
                let _ = stopped.await;
            });
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "the worker's metrics are not served");
                }
            });
            serving
        });
        (engine, serving)
    };
    #[cfg(not(feature = "ui"))]
    let engine = {
        let _ = args;
        config.engine(|builder| builder).await?
    };
    let settings = WorkerConfig {
        concurrency: config.concurrency,
        ..WorkerConfig::default()
    };
    tracing::info!(
        store = %config.store_display(),
        broker = config.broker_display().unwrap_or_default(),
        concurrency = config.concurrency,
        "serving as a worker until SIGTERM or Ctrl-C"
    );
    // Said to the person who started it, whatever the log level; not a
    // warning, as a log line at WARN would make it.
    if !ui.quiet {
        eprintln!(
            "serving as a worker of {} on {} ({} at once) until SIGTERM or Ctrl-C",
            config.broker_display().unwrap_or_default(),
            config.store_display(),
            config.concurrency
        );
    }
    match serve_until_signalled(engine, settings).await {
        Ok(()) => Ok(()),
        Err(e @ WorkerError::NothingToServe(_)) => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure::failed(format!("the worker stopped: {e}"))),
    }
}

#[cfg(not(feature = "distributed"))]
pub(crate) async fn worker(_: &Config, _ui: Ui, _: &WorkerArgs) -> Result<(), Failure> {
    Err(not_built())
}

#[cfg(feature = "distributed")]
pub(crate) async fn status(config: &Config, args: &JsonOnly) -> Result<(), Failure> {
    use std::time::SystemTime;

    use serde::Serialize;

    use crate::output::{self, Table};
    use routine_distributed::broker::{Broker, Retry};

    #[derive(Serialize)]
    struct Row {
        worker: String,
        state: String,
        routine: Option<String>,
        last_heartbeat: u64,
        routines: Vec<String>,
        waiting_for_slot: u64,
        slots: u32,
        /// The units of gangs it runs.
        gang_units: Vec<GangUnit>,
    }

    #[derive(Serialize)]
    struct GangUnit {
        gang: String,
        task: String,
        call: String,
        rank: usize,
        units: usize,
    }

    let url = config.broker.as_deref().ok_or_else(no_broker)?;
    let broker = Broker::connect(url, &config.namespace, Retry::default())
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    let workers = broker
        .workers()
        .await
        .map_err(|e| Failure::usage(format!("cannot read the workers: {e}")))?;
    let gangs = broker
        .gangs()
        .await
        .map_err(|e| Failure::usage(format!("cannot read the gangs: {e}")))?;
    let units_on = |worker: &str| -> Vec<GangUnit> {
        (gangs.running.iter())
            .flat_map(|gang| {
                (gang.units.iter())
                    .filter(move |(_, on)| on == worker)
                    .map(move |(rank, _)| GangUnit {
                        gang: gang.id.clone(),
                        task: gang.task.clone(),
                        call: gang.call.clone(),
                        rank: *rank,
                        units: gang.units.len(),
                    })
            })
            .collect()
    };
    let rows: Vec<Row> = workers
        .into_iter()
        .map(|w| Row {
            gang_units: units_on(&w.id),
            worker: w.id,
            state: w.status.to_string(),
            routine: w.routine,
            last_heartbeat: output::unix_seconds(w.last_seen),
            routines: w.routines,
            waiting_for_slot: w.waiting_for_slot,
            slots: w.slots,
        })
        .collect();
    if args.json {
        return output::print_json(&rows);
    }
    if rows.is_empty() {
        return output::print(&format!(
            "no worker is connected to {} in namespace `{}` (ROUTINE_NAMESPACE)\n",
            config.broker_display().unwrap_or_default(),
            config.namespace
        ));
    }
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "WORKER",
        "STATE",
        "ROUTINE",
        "HEARTBEAT",
        "SERVES",
        "SLOTS",
        "WAITING FOR A SLOT",
    ]);
    for row in rows {
        let seen = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(row.last_heartbeat);
        table.row(vec![
            row.worker,
            row.state,
            row.routine.unwrap_or_else(|| "-".into()),
            output::age(seen, now),
            format!("{} routines", row.routines.len()),
            row.slots.to_string(),
            row.waiting_for_slot.to_string(),
        ]);
    }
    table.print()?;
    if !gangs.running.is_empty() {
        output::print("\nGangs running (multi-unit calls):\n")?;
        let mut table = Table::new(&["GANG", "TASK", "CALL", "UNITS (RANK@WORKER)"]);
        for gang in &gangs.running {
            let units: Vec<String> = (gang.units.iter())
                .map(|(rank, worker)| format!("{rank}@{worker}"))
                .collect();
            table.row(vec![
                gang.id.clone(),
                gang.task.clone(),
                gang.call.chars().take(12).collect(),
                units.join(" "),
            ]);
        }
        table.print()?;
    }
    if !gangs.waiting.is_empty() {
        output::print("\nGangs waiting for free slots (all their units start together):\n")?;
        let mut table = Table::new(&["GANG", "TASK", "NEEDS"]);
        for gang in &gangs.waiting {
            let needs = match gang.least == gang.most {
                true => format!("{} units", gang.least),
                false => format!("{}..={} units", gang.least, gang.most),
            };
            table.row(vec![gang.id.clone(), gang.task.clone(), needs]);
        }
        table.print()?;
    }
    Ok(())
}

/// Without the feature there is nothing to show, whatever is configured:
/// said first, before asking for a broker that would not help.
#[cfg(not(feature = "distributed"))]
pub(crate) async fn status(_: &Config, _: &JsonOnly) -> Result<(), Failure> {
    Err(not_built())
}
