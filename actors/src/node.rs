/*!
Starts a node's roles from its config: the transport, the supervisor and its
workers, and the coordinator; and stops them gracefully.

Call [`Node::start`] inside an actix `System`. `io` is a multi-thread tokio
runtime owned by the caller; lapin and every broker future run there.
*/

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conveyor_etl::{ArtifactStore, Workspace};
use conveyor_schemas::{TaskMessage, TaskUpdate};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::coordinator::{
    Coordinator, DeadLettered, HeartbeatSeen, Submit, Submitted, UpdateFromWorker,
};
use crate::failpoint::Failpoints;
use crate::flow::FlowSpec;
use crate::supervisor::{Shutdown, Supervisor};
use crate::transport::amqp::AmqpTransport;
use crate::transport::inproc::InProcBus;
use crate::transport::{Names, Transport, TransportError};
use crate::worker::WorkerEnv;

/// How this process plays the coordinator role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorMode {
    Off,
    /// A long-lived coordinator node: a stable, durable reply queue.
    Service,
    /// `conveyor run`: a reply queue of its own that the broker deletes
    /// some time after the client went away.
    Client,
}

/// How long the broker keeps a client's reply queue after it disconnects.
const CLIENT_REPLY_QUEUE_EXPIRY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{what} {}: {source}", path.display())]
    Dir {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

pub struct Node {
    pub name: String,
    pub transport: Transport,
    pub supervisor: Option<Addr<Supervisor>>,
    pub coordinator: Option<Addr<Coordinator>>,
    /// Receives a reason when the node must exit (a worker kind keeps crashing).
    pub fatal: mpsc::UnboundedReceiver<String>,
    /// Kept so that `fatal` only yields on a real reason, even with no workers.
    _fatal_tx: mpsc::UnboundedSender<String>,
    io: tokio::runtime::Handle,
}

async fn on_io<T: Send + 'static>(
    io: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, NodeError> {
    io.spawn(fut)
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))
}

impl Node {
    pub async fn start(
        cfg: &NodeConfig,
        io: tokio::runtime::Handle,
        mode: CoordinatorMode,
    ) -> Result<Node, NodeError> {
        let (transport, names) = match &cfg.broker {
            None => {
                let bus = InProcBus::new(5);
                let names = bus.names().clone();
                (Transport::InProc(bus), names)
            }
            Some(b) => {
                let (url, ns, limit, node) = (
                    b.connect_url(),
                    b.namespace.clone(),
                    b.delivery_limit,
                    cfg.node_name.clone(),
                );
                let handle = io.clone();
                let t = on_io(&io, async move {
                    AmqpTransport::connect(&url, &ns, limit, &node, handle).await
                })
                .await??;
                info!(broker = %crate::config::redact_url(&b.url), namespace = %b.namespace, "Connected to the broker");
                (
                    Transport::Amqp(t),
                    Names {
                        namespace: b.namespace.clone(),
                    },
                )
            }
        };

        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let supervisor = if cfg.workers.is_empty() {
            None
        } else {
            for (what, path) in [
                ("artifact store", &cfg.artifacts),
                ("output root", &cfg.output_root),
            ] {
                std::fs::create_dir_all(path).map_err(|source| NodeError::Dir {
                    what,
                    path: path.clone(),
                    source,
                })?;
            }
            let env = WorkerEnv {
                node: cfg.node_name.clone(),
                transport: transport.clone(),
                io: io.clone(),
                workspace: Workspace {
                    store: ArtifactStore::new(&cfg.artifacts),
                    output_root: cfg.output_root.clone(),
                },
                in_flight: Default::default(),
                failpoints: Failpoints::from_env(),
            };
            let prefetch = cfg.broker.as_ref().and_then(|b| b.prefetch);
            Some(
                Supervisor::new(
                    cfg.workers.clone(),
                    prefetch,
                    env,
                    cfg.heartbeat,
                    fatal_tx.clone(),
                )
                .start(),
            )
        };

        let coordinator = match (mode, &cfg.coordinator) {
            (CoordinatorMode::Off, _) => None,
            (mode, coord_cfg) => {
                let worker_wait = coord_cfg.clone().unwrap_or_default().worker_wait;
                let queue = match mode {
                    CoordinatorMode::Client => {
                        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
                        names.reply_queue(&format!("{}.{suffix}", cfg.node_name))
                    }
                    _ => names.reply_queue(&cfg.node_name),
                };
                let expires =
                    (mode == CoordinatorMode::Client).then_some(CLIENT_REPLY_QUEUE_EXPIRY);
                let (t, q) = (transport.clone(), queue.clone());
                let replies =
                    on_io(&io, async move { t.consume_replies(&q, expires).await }).await??;
                let t = transport.clone();
                let mut heartbeats =
                    on_io(&io, async move { t.consume_heartbeats().await }).await??;
                let queue_name = queue.clone();
                let addr = Coordinator::new(
                    cfg.node_name.clone(),
                    transport.clone(),
                    io.clone(),
                    queue,
                    worker_wait,
                )
                .start();
                let a = addr.clone();
                io.spawn(async move {
                    while let Some(hb) = heartbeats.recv().await {
                        a.do_send(HeartbeatSeen(hb));
                    }
                });
                io.spawn(pump_replies(
                    transport.clone(),
                    queue_name,
                    expires,
                    replies,
                    addr.clone(),
                ));
                Some(addr)
            }
        };
        Ok(Node {
            name: cfg.node_name.clone(),
            transport,
            supervisor,
            coordinator,
            fatal,
            _fatal_tx: fatal_tx,
            io,
        })
    }

