/*!
The coordinator actor: a thin shell around [`crate::state::FlowRun`].

It feeds the state machine with worker updates (from its durable reply queue),
heartbeats (to know which kinds have live workers) and a clock tick (for
deadlines, backoff and waits), and publishes the task messages the machine
asks for. Every broker call runs on the I/O runtime.
*/

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use conveyor_schemas::{
    ErrorKind, Heartbeat, RunReport, TaskError, TaskKind, TaskMessage, TaskUpdate, UpdateStatus,
    SCHEMA_VERSION,
};
use rand::Rng;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::flow::FlowSpec;
use crate::state::{Applied, FlowRun};
use crate::transport::Transport;

const TICK: Duration = Duration::from_millis(50);

/// Which nodes serve which kinds, from their heartbeats.
#[derive(Default)]
pub struct Liveness {
    nodes: HashMap<String, (Vec<TaskKind>, Instant, Duration)>,
}

impl Liveness {
    pub fn saw(&mut self, hb: &Heartbeat, now: Instant) {
        let interval = Duration::from_millis(hb.interval_ms.max(1));
        self.nodes
            .insert(hb.node.clone(), (hb.kinds.clone(), now, interval));
    }

    /// A node is live until three of its heartbeat intervals pass in silence.
    pub fn is_live(&self, kind: TaskKind, now: Instant) -> bool {
        self.nodes.values().any(|(kinds, seen, interval)| {
            kinds.contains(&kind) && now.duration_since(*seen) < *interval * 3
        })
    }
}

struct Run {
    machine: FlowRun,
    progress: watch::Sender<RunReport>,
    done: Option<oneshot::Sender<RunReport>>,
}

pub struct Coordinator {
    node: String,
    transport: Transport,
    io: tokio::runtime::Handle,
    reply_queue: String,
    worker_wait: Duration,
    runs: HashMap<String, Run>,
    live: Liveness,
}

impl Coordinator {
    pub fn new(
        node: String,
        transport: Transport,
        io: tokio::runtime::Handle,
        reply_queue: String,
        worker_wait: Duration,
    ) -> Self {
        Coordinator {
            node,
            transport,
            io,
            reply_queue,
            worker_wait,
            runs: HashMap::new(),
            live: Liveness::default(),
        }
    }

    fn publish(&self, msg: TaskMessage, ctx: &mut Context<Self>) {
        let transport = self.transport.clone();
        let addr = ctx.address();
        self.io.spawn(async move {
            if let Err(e) = transport.publish_task(&msg).await {
                warn!(task_run = %msg.task_run, attempt = msg.attempt, error = %e, "Task publish failed");
                addr.do_send(UpdateFromWorker(TaskUpdate {
                    schema_version: SCHEMA_VERSION,
                    flow_run: msg.flow_run,
                    task: msg.task,
                    task_run: msg.task_run,
                    attempt: msg.attempt,
                    node: "coordinator".into(),
                    delivery: 0,
                    status: UpdateStatus::Failed {
                        error: TaskError {
                            kind: ErrorKind::Io,
                            message: format!("could not publish the task: {e}"),
                            retryable: true,
                        },
                    },
                }));
            }
        });
    }

    /// Polls one run (or all) and publishes what it asks for; finishes terminal runs.
    fn advance(&mut self, only: Option<&str>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut rng = rand::rng();
        let mut jitter = || rng.random_range(0.5..=1.0);
        let mut to_publish = Vec::new();
        let mut finished = Vec::new();
        for (id, run) in self.runs.iter_mut() {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let live = &self.live;
            let msgs = run
                .machine
                .poll(now, &|k| live.is_live(k, now), &mut jitter);
            to_publish.extend(msgs);
            let report = run.machine.report(now);
            let changed = *run.progress.borrow() != report;
            if changed {
                run.progress.send_replace(report.clone());
            }
            if run.machine.state().is_terminal() {
                finished.push((id.clone(), report));
            }
        }
        for msg in to_publish {
            info!(flow_run = %msg.flow_run, task_run = %msg.task_run, attempt = msg.attempt, kind = %msg.spec.kind(), "Dispatching task");
            self.publish(msg, ctx);
        }
        for (id, report) in finished {
            if let Some(mut run) = self.runs.remove(&id) {
                info!(flow_run = %id, state = ?report.state, elapsed_ms = report.elapsed_ms, "Flow finished");
                if let Some(done) = run.done.take() {
                    let _ = done.send(report);
                }
            }
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.advance(None, ctx));
        info!(node = %self.node, reply_queue = %self.reply_queue, "Coordinator started");
    }
}

