/*!
Starting the worker role: its directories and artifact store, the
housekeeping of finished runs, and the supervisor with one worker actor per
kind.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use conveyor_config::NodeConfig;
use conveyor_etl::policy::SourcePolicy;
use conveyor_etl::store::ArtifactStore;
use conveyor_etl::{FsStore, Workspace};
use conveyor_schemas::TaskKind;
use conveyor_transport::failpoint::Failpoints;
use conveyor_transport::fatal::Fatal;
use conveyor_transport::tasks::IoTasks;
use conveyor_transport::Transport;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::cancel::RunCancels;
use crate::housekeeping::housekeeping;
use crate::metrics::WorkerMetrics;
use crate::supervisor::Supervisor;
use crate::worker::WorkerEnv;

/// Why the worker role did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what} {}: {source}", path.display())]
    Dir {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the worker role needs from its node.
pub struct Setup<'a> {
    pub config: &'a NodeConfig,
    /// Each kind this node runs, with its concurrency.
    pub kinds: &'a BTreeMap<TaskKind, usize>,
    pub transport: Transport,
    /// The node's I/O runtime, where the broker work runs.
    pub io: IoTasks,
    /// Where a worker kind that keeps crashing says that the node must exit.
    pub fatal: mpsc::UnboundedSender<Fatal>,
    /// Set when the node stops, for the housekeeping.
    pub stopping: watch::Receiver<bool>,
    /// Told the kinds that consume their queue now.
    pub consuming: watch::Sender<BTreeSet<TaskKind>>,
}

/// Starts the worker role. Call it inside an actix `System`.
pub async fn start(s: Setup<'_>) -> Result<Addr<Supervisor>, StartError> {
    let Setup {
        config: cfg,
        kinds,
        transport,
        io,
        fatal,
        stopping,
        consuming,
    } = s;
    for (what, path) in [
        ("artifact store", &cfg.artifacts),
        ("output root", &cfg.output_root),
    ] {
        std::fs::create_dir_all(path).map_err(|source| StartError::Dir {
            what,
            path: path.clone(),
            source,
        })?;
    }
    let store: Arc<dyn ArtifactStore> = Arc::new(FsStore::new(&cfg.artifacts));
    let t = transport.clone();
    let runs_finished = match io
        .spawn(async move { t.consume_runs_finished().await })
        .await
    {
        Ok(Ok(rx)) => Some(rx),
        Ok(Err(e)) => {
            // Best effort: without the events, the hourly sweep removes
            // succeeded runs after keep_failed instead.
            warn!(error = %e, "Cannot hear of runs that end (broker permissions on the events exchange?); their artifacts are swept after keep_failed");
            None
        }
        Err(e) => {
            warn!(error = %e, "Cannot hear of runs that end; their artifacts are swept after keep_failed");
            None
        }
    };
    let cancels = RunCancels::default();
    io.spawn(housekeeping(
        store.clone(),
        cancels.clone(),
        runs_finished,
        cfg.keep_failed,
        stopping,
    ));
    let env = WorkerEnv {
        node: cfg.node_name.clone(),
        transport,
        io,
        workspace: Workspace {
            store,
            output_root: cfg.output_root.clone(),
            max_record_bytes: cfg.max_record_bytes,
            sources: SourcePolicy {
                input_roots: cfg.input_roots.clone(),
                allow_urls: cfg.allow_urls.clone(),
            },
            connectors: conveyor_connectors::registry::runtime(),
        },
        in_flight: Default::default(),
        failpoints: Failpoints::from_env(),
        consuming: Arc::new(consuming),
        metrics: WorkerMetrics::new(kinds.keys().copied()),
        cancels,
        secrets: cfg.secrets.clone(),
    };
    let prefetch = cfg.broker.as_ref().and_then(|b| b.prefetch);
    Ok(Supervisor::new(kinds.clone(), prefetch, env, cfg.heartbeat, fatal).start())
}
