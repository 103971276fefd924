/*!
Starts a node's roles from its config: the transport, the supervisor and its
workers, and the coordinator; and stops them gracefully.

Call [`Node::start`] inside an actix `System`. `io` is a multi-thread tokio
runtime owned by the caller; lapin and every broker future run there.
*/

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conveyor_etl::policy::SourcePolicy;
use conveyor_etl::store::ArtifactStore;
use conveyor_etl::{FsStore, Workspace};
use conveyor_schemas::{
    FlowEvent, FlowEventKind, FlowSubmission, RunFinished, TaskKind, TaskLogs, TaskMessage,
    TaskUpdate, SCHEMA_VERSION,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::coordinator::{
    Coordinator, CoordinatorSetup, DeadLettered, HeartbeatSeen, SubmitRemote, Submitted,
    UpdateFromWorker,
};
pub use conveyor_flow::CoordinatorMode;
use conveyor_flow::{FlowSource, FlowSpec, NodeConfig, Roles};

use crate::failpoint::Failpoints;
use crate::fatal::Fatal;
use crate::handle::CoordinatorHandle;
use crate::history::History;
use crate::runstore::{RunStore, StoreError};
use crate::supervisor::{Shutdown, Supervisor};
use crate::tasks::{AllDone, IoTasks};
use crate::transport::amqp::AmqpTransport;
use crate::transport::inproc::InProcBus;
use crate::transport::{Names, Transport, TransportError};
use crate::worker::WorkerEnv;

/// How long a stopping node waits for its broker pumps and publishes to end
/// once the connection is closed.
const TASKS_STOP_WITHIN: Duration = Duration::from_secs(3);

/// How long the broker keeps a client's reply queue after it disconnects.
const CLIENT_REPLY_QUEUE_EXPIRY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the coordinator rejected the flow: {0}")]
    Rejected(String),
    #[error("no coordinator accepted the flow within {}: is a `conveyor node` with a [coordinator] table running on namespace `{namespace}`?", humantime::format_duration(*.within))]
    NotAccepted { within: Duration, namespace: String },
    #[error("{what} {}: {source}", path.display())]
    Dir {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] crate::schedules::RegistryError),
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

async fn on_io<T: Send + 'static>(
    io: &IoTasks,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, NodeError> {
    io.spawn(fut)
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))
}

