/*!
The coordinator actor: a thin shell around [`crate::state::FlowRun`].

It feeds the state machine with worker updates (from its durable reply queue),
heartbeats (to know which kinds have live workers) and a clock tick (for
deadlines, backoff and waits), and publishes the task messages the machine
asks for. Every broker call runs on the I/O runtime.

Durability (a coordinator node; see [`crate::runstore`]): a run's snapshot is
saved before the messages it dispatched are published, and before the update
that changed it is acked. When the broker confirms a message, that is saved
too. On start, every unfinished run is loaded again and each attempt that was
saved as dispatched but not confirmed is published again.
*/

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use conveyor_schemas::{
    FlowEvent, FlowEventKind, FlowState, FlowSubmission, Heartbeat, RunReport, TaskKind,
    TaskMessage, TaskUpdate, SCHEMA_VERSION,
};
use rand::Rng;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use conveyor_flow::{FlowSource, FlowSpec};
use conveyor_transport::failpoint::{Failpoints, PublishPoint};

use crate::metrics::CoordinatorMetrics;
use crate::notify::Notifier;
use crate::runstore::{RunStore, RunUpdate, StoreError};
use crate::schedules::{Registry, Scheduler};
use crate::state::{Applied, Clock, FlowRun, FlowSnapshot, RestoreError};
use crate::view::CoordinatorError;
use conveyor_transport::fatal::Fatal;
use conveyor_transport::Transport;

