/*!
The flow-run state machine. Plain data, no actors, no I/O, no clock reads:
the caller passes `now` and a liveness predicate, and gets back the task
messages to publish. The coordinator actor is a thin shell around it.

Transitions of one task:

```text
Pending ──deps succeeded──▶ (ready) ──live worker──▶ Queued ──Started──▶ Running
   (ready) ──no live worker──▶ WaitingForWorker ──wait expires──▶ Failed(NoWorker)
Queued/Running ──Succeeded──▶ Succeeded
Queued/Running ──Failed(retryable) or timeout, attempts left──▶ RetryWaiting ──backoff──▶ (ready)
Queued/Running ──Failed(not retryable) or no attempts left──▶ Failed
any non-terminal ──flow failed──▶ Skipped
any non-terminal ──run cancelled──▶ Cancelled
Pending ──a retry, and it succeeded in the old run──▶ Reused (its old output)
```

`Reused` counts as succeeded for the tasks that read it and for the run's
final state.

Every dispatch bumps the task's `attempt`; an update whose attempt is not the
current one is stale and ignored. That is the fence against late results.

Each task's phase is a `Phase` that carries the data only that phase has (a
deadline only while dispatched, a retry time only while waiting to retry);
`TaskRun`'s methods are the transitions. Dependency indices are computed once
per run. A publish the transport gave up on is [`FlowRun::publish_failed`], a
retryable failure of an attempt that never reached a worker.
*/

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use conveyor_schemas::{
    ArtifactRef, ErrorKind, FlowState, RunReport, SourceSpec, TableSource, TaskError, TaskKind,
    TaskMessage, TaskOutput, TaskReport, TaskSpec, TaskState, TaskUpdate, UpdateStatus,
    SCHEMA_VERSION,
};

use conveyor_flow::{FlowSpec, RetryPolicy, TaskInput};

/// What became of one update.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// It moved the task.
    Changed,
    /// It belongs to an attempt that is no longer current, or to a finished task.
    Stale,
    /// The same delivery was already counted.
    Duplicate,
    /// No such task in this flow.
    Unknown,
}

/// Where one task is, with the data only that phase has: a deadline only
/// while dispatched, a retry time only while waiting to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending,
    /// Ready, but no live worker of its kind has been seen since `since`.
    WaitingForWorker {
        since: Instant,
    },
    /// Dispatched; `published` once the broker confirmed the message (a
    /// Queued task not published at a restart is published again).
    Queued {
        deadline: Instant,
        published: bool,
        /// Since when no live worker of the kind was seen.
        unserved_since: Option<Instant>,
    },
    /// A worker reported the start.
    Running {
        deadline: Instant,
        unserved_since: Option<Instant>,
    },
    RetryWaiting {
        at: Instant,
    },
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    /// Succeeded in the run this one retries; its output is reused.
    Reused,
}

impl Phase {
    fn state(self) -> TaskState {
        match self {
            Phase::Pending => TaskState::Pending,
            Phase::WaitingForWorker { .. } => TaskState::WaitingForWorker,
            Phase::Queued { .. } => TaskState::Queued,
            Phase::Running { .. } => TaskState::Running,
            Phase::RetryWaiting { .. } => TaskState::RetryWaiting,
            Phase::Succeeded => TaskState::Succeeded,
            Phase::Failed => TaskState::Failed,
            Phase::Skipped => TaskState::Skipped,
            Phase::Cancelled => TaskState::Cancelled,
            Phase::Reused => TaskState::Reused,
        }
    }

    fn is_terminal(self) -> bool {
        self.state().is_terminal()
    }

    /// Succeeded here, or in the run this one retries: its readers may run.
    fn has_output(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Reused)
    }
}

#[derive(Debug, Clone)]
struct TaskRun {
    phase: Phase,
    /// Current attempt number; 0 before the first dispatch.
    attempt: u32,
    /// Attempts started, counting broker redeliveries.
    starts: u32,
    seen_starts: HashSet<(u32, u32)>,
    node: Option<String>,
    output: Option<TaskOutput>,
    /// The last attempt's error (kept while waiting to retry, for the report).
    error: Option<TaskError>,
    /// Rows the current attempt has read so far, from its progress updates.
    rows_so_far: Option<u64>,
}

impl TaskRun {
    fn new() -> Self {
        TaskRun {
            phase: Phase::Pending,
            attempt: 0,
            starts: 0,
            seen_starts: HashSet::new(),
            node: None,
            output: None,
            error: None,
            rows_so_far: None,
        }
    }

    fn state(&self) -> TaskState {
        self.phase.state()
    }

    /// Its dependencies succeeded, or its backoff ended: it waits for a worker.
    fn ready(&mut self, now: Instant) {
        self.phase = Phase::WaitingForWorker { since: now };
    }

    /// A new attempt goes out; its deadline starts now.
    fn dispatch(&mut self, now: Instant, timeout: Duration) {
        self.attempt += 1;
        self.phase = Phase::Queued {
            deadline: now + timeout,
            published: false,
            unserved_since: None,
        };
        self.error = None;
        self.rows_so_far = None;
    }

    fn started(&mut self, node: &str) {
        self.starts += 1;
        self.node = Some(node.to_string());
        if let Phase::Queued {
            deadline,
            unserved_since,
            ..
        } = self.phase
        {
            self.phase = Phase::Running {
                deadline,
                unserved_since,
            };
        }
    }

    fn succeeded(&mut self, node: &str, output: TaskOutput) {
        self.node = Some(node.to_string());
        self.starts = self.starts.max(1);
        self.output = Some(output);
        self.phase = Phase::Succeeded;
    }

    fn retry_later(&mut self, at: Instant, error: TaskError) {
        self.phase = Phase::RetryWaiting { at };
        self.error = Some(error);
    }

    fn fail(&mut self, error: TaskError) {
        self.phase = Phase::Failed;
        self.error = Some(error);
    }

    /// The deadline of the attempt in flight, if one is.
    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Queued { deadline, .. } | Phase::Running { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// While dispatched: since when no live worker of the kind was seen.
    fn unserved_since(&mut self) -> Option<&mut Option<Instant>> {
        match &mut self.phase {
            Phase::Queued { unserved_since, .. } | Phase::Running { unserved_since, .. } => {
                Some(unserved_since)
            }
            _ => None,
        }
    }

    fn is_published(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Queued {
                published: false,
                ..
            }
        )
    }
}