    /// Submits a flow to this node's coordinator.
    pub async fn submit(&self, flow: Arc<FlowSpec>) -> Result<Submitted, NodeError> {
        let coordinator = self
            .coordinator
            .as_ref()
            .ok_or_else(|| NodeError::Internal("this node has no coordinator".into()))?;
        coordinator
            .send(Submit { flow })
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Stops consuming, lets in-flight tasks finish within `grace` (the rest go
    /// back to their queue), then closes the broker connection.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(s) = &self.supervisor {
            let _ = s.send(Shutdown { grace }).await;
        }
        if let Some(c) = &self.coordinator {
            c.do_send(StopCoordinator);
        }
        let t = self.transport.clone();
        let _ = on_io(&self.io, async move { t.close().await }).await;
        info!(node = %self.name, "Node stopped");
    }
}

/// Feeds the coordinator from its reply queue, subscribing again whenever
/// the broker connection is lost, until the coordinator or the transport stops.
async fn pump_replies(
    transport: Transport,
    queue: String,
    expires: Option<Duration>,
    mut replies: crate::transport::Subscription,
    coordinator: Addr<Coordinator>,
) {
    loop {
        while let Some(d) = replies.deliveries.recv().await {
            if let Some(reason) = d.dead_letter_reason.clone() {
                if let Ok(task) = serde_json::from_slice::<TaskMessage>(&d.body) {
                    let _ = coordinator.send(DeadLettered { task, reason }).await;
                }
                let _ = d.ack().await;
                continue;
            }
            match serde_json::from_slice::<TaskUpdate>(&d.body) {
                Ok(update) => {
                    if coordinator.send(UpdateFromWorker(update)).await.is_err() {
                        let _ = d.requeue().await;
                        replies.close().await;
                        return;
                    }
                    match d.ack().await {
                        Ok(true) => {}
                        _ => warn!("Reply ack not sent; the update may arrive again and will be recognised"),
                    }
                }
                Err(e) => {
                    // The reply queue has no dead-letter exchange on purpose: it
                    // is itself bound to the DLX, so a dead letter would loop back.
                    warn!(error = %e, bytes = d.body.len(), "Dropping an undecodable update from the reply queue");
                    let _ = d.dead_letter().await;
                }
            }
        }
        if !coordinator.connected() {
            return;
        }
        warn!(queue = %queue, "Reply consumer ended (connection lost?); subscribing again");
        replies = match transport.consume_replies(&queue, expires).await {
            Ok(sub) => sub,
            // Only a closed transport fails here: reconnects wait as long as needed.
            Err(_) => return,
        };
        info!(queue = %queue, "Reply consumer resubscribed");
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopCoordinator;

impl Handler<StopCoordinator> for Coordinator {
    type Result = ();
    fn handle(&mut self, _: StopCoordinator, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
