/*!
The worker actor: one per configured kind on a node. At most `concurrency`
tasks of the kind run at once (a semaphore); the broker hands it at most
`prefetch` unacked deliveries (default: the concurrency, so a node never holds
work it cannot start).

Each delivery is processed off the actix thread: decoding and broker calls on
the I/O runtime, the Arrow work in `spawn_blocking`. The order of effects is
what makes a task's effect happen once:

1. decode and check the message; a bad one is dead-lettered with one log line;
2. if the task run already has a commit marker, this is a duplicate delivery:
   answer with the recorded output, ack, done;
3. run the task to a committed output (tmp file, fsync, rename) and write the marker;
   its `${env:NAME}` secrets are expanded from this node's environment just
   before (see [`conveyor_schemas::secrets`]), and their values, like URL
   passwords, are redacted from its error, output location and log lines;
4. publish the result (confirmed), and only then ack.

A run that ends while its attempt runs here (cancelled, or failed; see
[`crate::cancel`]) raises the attempt's flag: the worker stops waiting for the
blocking work, acks, and frees its slot at once; the work stops at its next
batch and commits nothing. A task of a run known to have ended is acked
without starting.

A panic in the task leaves the delivery unacked and stops the actor; the
supervisor restarts it with backoff and the broker redelivers the task (and
dead-letters it once it passes the delivery limit).

Graceful stop ([`Drain`]): cancel the consumer, let in-flight tasks finish
within the grace period, then close the channel so the broker requeues the rest.
*/

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use conveyor_etl::{commit, Attempt, Workspace};
use conveyor_schemas::secrets::Secrets;
use conveyor_schemas::{TaskKind, TaskMessage, TaskUpdate, UpdateStatus, SCHEMA_VERSION};
use tokio::sync::watch;
use tracing::{error, info, warn, Instrument};

use crate::metrics::{Moved, TaskOutcome, WorkerMetrics};
use conveyor_transport::failpoint::Failpoints;
use conveyor_transport::{Delivery, Subscription, Transport, TransportError};

/// Tells the supervisor that a worker actor stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerExited {
    pub kind: TaskKind,
    pub crashed: bool,
}

/// Everything a task needs, cloned into each processing future.
#[derive(Clone)]
pub struct WorkerEnv {
    pub node: String,
    pub transport: Transport,
    pub io: conveyor_transport::tasks::IoTasks,
    pub workspace: Workspace,
    /// Task runs this node holds right now, for heartbeats.
    pub in_flight: Arc<Mutex<HashSet<String>>>,
    pub failpoints: Failpoints,
    /// The kinds whose worker consumes its queue right now, so that the node
    /// can tell when every role has started.
    pub consuming: Arc<watch::Sender<BTreeSet<TaskKind>>>,
    /// Task counts, durations and volumes, by kind.
    pub metrics: WorkerMetrics,
    /// Cancel flags of the attempts running here, raised when their run
    /// ends; and the runs heard to end, whose tasks are not started.
    pub cancels: crate::cancel::RunCancels,
    /// `[secrets] allow`: the only variables a task's `${env:NAME}` reads.
    pub secrets: conveyor_schemas::secrets::AllowList,
}

pub struct Worker {
    kind: TaskKind,
    concurrency: usize,
    prefetch: u16,
    /// Bounds the tasks of this kind running at once, whatever the prefetch.
    slots: Arc<tokio::sync::Semaphore>,
    env: WorkerEnv,
    supervisor: Recipient<WorkerExited>,
    subscription: Option<Arc<Subscription>>,
    active: watch::Sender<usize>,
    crashed: bool,
    /// Set by [`Drain`]: the consumer ending is then expected.
    draining: bool,
}