/// Where each task's dependencies are, computed once per run.
struct Graph {
    index: HashMap<String, usize>,
    /// Indices of the tasks each task waits for.
    after: Vec<Vec<usize>>,
}

impl Graph {
    fn of(flow: &FlowSpec) -> Graph {
        let index: HashMap<String, usize> = flow
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let after = flow
            .tasks
            .iter()
            .map(|t| {
                t.after
                    .iter()
                    .filter_map(|d| index.get(d).copied())
                    .collect()
            })
            .collect();
        Graph { index, after }
    }
}

pub struct FlowRun {
    pub id: String,
    pub flow: Arc<FlowSpec>,
    graph: Graph,
    reply_to: String,
    worker_wait: Duration,
    tasks: Vec<TaskRun>,
    state: FlowState,
    error: Option<String>,
    started: Instant,
    finished: Option<Instant>,
    /// Grows with every change worth saving or reporting.
    generation: u64,
}

/// Why a saved run cannot be rebuilt after a restart.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Its flow text no longer parses (the rules changed in an upgrade).
    #[error("its flow no longer parses\n{0}")]
    Flow(#[from] conveyor_flow::Problems),
    #[error("the saved run has tasks [{saved}] but its flow now has [{now}]")]
    TasksChanged { saved: String, now: String },
}

/// Delay before attempt `attempt + 1`: exponential from `backoff`, capped, times
/// `jitter` in [0.5, 1] so that many failing tasks do not retry in lockstep.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    conveyor_transport::backoff::exponential(policy.backoff, policy.max_backoff, attempt)
        .mul_f64(jitter.clamp(0.5, 1.0))
}

impl FlowRun {
    pub fn new(
        id: String,
        flow: Arc<FlowSpec>,
        reply_to: String,
        worker_wait: Duration,
        now: Instant,
    ) -> Self {
        let tasks = flow.tasks.iter().map(|_| TaskRun::new()).collect();
        FlowRun {
            id,
            worker_wait: flow.worker_wait.unwrap_or(worker_wait),
            graph: Graph::of(&flow),
            flow,
            reply_to,
            tasks,
            state: FlowState::Running,
            error: None,
            started: now,
            finished: None,
            generation: 0,
        }
    }