/// Least time between two events to a submitting client: a flow shorter
/// than this costs the broker two events (accepted, finished), no more.
const CLIENT_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How often every run in flight is polled for its timers (deadlines,
/// backoff, the wait for a worker, the client's held-back progress). Worker
/// updates and confirms advance their own run at once, so the tick is on no
/// task's path; polling thousands of runs every 50 ms cost W1 a tenth of
/// the coordinator's CPU.
const TICK: Duration = Duration::from_millis(200);

/// How often the coordinator looks for schedule slots that are due: the
/// most a run starts after its slot, on an idle node.
const SCHEDULE_TICK: Duration = Duration::from_millis(100);

/// Which nodes serve which kinds, from their heartbeats.
#[derive(Default)]
pub struct Liveness {
    nodes: HashMap<String, Seen>,
}

/// A node's last heartbeat, and when it came.
struct Seen {
    heartbeat: Heartbeat,
    at: Instant,
}

impl Seen {
    /// A node is live until three of its heartbeat intervals pass in silence.
    fn is_live(&self, now: Instant) -> bool {
        let interval = Duration::from_millis(self.heartbeat.interval_ms.max(1));
        now.duration_since(self.at) < interval * 3
    }
}

impl Liveness {
    pub fn saw(&mut self, hb: &Heartbeat, now: Instant) {
        self.nodes.insert(
            hb.node.clone(),
            Seen {
                heartbeat: hb.clone(),
                at: now,
            },
        );
    }

    pub fn is_live(&self, kind: TaskKind, now: Instant) -> bool {
        self.nodes
            .values()
            .any(|s| s.heartbeat.kinds.contains(&kind) && s.is_live(now))
    }

    /// The live nodes, by name; forgets the ones gone silent.
    pub fn nodes(&mut self, now: Instant) -> Vec<crate::view::NodeView> {
        self.nodes.retain(|_, s| s.is_live(now));
        let mut out: Vec<_> = self
            .nodes
            .values()
            .map(|s| crate::view::NodeView {
                node: s.heartbeat.node.clone(),
                kinds: s.heartbeat.kinds.clone(),
                in_flight: s.heartbeat.in_flight.clone(),
                heartbeat_age_ms: now.duration_since(s.at).as_millis() as u64,
                version: s.heartbeat.version.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}

/// The client of a submitted run: where its events go.
struct Client {
    request_id: String,
    queue: String,
    last_event: Option<Instant>,
    /// The run changed since the last event: send it when the window ends.
    held_back: bool,
}

struct Run {
    machine: FlowRun,
    progress: watch::Sender<RunReport>,
    done: Option<oneshot::Sender<RunReport>>,
    client: Option<Client>,
    /// The generation last saved and reported.
    saved: Option<u64>,
    /// The state last announced on [`Coordinator::changes`].
    announced: Option<FlowState>,
}

/// A run started or changed state: announced to the dashboard's live
/// lists (see [`SubscribeRuns`]) after the change is saved.
#[derive(Clone, Debug, PartialEq)]
pub struct RunChange {
    pub id: String,
    pub flow: String,
    pub state: FlowState,
}

/// How many changes a slow listener may lag behind before it misses some
/// (it is told, and reads the history again).
const CHANGES_BUFFER: usize = 1024;

pub struct Coordinator {
    node: String,
    transport: Transport,
    io: conveyor_transport::tasks::IoTasks,
    reply_queue: String,
    worker_wait: Duration,
    runs: HashMap<String, Run>,
    live: Liveness,
    store: RunStore,
    failpoints: Failpoints,
    fatal: mpsc::UnboundedSender<Fatal>,
    /// Set when the database failed: nothing more is acked, the node exits.
    broken: Option<StoreError>,
    /// Where attempts are recorded; none for an in-memory coordinator.
    history: Option<crate::history::History>,
    /// Posts the final reports of runs to `[coordinator] notify` webhooks.
    notifier: Notifier,
    metrics: CoordinatorMetrics,
    /// The registered flows, until the scheduler takes them at start.
    registry: Option<Arc<Registry>>,
    /// Fires the slots of the registered flows' schedules (a durable
    /// coordinator with scheduled flows only).
    schedules: Option<Scheduler>,
    /// Every run's start and state changes, for live lists.
    changes: broadcast::Sender<RunChange>,
    /// `[secrets] allow`: a submitted flow naming another variable is
    /// rejected, naming it.
    secrets: conveyor_config::AllowList,
}

/// Why the coordinator could not take a message; it is left unacked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotTaken(pub StoreError);

pub struct CoordinatorSetup {
    pub node: String,
    pub transport: Transport,
    pub io: conveyor_transport::tasks::IoTasks,
    pub reply_queue: String,
    pub worker_wait: Duration,
    pub store: RunStore,
    pub failpoints: Failpoints,
    pub fatal: mpsc::UnboundedSender<Fatal>,
    pub history: Option<crate::history::History>,
    /// `[coordinator] notify`: the webhooks told of runs that end.
    pub notify: Vec<conveyor_config::NotifyConfig>,
    /// `[coordinator] flows`: the registered flows, whose schedules this
    /// coordinator fires.
    pub registry: Option<Arc<Registry>>,
    /// The node's `[secrets] allow`.
    pub secrets: conveyor_config::AllowList,
}

impl Coordinator {
    pub fn new(setup: CoordinatorSetup) -> Self {
        let notifier = Notifier::new(&setup.notify, setup.io.handle().clone());
        Coordinator {
            node: setup.node,
            transport: setup.transport,
            io: setup.io,
            reply_queue: setup.reply_queue,
            worker_wait: setup.worker_wait,
            runs: HashMap::new(),
            live: Liveness::default(),
            store: setup.store,
            failpoints: setup.failpoints,
            notifier,
            fatal: setup.fatal,
            broken: None,
            history: setup.history,
            metrics: CoordinatorMetrics::new(),
            registry: setup.registry,
            schedules: None,
            changes: broadcast::channel(CHANGES_BUFFER).0,
            secrets: setup.secrets,
        }
    }

    fn check(&self) -> Result<(), NotTaken> {
        match &self.broken {
            Some(reason) => Err(NotTaken(reason.clone())),
            None => Ok(()),
        }
    }

    /// The database failed: stop taking messages and make the node exit. What
    /// is not acked is redelivered to the next coordinator process.
    fn give_up(&mut self, reason: StoreError) {
        if self.broken.is_none() {
            error!(reason = %reason, "Coordinator cannot save its state; stopping");
            let _ = self.fatal.send(Fatal::Store(reason.to_string()));
            self.broken = Some(reason);
        }
    }

    fn publish(&self, msg: TaskMessage, ctx: &mut Context<Self>) {
        let transport = self.transport.clone();
        let addr = ctx.address();
        let before = self
            .failpoints
            .publish_pause(PublishPoint::Before, &msg.task);
        let after = self
            .failpoints
            .publish_pause(PublishPoint::After, &msg.task);
        self.io.spawn(async move {
            if let Some(d) = before {
                tokio::time::sleep(d).await;
            }
            match transport.publish_task(&msg).await {
                Ok(()) => {
                    if let Some(d) = after {
                        tokio::time::sleep(d).await;
                    }
                    addr.do_send(Published {
                        flow_run: msg.flow_run,
                        task: msg.task,
                        attempt: msg.attempt,
                    });
                }
                Err(e) => {
                    warn!(task_run = %msg.task_run, attempt = msg.attempt, error = %e, "Task publish failed");
                    addr.do_send(PublishFailed {
                        flow_run: msg.flow_run,
                        task: msg.task,
                        attempt: msg.attempt,
                        reason: e.to_string(),
                    });
                }
            }
        });
    }

    /// Tells every worker node that a run ended, so that they clean up its
    /// artifacts. Best effort: a node that misses it sweeps later.
    fn announce_finished(&self, flow_run: &str, state: conveyor_schemas::FlowState) {
        let transport = self.transport.clone();
        let ev = conveyor_schemas::RunFinished {
            schema_version: SCHEMA_VERSION,
            flow_run: flow_run.to_string(),
            state,
        };
        self.io.spawn(async move {
            if let Err(e) = transport.publish_run_finished(&ev).await {
                info!(flow_run = %ev.flow_run, error = %e, "Could not announce the end of a run; workers sweep it later");
            }
        });
    }

    /// A worker started a task of a run this coordinator does not hold: if
    /// the run ended without succeeding, the worker missed its end (it
    /// started later, or the event was lost), so say it again and the
    /// worker stops the attempt.
    fn announce_again(&mut self, flow_run: &str) {
        match self.store.load(flow_run) {
            Ok(Some(saved))
                if saved.snapshot.state.is_terminal()
                    && saved.snapshot.state != conveyor_schemas::FlowState::Succeeded =>
            {
                info!(flow_run = %flow_run, state = %saved.snapshot.state, "A worker started a task of a run that ended; announcing its end again");
                self.announce_finished(flow_run, saved.snapshot.state);
            }
            Ok(_) => {}
            Err(e) => self.give_up(e),
        }
    }

    /// Sends one event to a submitting client. Confirmed, but not retried
    /// past the transport's own retries: the run's state is in the database.
    fn send_event(&self, queue: &str, request_id: &str, event: FlowEventKind) {
        let transport = self.transport.clone();
        let event = FlowEvent {
            schema_version: SCHEMA_VERSION,
            request_id: request_id.to_string(),
            coordinator: self.node.clone(),
            event,
        };
        let queue = queue.to_string();
        self.io.spawn(async move {
            if let Err(e) = transport.publish_event(&queue, &event).await {
                info!(client_queue = %queue, error = %e, "Could not tell the client (it may have gone away)");
            }
        });
    }

    /// Polls one run (or all), saves what changed, then publishes what the
    /// runs asked for; finishes terminal runs.
    fn advance(&mut self, only: Option<&str>, ctx: &mut Context<Self>) {
        if self.broken.is_some() {
            return;
        }
        let now = Instant::now();
        let clock = Clock::now();
        let mut rng = rand::rng();
        let mut jitter = || rng.random_range(0.5..=1.0);
        let mut to_publish = Vec::new();
        let mut finished = Vec::new();
        let mut events = Vec::new();
        let (live, store, changes) = (&self.live, &self.store, &self.changes);
        // One run's round: poll it, save what changed, collect what to send.
        let mut step = |id: &str, run: &mut Run| -> Result<(), StoreError> {
            let msgs = run
                .machine
                .poll(now, &|k| live.is_live(k, now), &mut jitter);
            let generation = run.machine.generation();
            if run.saved != Some(generation) {
                let report = run.machine.report(now);
                if store.is_durable() {
                    save(store, id, &run.machine, &report, &clock)?;
                }
                run.saved = Some(generation);
                if run.announced != Some(report.state) {
                    run.announced = Some(report.state);
                    // Nobody listening is not an error.
                    let _ = changes.send(RunChange {
                        id: id.to_string(),
                        flow: report.flow.clone(),
                        state: report.state,
                    });
                }
                run.progress.send_replace(report);
                if let Some(client) = &mut run.client {
                    client.held_back = true;
                }
            }
            // A change inside the client's window is held back, and the
            // latest state goes out when the window ends: the client always
            // sees the current state within about one window.
            if let Some(client) = &mut run.client {
                let due = client
                    .last_event
                    .is_none_or(|t| now.duration_since(t) >= CLIENT_PROGRESS_EVERY);
                let terminal = run.machine.state().is_terminal();
                if client.held_back && due && !terminal {
                    client.last_event = Some(now);
                    client.held_back = false;
                    events.push((
                        client.queue.clone(),
                        client.request_id.clone(),
                        FlowEventKind::Progress {
                            report: run.progress.borrow().clone(),
                        },
                    ));
                }
            }
            to_publish.extend(msgs);
            if run.machine.state().is_terminal() {
                finished.push(id.to_string());
            }
            Ok(())
        };
        // One run is looked up, not searched for: with thousands of runs in
        // flight, every worker update would otherwise scan them all.
        let failure = match only {
            Some(id) => match self.runs.get_mut(id) {
                Some(run) => step(id, run).err(),
                None => None,
            },
            None => self
                .runs
                .iter_mut()
                .try_for_each(|(id, run)| step(id, run))
                .err(),
        };
        if let Some(reason) = failure {
            // Nothing of this round is published: the saved state is older.
            self.give_up(reason);
            return;
        }
        for (queue, request, event) in events {
            self.send_event(&queue, &request, event);
        }
        for msg in to_publish {
            info!(flow_run = %msg.flow_run, task_run = %msg.task_run, attempt = msg.attempt, kind = %msg.spec.kind(), "Dispatching task");
            self.publish(msg, ctx);
        }
        for id in finished {
            if let Some(mut run) = self.runs.remove(&id) {
                let report = run.machine.report(now);
                match &report.error {
                    Some(error) => {
                        info!(flow_run = %id, state = %report.state, elapsed_ms = report.elapsed_ms, error = %error, "Flow finished")
                    }
                    None => {
                        info!(flow_run = %id, state = %report.state, elapsed_ms = report.elapsed_ms, "Flow finished")
                    }
                }
                if let Some(client) = &run.client {
                    self.send_event(
                        &client.queue,
                        &client.request_id,
                        FlowEventKind::Finished {
                            report: report.clone(),
                        },
                    );
                }
                self.announce_finished(&id, report.state);
                self.metrics.run_ended(&report.flow, report.state);
                self.notifier.run_ended(&report);
                if let Some(done) = run.done.take() {
                    let _ = done.send(report);
                }
            }
        }
        self.metrics.active(self.runs.len());
    }

    /// Starts a new run: records it, then dispatches its first tasks.
    fn start_run(
        &mut self,
        flow: Arc<FlowSpec>,
        source: &FlowSource,
        client: Option<Client>,
        origin: Origin,
        ctx: &mut Context<Self>,
    ) -> Result<Started, NotTaken> {
        self.start(flow, source, client, origin, None, ctx)
    }

    /// [`Self::start_run`], reusing the outputs of the tasks that succeeded
    /// in `reuse`, the snapshot of the run this one retries.
    fn start(
        &mut self,
        flow: Arc<FlowSpec>,
        source: &FlowSource,
        client: Option<Client>,
        origin: Origin,
        reuse: Option<&FlowSnapshot>,
        ctx: &mut Context<Self>,
    ) -> Result<Started, NotTaken> {
        let id = format!(
            "{}-{}",
            flow.name,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let now = Instant::now();
        let flow_name = flow.name.clone();
        let mut machine = FlowRun::new(
            id.clone(),
            flow,
            self.reply_queue.clone(),
            self.worker_wait,
            now,
        );
        if let Some(old) = reuse {
            let reused = machine.reuse(old);
            info!(flow_run = %id, retry_of = origin.retry_of.as_deref().unwrap_or_default(), reused, "Retrying a flow run: reusing the outputs of its succeeded tasks");
        }
        let clock = Clock::now();
        let request = client
            .as_ref()
            .map(|c| (c.request_id.as_str(), c.queue.as_str()));
        if let Err(e) = self.store.insert(&crate::runstore::NewRun {
            id: &id,
            flow: &flow_name,
            request,
            source,
            snapshot: &machine.snapshot(&clock),
            retry_of: origin.retry_of.as_deref(),
            slot: origin.slot.clone(),
            now_ms: clock.wall_ms,
        }) {
            self.give_up(e.clone());
            return Err(NotTaken(e));
        }
        let (progress, progress_rx) = watch::channel(machine.report(now));
        let (done, done_rx) = oneshot::channel();
        info!(flow_run = %id, flow = %machine.flow.name, "Flow submitted");
        if let Some(c) = &client {
            self.send_event(
                &c.queue,
                &c.request_id,
                FlowEventKind::Accepted {
                    report: machine.report(now),
                },
            );
        }
        self.runs.insert(
            id.clone(),
            Run {
                machine,
                progress,
                done: Some(done),
                client,
                saved: None,
                announced: None,
            },
        );
        self.advance(Some(&id), ctx);
        Ok((id, progress_rx, done_rx))
    }

    /// Resumes the registered flows' schedules from the latest slot each
    /// recorded, and fires what is due (the slots missed while down, per
    /// `catchup`). Only a durable coordinator schedules: a slot must be
    /// recorded with its run.
    fn start_schedules(&mut self, ctx: &mut Context<Self>) {
        let Some(registry) = self.registry.take() else {
            return;
        };
        if !self.store.is_durable() || self.broken.is_some() {
            return;
        }
        let mut failure = None;
        let store = &self.store;
        let scheduler = Scheduler::new(
            registry,
            |flow| {
                store.last_slot(flow).unwrap_or_else(|e| {
                    failure = Some(e);
                    None
                })
            },
            Clock::now().wall_ms,
        );
        if let Some(e) = failure {
            self.give_up(e);
            return;
        }
        if scheduler.next_due().is_none() {
            return;
        }
        self.schedules = Some(scheduler);
        self.fire_due(ctx);
        ctx.run_interval(SCHEDULE_TICK, |act, ctx| act.fire_due(ctx));
    }

    /// Starts one run per schedule slot that is due. The slot is recorded
    /// in the run's own transaction ([`RunStore::insert`]).
    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        if self.broken.is_some() {
            return;
        }
        let Some(scheduler) = self.schedules.as_mut() else {
            return;
        };
        let fires = scheduler.due(Clock::now().wall_ms);
        let registry = scheduler.registry().clone();
        for fire in fires {
            let Some(registered) = registry.get(&fire.flow) else {
                continue;
            };
            let slot = registered
                .flow
                .schedule
                .as_ref()
                .map(|s| s.slot_text(fire.slot_ms))
                .unwrap_or_default();
            let source = registered.scheduled_source(fire.slot_ms);
            let flow = match FlowSpec::parse_source(&source) {
                Ok(flow) => Arc::new(flow),
                Err(problems) => {
                    // Checked when the flow was registered: not expected.
                    error!(flow = %fire.flow, slot = %slot, problems = %problems, "A scheduled run does not parse; its slot is skipped");
                    continue;
                }
            };
            let origin = Origin {
                retry_of: None,
                slot: Some(crate::runstore::ScheduleSlot {
                    flow: fire.flow.clone(),
                    slot_ms: fire.slot_ms,
                }),
            };
            match self.start_run(flow, &source, None, origin, ctx) {
                Ok((id, _, _)) => {
                    let lag_ms = self
                        .schedules
                        .as_ref()
                        .map(|s| s.started(&fire, Clock::now().wall_ms))
                        .unwrap_or_default();
                    crate::metrics::set_schedule_lag(Duration::from_millis(lag_ms));
                    info!(flow = %fire.flow, flow_run = %id, slot = %slot, lag_ms, "Schedule slot fired");
                }
                // The database failed: the coordinator is stopping.
                Err(_) => return,
            }
        }
    }

    /// Loads every unfinished run of the database and publishes again what
    /// was recorded as dispatched but never confirmed.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let stored = match self.store.unfinished() {
            Ok(s) => s,
            Err(e) => {
                self.give_up(e);
                return;
            }
        };
        if stored.is_empty() {
            return;
        }
        let clock = Clock::now();
        let mut republish = Vec::new();
        for s in stored {
            let machine = match restore(&s.id, &s.source, &s.snapshot, &clock) {
                Ok(m) => m,
                Err(e) => {
                    let reason = format!("cannot resume after a restart: {e}");
                    error!(flow_run = %s.id, error = %reason, "Failing a saved flow run");
                    let mut snap = s.snapshot.clone();
                    snap.state = conveyor_schemas::FlowState::Failed;
                    snap.error = Some(reason.clone());
                    snap.finished_ms = Some(clock.wall_ms);
                    let text = serde_json::to_string(&snap).unwrap_or_default();
                    let report = RunReport {
                        flow: s
                            .id
                            .rsplit_once('-')
                            .map(|(f, _)| f)
                            .unwrap_or_default()
                            .to_string(),
                        flow_run: s.id.clone(),
                        state: snap.state,
                        elapsed_ms: clock.wall_ms.saturating_sub(snap.started_ms),
                        error: Some(reason.clone()),
                        tasks: Vec::new(),
                    };
                    let report_text = serde_json::to_string(&report).unwrap_or_default();
                    let update = RunUpdate {
                        snapshot: &text,
                        state: snap.state,
                        report: Some(&report_text),
                        ended_ms: snap.finished_ms,
                        now_ms: clock.wall_ms,
                    };
                    if let Err(e) = self.store.update(&s.id, &update) {
                        self.give_up(e);
                        return;
                    }
                    self.metrics.run_ended(&report.flow, report.state);
                    self.notifier.run_ended(&report);
                    if let Some((request, queue)) = &s.client {
                        self.send_event(queue, request, FlowEventKind::Rejected { error: reason });
                    }
                    continue;
                }
            };
            let again = machine.unpublished();
            info!(flow_run = %s.id, state = %machine.state(), republish = again.len(), "Resuming a flow run saved before the restart");
            republish.extend(again);
            let (progress, _) = watch::channel(machine.report(clock.now));
            self.runs.insert(
                s.id.clone(),
                Run {
                    machine,
                    progress,
                    done: None,
                    client: s.client.map(|(request_id, queue)| Client {
                        request_id,
                        queue,
                        last_event: None,
                        held_back: false,
                    }),
                    saved: Some(0),
                    announced: None,
                },
            );
        }
        for msg in republish {
            warn!(flow_run = %msg.flow_run, task_run = %msg.task_run, attempt = msg.attempt, "Publishing again an attempt saved as dispatched but not confirmed (a duplicate is fenced by the worker)");
            self.publish(msg, ctx);
        }
    }
}

/// A run just started: its id, its reports as they change, its final report.
type Started = (
    String,
    watch::Receiver<RunReport>,
    oneshot::Receiver<RunReport>,
);

/// Saves a run's snapshot, and its report once it has ended, in one row update.
fn save(
    store: &RunStore,
    id: &str,
    machine: &FlowRun,
    report: &RunReport,
    clock: &Clock,
) -> Result<(), StoreError> {
    let encode = |what: &'static str| {
        move |e: serde_json::Error| StoreError::Encode {
            run: id.to_string(),
            what,
            message: e.to_string(),
        }
    };
    let snap = machine.snapshot(clock);
    let text = serde_json::to_string(&snap).map_err(encode("snapshot"))?;
    let report_text = snap
        .state
        .is_terminal()
        .then(|| serde_json::to_string(report))
        .transpose()
        .map_err(encode("report"))?;
    store.update(
        id,
        &RunUpdate {
            snapshot: &text,
            state: snap.state,
            report: report_text.as_deref(),
            ended_ms: snap.finished_ms,
            now_ms: clock.wall_ms,
        },
    )
}

/// Rebuilds a saved run from its flow's text and its snapshot.
fn restore(
    id: &str,
    source: &FlowSource,
    snapshot: &FlowSnapshot,
    clock: &Clock,
) -> Result<FlowRun, RestoreError> {
    let flow = FlowSpec::parse_source(source)?;
    FlowRun::restore(id.to_string(), Arc::new(flow), snapshot, clock)
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(node = %self.node, reply_queue = %self.reply_queue, durable = self.store.is_durable(), "Coordinator started");
        self.resume(ctx);
        ctx.run_interval(TICK, |act, ctx| act.advance(None, ctx));
        self.start_schedules(ctx);
    }
}