impl Worker {
    pub fn new(
        kind: TaskKind,
        concurrency: usize,
        prefetch: Option<u16>,
        env: WorkerEnv,
        supervisor: Recipient<WorkerExited>,
    ) -> Self {
        let concurrency = concurrency.max(1);
        Worker {
            kind,
            concurrency,
            prefetch: prefetch.unwrap_or(concurrency.min(u16::MAX as usize) as u16),
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            env,
            supervisor,
            subscription: None,
            active: watch::channel(0).0,
            crashed: false,
            draining: false,
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RunTask(Delivery);

#[derive(Message)]
#[rtype(result = "()")]
struct ConsumerEnded;

impl Handler<ConsumerEnded> for Worker {
    type Result = ();

    fn handle(&mut self, _: ConsumerEnded, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        warn!(kind = %self.kind, "Task consumer ended (broker connection lost?); restarting the worker");
        ctx.stop();
    }
}

/// Stop taking tasks, finish in-flight ones within `grace`, then stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

/// How processing one delivery ended.
enum Outcome {
    Settled,
    /// The task panicked. The delivery is handed back unsettled: it may only
    /// be requeued once this worker's consumer is cancelled, or the broker
    /// could hand it straight back to the crashing worker.
    Crashed(Delivery),
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let transport = self.env.transport.clone();
        let kind = self.kind;
        let (prefetch, concurrency) = (self.prefetch, self.concurrency);
        let tag = format!("{}-{kind}", self.env.node);
        let subscribe = self
            .env
            .io
            .spawn(async move { transport.consume_tasks(kind, prefetch, &tag).await });
        ctx.wait(
            subscribe
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(mut sub)) => {
                        let addr = ctx.address();
                        let mut rx =
                            std::mem::replace(&mut sub.deliveries, tokio::sync::mpsc::channel(1).1);
                        act.subscription = Some(Arc::new(sub));
                        act.env.io.spawn(async move {
                            // do_send, not try_send: a burst larger than the
                            // mailbox must queue, not stop the consumer. Prefetch
                            // bounds how many deliveries can be waiting.
                            while let Some(d) = rx.recv().await {
                                if !addr.connected() {
                                    return;
                                }
                                addr.do_send(RunTask(d));
                            }
                            // The broker connection dropped (or the consumer was
                            // cancelled): a restart subscribes on the new connection.
                            addr.do_send(ConsumerEnded);
                        });
                        info!(kind = %kind, concurrency, prefetch, "Worker consuming");
                        act.env.consuming.send_modify(|kinds| {
                            kinds.insert(kind);
                        });
                    }
                    Ok(Err(e)) => {
                        error!(kind = %kind, error = %e, "Worker cannot consume its queue");
                        act.crashed = true;
                        ctx.stop();
                    }
                    Err(e) => {
                        error!(kind = %kind, error = %e, "Worker subscription task failed");
                        act.crashed = true;
                        ctx.stop();
                    }
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.env.consuming.send_modify(|kinds| {
            kinds.remove(&self.kind);
        });
        if let Some(sub) = self.subscription.take() {
            self.env.io.spawn(async move {
                if let Ok(sub) = Arc::try_unwrap(sub) {
                    sub.close().await;
                }
            });
        }
        self.supervisor.do_send(WorkerExited {
            kind: self.kind,
            crashed: self.crashed,
        });
    }
}

impl Handler<RunTask> for Worker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, RunTask(delivery): RunTask, _ctx: &mut Context<Self>) -> Self::Result {
        if self.crashed {
            // Unsettled, it goes back to the queue when the channel closes.
            drop(delivery);
            return Box::pin(actix::fut::ready(()));
        }
        self.active.send_modify(|n| *n += 1);
        let job = self.env.io.spawn(process(
            self.env.clone(),
            self.kind,
            self.slots.clone(),
            delivery,
        ));
        Box::pin(job.into_actor(self).map(|res, act, ctx| {
            act.active.send_modify(|n| *n -= 1);
            let crashed_delivery = match res {
                Ok(Outcome::Settled) => return,
                Ok(Outcome::Crashed(delivery)) => Some(delivery),
                Err(e) => {
                    error!(kind = %act.kind, error = %e, "Task processing aborted");
                    None
                }
            };
            error!(kind = %act.kind, "Worker crashed on a task; the supervisor will restart it");
            act.crashed = true;
            // Cancel first, then requeue, then close: the task must go to a
            // fresh worker, not back to this one.
            let sub = act.subscription.take();
            act.env.io.spawn(async move {
                if let Some(sub) = &sub {
                    sub.cancel().await;
                }
                if let Some(d) = crashed_delivery {
                    let _ = d.requeue().await;
                }
                if let Some(Ok(sub)) = sub.map(Arc::try_unwrap) {
                    sub.close().await;
                }
            });
            ctx.stop();
        }))
    }
}