    /// Changes whenever the run changed in a way worth saving or reporting.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Cheap summary of the states and attempts, to notice a change in `poll`.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.state.hash(&mut h);
        for t in &self.tasks {
            (t.state(), t.attempt, t.is_published()).hash(&mut h);
        }
        h.finish()
    }

    pub fn state(&self) -> FlowState {
        self.state
    }

    pub fn task_run_id(&self, task: &str) -> String {
        format!("{}.{task}", self.id)
    }

    fn index_of(&self, task: &str) -> Option<usize> {
        self.graph.index.get(task).copied()
    }

    /// Advances timers and readiness. Returns the messages to publish now.
    pub fn poll(
        &mut self,
        now: Instant,
        live: &dyn Fn(TaskKind) -> bool,
        jitter: &mut dyn FnMut() -> f64,
    ) -> Vec<TaskMessage> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        let before = self.fingerprint();
        let mut out = Vec::new();
        let flow = Arc::clone(&self.flow);
        for i in 0..self.tasks.len() {
            let def = &flow.tasks[i];
            let kind = def.kind;
            let alive = live(kind);
            let deps_done = self.graph.after[i]
                .iter()
                .all(|&j| self.tasks[j].phase.has_output());
            let worker_wait = self.worker_wait;
            let run = &mut self.tasks[i];
            match run.phase {
                Phase::Pending if deps_done => run.ready(now),
                Phase::RetryWaiting { at } if now >= at => run.ready(now),
                Phase::Queued { deadline, .. } | Phase::Running { deadline, .. } => {
                    if now >= deadline {
                        let error = TaskError {
                            kind: ErrorKind::Timeout,
                            message: format!(
                                "attempt {} ran past its timeout of {}",
                                run.attempt,
                                humantime::format_duration(def.timeout)
                            ),
                            retryable: true,
                        };
                        self.fail_attempt(i, error, now, jitter);
                    } else if let Some(unserved) = run.unserved_since() {
                        if alive {
                            *unserved = None;
                        } else if now.duration_since(*unserved.get_or_insert(now)) >= worker_wait {
                            let error = self.no_worker_error(kind);
                            self.fail_task(i, error);
                        }
                    }
                }
                _ => {}
            }
            if self.state.is_terminal() {
                break;
            }
            if let Phase::WaitingForWorker { since } = self.tasks[i].phase {
                if alive {
                    out.push(self.dispatch(i, now));
                } else if now.duration_since(since) >= self.worker_wait {
                    let error = self.no_worker_error(kind);
                    self.fail_task(i, error);
                    if self.state.is_terminal() {
                        break;
                    }
                }
            }
        }
        self.settle(now);
        if self.fingerprint() != before {
            self.generation += 1;
        }
        out
    }

    fn no_worker_error(&self, kind: TaskKind) -> TaskError {
        TaskError {
            kind: ErrorKind::NoWorker,
            message: format!(
                "no live `{kind}` worker was seen for {}; start a node with `{kind}` in [workers] kinds",
                humantime::format_duration(self.worker_wait)
            ),
            retryable: false,
        }
    }

    fn dispatch(&mut self, i: usize, now: Instant) -> TaskMessage {
        self.tasks[i].dispatch(now, self.flow.tasks[i].timeout);
        self.message(i)
    }

    /// The artifact a succeeded task left for its readers.
    fn artifact_of(&self, name: &str) -> Option<ArtifactRef> {
        self.index_of(name)
            .and_then(|j| self.tasks[j].output.as_ref())
            .and_then(|o| o.artifact.clone())
    }

    /// The message of task `i`'s current attempt: the task's body, with the
    /// outputs of the tasks it reads filled in.
    fn message(&self, i: usize) -> TaskMessage {
        let def = &self.flow.tasks[i];
        // Readiness guarantees the inputs succeeded with an artifact.
        let source = match &def.body.input {
            TaskInput::Source(source) => source.clone(),
            TaskInput::Upstream => SourceSpec::Artifact(
                def.input
                    .as_deref()
                    .and_then(|name| self.artifact_of(name))
                    .expect("a task is dispatched after its input succeeded"),
            ),
            TaskInput::Tables(tables) => SourceSpec::Tables {
                tables: tables
                    .iter()
                    .map(|t| TableSource {
                        name: t.name.clone(),
                        artifacts: t
                            .tasks
                            .iter()
                            .map(|name| {
                                self.artifact_of(name)
                                    .expect("a task is dispatched after its inputs succeeded")
                            })
                            .collect(),
                    })
                    .collect(),
            },
            TaskInput::Parts { format, tasks } => SourceSpec::Parts {
                format: *format,
                parts: tasks
                    .iter()
                    .map(|name| {
                        self.artifact_of(name)
                            .expect("a gather is dispatched after all its parts succeeded")
                    })
                    .collect(),
            },
        };
        let spec = TaskSpec {
            kind: def.kind,
            source,
            steps: def.body.steps.clone(),
            sink: def.body.sink.clone(),
        };
        TaskMessage {
            schema_version: SCHEMA_VERSION,
            flow: self.flow.name.clone(),
            flow_run: self.id.clone(),
            task: def.name.clone(),
            task_run: format!("{}.{}", self.id, def.name),
            attempt: self.tasks[i].attempt,
            reply_to: self.reply_to.clone(),
            spec,
        }
    }

    /// Applies one update from a worker.
    pub fn apply(
        &mut self,
        update: &TaskUpdate,
        now: Instant,
        jitter: &mut dyn FnMut() -> f64,
    ) -> Applied {
        let Some(i) = self.index_of(&update.task) else {
            return Applied::Unknown;
        };
        let run = &mut self.tasks[i];
        if self.state.is_terminal() || run.phase.is_terminal() || update.attempt != run.attempt {
            return Applied::Stale;
        }
        match &update.status {
            UpdateStatus::Started => {
                if !run.seen_starts.insert((update.attempt, update.delivery)) {
                    return Applied::Duplicate;
                }
                run.started(&update.node);
            }
            UpdateStatus::Progress { rows } => {
                run.rows_so_far = Some(*rows);
            }
            UpdateStatus::Succeeded(output) => run.succeeded(&update.node, output.clone()),
            UpdateStatus::Failed { error } => {
                run.node = Some(update.node.clone());
                run.starts = run.starts.max(1);
                self.fail_attempt(i, error.clone(), now, jitter);
            }
        }
        self.settle(now);
        self.generation += 1;
        Applied::Changed
    }

    /// The broker would not take attempt `attempt` of `task` (the transport
    /// gave up publishing it): a retryable failure of that attempt, which
    /// never reached a worker.
    pub fn publish_failed(
        &mut self,
        task: &str,
        attempt: u32,
        reason: &str,
        now: Instant,
        jitter: &mut dyn FnMut() -> f64,
    ) -> Applied {
        let Some(i) = self.index_of(task) else {
            return Applied::Unknown;
        };
        let run = &self.tasks[i];
        // Only a dispatched attempt has a message in flight to lose.
        if !matches!(run.phase, Phase::Queued { .. }) || attempt != run.attempt {
            return Applied::Stale;
        }
        let error = TaskError {
            kind: ErrorKind::Io,
            message: format!("could not publish the task: {reason}"),
            retryable: true,
        };
        self.fail_attempt(i, error, now, jitter);
        self.settle(now);
        self.generation += 1;
        Applied::Changed
    }

    /// The broker dead-lettered an attempt (it crashed its worker on every
    /// delivery, or workers rejected it). Retrying would crash again: fail.
    pub fn dead_lettered(
        &mut self,
        task: &str,
        attempt: u32,
        reason: &str,
        now: Instant,
    ) -> Applied {
        let Some(i) = self.index_of(task) else {
            return Applied::Unknown;
        };
        let run = &self.tasks[i];
        if self.state.is_terminal() || run.phase.is_terminal() || attempt != run.attempt {
            return Applied::Stale;
        }
        let deliveries = run.starts;
        let last = run
            .error
            .as_ref()
            .map(|e| format!("; last error: {}", e.message))
            .unwrap_or_else(|| "; no worker reported an error (it crashed or stopped)".into());
        let error = TaskError {
            kind: ErrorKind::WorkerLost,
            message: format!(
                "dead-lettered by the broker ({reason}) after {deliveries} deliveries of attempt {attempt}{last}"
            ),
            retryable: false,
        };
        self.fail_task(i, error);
        self.settle(now);
        self.generation += 1;
        Applied::Changed
    }

    /// The current attempt failed: retry if the error and the budget allow.
    fn fail_attempt(
        &mut self,
        i: usize,
        error: TaskError,
        now: Instant,
        jitter: &mut dyn FnMut() -> f64,
    ) {
        let policy = &self.flow.tasks[i].retry;
        let run = &mut self.tasks[i];
        if error.retryable && run.attempt < policy.max_attempts {
            let at = now + backoff_delay(policy, run.attempt, jitter());
            run.retry_later(at, error);
        } else {
            self.fail_task(i, error);
        }
    }

    fn fail_task(&mut self, i: usize, error: TaskError) {
        let def = &self.flow.tasks[i];
        let run = &mut self.tasks[i];
        let attempts = run.attempt.max(run.starts);
        // The run reports its first failure; later ones are on their tasks.
        self.error = self.error.take().or(Some(format!(
            "task `{}` ({}) failed after {attempts} attempt{}: {}",
            def.name,
            def.kind,
            if attempts == 1 { "" } else { "s" },
            error.message
        )));
        run.fail(error);
        if self.flow.fail_fast {
            self.state = FlowState::Failed;
            for other in &mut self.tasks {
                if !other.phase.is_terminal() {
                    other.phase = Phase::Skipped;
                }
            }
            return;
        }
        // Only what depends on the failed task, directly or not, is skipped;
        // tasks are in dependency order, so one pass finds them all.
        let mut lost = vec![false; self.tasks.len()];
        lost[i] = true;
        for j in 0..self.tasks.len() {
            if self.graph.after[j].iter().any(|&d| lost[d]) {
                lost[j] = true;
                if !self.tasks[j].phase.is_terminal() {
                    self.tasks[j].phase = Phase::Skipped;
                }
            }
        }
    }

    fn settle(&mut self, now: Instant) {
        if !self.state.is_terminal() {
            if self.tasks.iter().all(|t| t.phase.is_terminal()) {
                self.state = if self.tasks.iter().all(|t| t.phase.has_output()) {
                    FlowState::Succeeded
                } else {
                    FlowState::Failed
                };
            } else if self
                .tasks
                .iter()
                .any(|t| matches!(t.phase, Phase::WaitingForWorker { .. }))
            {
                self.state = FlowState::WaitingForWorker;
            } else {
                self.state = FlowState::Running;
            }
        }
        if self.state.is_terminal() && self.finished.is_none() {
            self.finished = Some(now);
        }
    }

    /// Ends the run `Cancelled` now: every task not yet ended is
    /// `Cancelled`, and what is in flight is fenced (a late result is stale).
    /// False if the run had already ended.
    pub fn cancel(&mut self, now: Instant) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        for t in &mut self.tasks {
            if !t.phase.is_terminal() {
                t.phase = Phase::Cancelled;
                t.rows_so_far = None;
            }
        }
        self.state = FlowState::Cancelled;
        self.error = Some("the run was cancelled".into());
        self.finished = Some(now);
        self.generation += 1;
        true
    }

    /// Makes this new run a retry of `old`: each task that succeeded (or was
    /// reused) there starts `Reused`, with that output, and is not run
    /// again; the others run as in a new run. Returns how many are reused.
    pub fn reuse(&mut self, old: &FlowSnapshot) -> usize {
        let mut reused = 0;
        for (def, run) in self.flow.tasks.iter().zip(self.tasks.iter_mut()) {
            let Some(was) = old.tasks.iter().find(|t| t.name == def.name) else {
                continue;
            };
            let done = matches!(was.state, TaskState::Succeeded | TaskState::Reused);
            if done && was.output.is_some() && run.phase == Phase::Pending {
                run.phase = Phase::Reused;
                run.output = was.output.clone();
                run.node = was.node.clone();
                reused += 1;
            }
        }
        self.generation += 1;
        reused
    }

    /// The broker confirmed attempt `attempt` of `task`.
    pub fn mark_published(&mut self, task: &str, attempt: u32) -> bool {
        let Some(i) = self.index_of(task) else {
            return false;
        };
        let run = &mut self.tasks[i];
        match &mut run.phase {
            Phase::Queued { published, .. } if run.attempt == attempt && !*published => {
                *published = true;
                self.generation += 1;
                true
            }
            _ => false,
        }
    }

    /// Messages of attempts recorded as dispatched but never confirmed by the
    /// broker: after a restart they are published again (a duplicate of one
    /// that did get through is fenced by the worker's commit marker).
    pub fn unpublished(&self) -> Vec<TaskMessage> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].is_published())
            .map(|i| self.message(i))
            .collect()
    }

    /// Everything needed to rebuild this run in another process.
    pub fn snapshot(&self, clock: &Clock) -> FlowSnapshot {
        FlowSnapshot {
            state: self.state,
            error: self.error.clone(),
            reply_to: self.reply_to.clone(),
            worker_wait_ms: self.worker_wait.as_millis() as u64,
            started_ms: clock.wall(self.started),
            finished_ms: self.finished.map(|t| clock.wall(t)),
            tasks: self
                .flow
                .tasks
                .iter()
                .zip(&self.tasks)
                .map(|(def, run)| TaskSnapshot {
                    name: def.name.clone(),
                    state: run.state(),
                    attempt: run.attempt,
                    starts: run.starts,
                    seen_starts: {
                        let mut v: Vec<(u32, u32)> = run.seen_starts.iter().copied().collect();
                        v.sort_unstable();
                        v
                    },
                    node: run.node.clone(),
                    output: run.output.clone(),
                    error: run.error.clone(),
                    rows_so_far: run.rows_so_far,
                    published: run.is_published(),
                    deadline_ms: run.deadline().map(|t| clock.wall(t)),
                    retry_at_ms: match run.phase {
                        Phase::RetryWaiting { at } => Some(clock.wall(at)),
                        _ => None,
                    },
                    unserved_since_ms: match run.phase {
                        Phase::WaitingForWorker { since } => Some(clock.wall(since)),
                        Phase::Queued { unserved_since, .. }
                        | Phase::Running { unserved_since, .. } => {
                            unserved_since.map(|t| clock.wall(t))
                        }
                        _ => None,
                    },
                })
                .collect(),
        }
    }

    /// Rebuilds a run from its snapshot and its flow (parsed again from the
    /// flow's text). Fails if the two no longer match.
    pub fn restore(
        id: String,
        flow: Arc<FlowSpec>,
        snap: &FlowSnapshot,
        clock: &Clock,
    ) -> Result<FlowRun, RestoreError> {
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        let saved: Vec<&str> = snap.tasks.iter().map(|t| t.name.as_str()).collect();
        if names != saved {
            return Err(RestoreError::TasksChanged {
                saved: saved.join(", "),
                now: names.join(", "),
            });
        }
        let tasks = snap
            .tasks
            .iter()
            .map(|t| TaskRun {
                phase: t.phase(clock),
                attempt: t.attempt,
                starts: t.starts,
                seen_starts: t.seen_starts.iter().copied().collect(),
                node: t.node.clone(),
                output: t.output.clone(),
                error: t.error.clone(),
                rows_so_far: t.rows_so_far,
            })
            .collect();
        Ok(FlowRun {
            id,
            graph: Graph::of(&flow),
            flow,
            reply_to: snap.reply_to.clone(),
            worker_wait: Duration::from_millis(snap.worker_wait_ms),
            tasks,
            state: snap.state,
            error: snap.error.clone(),
            started: clock.instant(snap.started_ms),
            finished: snap.finished_ms.map(|ms| clock.instant(ms)),
            generation: 0,
        })
    }

    pub fn report(&self, now: Instant) -> RunReport {
        let end = self.finished.unwrap_or(now);
        RunReport {
            flow: self.flow.name.clone(),
            flow_run: self.id.clone(),
            state: self.state,
            elapsed_ms: end.duration_since(self.started).as_millis() as u64,
            error: self.error.clone(),
            tasks: self
                .flow
                .tasks
                .iter()
                .zip(&self.tasks)
                .map(|(def, run)| TaskReport {
                    name: def.name.clone(),
                    kind: def.kind,
                    state: run.state(),
                    attempts: run.starts.max(if run.phase == Phase::Failed {
                        run.attempt
                    } else {
                        0
                    }),
                    node: run.node.clone(),
                    rows_in: run.output.as_ref().map(|o| o.rows_in),
                    rows_out: run.output.as_ref().map(|o| o.rows_out),
                    rows_so_far: run
                        .rows_so_far
                        .filter(|_| matches!(run.phase, Phase::Running { .. })),
                    output: run.output.as_ref().map(|o| o.location.clone()),
                    error: run.error.clone(),
                })
                .collect(),
        }
    }
}