/// Where a new run comes from, besides its flow.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The run it retries.
    pub retry_of: Option<String>,
    /// The schedule slot it fires.
    pub slot: Option<crate::runstore::ScheduleSlot>,
}

/// A handle on a submitted flow run.
pub struct Submitted {
    pub flow_run: String,
    pub progress: watch::Receiver<RunReport>,
    pub done: oneshot::Receiver<RunReport>,
}

/// A flow from this process (`conveyor run`).
#[derive(Message)]
#[rtype(result = "Result<Submitted, NotTaken>")]
pub struct Submit {
    pub flow: Arc<FlowSpec>,
    pub source: FlowSource,
}

impl Handler<Submit> for Coordinator {
    type Result = Result<Submitted, NotTaken>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        self.check()?;
        let (flow_run, progress, done) =
            self.start_run(msg.flow, &msg.source, None, Origin::default(), ctx)?;
        Ok(Submitted {
            flow_run,
            progress,
            done,
        })
    }
}

/// Cancels a run: see [`crate::handle::CoordinatorHandle::cancel`].
#[derive(Message)]
#[rtype(result = "Result<(), CoordinatorError>")]
pub struct CancelRun(pub String);

impl Handler<CancelRun> for Coordinator {
    type Result = Result<(), CoordinatorError>;