impl Handler<Drain> for Worker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let sub = self.subscription.clone();
        let mut active = self.active.subscribe();
        let kind = self.kind;
        let wait = self.env.io.spawn(async move {
            if let Some(sub) = &sub {
                sub.cancel().await;
            }
            let drained = tokio::time::timeout(msg.grace, active.wait_for(|n| *n == 0)).await;
            if drained.is_err() {
                warn!(kind = %kind, "Grace period over; in-flight tasks go back to the queue");
            }
        });
        Box::pin(
            async move {
                let _ = wait.await;
            }
            .into_actor(self)
            .map(|_, _act, ctx| ctx.stop()),
        )
    }
}

async fn publish(
    env: &WorkerEnv,
    msg: &TaskMessage,
    delivery: u32,
    status: UpdateStatus,
) -> Result<(), TransportError> {
    let update = TaskUpdate::for_attempt(msg, &env.node, delivery, status);
    env.transport.publish_update(&msg.reply_to, &update).await
}

/// Acks a task; false (and a warning) when the ack could not be sent.
async fn settle_ack(delivery: Delivery) -> bool {
    match delivery.ack().await {
        Ok(true) => true,
        Ok(false) => {
            warn!("Ack not sent (channel closed); the broker may redeliver this task");
            false
        }
        Err(e) => {
            warn!(error = %e, "Ack failed; the broker may redeliver this task");
            false
        }
    }
}

/// Checks a decoded message before any work: a message is hostile until checked.
fn check_message(msg: &TaskMessage, kind: TaskKind) -> Result<(), String> {
    if msg.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "unsupported schema_version {} (this node speaks {SCHEMA_VERSION})",
            msg.schema_version
        ));
    }
    if msg.spec.kind() != kind {
        return Err(format!(
            "a {} task arrived on the {kind} queue",
            msg.spec.kind()
        ));
    }
    conveyor_etl::paths::check_run_id("flow_run", &msg.flow_run).map_err(|e| e.to_string())?;
    conveyor_etl::paths::check_task_name("task", &msg.task).map_err(|e| e.to_string())?;
    if msg.attempt == 0 || msg.reply_to.is_empty() {
        return Err("attempt must be at least 1 and reply_to must be set".into());
    }
    Ok(())
}

/// Largest task message accepted; flows are small, data travels as artifacts.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

async fn process(
    env: WorkerEnv,
    kind: TaskKind,
    slots: Arc<tokio::sync::Semaphore>,
    delivery: Delivery,
) -> Outcome {
    if delivery.body.len() > MAX_MESSAGE_BYTES {
        error!(kind = %kind, bytes = delivery.body.len(), "Rejecting an oversize task message to the dead-letter queue");
        let _ = delivery.dead_letter().await;
        return Outcome::Settled;
    }
    let msg: TaskMessage = match serde_json::from_slice(&delivery.body) {
        Ok(m) => m,
        Err(e) => {
            error!(kind = %kind, error = %e, bytes = delivery.body.len(), "Rejecting an undecodable task message to the dead-letter queue");
            let _ = delivery.dead_letter().await;
            return Outcome::Settled;
        }
    };
    if let Err(why) = check_message(&msg, kind) {
        error!(kind = %kind, task_run = %msg.task_run, error = %why, "Rejecting a bad task message to the dead-letter queue");
        let _ = delivery.dead_letter().await;
        return Outcome::Settled;
    }
    let span = tracing::info_span!("task", flow_run = %msg.flow_run, task_run = %msg.task_run, attempt = msg.attempt, node = %env.node, kind = %kind);
    // Held until the task is settled; the semaphore is never closed.
    let Ok(_slot) = slots.acquire_owned().await else {
        return Outcome::Settled;
    };
    // Checked once a slot is free: the run may have ended while it waited.
    if env.cancels.has_ended(&msg.flow_run) {
        return async move {
            info!(
                delivery = delivery.delivery,
                "Not starting a task of a run that ended; acking it"
            );
            settle_ack(delivery).await;
            Outcome::Settled
        }
        .instrument(span)
        .await;
    }
    run_one(env, msg, delivery).instrument(span).await
}