/// Converts between this process's monotonic clock and wall-clock
/// milliseconds, which survive a restart.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    pub fn wall(&self, t: Instant) -> u64 {
        if t >= self.now {
            self.wall_ms + (t - self.now).as_millis() as u64
        } else {
            self.wall_ms
                .saturating_sub((self.now - t).as_millis() as u64)
        }
    }

    /// The instant of wall time `ms`; times before this process started
    /// clamp to the earliest instant it can represent.
    pub fn instant(&self, ms: u64) -> Instant {
        if ms >= self.wall_ms {
            self.now + Duration::from_millis(ms - self.wall_ms)
        } else {
            let back = Duration::from_millis(self.wall_ms - ms);
            self.now.checked_sub(back).unwrap_or(self.now)
        }
    }
}

/// A flow run as stored in the coordinator's database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FlowSnapshot {
    pub state: FlowState,
    pub error: Option<String>,
    pub reply_to: String,
    pub worker_wait_ms: u64,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub tasks: Vec<TaskSnapshot>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskSnapshot {
    pub name: String,
    pub state: TaskState,
    pub attempt: u32,
    pub starts: u32,
    pub seen_starts: Vec<(u32, u32)>,
    pub node: Option<String>,
    pub output: Option<TaskOutput>,
    pub error: Option<TaskError>,
    pub rows_so_far: Option<u64>,
    pub published: bool,
    pub deadline_ms: Option<u64>,
    pub retry_at_ms: Option<u64>,
    pub unserved_since_ms: Option<u64>,
}