    fn handle(&mut self, CancelRun(id): CancelRun, ctx: &mut Context<Self>) -> Self::Result {
        self.check().map_err(|e| CoordinatorError::NotTaken(e.0))?;
        let Some(run) = self.runs.get_mut(&id) else {
            return Err(match self.store.load(&id)? {
                Some(saved) => CoordinatorError::Conflict(format!(
                    "flow run {id} already ended ({}); only a run in flight can be cancelled",
                    saved.snapshot.state
                )),
                None => CoordinatorError::no_run(&id),
            });
        };
        if !run.machine.cancel(Instant::now()) {
            return Err(CoordinatorError::Conflict(format!(
                "flow run {id} already ended ({})",
                run.machine.state()
            )));
        }
        info!(flow_run = %id, "Cancelling a flow run; its workers are told to stop");
        // Saves it, tells its client, announces its end to the workers.
        self.advance(Some(&id), ctx);
        self.check().map_err(|e| CoordinatorError::NotTaken(e.0))
    }
}

/// Retries a run: see [`crate::handle::CoordinatorHandle::retry`].
#[derive(Message)]
#[rtype(result = "Result<Submitted, CoordinatorError>")]
pub struct RetryRun(pub String);

impl Handler<RetryRun> for Coordinator {
    type Result = Result<Submitted, CoordinatorError>;