/// A handle on a submitted flow run.
pub struct Submitted {
    pub flow_run: String,
    pub progress: watch::Receiver<RunReport>,
    pub done: oneshot::Receiver<RunReport>,
}

#[derive(Message)]
#[rtype(result = "Submitted")]
pub struct Submit {
    pub flow: Arc<FlowSpec>,
}

impl Handler<Submit> for Coordinator {
    type Result = MessageResult<Submit>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        let id = format!(
            "{}-{}",
            msg.flow.name,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let now = Instant::now();
        let machine = FlowRun::new(
            id.clone(),
            msg.flow,
            self.reply_queue.clone(),
            self.worker_wait,
            now,
        );
        let (progress, progress_rx) = watch::channel(machine.report(now));
        let (done, done_rx) = oneshot::channel();
        info!(flow_run = %id, flow = %machine.flow.name, "Flow submitted");
        self.runs.insert(
            id.clone(),
            Run {
                machine,
                progress,
                done: Some(done),
            },
        );
        self.advance(Some(&id), ctx);
        MessageResult(Submitted {
            flow_run: id,
            progress: progress_rx,
            done: done_rx,
        })
    }
}

/// One update from a worker, off the reply queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateFromWorker(pub TaskUpdate);

impl Handler<UpdateFromWorker> for Coordinator {
    type Result = ();

    fn handle(&mut self, UpdateFromWorker(update): UpdateFromWorker, ctx: &mut Context<Self>) {
        let Some(run) = self.runs.get_mut(&update.flow_run) else {
            info!(flow_run = %update.flow_run, task_run = %update.task_run, "Update for a flow run this coordinator does not hold; ignoring");
            return;
        };
        let mut rng = rand::rng();
        let mut jitter = || rng.random_range(0.5..=1.0);
        match run.machine.apply(&update, Instant::now(), &mut jitter) {
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
    }
}

/// A task message the broker dead-lettered, routed back to its coordinator.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadLettered {
    pub task: TaskMessage,
    pub reason: String,
}

impl Handler<DeadLettered> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: DeadLettered, ctx: &mut Context<Self>) {
        let task = msg.task;
        let Some(run) = self.runs.get_mut(&task.flow_run) else {
            return;
        };
        let applied = run
            .machine
            .dead_lettered(&task.task, task.attempt, &msg.reason);
        warn!(task_run = %task.task_run, attempt = task.attempt, reason = %msg.reason, ?applied, "Task dead-lettered by the broker");
        self.advance(Some(&task.flow_run), ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct HeartbeatSeen(pub Heartbeat);

impl Handler<HeartbeatSeen> for Coordinator {
    type Result = ();

    fn handle(&mut self, HeartbeatSeen(hb): HeartbeatSeen, _ctx: &mut Context<Self>) {
        if hb.schema_version != SCHEMA_VERSION {
            return;
        }
        self.live.saw(&hb, Instant::now());
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
            },
            t0,
        );
        assert!(live.is_live(TaskKind::Load, t0 + Duration::from_millis(250)));
        assert!(!live.is_live(TaskKind::Extract, t0));
        assert!(!live.is_live(TaskKind::Load, t0 + Duration::from_millis(300)));
    }
}
