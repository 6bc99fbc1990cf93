//! `ui`: serves routine-ui's web view of the configured store until Ctrl-C.

use crate::args::UiArgs;
use crate::config::Config;
use crate::failure::Failure;

pub(crate) async fn ui(config: &Config, args: UiArgs) -> Result<(), Failure> {
    let token = args
        .token
        .or_else(|| std::env::var("ROUTINE_UI_TOKEN").ok());
    let settings =
        routine_ui::Settings::new(args.bind, token).map_err(|e| Failure::usage(e.to_string()))?;
    let store = config.open_store_to_read()?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    routine_ui::serve(store, cluster(config).await?, settings, stop)
        .await
        .map_err(|e| match e {
            routine_ui::UiError::Serve(_) => Failure::failed(e.to_string()),
            _ => Failure::usage(e.to_string()),
        })
}

/// The workers the configured broker knows, for the workers page.
#[cfg(feature = "distributed")]
async fn cluster(
    config: &Config,
) -> Result<Option<std::sync::Arc<dyn routine_ui::Cluster>>, Failure> {
    use routine_distributed::broker::{Broker, Retry};

    let Some(url) = config.broker.as_deref() else {
        return Ok(None);
    };
    let broker = Broker::connect(url, &config.namespace, Retry::default())
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Some(std::sync::Arc::new(BrokerCluster(broker))))
}

#[cfg(not(feature = "distributed"))]
async fn cluster(_: &Config) -> Result<Option<std::sync::Arc<dyn routine_ui::Cluster>>, Failure> {
    Ok(None)
}

/// The most dead letters the workers page lists.
#[cfg(feature = "distributed")]
const DEAD_LETTERS_SHOWN: usize = 20;

#[cfg(feature = "distributed")]
struct BrokerCluster(routine_distributed::broker::Broker);

#[cfg(feature = "distributed")]
impl routine_ui::Cluster for BrokerCluster {
    fn snapshot(&self) -> routine_ui::Snapshot<'_> {
        Box::pin(async move {
            let workers = self.0.workers().await.map_err(|e| e.to_string())?;
            let gangs = self.0.gangs().await.map_err(|e| e.to_string())?;
            let dead =
                (self.0.dead_letters(DEAD_LETTERS_SHOWN).await).map_err(|e| e.to_string())?;
            let mut routines: Vec<routine_core::RoutineId> = (workers.iter())
                .flat_map(|w| w.routines.iter().filter_map(|r| r.parse().ok()))
                .collect();
            routines.sort_by_key(ToString::to_string);
            routines.dedup();
            let queued = self.0.queued(&routines).await.map_err(|e| e.to_string())?;
            Ok(routine_ui::ClusterSnapshot {
                workers: (workers.into_iter())
                    .map(|w| routine_ui::WorkerRow {
                        id: w.id,
                        state: w.status.to_string(),
                        routine: w.routine,
                        last_seen: w.last_seen,
                        serves: w.routines.len(),
                        slots: w.slots,
                        waiting_for_slot: w.waiting_for_slot,
                    })
                    .collect(),
                gangs_running: (gangs.running.into_iter())
                    .map(|g| routine_ui::GangRow {
                        id: g.id,
                        task: g.task,
                        call: g.call,
                        units: g.units,
                    })
                    .collect(),
                gangs_waiting: (gangs.waiting.into_iter())
                    .map(|g| routine_ui::WaitingGangRow {
                        id: g.id,
                        task: g.task,
                        units: (g.least, g.most),
                    })
                    .collect(),
                queued: (routines.iter().map(ToString::to_string))
                    .zip(queued)
                    .collect(),
                dead_letters: (dead.into_iter())
                    .map(|d| routine_ui::DeadLetterRow {
                        at: d.at,
                        task: d.task,
                        key: d.key,
                        deliveries: d.deliveries,
                    })
                    .collect(),
            })
        })
    }
}