    fn handle(&mut self, RetryRun(id): RetryRun, ctx: &mut Context<Self>) -> Self::Result {
        self.check().map_err(|e| CoordinatorError::NotTaken(e.0))?;
        if self.runs.contains_key(&id) {
            return Err(CoordinatorError::Conflict(format!(
                "flow run {id} is still running; only a run that ended can be retried"
            )));
        }
        if !self.store.is_durable() {
            return Err(CoordinatorError::NoHistory);
        }
        let Some(old) = self.store.load(&id)? else {
            return Err(CoordinatorError::no_run(&id));
        };
        if old.snapshot.state == conveyor_schemas::FlowState::Succeeded {
            return Err(CoordinatorError::Conflict(format!(
                "flow run {id} succeeded; there is nothing to retry"
            )));
        }
        let flow = FlowSpec::parse_source(&old.source).map_err(|problems| {
            CoordinatorError::Invalid(format!(
                "flow run {id} cannot be retried: its flow no longer parses\n{problems}"
            ))
        })?;
        let origin = Origin {
            retry_of: Some(id),
            slot: None,
        };
        let (flow_run, progress, done) = self
            .start(
                Arc::new(flow),
                &old.source,
                None,
                origin,
                Some(&old.snapshot),
                ctx,
            )
            .map_err(|e| CoordinatorError::NotTaken(e.0))?;
        Ok(Submitted {
            flow_run,
            progress,
            done,
        })
    }
}

