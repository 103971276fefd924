/*!
A node: the roles its config lists, composed. [`Node::start`] connects the
transport, then starts the worker role (`conveyor_worker::start`) and the
coordinator role (`conveyor_coordinator::start`) on it; [`Node::shutdown`]
stops them gracefully.

Call [`Node::start`] inside an actix `System`. `io` is a multi-thread tokio
runtime owned by the caller; lapin and every broker future run there.
*/

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conveyor_config::{BrokerConfig, NodeConfig, Roles};
use conveyor_coordinator::actor::{Coordinator, Submitted};
use conveyor_coordinator::remote::{RemoteRun, SubmitError};
use conveyor_coordinator::CoordinatorHandle;
use conveyor_flow::{FlowSource, FlowSpec};
use conveyor_schemas::TaskKind;
use conveyor_transport::amqp::AmqpTransport;
use conveyor_transport::fatal::Fatal;
use conveyor_transport::inproc::InProcBus;
use conveyor_transport::tasks::{AllDone, IoTasks};
use conveyor_transport::{Names, Transport, TransportError};
use conveyor_worker::supervisor::{Shutdown, Supervisor};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use conveyor_config::CoordinatorMode;

/// How long a stopping node waits for its broker pumps and publishes to end
/// once the connection is closed.
const TASKS_STOP_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Coordinator(#[from] conveyor_coordinator::StartError),
    #[error(transparent)]
    Worker(#[from] conveyor_worker::StartError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("{what} {}: {source}", path.display())]
    Dir {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fatal(#[from] Fatal),
    #[error("internal: {0}")]
    Internal(String),
}

pub struct Node {
    pub name: String,
    pub transport: Transport,
    pub supervisor: Option<Addr<Supervisor>>,
    /// How the rest of the node talks to its coordinator, if it plays one.
    pub coordinator: Option<CoordinatorHandle>,
    /// The actor behind `coordinator`, to stop it.
    coordinator_addr: Option<Addr<Coordinator>>,
    /// Receives a reason when the node must exit (a worker kind keeps crashing).
    pub fatal: mpsc::UnboundedReceiver<Fatal>,
    /// Kept so that `fatal` only yields on a real reason, even with no workers.
    _fatal_tx: mpsc::UnboundedSender<Fatal>,
    /// Every task the node spawns runs here, tracked.
    io: IoTasks,
    /// Resolves when every tracked task has ended; awaited on shutdown.
    all_done: AllDone,
    /// Set on shutdown, for the node's own long-lived tasks (housekeeping).
    stopping: watch::Sender<bool>,
    names: Names,
    /// The worker kinds this node runs, and those consuming right now.
    kinds: BTreeSet<TaskKind>,
    consuming: watch::Receiver<BTreeSet<TaskKind>>,
}

impl Node {
    /// Starts the `roles` (from [`NodeConfig::roles`]) of the node `cfg` describes.
    pub async fn start(
        cfg: &NodeConfig,
        roles: &Roles,
        io: tokio::runtime::Handle,
    ) -> Result<Node, NodeError> {
        let (io, all_done) = IoTasks::new(io);
        let (transport, names) = match &cfg.broker {
            None => {
                let bus = InProcBus::new(5);
                let names = bus.names().clone();
                (Transport::InProc(bus), names)
            }
            Some(b) => connect(cfg, b, roles, &io).await?,
        };
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let (consuming_tx, consuming) = watch::channel(BTreeSet::new());
        let supervisor = if roles.workers.is_empty() {
            None
        } else {
            Some(
                conveyor_worker::start(conveyor_worker::Setup {
                    config: cfg,
                    kinds: &roles.workers,
                    transport: transport.clone(),
                    io: io.clone(),
                    fatal: fatal_tx.clone(),
                    stopping: stopping.subscribe(),
                    consuming: consuming_tx,
                })
                .await?,
            )
        };
        let coordinator = match roles.coordinator {
            CoordinatorMode::Off => None,
            mode => Some(
                conveyor_coordinator::start(conveyor_coordinator::Setup {
                    node: &cfg.node_name,
                    mode,
                    config: &roles.coordinator_config,
                    transport: transport.clone(),
                    names: &names,
                    io: io.clone(),
                    fatal: fatal_tx.clone(),
                })
                .await?,
            ),
        };
        let (coordinator, coordinator_addr) = match coordinator {
            Some(c) => (Some(c.handle), Some(c.addr)),
            None => (None, None),
        };
        Ok(Node {
            name: cfg.node_name.clone(),
            transport,
            supervisor,
            coordinator,
            coordinator_addr,
            fatal,
            _fatal_tx: fatal_tx,
            io,
            all_done,
            stopping,
            names,
            kinds: roles.workers.keys().copied().collect(),
            consuming,
        })
    }

    /// Resolves to true once every role of the node has started: each
    /// worker kind consumes its queue (the coordinator already runs when
    /// [`Node::start`] returns). False if the workers stopped for good first.
    pub fn roles_started(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (mut consuming, kinds) = (self.consuming.clone(), self.kinds.clone());
        async move { consuming.wait_for(|now| kinds.is_subset(now)).await.is_ok() }
    }

    /// Submits a flow to this node's coordinator.
    pub async fn submit(
        &self,
        flow: Arc<FlowSpec>,
        source: FlowSource,
    ) -> Result<Submitted, NodeError> {
        let coordinator = self
            .coordinator
            .as_ref()
            .ok_or_else(|| NodeError::Internal("this node has no coordinator".into()))?;
        coordinator
            .submit(flow, source)
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Hands a flow to the cluster's coordinator nodes over the broker
    /// (`conveyor run --submit`), and follows it. The run is saved by the
    /// coordinator that accepts it and finishes even if this process stops.
    pub async fn submit_remote(
        &self,
        source: FlowSource,
        accept_within: Duration,
    ) -> Result<RemoteRun, NodeError> {
        Ok(conveyor_coordinator::remote::submit(
            &self.transport,
            &self.names,
            &self.io,
            &self.name,
            source,
            accept_within,
        )
        .await?)
    }

    /// Stops consuming, lets in-flight tasks finish within `grace` (the rest go
    /// back to their queue), then closes the broker connection.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(s) = &self.supervisor {
            let _ = s.send(Shutdown { grace }).await;
        }
        if let Some(c) = &self.coordinator_addr {
            conveyor_coordinator::stop(c);
        }
        let t = self.transport.clone();
        let _ = self.io.spawn(async move { t.close().await }).await;
        let Node {
            name,
            io,
            mut all_done,
            stopping,
            ..
        } = self;
        stopping.send_replace(true);
        drop(io);
        let stragglers = all_done.wait(TASKS_STOP_WITHIN).await;
        if stragglers > 0 {
            warn!(node = %name, tasks = stragglers, "Tasks still running at exit");
        }
        info!(node = %name, "Node stopped");
    }
}

/// Connects to the broker of `b`, on the I/O runtime.
async fn connect(
    cfg: &NodeConfig,
    b: &BrokerConfig,
    roles: &Roles,
    io: &IoTasks,
) -> Result<(Transport, Names), NodeError> {
    let (url, ns, limit, node) = (
        b.connect_url(),
        b.namespace.clone(),
        b.delivery_limit,
        cfg.node_name.clone(),
    );
    let tls_ca = match &b.tls_ca {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| NodeError::Dir {
                what: "broker tls_ca",
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let handle = io.handle().clone();
    let connect_timeout = roles.connect_timeout;
    let t = io
        .spawn(async move {
            AmqpTransport::connect_tls(&url, &ns, limit, &node, handle, tls_ca, connect_timeout)
                .await
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))??;
    info!(broker = %conveyor_schemas::redact::redact_url(&b.url), namespace = %b.namespace, "Connected to the broker");
    let names = t.names().clone();
    Ok((Transport::Amqp(t), names))
}

#[cfg(test)]
mod handle_tests;