async fn run_one(env: WorkerEnv, msg: TaskMessage, delivery: Delivery) -> Outcome {
    let n = delivery.delivery;
    let _running = env.metrics.of(msg.spec.kind()).running();
    if let Ok(mut set) = env.in_flight.lock() {
        set.insert(msg.task_run.clone());
    }
    let outcome = run_tracked(&env, &msg, delivery, n).await;
    if let Ok(mut set) = env.in_flight.lock() {
        set.remove(&msg.task_run);
    }
    outcome
}

async fn run_tracked(env: &WorkerEnv, msg: &TaskMessage, delivery: Delivery, n: u32) -> Outcome {
    // The start is reported while the work runs, not before it: its broker
    // round trip overlaps the work. The coordinator takes a start that
    // arrives after the result as stale, and counts the attempt from the
    // result. A task that commits an output (a load or a gather) waits for
    // the start's verdict before it replaces that output, so for those the
    // round trip overlaps the work but not the commit.
    let (routed_tx, routed_rx) = std::sync::mpsc::sync_channel::<bool>(1);
    let started = tokio::spawn({
        let (env, msg) = (env.clone(), msg.clone());
        async move {
            let sent = publish(&env, &msg, n, UpdateStatus::Started).await;
            let _ = routed_tx.send(!matches!(sent, Err(TransportError::Unroutable(_))));
            sent
        }
    });
    // The task's `${env:NAME}` secrets, read from this node's environment
    // just before it runs, and only those its `[secrets] allow` names.
    // Their values stay here: every error, output location and log line
    // that leaves is redacted with them.
    let (spec, secrets) =
        match conveyor_schemas::secrets::expand_spec_allowed(&msg.spec, &env.secrets, &|name| {
            std::env::var(name).ok()
        }) {
            Ok((spec, secrets)) => (Ok(spec), secrets),
            Err(e) => (
                Err(conveyor_etl::EtlError::Spec(format!(
                    "task `{}`: {e}",
                    msg.task
                ))),
                Secrets::default(),
            ),
        };
    // Captures this attempt's log lines from here on, for its coordinator.
    let log = crate::tasklog::Shipper::start(&env.transport, msg, &env.node, n, secrets.clone());
    info!(delivery = n, "Task started");
    let began = std::time::Instant::now();

    let work_env = env.clone();
    let work_msg = msg.clone();
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn(report_progress(
        env.clone(),
        msg.clone(),
        n,
        progress.clone(),
    ));
    let cancel = env.cancels.register(&msg.flow_run);
    let flag = cancel.flag.clone();
    // The blocking work runs in the attempt's span, so that what the data
    // plane logs is the attempt's too.
    let span = tracing::Span::current();
    let work = tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let spec = spec?;
        let done = execute(&work_env, &work_msg, &spec, n, &progress, &flag, routed_rx)?;
        // Its bytes cost a few `stat` calls: only when metrics are on.
        let moved = (!done.duplicate && conveyor_transport::metrics::recording())
            .then(|| Moved::by(&work_env.workspace, &spec, &done.output));
        Ok((done, moved))
    });
    // The blocking work may sit in a read for long (a slow download): when
    // the run ends, stop waiting for it. It is abandoned, not killed: it
    // stops at its next batch, and its flag fences any commit it reaches.
    let metrics = env.metrics.of(msg.spec.kind());
    let end = tokio::select! {
        result = work => {
            reporter.abort();
            Settle::of_work(result, &metrics, began, &secrets)
        }
        _ = cancel.flag.raised() => {
            reporter.abort();
            metrics.finished(TaskOutcome::Cancelled, began.elapsed());
            info!(delivery = n, "Aborted the attempt: its run ended (the work left behind stops at its next batch and commits nothing)");
            Settle::Cancelled
        }
    };
    settle(env, msg, n, delivery, log, started, began, end).await
}