/// The current report of a run the coordinator holds in flight.
#[derive(Message)]
#[rtype(result = "Option<RunReport>")]
pub struct LiveReport(pub String);

impl Handler<LiveReport> for Coordinator {
    type Result = Option<RunReport>;

    fn handle(&mut self, LiveReport(id): LiveReport, _ctx: &mut Context<Self>) -> Self::Result {
        self.runs
            .get(&id)
            .map(|run| run.machine.report(Instant::now()))
    }
}

/// The reports of a run in flight, as they change.
#[derive(Message)]
#[rtype(result = "Option<watch::Receiver<RunReport>>")]
pub struct WatchRun(pub String);

impl Handler<WatchRun> for Coordinator {
    type Result = Option<watch::Receiver<RunReport>>;

    fn handle(&mut self, WatchRun(id): WatchRun, _ctx: &mut Context<Self>) -> Self::Result {
        self.runs.get(&id).map(|run| run.progress.subscribe())
    }
}

/// Every run's start and state changes from now on.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<RunChange>")]
pub struct SubscribeRuns;

impl Handler<SubscribeRuns> for Coordinator {
    type Result = MessageResult<SubscribeRuns>;

    fn handle(&mut self, _: SubscribeRuns, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.changes.subscribe())
    }
}

/// A flow submitted over the broker by `conveyor run --submit`. Answered
/// once it is saved, so that the submission can be acked.
#[derive(Message)]
#[rtype(result = "Result<(), NotTaken>")]
pub struct SubmitRemote(pub FlowSubmission);

