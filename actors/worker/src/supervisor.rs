/*!
The node supervisor: spawns one [`Worker`] per configured kind, restarts a
worker that stops or crashes with exponential backoff, publishes the node's
heartbeats, and escalates to a node exit when a kind keeps crashing.

actix's own `Supervisor` does not restart after a panic, so restarts go
through `Worker::stopped`, which always sends [`WorkerExited`] here.
*/

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use conveyor_schemas::{Heartbeat, TaskKind, SCHEMA_VERSION};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::worker::{Drain, Worker, WorkerEnv, WorkerExited};
use conveyor_transport::fatal::Fatal;

/// Restarts allowed per kind within [`RESTART_WINDOW`] before the node exits.
/// Above the default delivery limit (5, so up to 6 crashes per poison task) so that
/// one poison task, dead-lettered by the broker, does not take the node down.
pub const MAX_RESTARTS: usize = 10;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Supervisor {
    workers_wanted: BTreeMap<TaskKind, usize>,
    prefetch: Option<u16>,
    env: WorkerEnv,
    heartbeat: Duration,
    workers: HashMap<TaskKind, Addr<Worker>>,
    restarts: HashMap<TaskKind, VecDeque<Instant>>,
    shutting_down: bool,
    /// Told when the node must exit because a kind keeps crashing.
    fatal: mpsc::UnboundedSender<Fatal>,
}

impl Supervisor {
    pub fn new(
        workers: BTreeMap<TaskKind, usize>,
        prefetch: Option<u16>,
        env: WorkerEnv,
        heartbeat: Duration,
        fatal: mpsc::UnboundedSender<Fatal>,
    ) -> Self {
        Supervisor {
            workers_wanted: workers,
            prefetch,
            env,
            heartbeat,
            workers: HashMap::new(),
            restarts: HashMap::new(),
            shutting_down: false,
            fatal,
        }
    }

    fn spawn_worker(&mut self, kind: TaskKind, ctx: &mut Context<Self>) {
        let Some(&concurrency) = self.workers_wanted.get(&kind) else {
            return;
        };
        let worker = Worker::new(
            kind,
            concurrency,
            self.prefetch,
            self.env.clone(),
            ctx.address().recipient(),
        );
        self.workers.insert(kind, worker.start());
    }

    fn send_heartbeat(&self) {
        let in_flight = self
            .env
            .in_flight
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let hb = Heartbeat {
            schema_version: SCHEMA_VERSION,
            node: self.env.node.clone(),
            kinds: self.workers.keys().copied().collect(),
            in_flight,
            interval_ms: self.heartbeat.as_millis() as u64,
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        };
        let transport = self.env.transport.clone();
        self.env.io.spawn(async move {
            if let Err(e) = transport.publish_heartbeat(&hb).await {
                warn!(error = %e, "Heartbeat not sent");
            }
        });
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let kinds: Vec<TaskKind> = self.workers_wanted.keys().copied().collect();
        for kind in kinds {
            self.spawn_worker(kind, ctx);
        }
        let kinds: Vec<&str> = self.workers.keys().map(|k| k.as_str()).collect();
        info!(node = %self.env.node, kinds = %kinds.join(","), "Supervisor started");
        // Announce at once, then every interval, so coordinators see us quickly.
        ctx.run_later(Duration::from_millis(50), |act, _| act.send_heartbeat());
        ctx.run_interval(self.heartbeat, |act, _| {
            if !act.shutting_down {
                act.send_heartbeat();
            }
        });
    }
}

impl Handler<WorkerExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerExited, ctx: &mut Context<Self>) {
        self.workers.remove(&msg.kind);
        if self.shutting_down {
            return;
        }
        let now = Instant::now();
        let history = self.restarts.entry(msg.kind).or_default();
        history.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        history.push_back(now);
        let n = history.len();
        if n > MAX_RESTARTS {
            error!(kind = %msg.kind, restarts = n, "Worker restart limit reached; exiting the node");
            let _ = self.fatal.send(Fatal::WorkerRestarts {
                kind: msg.kind,
                restarts: n,
                within_s: RESTART_WINDOW.as_secs(),
            });
            return;
        }
        let delay = conveyor_transport::backoff::exponential(FIRST_BACKOFF, MAX_BACKOFF, n as u32);
        warn!(kind = %msg.kind, crashed = msg.crashed, restart_in_ms = delay.as_millis() as u64, restarts = n, "Worker stopped; restarting");
        let kind = msg.kind;
        ctx.run_later(delay, move |act, ctx| {
            if !act.shutting_down {
                act.spawn_worker(kind, ctx);
            }
        });
    }
}

/// Graceful stop of the node's workers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub grace: Duration,
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let drains: Vec<_> = self
            .workers
            .values()
            .map(|w| w.send(Drain { grace: msg.grace }))
            .collect();
        Box::pin(
            async move {
                for d in drains {
                    let _ = d.await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