impl Node {
    /// Starts the `roles` (from [`NodeConfig::roles`]) of the node `cfg` describes.
    pub async fn start(
        cfg: &NodeConfig,
        roles: &Roles,
        io: tokio::runtime::Handle,
    ) -> Result<Node, NodeError> {
        let mode = roles.coordinator;
        let (io, all_done) = IoTasks::new(io);
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
                let tls_ca =
                    match &b.tls_ca {
                        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                            NodeError::Dir {
                                what: "broker tls_ca",
                                path: path.clone(),
                                source,
                            }
                        })?),
                        None => None,
                    };
                let handle = io.handle().clone();
                let connect_timeout = roles.connect_timeout;
                let t = on_io(&io, async move {
                    AmqpTransport::connect_tls(
                        &url,
                        &ns,
                        limit,
                        &node,
                        handle,
                        tls_ca,
                        connect_timeout,
                    )
                    .await
                })
                .await??;
                info!(broker = %conveyor_flow::config::redact_url(&b.url), namespace = %b.namespace, "Connected to the broker");
                let names = t.names().clone();
                (Transport::Amqp(t), names)
            }
        };

        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let (consuming_tx, consuming) = watch::channel(BTreeSet::new());
        let supervisor = if roles.workers.is_empty() {
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
            let store: Arc<dyn ArtifactStore> = Arc::new(FsStore::new(&cfg.artifacts));
            let t = transport.clone();
            let runs_finished = match on_io(&io, async move { t.consume_runs_finished().await })
                .await?
            {
                Ok(rx) => Some(rx),
                Err(e) => {
                    // Best effort: without the events, the hourly sweep
                    // removes succeeded runs after keep_failed instead.
                    warn!(error = %e, "Cannot hear of runs that end (broker permissions on the events exchange?); their artifacts are swept after keep_failed");
                    None
                }
            };
            let cancels = crate::cancel::RunCancels::default();
            io.spawn(housekeeping(
                store.clone(),
                cancels.clone(),
                runs_finished,
                cfg.keep_failed,
                stopping.subscribe(),
            ));
            let env = WorkerEnv {
                node: cfg.node_name.clone(),
                transport: transport.clone(),
                io: io.clone(),
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
                consuming: Arc::new(consuming_tx),
                metrics: crate::metrics::WorkerMetrics::new(roles.workers.keys().copied()),
                cancels,
            };
            let prefetch = cfg.broker.as_ref().and_then(|b| b.prefetch);
            Some(
                Supervisor::new(
                    roles.workers.clone(),
                    prefetch,
                    env,
                    cfg.heartbeat,
                    fatal_tx.clone(),
                )
                .start(),
            )
        };

        let mut db = None;
        let mut registered = None;
        let coordinator = match mode {
            CoordinatorMode::Off => None,
            mode => {
                let coord_cfg = &roles.coordinator_config;
                let worker_wait = coord_cfg.worker_wait;
                // Only a coordinator node is durable: `conveyor run` holds one
                // run that lives and dies with the process.
                // Registered flows are a coordinator node's; a bad one
                // stops it before it takes any run.
                let registry = match (mode, &coord_cfg.flows) {
                    (CoordinatorMode::Service, Some(dir)) => {
                        Some(Arc::new(crate::schedules::Registry::load(dir)?))
                    }
                    _ => None,
                };
                registered = registry.clone();
                let store = match (mode, &coord_cfg.db) {
                    (CoordinatorMode::Service, Some(path)) => {
                        let store = RunStore::open(path)?;
                        info!(db = %path.display(), "Coordinator database open");
                        store
                    }
                    _ => RunStore::Memory,
                };
                db = store.path().map(std::path::Path::to_path_buf);
                let history = db
                    .as_deref()
                    .map(|path| History::open(path, coord_cfg.log_lines))
                    .transpose()?;
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
                let addr = Coordinator::new(CoordinatorSetup {
                    node: cfg.node_name.clone(),
                    transport: transport.clone(),
                    io: io.clone(),
                    reply_queue: queue,
                    worker_wait,
                    store,
                    failpoints: Failpoints::from_env(),
                    fatal: fatal_tx.clone(),
                    history: history.clone(),
                    notify: coord_cfg.notify.clone(),
                    registry,
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
                    queue_name,
                    expires,
                    replies,
                    addr.clone(),
                    history,
                ));
                if mode == CoordinatorMode::Service {
                    let t = transport.clone();
                    let subs = on_io(&io, async move { t.consume_submissions().await }).await??;
                    io.spawn(pump_submissions(transport.clone(), subs, addr.clone()));
                }
                Some(addr)
            }
        };
        let handle = match &coordinator {
            Some(addr) => {
                Some(CoordinatorHandle::new(addr.clone(), db.as_deref())?.with_registry(registered))
            }
            None => None,
        };
        Ok(Node {
            name: cfg.node_name.clone(),
            transport,
            supervisor,
            coordinator: handle,
            coordinator_addr: coordinator,
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
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let queue = self.names.reply_queue(&format!("{}.{suffix}", self.name));
        let (t, q) = (self.transport.clone(), queue.clone());
        let expires = Some(CLIENT_REPLY_QUEUE_EXPIRY);
        let sub = on_io(
            &self.io,
            async move { t.consume_replies(&q, expires).await },
        )
        .await??;
        let request_id = uuid::Uuid::new_v4().to_string();
        let (events_tx, mut events) = mpsc::channel(64);
        self.io.spawn(pump_events(
            self.transport.clone(),
            queue.clone(),
            request_id.clone(),
            sub,
            events_tx,
        ));
        let msg = FlowSubmission {
            schema_version: SCHEMA_VERSION,
            request_id: request_id.clone(),
            flow_file: source.file,
            flow_text: source.text,
            flow_base: source.base,
            reply_to: queue,
            client: self.name.clone(),
            params: source.params,
        };
        let t = self.transport.clone();
        on_io(&self.io, async move {
            t.publish_submission(&msg, accept_within).await
        })
        .await??;
        info!(request_id = %request_id, "Flow submitted; waiting for a coordinator to accept it");
        let not_accepted = || NodeError::NotAccepted {
            within: accept_within,
            namespace: self.names.namespace.clone(),
        };
        // A little longer than the submission's time to live, so that an
        // acceptance at the last moment is still seen.
        let first = tokio::time::timeout(accept_within + Duration::from_secs(2), events.recv())
            .await
            .map_err(|_| not_accepted())?
            .ok_or_else(not_accepted)?;
        let coordinator = first.coordinator.clone();
        let report = match first.event {
            FlowEventKind::Rejected { error } => return Err(NodeError::Rejected(error)),
            FlowEventKind::Accepted { report }
            | FlowEventKind::Progress { report }
            | FlowEventKind::Finished { report } => report,
        };
        let (progress_tx, progress) = watch::channel(report.clone());
        let (done_tx, done) = oneshot::channel();
        let mut done_tx = Some(done_tx);
        if report.state.is_terminal() {
            if let Some(tx) = done_tx.take() {
                let _ = tx.send(report.clone());
            }
        }
        self.io.spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev.event {
                    FlowEventKind::Accepted { report } | FlowEventKind::Progress { report } => {
                        progress_tx.send_replace(report);
                    }
                    FlowEventKind::Finished { report } => {
                        progress_tx.send_replace(report.clone());
                        if let Some(tx) = done_tx.take() {
                            let _ = tx.send(report);
                        }
                    }
                    FlowEventKind::Rejected { error } => {
                        warn!(error = %error, "The coordinator gave up on the flow run");
                    }
                }
            }
        });
        Ok(RemoteRun {
            run: Submitted {
                flow_run: report.flow_run,
                progress,
                done,
            },
            coordinator,
            request_id,
        })
    }

    /// Stops consuming, lets in-flight tasks finish within `grace` (the rest go
    /// back to their queue), then closes the broker connection.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(s) = &self.supervisor {
            let _ = s.send(Shutdown { grace }).await;
        }
        if let Some(c) = &self.coordinator_addr {
            c.do_send(StopCoordinator);
        }
        let t = self.transport.clone();
        let _ = on_io(&self.io, async move { t.close().await }).await;
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

