/*!
Starting the coordinator role: its registered flows, its database and
history, its reply queue (and, on a coordinator node, the submissions
queue), the actor, the pumps that feed it, and the handle the rest of the
node uses.
*/

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conveyor_config::{CoordinatorConfig, CoordinatorMode};
use conveyor_transport::failpoint::Failpoints;
use conveyor_transport::fatal::Fatal;
use conveyor_transport::tasks::IoTasks;
use conveyor_transport::{Names, Transport, TransportError};
use tokio::sync::mpsc;
use tracing::info;

use crate::actor::{Coordinator, CoordinatorSetup, HeartbeatSeen};
use crate::handle::CoordinatorHandle;
use crate::history::History;
use crate::pumps::{pump_replies, pump_submissions};
use crate::remote::CLIENT_REPLY_QUEUE_EXPIRY;
use crate::runstore::{RunStore, StoreError};
use crate::schedules::{Registry, RegistryError};

/// Why the coordinator role did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What the coordinator role needs from its node.
pub struct Setup<'a> {
    /// The node's name: its reply queue's, and its runs' `coordinator`.
    pub node: &'a str,
    /// A coordinator node (durable) or `conveyor run`'s (one run, in memory).
    pub mode: CoordinatorMode,
    pub config: &'a CoordinatorConfig,
    pub transport: Transport,
    pub names: &'a Names,
    /// The node's I/O runtime, where the pumps run.
    pub io: IoTasks,
    /// Where the coordinator says that the node must exit.
    pub fatal: mpsc::UnboundedSender<Fatal>,
}

/// A running coordinator role.
pub struct Started {
    /// How the rest of the node (CLI, API, dashboard) talks to it.
    pub handle: CoordinatorHandle,
    /// The actor, to stop it ([`crate::stop`]).
    pub addr: Addr<Coordinator>,
}

async fn on_io<T: Send + 'static>(
    io: &IoTasks,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, StartError> {
    io.spawn(fut)
        .await
        .map_err(|e| StartError::Internal(e.to_string()))
}

/// Starts the coordinator role. Call it inside an actix `System`.
pub async fn start(s: Setup<'_>) -> Result<Started, StartError> {
    let Setup {
        node,
        mode,
        config,
        transport,
        names,
        io,
        fatal,
    } = s;
    // Registered flows are a coordinator node's; a bad one stops it before
    // it takes any run.
    let registry = match (mode, &config.flows) {
        (CoordinatorMode::Service, Some(dir)) => Some(Arc::new(Registry::load(dir)?)),
        _ => None,
    };
    // Only a coordinator node is durable: `conveyor run` holds one run that
    // lives and dies with the process.
    let store = match (mode, &config.db) {
        (CoordinatorMode::Service, Some(path)) => {
            let store = RunStore::open(path)?;
            info!(db = %path.display(), "Coordinator database open");
            store
        }
        _ => RunStore::Memory,
    };
    let db = store.path().map(std::path::Path::to_path_buf);
    let history = db
        .as_deref()
        .map(|path| History::open(path, config.log_lines))
        .transpose()?;
    let (queue, expires) = match mode {
        CoordinatorMode::Client => {
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
            (
                names.reply_queue(&format!("{node}.{suffix}")),
                Some(CLIENT_REPLY_QUEUE_EXPIRY),
            )
        }
        _ => (names.reply_queue(node), None::<Duration>),
    };
    let (t, q) = (transport.clone(), queue.clone());
    let replies = on_io(&io, async move { t.consume_replies(&q, expires).await }).await??;
    let t = transport.clone();
    let mut heartbeats = on_io(&io, async move { t.consume_heartbeats().await }).await??;
    let addr = Coordinator::new(CoordinatorSetup {
        node: node.to_string(),
        transport: transport.clone(),
        io: io.clone(),
        reply_queue: queue.clone(),
        worker_wait: config.worker_wait,
        store,
        failpoints: Failpoints::from_env(),
        fatal,
        history: history.clone(),
        notify: config.notify.clone(),
        registry: registry.clone(),
        secrets: config.secrets.clone(),
    })
    .start();
    let a = addr.clone();
    io.spawn(async move {
        while let Some(hb) = heartbeats.recv().await {
            a.do_send(HeartbeatSeen(hb));
        }
    });
    io.spawn(pump_replies(
        transport.clone(),
        queue,
        expires,
        replies,
        addr.clone(),
        history,
    ));
    if mode == CoordinatorMode::Service {
        let t = transport.clone();
        let subs = on_io(&io, async move { t.consume_submissions().await }).await??;
        io.spawn(pump_submissions(transport, subs, addr.clone()));
    }
    let handle = CoordinatorHandle::new(addr.clone(), db.as_deref())?.with_registry(registry);
    Ok(Started { handle, addr })
}