impl Handler<SubmitRemote> for Coordinator {
    type Result = Result<(), NotTaken>;

    fn handle(&mut self, SubmitRemote(sub): SubmitRemote, ctx: &mut Context<Self>) -> Self::Result {
        self.check()?;
        let reject = |this: &Self, error: String| {
            warn!(request_id = %sub.request_id, client = %sub.client, error = %error, "Rejecting a submitted flow");
            this.send_event(
                &sub.reply_to,
                &sub.request_id,
                FlowEventKind::Rejected { error },
            );
        };
        if sub.schema_version != SCHEMA_VERSION {
            reject(
                self,
                format!(
                    "schema version {} is not supported by coordinator `{}` (it speaks version {SCHEMA_VERSION})",
                    sub.schema_version, self.node
                ),
            );
            return Ok(());
        }
        // A redelivered submission: answer with the run it already started
        // (an indexed lookup in the database, not a scan of the runs).
        match self.store.find_request(&sub.request_id) {
            Ok(Some(seen)) => {
                if let Some(run) = self.runs.get(&seen.id) {
                    info!(request_id = %sub.request_id, flow_run = %seen.id, "Submission seen before; answering with its run");
                    let report = run.machine.report(Instant::now());
                    self.send_event(
                        &sub.reply_to,
                        &sub.request_id,
                        FlowEventKind::Accepted { report },
                    );
                    return Ok(());
                }
                info!(request_id = %sub.request_id, flow_run = %seen.id, "Submission seen before; its run already finished");
                let report = restore(&seen.id, &seen.source, &seen.snapshot, &Clock::now())
                    .map(|m| m.report(Instant::now()));
                match report {
                    Ok(report) => self.send_event(
                        &sub.reply_to,
                        &sub.request_id,
                        FlowEventKind::Finished { report },
                    ),
                    Err(e) => reject(self, e.to_string()),
                }
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => {
                self.give_up(e.clone());
                return Err(NotTaken(e));
            }
        }
        let base = std::path::Path::new(&sub.flow_base);
        if !base.is_absolute() {
            reject(
                self,
                format!("flow_base `{}` is not an absolute path", sub.flow_base),
            );
            return Ok(());
        }
        let flow =
            match FlowSpec::parse_with_params(&sub.flow_file, &sub.flow_text, base, &sub.params) {
                Ok(f) => f,
                Err(problems) => {
                    reject(self, format!("invalid flow\n{problems}"));
                    return Ok(());
                }
            };
        let refused = self.secrets.refused_in(&sub.flow_text);
        if !refused.is_empty() {
            let names: Vec<String> = refused.iter().map(|n| format!("`{n}`")).collect();
            reject(
                self,
                format!(
                    "the flow names the environment variable {} (as `${{env:NAME}}`), not in coordinator `{}`'s [secrets] allow",
                    names.join(", "),
                    self.node
                ),
            );
            return Ok(());
        }
        info!(request_id = %sub.request_id, client = %sub.client, flow = %flow.name, "Flow submitted by a client");
        let source = FlowSource {
            file: sub.flow_file.clone(),
            text: sub.flow_text.clone(),
            base: sub.flow_base.clone(),
            params: sub.params.clone(),
        };
        let client = Client {
            request_id: sub.request_id.clone(),
            queue: sub.reply_to.clone(),
            // The accepted event is the first.
            last_event: Some(Instant::now()),
            held_back: false,
        };
        self.start_run(
            Arc::new(flow),
            &source,
            Some(client),
            Origin::default(),
            ctx,
        )
        .map(|_| ())
    }
}

/// The broker confirmed a task message.
#[derive(Message)]
#[rtype(result = "()")]
struct Published {
    flow_run: String,
    task: String,
    attempt: u32,
}

impl Handler<Published> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: Published, ctx: &mut Context<Self>) {
        if let Some(run) = self.runs.get_mut(&msg.flow_run) {
            if run.machine.mark_published(&msg.task, msg.attempt) {
                self.advance(Some(&msg.flow_run), ctx);
            }
        }
    }
}

/// The transport gave up publishing a task message.
#[derive(Message)]
#[rtype(result = "()")]
struct PublishFailed {
    flow_run: String,
    task: String,
    attempt: u32,
    reason: String,
}