/// A flow run held by a coordinator node, followed from this process.
pub struct RemoteRun {
    pub run: Submitted,
    /// The coordinator node that accepted it.
    pub coordinator: String,
    pub request_id: String,
}

/// Feeds a client with the events of its submission, subscribing again
/// whenever the broker connection is lost.
async fn pump_events(
    transport: Transport,
    queue: String,
    request_id: String,
    mut sub: crate::transport::Subscription,
    events: mpsc::Sender<FlowEvent>,
) {
    loop {
        while let Some(d) = sub.deliveries.recv().await {
            let decoded = serde_json::from_slice::<FlowEvent>(&d.body);
            let _ = d.ack().await;
            match decoded {
                Ok(ev) if ev.request_id == request_id => {
                    if events.send(ev).await.is_err() {
                        sub.close().await;
                        return;
                    }
                }
                Ok(ev) => {
                    info!(request_id = %ev.request_id, "Ignoring an event for another submission")
                }
                Err(e) => warn!(error = %e, "Ignoring an undecodable event on the client queue"),
            }
        }
        if events.is_closed() {
            return;
        }
        sub = match transport
            .consume_replies(&queue, Some(CLIENT_REPLY_QUEUE_EXPIRY))
            .await
        {
            Ok(s) => s,
            Err(_) => return,
        };
    }
}

/// How often a worker node sweeps its store for expired runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// A succeeded run's artifacts are deleted once the node has heard of no
/// succeeded run ending for this long (a burst of runs is over)...
const DELETE_WHEN_QUIET: Duration = Duration::from_secs(1);
/// ...or once the oldest deletion has waited this long, on a node that
/// never goes quiet.
const DELETE_WITHIN: Duration = Duration::from_secs(30);