/// How an attempt ended on this worker: the one value that [`settle`] turns
/// into the update to the coordinator, the flush of the attempt's log lines,
/// and the ack (or the hand-back) of its delivery.
enum Settle {
    /// It committed its output (or found it committed by an earlier delivery).
    Succeeded(conveyor_schemas::TaskOutput),
    /// It failed; the error's retry hint tells the coordinator what next.
    Failed(conveyor_schemas::TaskError),
    /// Its run was abandoned while it ran: the commit gate kept the output
    /// as it was. Expected, not a failure, but reported as one.
    Abandoned(conveyor_schemas::TaskError),
    /// Its run ended (cancelled, or finished elsewhere) while it ran: it
    /// committed nothing and nobody waits for a result. Acked.
    Cancelled,
    /// The work panicked: the delivery goes back, unsettled, for redelivery.
    Requeue,
}

impl Settle {
    /// The end of an attempt whose blocking work returned `result`, counted
    /// in `metrics`. What leaves the node is redacted with its `secrets`.
    fn of_work(
        result: Result<conveyor_etl::Result<(Executed, Option<Moved>)>, tokio::task::JoinError>,
        metrics: &crate::metrics::TaskMetrics,
        began: std::time::Instant,
        secrets: &Secrets,
    ) -> Settle {
        let outcome = match &result {
            Ok(Ok((done, _))) if done.duplicate => TaskOutcome::Duplicate,
            Ok(Ok(_)) => TaskOutcome::Succeeded,
            Ok(Err(e)) => TaskOutcome::of_error(e),
            Err(_) => TaskOutcome::Failed,
        };
        metrics.finished(outcome, began.elapsed());
        match result {
            Ok(Ok((done, moved))) => {
                if let Some(moved) = moved {
                    metrics.moved(&moved);
                }
                let mut output = done.output;
                output.location = secrets.redact(&output.location);
                Settle::Succeeded(output)
            }
            Ok(Err(e @ conveyor_etl::EtlError::Cancelled)) => {
                info!(reason = %e, "Aborted the attempt: its run ended; nothing was committed");
                Settle::Cancelled
            }
            Ok(Err(e @ conveyor_etl::EtlError::Abandoned { .. })) => {
                info!(reason = %e, "Task dropped; its run was abandoned");
                Settle::Abandoned(e.to_task_error())
            }
            Ok(Err(e)) => {
                let mut error = e.to_task_error();
                error.message = secrets.redact(&error.message);
                warn!(error = %error.message, retryable = error.retryable, "Task failed");
                Settle::Failed(error)
            }
            Err(join) => {
                let why = if join.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                error!("Task {why}; leaving it for redelivery");
                Settle::Requeue
            }
        }
    }
}

/// Settles an attempt that ended in `end`: the one place where an attempt's
/// update is published, its log lines flushed and its delivery acked (or
/// handed back). `started` is the publish of its start, whose verdict tells
/// whether its coordinator still listens.
#[allow(clippy::too_many_arguments)]
async fn settle(
    env: &WorkerEnv,
    msg: &TaskMessage,
    n: u32,
    delivery: Delivery,
    mut log: Option<crate::tasklog::Shipper>,
    started: tokio::task::JoinHandle<Result<(), TransportError>>,
    began: std::time::Instant,
    end: Settle,
) -> Outcome {
    let status = match end {
        Settle::Succeeded(output) => UpdateStatus::Succeeded(output),
        Settle::Failed(error) | Settle::Abandoned(error) => UpdateStatus::Failed { error },
        Settle::Cancelled => {
            if let Some(log) = &mut log {
                log.finish().await;
            }
            settle_ack(delivery).await;
            return Outcome::Settled;
        }
        Settle::Requeue => {
            if let Some(log) = &mut log {
                log.finish().await;
            }
            return Outcome::Crashed(delivery);
        }
    };
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(TransportError::Unroutable(_))) => {
            // Acked before the line is logged, so the line means "settled".
            if settle_ack(delivery).await {
                warn!(reply_to = %msg.reply_to, "The coordinator's reply queue is gone; dropped the task");
            }
            return Outcome::Settled;
        }
        // The result carries the attempt too; its publish decides.
        Ok(Err(e)) => warn!(error = %e, "Could not report the task start"),
        Err(e) => warn!(error = %e, "Could not report the task start"),
    }
    if let UpdateStatus::Succeeded(o) = &status {
        let duration_ms = began.elapsed().as_millis() as u64;
        info!(
            rows_in = o.rows_in,
            rows_out = o.rows_out,
            duration_ms,
            "Task succeeded"
        );
    }
    // The attempt's last log lines travel inside its result: one message,
    // one confirm, and the result waits for no extra round trip.
    let logs = match &mut log {
        Some(log) => log.finish_into_update().await,
        None => None,
    };
    let update = TaskUpdate::for_attempt(msg, &env.node, n, status).with_logs(logs);
    match env.transport.publish_update(&msg.reply_to, &update).await {
        Ok(()) => {
            settle_ack(delivery).await;
        }
        Err(e) => {
            // The output (if any) is committed and fenced by its marker, so a
            // redelivery answers from the marker without redoing the work.
            warn!(error = %e, "Cannot report the result; returning the task to the queue");
            let _ = delivery.requeue().await;
        }
    }
    // What went wrong after the result (its ack, its publish) is the
    // attempt's too.
    if let Some(log) = log.as_mut().filter(|l| l.has_lines()) {
        log.finish().await;
    }
    Outcome::Settled
}