impl Handler<PublishFailed> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PublishFailed, ctx: &mut Context<Self>) {
        if let Some(run) = self.runs.get_mut(&msg.flow_run) {
            let mut rng = rand::rng();
            let mut jitter = || rng.random_range(0.5..=1.0);
            run.machine.publish_failed(
                &msg.task,
                msg.attempt,
                &msg.reason,
                Instant::now(),
                &mut jitter,
            );
            self.advance(Some(&msg.flow_run), ctx);
        }
    }
}

/// One update from a worker, off the reply queue. Answered once saved.
#[derive(Message)]
#[rtype(result = "Result<(), NotTaken>")]
pub struct UpdateFromWorker(pub TaskUpdate);

impl Handler<UpdateFromWorker> for Coordinator {
    type Result = Result<(), NotTaken>;

    fn handle(
        &mut self,
        UpdateFromWorker(update): UpdateFromWorker,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.check()?;
        let Some(run) = self.runs.get_mut(&update.flow_run) else {
            info!(flow_run = %update.flow_run, task_run = %update.task_run, "Update for a flow run this coordinator does not hold; ignoring");
            if matches!(update.status, conveyor_schemas::UpdateStatus::Started) {
                self.announce_again(&update.flow_run);
            }
            return Ok(());
        };
        let mut rng = rand::rng();
        let mut jitter = || rng.random_range(0.5..=1.0);
        let applied = run.machine.apply(&update, Instant::now(), &mut jitter);
        // Every attempt's history, a superseded one's late result included.
        if let (Some(history), false) = (&self.history, matches!(applied, Applied::Unknown)) {
            history.attempt(crate::history::AttemptEvent::of_update(
                &update,
                Clock::now().wall_ms,
            ));
        }
        match applied {
            Applied::Changed => {}
            Applied::Stale => {
                info!(task_run = %update.task_run, attempt = update.attempt, "Ignoring a stale update from a superseded attempt")
            }
            Applied::Duplicate => {
                info!(task_run = %update.task_run, attempt = update.attempt, delivery = update.delivery, "Ignoring a duplicate update")
            }
            Applied::Unknown => {
                warn!(task_run = %update.task_run, "Update names a task this flow does not have")
            }
        }
        let id = update.flow_run.clone();
        self.advance(Some(&id), ctx);
        self.check()
    }
}

/// A task message the broker dead-lettered, routed back to its coordinator.
#[derive(Message)]
#[rtype(result = "Result<(), NotTaken>")]
pub struct DeadLettered {
    pub task: TaskMessage,
    pub reason: String,
}

impl Handler<DeadLettered> for Coordinator {
    type Result = Result<(), NotTaken>;

    fn handle(&mut self, msg: DeadLettered, ctx: &mut Context<Self>) -> Self::Result {
        self.check()?;
        let task = msg.task;
        let Some(run) = self.runs.get_mut(&task.flow_run) else {
            return Ok(());
        };
        let applied =
            run.machine
                .dead_lettered(&task.task, task.attempt, &msg.reason, Instant::now());
        warn!(task_run = %task.task_run, attempt = task.attempt, reason = %msg.reason, ?applied, "Task dead-lettered by the broker");
        self.advance(Some(&task.flow_run), ctx);
        self.check()
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct HeartbeatSeen(pub Heartbeat);

impl Handler<HeartbeatSeen> for Coordinator {
    type Result = ();

    fn handle(&mut self, HeartbeatSeen(hb): HeartbeatSeen, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // A kind with no live worker until now: the runs waiting for one
        // dispatch at once, not at the next tick (a `conveyor run` waited
        // up to a tick for its first task).
        let news = hb.kinds.iter().any(|&k| !self.live.is_live(k, now));
        self.live.saw(&hb, now);
        if news {
            self.advance(None, ctx);
        }
    }
}

/// The nodes whose heartbeats this coordinator hears.
#[derive(Message)]
#[rtype(result = "Vec<crate::view::NodeView>")]
pub struct ListNodes;

impl Handler<ListNodes> for Coordinator {
    type Result = Vec<crate::view::NodeView>;

    fn handle(&mut self, _: ListNodes, _ctx: &mut Context<Self>) -> Self::Result {
        self.live.nodes(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_expires_after_three_intervals() {
        let mut live = Liveness::default();
        let t0 = Instant::now();
        live.saw(
            &Heartbeat {
                schema_version: SCHEMA_VERSION,
                node: "w".into(),
                kinds: vec![TaskKind::Load],
                in_flight: vec![],
                interval_ms: 100,
                version: Some("0.1.0".into()),
            },
            t0,
        );
        assert!(live.is_live(TaskKind::Load, t0 + Duration::from_millis(250)));
        assert!(!live.is_live(TaskKind::Extract, t0));
        let nodes = live.nodes(t0 + Duration::from_millis(250));
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            (nodes[0].heartbeat_age_ms, nodes[0].version.as_deref()),
            (250, Some("0.1.0"))
        );
        assert!(!live.is_live(TaskKind::Load, t0 + Duration::from_millis(300)));
        assert!(live.nodes(t0 + Duration::from_millis(300)).is_empty());
    }
}