/// A worker node's artifact housekeeping: a run that ended is cleaned up
/// (a succeeded one's artifacts deleted, a failed or cancelled one's kept
/// for a retry, and its attempts on this node stopped), and expired runs
/// are swept at start and hourly. File work runs on the blocking pool.
///
/// A failed run is marked, and its attempts stopped, at once. Succeeded
/// runs are deleted in batches, after a burst of runs or within
/// [`DELETE_WITHIN`], and on shutdown: deleting files while new ones are
/// created costs every create on some filesystems (ext4 without a journal
/// skips the inodes freed in the last minute), and nothing waits on a
/// deletion. A node killed before its batch leaves those runs to the sweep.
async fn housekeeping(
    store: Arc<dyn ArtifactStore>,
    cancels: crate::cancel::RunCancels,
    mut runs_finished: Option<mpsc::Receiver<RunFinished>>,
    keep_failed: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let sweep = |store: Arc<dyn ArtifactStore>| async move {
        match tokio::task::spawn_blocking(move || store.sweep_runs(keep_failed)).await {
            Ok(Ok(gone)) if !gone.is_empty() => {
                info!(runs = gone.len(), keep_failed = %humantime::format_duration(keep_failed), "Removed the artifacts of expired runs")
            }
            Ok(Err(e)) => warn!(error = %e, "Cannot sweep the artifact store"),
            _ => {}
        }
    };
    let delete = |store: Arc<dyn ArtifactStore>, runs: Vec<String>| async move {
        let done = tokio::task::spawn_blocking(move || {
            runs.into_iter()
                .map(|run| {
                    let result = store.run_finished(&run, true);
                    (run, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        for (run, result) in done.unwrap_or_default() {
            match result {
                Ok(()) => info!(flow_run = %run, "Removed the artifacts of a succeeded run"),
                Err(e) => {
                    warn!(flow_run = %run, error = %e, "Cannot clean up a finished run's artifacts")
                }
            }
        }
    };
    sweep(store.clone()).await;
    let mut hourly =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    // Succeeded runs waiting for deletion, and when the batch is due.
    let mut succeeded: Vec<String> = Vec::new();
    let mut due = tokio::time::Instant::now();
    let mut oldest = tokio::time::Instant::now();
    loop {
        let next_run = async {
            match runs_finished.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopping.changed() => break,
            _ = tokio::time::sleep_until(due), if !succeeded.is_empty() => {
                delete(store.clone(), std::mem::take(&mut succeeded)).await;
            }
            ev = next_run => {
                // The transport closed: the node is stopping.
                let Some(ev) = ev else { break };
                if ev.state == conveyor_schemas::FlowState::Succeeded {
                    let now = tokio::time::Instant::now();
                    if succeeded.is_empty() {
                        oldest = now;
                    }
                    succeeded.push(ev.flow_run);
                    due = (now + DELETE_WHEN_QUIET).min(oldest + DELETE_WITHIN);
                    continue;
                }
                // Before the file work: the attempts stop at once.
                let stopped = cancels.run_ended(&ev.flow_run);
                if stopped > 0 {
                    info!(flow_run = %ev.flow_run, state = %ev.state, attempts = stopped, "Run ended; stopping its attempts on this node");
                }
                let (s, run) = (store.clone(), ev.flow_run.clone());
                match tokio::task::spawn_blocking(move || s.run_finished(&run, false)).await {
                    Ok(Ok(())) => info!(flow_run = %ev.flow_run, keep_failed = %humantime::format_duration(keep_failed), "Keeping the artifacts of a run that did not succeed, for a retry"),
                    Ok(Err(e)) => warn!(flow_run = %ev.flow_run, error = %e, "Cannot clean up a finished run's artifacts"),
                    Err(_) => {}
                }
            }
            _ = hourly.tick() => sweep(store.clone()).await,
        }
    }
    // Stopping: the ends already heard of, and not yet handled, count too.
    if let Some(rx) = runs_finished.as_mut() {
        while let Ok(ev) = rx.try_recv() {
            if ev.state == conveyor_schemas::FlowState::Succeeded {
                succeeded.push(ev.flow_run);
            }
        }
    }
    delete(store, succeeded).await;
}

/// Feeds the coordinator with submitted flows. A submission is acked once
/// the coordinator saved its run (or rejected it with an answer).
async fn pump_submissions(
    transport: Transport,
    mut sub: crate::transport::Subscription,
    coordinator: Addr<Coordinator>,
) {
    loop {
        while let Some(d) = sub.deliveries.recv().await {
            match serde_json::from_slice::<FlowSubmission>(&d.body) {
                Ok(submission) => match coordinator.send(SubmitRemote(submission)).await {
                    Ok(Ok(())) => {
                        let _ = d.ack().await;
                    }
                    _ => {
                        let _ = d.requeue().await;
                        sub.close().await;
                        return;
                    }
                },
                Err(e) => {
                    warn!(error = %e, bytes = d.body.len(), "Dead-lettering an undecodable flow submission");
                    let _ = d.dead_letter().await;
                }
            }
        }
        if !coordinator.connected() || transport.is_closed() {
            return;
        }
        warn!("Submission consumer ended (connection lost?); subscribing again");
        sub = match transport.consume_submissions().await {
            Ok(s) => s,
            Err(_) => return,
        };
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
    history: Option<History>,
) {
    loop {
        while let Some(d) = replies.deliveries.recv().await {
            if let Some(reason) = d.dead_letter_reason.clone() {
                if let Ok(task) = serde_json::from_slice::<TaskMessage>(&d.body) {
                    if !matches!(
                        coordinator.send(DeadLettered { task, reason }).await,
                        Ok(Ok(()))
                    ) {
                        let _ = d.requeue().await;
                        replies.close().await;
                        return;
                    }
                }
                let _ = d.ack().await;
                continue;
            }
            match serde_json::from_slice::<TaskUpdate>(&d.body) {
                Ok(mut update) => {
                    // A final update may carry its delivery's last log lines.
                    let logs = update.take_logs();
                    if !matches!(coordinator.send(UpdateFromWorker(update)).await, Ok(Ok(()))) {
                        let _ = d.requeue().await;
                        replies.close().await;
                        return;
                    }
                    match logs {
                        // Acked once the lines are stored too; a redelivery
                        // is recognised as an update and as a batch.
                        Some(logs) => store_logs(history.as_ref(), logs, d).await,
                        None => match d.ack().await {
                            Ok(true) => {}
                            _ => warn!("Reply ack not sent; the update may arrive again and will be recognised"),
                        },
                    }
                }
                // Not an update: a batch of log lines, told apart by shape.
                Err(e) => match serde_json::from_slice::<TaskLogs>(&d.body) {
                    Ok(logs) => store_logs(history.as_ref(), logs, d).await,
                    Err(_) => {
                        // The reply queue has no dead-letter exchange on purpose: it
                        // is itself bound to the DLX, so a dead letter would loop back.
                        warn!(error = %e, bytes = d.body.len(), "Dropping an undecodable update from the reply queue");
                        let _ = d.dead_letter().await;
                    }
                },
            }
        }
        if !coordinator.connected() || transport.is_closed() {
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

/// Hands a batch of log lines to the history writer, and acks it once
/// committed, off the pump: the updates behind it do not wait for the
/// write. A coordinator without a database keeps no logs: it acks at once.
async fn store_logs(history: Option<&History>, logs: TaskLogs, d: crate::transport::Delivery) {
    let Some(history) = history else {
        let _ = d.ack().await;
        return;
    };
    if logs.schema_version != SCHEMA_VERSION {
        info!(node = %logs.node, schema_version = logs.schema_version, "Dropping task log lines of another schema version");
        let _ = d.ack().await;
        return;
    }
    let (run, task) = (logs.flow_run.clone(), logs.task.clone());
    match history.submit_logs(logs).await {
        Ok(committed) => {
            tokio::spawn(async move {
                if let Ok(Err(e)) = committed.await {
                    warn!(flow_run = %run, task = %task, error = %e, "Cannot store task log lines; dropping them");
                }
                let _ = d.ack().await;
            });
        }
        Err(e) => {
            warn!(flow_run = %run, task = %task, error = %e, "Cannot store task log lines; dropping them");
            let _ = d.ack().await;
        }
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