/// How often a running task reports the rows it has read.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Publishes the rows read so far while a task runs, when they changed.
/// Best effort: a lost progress update is replaced by the next.
async fn report_progress(env: WorkerEnv, msg: TaskMessage, delivery: u32, rows: Arc<AtomicU64>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let now = rows.load(Ordering::Relaxed);
        if now != last {
            last = now;
            let _ = publish(&env, &msg, delivery, UpdateStatus::Progress { rows: now }).await;
        }
    }
}

/// How long a commit waits to learn whether the task's start was routed to
/// its coordinator.
const START_VERDICT_WAIT: Duration = Duration::from_secs(10);

/// A task's committed output, and whether an earlier delivery committed it.
struct Executed {
    output: conveyor_schemas::TaskOutput,
    duplicate: bool,
}

/// Runs the task to a committed output. Blocking: call from `spawn_blocking`.
fn execute(
    env: &WorkerEnv,
    msg: &TaskMessage,
    spec: &conveyor_schemas::TaskSpec,
    delivery: u32,
    progress: &AtomicU64,
    cancel: &crate::cancel::CancelFlag,
    routed: std::sync::mpsc::Receiver<bool>,
) -> conveyor_etl::Result<Executed> {
    let ws = &env.workspace;
    if let Some(output) = commit::committed_output(ws, &msg.flow_run, &msg.task, spec)? {
        info!(
            delivery,
            "Duplicate delivery of a committed task; answering with the recorded output"
        );
        return Ok(Executed {
            output,
            duplicate: true,
        });
    }
    // Whether the task's start reached its coordinator; asked once, by the
    // commit of a load or gather. Only a broker's "unroutable" answer says
    // no. The start's publish retries through reconnects, so a broker that
    // stays away could hold the commit for long: after START_VERDICT_WAIT
    // the commit goes ahead, as it does when the start's task is gone, and
    // the result's publish decides.
    let verdict = std::cell::OnceCell::new();
    let coordinator_listens = || {
        if cancel.is_raised() {
            return Err(conveyor_etl::EtlError::Cancelled);
        }
        if *verdict.get_or_init(|| routed.recv_timeout(START_VERDICT_WAIT).unwrap_or(true)) {
            Ok(())
        } else {
            Err(conveyor_etl::EtlError::Abandoned {
                reply_to: msg.reply_to.clone(),
            })
        }
    };
    let at = Attempt {
        flow_run: &msg.flow_run,
        task: &msg.task,
        attempt: msg.attempt,
        delivery,
        progress,
        before_commit: Some(&coordinator_listens),
        cancel: Some(cancel.flag()),
    };
    env.failpoints.before_task(&msg.task);
    let output = conveyor_etl::run_task(ws, &at, spec)?;
    env.failpoints.after_commit(&msg.task);
    commit::record(ws, &at, &output)?;
    Ok(Executed {
        output,
        duplicate: false,
    })
}