impl TaskSnapshot {
    /// The phase this snapshot records, its times on `clock`. A saved
    /// dispatched task without a deadline (not possible when it was saved
    /// by this version) times out at once and is retried.
    fn phase(&self, clock: &Clock) -> Phase {
        let at = |ms: Option<u64>| ms.map(|ms| clock.instant(ms));
        let deadline = at(self.deadline_ms).unwrap_or(clock.now);
        match self.state {
            TaskState::Pending => Phase::Pending,
            TaskState::WaitingForWorker => Phase::WaitingForWorker {
                since: at(self.unserved_since_ms).unwrap_or(clock.now),
            },
            TaskState::Queued => Phase::Queued {
                deadline,
                published: self.published,
                unserved_since: at(self.unserved_since_ms),
            },
            TaskState::Running => Phase::Running {
                deadline,
                unserved_since: at(self.unserved_since_ms),
            },
            TaskState::RetryWaiting => Phase::RetryWaiting {
                at: at(self.retry_at_ms).unwrap_or(clock.now),
            },
            TaskState::Succeeded => Phase::Succeeded,
            TaskState::Failed => Phase::Failed,
            TaskState::Skipped => Phase::Skipped,
            TaskState::Cancelled => Phase::Cancelled,
            TaskState::Reused => Phase::Reused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_flow::FlowSpec;
    use conveyor_schemas::ArtifactRef;
    use std::path::Path;

    const FLOW: &str = r#"
[flow]
name = "f"
max_attempts = 2
backoff = "1s"
worker_wait = "10s"
[tasks.e]
kind = "extract"
path = "in.csv"
timeout = "60s"
[tasks.t]
kind = "transform"
input = "e"
steps = [{ drop = ["x"] }]
[tasks.l1]
kind = "load"
input = "t"
path = "a.csv"
[tasks.l2]
kind = "load"
input = "e"
path = "b.parquet"
"#;

    fn run(now: Instant) -> FlowRun {
        let flow = Arc::new(FlowSpec::parse("f.toml", FLOW, Path::new("/")).unwrap());
        FlowRun::new(
            "fr1".into(),
            flow,
            "replies".into(),
            Duration::from_secs(30),
            now,
        )
    }

    fn all_live(_: TaskKind) -> bool {
        true
    }

    fn update(msg: &TaskMessage, status: UpdateStatus) -> TaskUpdate {
        TaskUpdate::for_attempt(msg, "n1", 1, status)
    }

    fn success(msg: &TaskMessage, rows: u64) -> TaskUpdate {
        update(
            msg,
            UpdateStatus::Succeeded(TaskOutput {
                rows_in: rows,
                rows_out: rows,
                artifact: Some(ArtifactRef {
                    path: format!("fr1/{}.arrow", msg.task),
                    rows,
                }),
                location: "x".into(),
                bytes_in: None,
                bytes_out: None,
            }),
        )
    }

    fn failure(msg: &TaskMessage, retryable: bool) -> TaskUpdate {
        update(
            msg,
            UpdateStatus::Failed {
                error: TaskError {
                    kind: if retryable {
                        ErrorKind::Io
                    } else {
                        ErrorKind::Data
                    },
                    message: "boom".into(),
                    retryable,
                },
            },
        )
    }

    fn one() -> f64 {
        1.0
    }

    #[test]
    fn a_dag_runs_fan_out_to_success() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let msgs = fr.poll(t0, &all_live, &mut one);
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].task.as_str(), msgs[0].attempt), ("e", 1));
        assert_eq!(
            fr.apply(&update(&msgs[0], UpdateStatus::Started), t0, &mut one),
            Applied::Changed
        );
        assert_eq!(
            fr.apply(&success(&msgs[0], 10), t0, &mut one),
            Applied::Changed
        );
        // One extract feeds a transform and a load at once.
        let mut next: Vec<String> = fr
            .poll(t0, &all_live, &mut one)
            .into_iter()
            .map(|m| m.task)
            .collect();
        next.sort();
        assert_eq!(next, ["l2", "t"]);
        let report = fr.report(t0);
        assert_eq!(
            report
                .tasks
                .iter()
                .find(|t| t.name == "e")
                .unwrap()
                .rows_out,
            Some(10)
        );
        assert_eq!(fr.state(), FlowState::Running);
    }

    #[test]
    fn messages_carry_the_upstream_artifact_and_a_gather_lists_its_parts() {
        let text = "[flow]\nname = \"p\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\npartitions = 2\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out.csv\"\n";
        let flow = Arc::new(FlowSpec::parse("p.toml", text, Path::new("/")).unwrap());
        let t0 = Instant::now();
        let mut fr = FlowRun::new(
            "fr1".into(),
            flow,
            "replies".into(),
            Duration::from_secs(30),
            t0,
        );
        let mut seen = Vec::new();
        for _ in 0..4 {
            for m in fr.poll(t0, &all_live, &mut one) {
                fr.apply(&success(&m, 3), t0, &mut one);
                seen.push(m);
            }
        }
        let spec = |task: &str| &seen.iter().find(|m| m.task == task).unwrap().spec;
        assert_eq!(spec("e@1").kind, TaskKind::Extract);
        assert_eq!(spec("e@1").sink, conveyor_schemas::SinkSpec::Artifact);
        // A part of the load reads its extract's artifact, filled in at dispatch.
        assert_eq!(
            spec("l@1").source,
            SourceSpec::Artifact(ArtifactRef {
                path: "fr1/e@1.arrow".into(),
                rows: 3
            })
        );
        assert!(matches!(
            spec("l@1").sink,
            conveyor_schemas::SinkSpec::Part { index: 1, .. }
        ));
        // The gather lists the parts' outputs in partition order.
        let gather = spec("l");
        assert_eq!(gather.kind, TaskKind::Load);
        match &gather.source {
            SourceSpec::Parts { parts, .. } => assert_eq!(
                parts.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
                ["fr1/l@0.arrow", "fr1/l@1.arrow"]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(fr.state(), FlowState::Succeeded);
    }

    #[test]
    fn a_sql_task_waits_for_all_its_tables_and_gets_every_partition_of_each() {
        let text = "[flow]\nname = \"s\"\n[tasks.o]\nkind = \"extract\"\npath = \"o.csv\"\npartitions = 2\n\
            [tasks.c]\nkind = \"extract\"\npath = \"c.csv\"\n\
            [tasks.j]\nkind = \"transform\"\ninputs = { orders = \"o\", customers = \"c\" }\n\
            steps = [{ sql = \"SELECT * FROM orders JOIN customers USING (id)\" }]\n";
        let flow = Arc::new(FlowSpec::parse("s.toml", text, Path::new("/")).unwrap());
        let t0 = Instant::now();
        let mut fr = FlowRun::new(
            "fr1".into(),
            flow,
            "replies".into(),
            Duration::from_secs(30),
            t0,
        );
        let first = fr.poll(t0, &all_live, &mut one);
        let names: Vec<&str> = first.iter().map(|m| m.task.as_str()).collect();
        assert_eq!(names, ["o@0", "o@1", "c"], "the SQL task waits");
        for m in &first {
            fr.apply(&success(m, 3), t0, &mut one);
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            for m in fr.poll(t0, &all_live, &mut one) {
                fr.apply(&success(&m, 3), t0, &mut one);
                seen.push(m);
            }
        }
        let j = seen.iter().find(|m| m.task == "j").unwrap();
        let SourceSpec::Tables { tables } = &j.spec.source else {
            panic!("{:?}", j.spec.source)
        };
        let named: Vec<(&str, Vec<&str>)> = tables
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.artifacts.iter().map(|a| a.path.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("orders", vec!["fr1/o@0.arrow", "fr1/o@1.arrow"]),
                ("customers", vec!["fr1/c.arrow"]),
            ]
        );
        assert_eq!(fr.state(), FlowState::Succeeded);
    }

    fn drive_to_success(fr: &mut FlowRun, now: Instant) {
        for _ in 0..10 {
            for m in fr.poll(now, &all_live, &mut one) {
                fr.apply(&success(&m, 3), now, &mut one);
            }
        }
    }

    #[test]
    fn a_restored_run_republishes_unconfirmed_attempts_and_carries_on() {
        let t0 = Instant::now();
        let clock = Clock {
            now: t0,
            wall_ms: 1_000_000,
        };
        let mut fr = run(t0);
        let e = fr.poll(t0, &all_live, &mut one).remove(0);
        assert!(fr.mark_published("e", 1));
        fr.apply(&success(&e, 10), t0, &mut one);
        let next = fr.poll(t0, &all_live, &mut one);
        let published_t = next.iter().find(|m| m.task == "t").unwrap().clone();
        assert!(fr.mark_published("t", 1));
        // l2 was saved as dispatched, but its publish was never confirmed.
        let snap = fr.snapshot(&clock);
        let text = serde_json::to_string(&snap).unwrap();

        // Another process, ten seconds later on the wall clock.
        let t1 = Instant::now();
        let later = Clock {
            now: t1,
            wall_ms: 1_010_000,
        };
        let snap: FlowSnapshot = serde_json::from_str(&text).unwrap();
        let mut back = FlowRun::restore(fr.id.clone(), fr.flow.clone(), &snap, &later).unwrap();
        let again = back.unpublished();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!((again[0].task.as_str(), again[0].attempt), ("l2", 1));
        assert_eq!(back.report(t1).tasks, fr.report(t0).tasks);
        // The restored run takes the published transform's result.
        assert_eq!(
            back.apply(&success(&published_t, 10), t1, &mut one),
            Applied::Changed
        );
        // A snapshot of another flow shape is refused.
        let mut wrong = snap.clone();
        wrong.tasks.pop();
        assert!(FlowRun::restore("x".into(), fr.flow.clone(), &wrong, &later).is_err());
    }

    #[test]
    fn all_tasks_succeeding_completes_the_flow() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        drive_to_success(&mut fr, t0);
        assert_eq!(fr.state(), FlowState::Succeeded);
        assert!(fr
            .report(t0)
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded && t.attempts == 1));
    }

    #[test]
    fn progress_shows_while_running_only() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&update(&m, UpdateStatus::Started), t0, &mut one);
        fr.apply(
            &update(&m, UpdateStatus::Progress { rows: 8192 }),
            t0,
            &mut one,
        );
        assert_eq!(fr.report(t0).tasks[0].rows_so_far, Some(8192));
        fr.apply(&success(&m, 10_000), t0, &mut one);
        let t = &fr.report(t0).tasks[0];
        assert_eq!((t.rows_so_far, t.rows_out), (None, Some(10_000)));
    }

    #[test]
    fn retryable_failure_backs_off_then_retries_with_a_new_attempt() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m1 = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&failure(&m1, true), t0, &mut one);
        assert_eq!(fr.report(t0).tasks[0].state, TaskState::RetryWaiting);
        assert!(fr
            .poll(t0 + Duration::from_millis(900), &all_live, &mut one)
            .is_empty());
        let m2 = fr
            .poll(t0 + Duration::from_secs(1), &all_live, &mut one)
            .remove(0);
        assert_eq!(m2.attempt, 2);
        // A late result of attempt 1 is fenced off.
        assert_eq!(fr.apply(&success(&m1, 5), t0, &mut one), Applied::Stale);
        // The budget is two attempts.
        fr.apply(&failure(&m2, true), t0, &mut one);
        assert_eq!(fr.state(), FlowState::Failed);
        let report = fr.report(t0);
        assert!(report
            .error
            .unwrap()
            .contains("task `e` (extract) failed after 2 attempts"));
        assert!(report.tasks[1..]
            .iter()
            .all(|t| t.state == TaskState::Skipped));
    }

    #[test]
    fn non_retryable_failure_fails_at_once() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m1 = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&failure(&m1, false), t0, &mut one);
        assert_eq!(fr.state(), FlowState::Failed);
        assert_eq!(fr.report(t0).tasks[0].attempts, 1);
    }

    #[test]
    fn timeout_counts_as_a_retryable_failure() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m1 = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.poll(t0 + Duration::from_secs(61), &all_live, &mut one);
        let report = fr.report(t0);
        assert_eq!(report.tasks[0].state, TaskState::RetryWaiting);
        assert_eq!(
            report.tasks[0].error.as_ref().unwrap().kind,
            ErrorKind::Timeout
        );
        let m2 = fr
            .poll(t0 + Duration::from_secs(62), &all_live, &mut one)
            .remove(0);
        assert_eq!(m2.attempt, m1.attempt + 1);
    }

    #[test]
    fn missing_worker_waits_visibly_then_fails_naming_the_kind() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let no_transform = |k: TaskKind| k != TaskKind::Transform;
        let e = fr.poll(t0, &no_transform, &mut one).remove(0);
        fr.apply(&success(&e, 3), t0, &mut one);
        let sent: Vec<String> = fr
            .poll(t0, &no_transform, &mut one)
            .into_iter()
            .map(|m| m.task)
            .collect();
        assert_eq!(sent, ["l2"]);
        assert_eq!(fr.state(), FlowState::WaitingForWorker);
        fr.poll(t0 + Duration::from_secs(9), &no_transform, &mut one);
        assert_eq!(fr.state(), FlowState::WaitingForWorker);
        let at_wait = t0 + Duration::from_secs(10);
        fr.poll(at_wait, &no_transform, &mut one);
        // The transform failed; the load that reads it is skipped, and the
        // independent load l2 runs on (not fail_fast) before the run fails.
        let state_of = |fr: &FlowRun, name: &str| {
            fr.report(t0)
                .tasks
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .state
        };
        assert_eq!(state_of(&fr, "t"), TaskState::Failed);
        assert_eq!(state_of(&fr, "l1"), TaskState::Skipped);
        assert_eq!(state_of(&fr, "l2"), TaskState::Queued);
        assert!(!fr.state().is_terminal());
        let l2 = fr
            .unpublished()
            .into_iter()
            .find(|m| m.task == "l2")
            .unwrap();
        fr.apply(&success(&l2, 3), at_wait, &mut one);
        assert_eq!(state_of(&fr, "l2"), TaskState::Succeeded);
        assert_eq!(fr.state(), FlowState::Failed);
        let report = fr.report(t0);
        let t = report.tasks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!(t.error.as_ref().unwrap().kind, ErrorKind::NoWorker);
        assert!(report.error.unwrap().contains("`transform`"));
    }

    #[test]
    fn fail_fast_skips_every_other_task_at_the_first_failure() {
        let t0 = Instant::now();
        let text = FLOW.replace(
            "worker_wait = \"10s\"",
            "worker_wait = \"10s\"\nfail_fast = true",
        );
        let flow = Arc::new(FlowSpec::parse("f.toml", &text, Path::new("/")).unwrap());
        assert!(flow.fail_fast);
        let mut fr = FlowRun::new("fr1".into(), flow, "r".into(), Duration::from_secs(30), t0);
        let e = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&success(&e, 3), t0, &mut one);
        let next = fr.poll(t0, &all_live, &mut one);
        let t = next.iter().find(|m| m.task == "t").unwrap();
        fr.apply(&failure(t, false), t0, &mut one);
        assert_eq!(fr.state(), FlowState::Failed);
        let report = fr.report(t0);
        let l2 = report.tasks.iter().find(|t| t.name == "l2").unwrap();
        assert_eq!(
            l2.state,
            TaskState::Skipped,
            "fail_fast stops the independent load too"
        );
    }

    #[test]
    fn redeliveries_count_as_attempts_and_duplicates_do_not() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&update(&m, UpdateStatus::Started), t0, &mut one);
        assert_eq!(
            fr.apply(&update(&m, UpdateStatus::Started), t0, &mut one),
            Applied::Duplicate
        );
        let mut again = update(&m, UpdateStatus::Started);
        again.delivery = 2;
        again.node = "n2".into();
        fr.apply(&again, t0, &mut one);
        fr.apply(&success(&m, 1), t0, &mut one);
        let report = fr.report(t0);
        assert_eq!(report.tasks[0].attempts, 2);
    }

    #[test]
    fn a_dead_lettered_attempt_fails_the_flow_naming_the_deliveries() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let m = fr.poll(t0, &all_live, &mut one).remove(0);
        for delivery in 1..=3 {
            let mut started = update(&m, UpdateStatus::Started);
            started.delivery = delivery;
            fr.apply(&started, t0, &mut one);
        }
        assert_eq!(
            fr.dead_lettered("e", m.attempt + 1, "delivery_limit", t0),
            Applied::Stale
        );
        assert_eq!(
            fr.dead_lettered("e", m.attempt, "delivery_limit", t0),
            Applied::Changed
        );
        assert_eq!(fr.state(), FlowState::Failed);
        let report = fr.report(t0);
        let error = report.error.unwrap();
        assert!(
            error.contains("task `e` (extract) failed after 3 attempts"),
            "{error}"
        );
        assert!(
            error.contains("dead-lettered by the broker (delivery_limit) after 3 deliveries"),
            "{error}"
        );
        assert_eq!(
            report.tasks[0].error.as_ref().unwrap().kind,
            ErrorKind::WorkerLost
        );
    }

    #[test]
    fn a_failed_publish_retries_the_attempt_without_a_worker_update() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let first = fr.poll(t0, &all_live, &mut one);
        let e = first.iter().find(|m| m.task == "e").unwrap();
        assert_eq!(
            fr.publish_failed("e", e.attempt, "broker gone", t0, &mut one),
            Applied::Changed
        );
        let report = fr.report(t0);
        assert_eq!(report.tasks[0].state, TaskState::RetryWaiting);
        let error = report.tasks[0].error.clone().unwrap();
        assert_eq!(error.kind, ErrorKind::Io);
        assert!(error.message.contains("broker gone") && error.retryable);
        // Nobody ran it: no node, no start counted.
        assert_eq!(
            (report.tasks[0].node.clone(), report.tasks[0].attempts),
            (None, 0)
        );
        // A late failure of the same attempt is stale; the retry goes out.
        assert_eq!(
            fr.publish_failed("e", e.attempt, "again", t0, &mut one),
            Applied::Stale
        );
        let later = t0 + Duration::from_secs(5);
        let retry = fr.poll(later, &all_live, &mut one);
        assert_eq!(
            retry.iter().find(|m| m.task == "e").map(|m| m.attempt),
            Some(2)
        );
    }

    #[test]
    fn only_a_dispatched_attempt_has_a_deadline_and_only_a_waiting_one_a_retry_time() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let clock = Clock {
            now: t0,
            wall_ms: 1_000_000,
        };
        let snap = fr.snapshot(&clock);
        assert!(snap
            .tasks
            .iter()
            .all(|t| t.deadline_ms.is_none() && t.retry_at_ms.is_none()));
        let msgs = fr.poll(t0, &all_live, &mut one);
        let snap = fr.snapshot(&clock);
        let e = snap.tasks.iter().find(|t| t.name == "e").unwrap();
        assert!(e.deadline_ms.is_some() && e.retry_at_ms.is_none());
        let m = msgs.iter().find(|m| m.task == "e").unwrap();
        fr.apply(&failure(m, true), t0, &mut one);
        let snap = fr.snapshot(&clock);
        let e = snap.tasks.iter().find(|t| t.name == "e").unwrap();
        assert!(e.deadline_ms.is_none() && e.retry_at_ms.is_some());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        assert_eq!(backoff_delay(&p, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&p, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(&p, 9, 1.0), Duration::from_secs(5));
        assert_eq!(backoff_delay(&p, 3, 0.5), Duration::from_secs(2));
    }

    #[test]
    fn cancel_ends_the_run_at_once_and_fences_what_is_in_flight() {
        let t0 = Instant::now();
        let mut fr = run(t0);
        let e = fr.poll(t0, &all_live, &mut one).remove(0);
        fr.apply(&update(&e, UpdateStatus::Started), t0, &mut one);
        let before = fr.generation();
        let later = t0 + Duration::from_secs(2);
        assert!(fr.cancel(later));
        assert!(fr.generation() > before, "a cancel is saved");
        assert_eq!(fr.state(), FlowState::Cancelled);
        let report = fr.report(t0 + Duration::from_secs(9));
        assert!(report.tasks.iter().all(|t| t.state == TaskState::Cancelled));
        assert_eq!(report.elapsed_ms, 2000, "it ended when cancelled");
        assert!(report.error.unwrap().contains("cancelled"));
        // The running attempt's late result is stale; nothing more goes out.
        assert_eq!(fr.apply(&success(&e, 3), later, &mut one), Applied::Stale);
        assert!(fr.poll(later, &all_live, &mut one).is_empty());
        assert!(!fr.cancel(later), "a second cancel finds it ended");
        // A run that already ended cannot be cancelled.
        let mut done = run(t0);
        drive_to_success(&mut done, t0);
        assert!(!done.cancel(t0));
        assert_eq!(done.state(), FlowState::Succeeded);
        // Cancelled survives a restart.
        let clock = Clock {
            now: t0,
            wall_ms: 1_000_000,
        };
        let back =
            FlowRun::restore("fr1".into(), fr.flow.clone(), &fr.snapshot(&clock), &clock).unwrap();
        assert_eq!(back.state(), FlowState::Cancelled);
    }

    #[test]
    fn a_retry_reuses_succeeded_outputs_and_runs_only_the_rest() {
        let t0 = Instant::now();
        let clock = Clock {
            now: t0,
            wall_ms: 1_000_000,
        };
        // e, t and l2 succeed; l1 fails for good: the run fails.
        let mut old = run(t0);
        for _ in 0..4 {
            for m in old.poll(t0, &all_live, &mut one) {
                let u = if m.task == "l1" {
                    failure(&m, false)
                } else {
                    success(&m, 3)
                };
                old.apply(&u, t0, &mut one);
            }
        }
        assert_eq!(old.state(), FlowState::Failed);
        let saved = old.snapshot(&clock);

        let mut retry = FlowRun::new(
            "fr2".into(),
            old.flow.clone(),
            "replies".into(),
            Duration::from_secs(30),
            t0,
        );
        assert_eq!(retry.reuse(&saved), 3);
        let state_of = |fr: &FlowRun, name: &str| {
            fr.report(t0)
                .tasks
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .state
        };
        for name in ["e", "t", "l2"] {
            assert_eq!(state_of(&retry, name), TaskState::Reused, "{name}");
        }
        // Only the failed load goes out, reading the old run's artifact.
        let sent = retry.poll(t0, &all_live, &mut one);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].task, "l1");
        assert_eq!(sent[0].flow_run, "fr2");
        assert_eq!(
            sent[0].spec.source,
            SourceSpec::Artifact(ArtifactRef {
                path: "fr1/t.arrow".into(),
                rows: 3
            })
        );
        retry.apply(&success(&sent[0], 3), t0, &mut one);
        assert_eq!(
            retry.state(),
            FlowState::Succeeded,
            "Reused counts as succeeded"
        );
        let report = retry.report(t0);
        let t = report.tasks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!((t.rows_out, t.attempts), (Some(3), 0));
        // A retry of the retry reuses the reused outputs too.
        let mut again = FlowRun::new(
            "fr3".into(),
            old.flow.clone(),
            "replies".into(),
            Duration::from_secs(30),
            t0,
        );
        assert_eq!(again.reuse(&retry.snapshot(&clock)), 4);
        // Failed, cancelled and skipped tasks run again.
        let mut cancelled = run(t0);
        let e = cancelled.poll(t0, &all_live, &mut one).remove(0);
        cancelled.apply(&success(&e, 3), t0, &mut one);
        cancelled.poll(t0, &all_live, &mut one);
        cancelled.cancel(t0);
        let mut third = FlowRun::new(
            "fr4".into(),
            old.flow.clone(),
            "replies".into(),
            Duration::from_secs(30),
            t0,
        );
        assert_eq!(third.reuse(&cancelled.snapshot(&clock)), 1);
        let mut sent: Vec<String> = third
            .poll(t0, &all_live, &mut one)
            .into_iter()
            .map(|m| m.task)
            .collect();
        sent.sort();
        assert_eq!(sent, ["l2", "t"]);
    }
}
