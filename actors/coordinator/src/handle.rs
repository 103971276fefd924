/*!
[`CoordinatorHandle`]: the one way the rest of a node (the CLI's embedded run,
the HTTP API, the dashboard) talks to its coordinator.

Live questions (a running run's report, a stream of its reports) go to the
coordinator actor, which holds the runs in flight. History questions (a
finished run, a page of runs) go to a read-only connection on the
coordinator's database, on tokio's blocking pool, so that a slow query on a
large history never holds up the actor's thread.
*/

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use conveyor_flow::{FlowSource, FlowSpec};
use conveyor_schemas::RunReport;
use tokio::sync::{broadcast, watch};

use crate::actor::{
    CancelRun, Coordinator, ListNodes, LiveReport, RetryRun, RunChange, Submit, Submitted,
    SubscribeRuns, WatchRun,
};
use crate::runstore::{Overview, RunOrigin, RunPage, RunQuery, RunReader, RunSummary, StoreError};
use crate::schedules::Registry;
pub use crate::view::{
    AttemptView, CoordinatorError, LogLine, LogPage, LogQuery, NodeView, RegisteredFlow, RunView,
};

#[derive(Clone)]
pub struct CoordinatorHandle {
    addr: Addr<Coordinator>,
    /// A read-only connection on the database; none in memory. One
    /// connection is enough for a control plane; the mutex keeps it to one
    /// query at a time.
    reader: Option<Arc<Mutex<RunReader>>>,
    /// `[coordinator] flows`, loaded at start; none if not set.
    registry: Option<Arc<Registry>>,
}

impl CoordinatorHandle {
    /// A handle on `addr`, reading history from the database at `db`, if any.
    pub fn new(addr: Addr<Coordinator>, db: Option<&Path>) -> Result<Self, StoreError> {
        let reader = db
            .map(RunReader::open)
            .transpose()?
            .map(|r| Arc::new(Mutex::new(r)));
        Ok(CoordinatorHandle {
            addr,
            reader,
            registry: None,
        })
    }

    /// This handle, answering for the registered flows of `registry`.
    pub fn with_registry(mut self, registry: Option<Arc<Registry>>) -> Self {
        self.registry = registry;
        self
    }

    /// Starts a run of `flow`; the coordinator saves it before it answers.
    pub async fn submit(
        &self,
        flow: Arc<FlowSpec>,
        source: FlowSource,
    ) -> Result<Submitted, CoordinatorError> {
        self.addr
            .send(Submit { flow, source })
            .await
            .map_err(|_| CoordinatorError::Stopped)?
            .map_err(|e| CoordinatorError::NotTaken(e.0))
    }

    /// One run: live from the coordinator, else from the history.
    pub async fn get(&self, id: &str) -> Result<Option<RunView>, CoordinatorError> {
        let live = self
            .addr
            .send(LiveReport(id.to_string()))
            .await
            .map_err(|_| CoordinatorError::Stopped)?;
        let saved = match &self.reader {
            Some(_) => {
                let id = id.to_string();
                self.read(move |r| r.get(&id)).await?
            }
            None => None,
        };
        Ok(match (live, saved) {
            (Some(report), saved) => Some(RunView {
                report,
                saved,
                live: true,
            }),
            (None, Some(saved)) => saved.report.clone().map(|report| RunView {
                report,
                saved: Some(saved),
                live: false,
            }),
            (None, None) => None,
        })
    }

    /// A page of the run history, newest first.
    pub async fn list(&self, query: RunQuery) -> Result<RunPage, CoordinatorError> {
        self.read(move |r| r.list(&query)).await
    }

    /// The reports of a run in flight as they change; `None` when the
    /// coordinator does not hold it (it finished: use [`Self::get`]).
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<Option<watch::Receiver<RunReport>>, CoordinatorError> {
        self.addr
            .send(WatchRun(id.to_string()))
            .await
            .map_err(|_| CoordinatorError::Stopped)
    }

    /// Cancels run `id`: it ends `Cancelled` at once (every task not yet
    /// ended is `Cancelled`), saved and announced, and the workers running
    /// its attempts stop them and commit nothing. `Conflict` if the run
    /// already ended (a second cancel too); `NotFound` if there is no such run.
    pub async fn cancel(&self, id: &str) -> Result<(), CoordinatorError> {
        self.addr
            .send(CancelRun(id.to_string()))
            .await
            .map_err(|_| CoordinatorError::Stopped)?
    }

    /// Starts a new run that re-runs the failed, cancelled and skipped tasks
    /// of run `id` and reuses the committed outputs of its succeeded ones
    /// (shown as `Reused`), from the same flow text and params; the new run
    /// records `retry_of`. `Conflict` if `id` succeeded or is still running;
    /// `NotFound` if there is no such run; `NoHistory` in memory.
    pub async fn retry(&self, id: &str) -> Result<Submitted, CoordinatorError> {
        self.addr
            .send(RetryRun(id.to_string()))
            .await
            .map_err(|_| CoordinatorError::Stopped)?
    }

    /// Every attempt of every task of run `id`, in start order: node, start,
    /// end, rows and bytes, outcome, error ([`crate::history`]).
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptView>, CoordinatorError> {
        let live = self.live_report(id).await?;
        let run_live = live.is_some();
        let owned = id.to_string();
        let found = self
            .read(move |r| {
                if live.is_none() && r.get(&owned)?.is_none() {
                    return Ok(None);
                }
                r.attempts(&owned, run_live).map(Some)
            })
            .await?;
        found.ok_or_else(|| CoordinatorError::no_run(id))
    }

    /// A page of the log lines of a task's attempts (one, or all), after a
    /// sequence number, and whether more may come.
    pub async fn logs(&self, query: LogQuery) -> Result<LogPage, CoordinatorError> {
        let live = self.live_report(&query.run).await?;
        let run_live = live.is_some();
        let found = self
            .read(move |r| {
                let report = match live {
                    Some(report) => Some(report),
                    None => r.get(&query.run)?.and_then(|run| run.report),
                };
                let Some(report) = report else {
                    return Ok(Err(CoordinatorError::no_run(&query.run)));
                };
                let Some(task) = report.tasks.iter().find(|t| t.name == query.task) else {
                    return Ok(Err(CoordinatorError::NotFound(format!(
                        "run `{}` has no task `{}`",
                        query.run, query.task
                    ))));
                };
                if let Some(attempt) = query.attempt.filter(|a| *a > task.attempts) {
                    return Ok(Err(CoordinatorError::NotFound(format!(
                        "task `{}` of run `{}` has no attempt {attempt} (it has {})",
                        query.task, query.run, task.attempts
                    ))));
                }
                r.task_logs(&query, run_live).map(Ok)
            })
            .await?;
        found
    }

    async fn live_report(&self, id: &str) -> Result<Option<RunReport>, CoordinatorError> {
        self.addr
            .send(LiveReport(id.to_string()))
            .await
            .map_err(|_| CoordinatorError::Stopped)
    }

    /// The live nodes whose heartbeats the coordinator hears, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, CoordinatorError> {
        self.addr
            .send(ListNodes)
            .await
            .map_err(|_| CoordinatorError::Stopped)
    }

    /// What run `id` was started with (params, the run it retries); none
    /// if the history does not have it.
    pub async fn origin(&self, id: &str) -> Result<Option<RunOrigin>, CoordinatorError> {
        let id = id.to_string();
        self.read(move |r| r.origin(&id)).await
    }

    /// Runs by state, of one flow or of all (see [`RunReader::counts`]).
    pub async fn counts(
        &self,
        flow: Option<String>,
    ) -> Result<Vec<(conveyor_schemas::FlowState, u64)>, CoordinatorError> {
        self.read(move |r| r.counts(flow.as_deref())).await
    }

    /// The flows registered with `[coordinator] flows`, by name, each with
    /// its next slot and its latest run (one indexed query per flow, off
    /// the actor's thread); empty when no `flows` directory is set.
    pub async fn flows(&self) -> Result<Vec<RegisteredFlow>, CoordinatorError> {
        let Some(registry) = self.registry.clone() else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = registry.iter().map(|(name, _)| name.clone()).collect();
        let last_runs = match self.reader {
            Some(_) => {
                self.read(move |r| {
                    names
                        .iter()
                        .map(|name| r.last_run(name))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?
            }
            None => vec![None; registry.iter().count()],
        };
        let now_ms = crate::state::Clock::now().wall_ms;
        Ok(registry
            .iter()
            .zip(last_runs)
            .map(|((name, r), last_run)| {
                let schedule = r.flow.schedule.as_ref();
                RegisteredFlow {
                    name: name.clone(),
                    file: r.path.display().to_string(),
                    params: r.params(),
                    schedule: schedule.map(|s| s.cron.clone()),
                    timezone: schedule.map(|s| s.timezone.clone()),
                    next_fire_ms: schedule.and_then(|s| s.next_after(now_ms)),
                    last_run,
                }
            })
            .collect())
    }

    /// Starts a run of registered flow `flow` with `params` (a param not
    /// given takes its default; an unknown or missing one is `Invalid`).
    pub async fn trigger(
        &self,
        flow: &str,
        params: BTreeMap<String, String>,
    ) -> Result<Submitted, CoordinatorError> {
        let registered = self
            .registry
            .as_ref()
            .and_then(|r| r.get(flow))
            .ok_or_else(|| CoordinatorError::NotFound(format!("no registered flow `{flow}`")))?;
        let source = registered.source_with(params);
        let spec = FlowSpec::parse_source(&source).map_err(|problems| {
            CoordinatorError::Invalid(format!("flow `{flow}` with these params: {problems}"))
        })?;
        self.submit(Arc::new(spec), source).await
    }

    /// Every run's start and state changes from now on, each announced
    /// after it is saved (the dashboard's live lists).
    pub async fn changes(&self) -> Result<broadcast::Receiver<RunChange>, CoordinatorError> {
        self.addr
            .send(SubscribeRuns)
            .await
            .map_err(|_| CoordinatorError::Stopped)
    }

    /// The saved rows of the runs among `ids` (no reports).
    pub async fn summaries(&self, ids: Vec<String>) -> Result<Vec<RunSummary>, CoordinatorError> {
        self.read(move |r| r.summaries(&ids)).await
    }

    /// Runs per hour, failures and p50/p95 durations per flow, of the runs
    /// created since `since_ms` (see [`RunReader::overview`]).
    pub async fn overview(&self, since_ms: u64) -> Result<Overview, CoordinatorError> {
        self.read(move |r| r.overview(since_ms)).await
    }

    /// The flow run `id` was started from, parsed again with its params
    /// (for its tasks' graph); none if the history does not have it or it
    /// no longer parses.
    pub async fn flow_of(&self, id: &str) -> Result<Option<FlowSpec>, CoordinatorError> {
        let id = id.to_string();
        let source = self.read(move |r| r.source(&id)).await?;
        Ok(source.and_then(|s| FlowSpec::parse_source(&s).ok()))
    }

    /// The last `limit` log lines of a task before sequence number
    /// `before`, oldest first (a bounded tail, and pages further back).
    pub async fn log_tail(
        &self,
        run: &str,
        task: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogLine>, CoordinatorError> {
        let (run, task) = (run.to_string(), task.to_string());
        self.read(move |r| r.task_log_tail(&run, &task, None, before, limit))
            .await
    }

    /// The latest schedule lag of each scheduled flow that fired, in ms
    /// (now − slot time when its run started), for metrics.
    pub fn schedule_lags(&self) -> BTreeMap<String, u64> {
        self.registry
            .as_ref()
            .map(|r| r.schedule_lags())
            .unwrap_or_default()
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&RunReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let reader = self.reader.clone().ok_or(CoordinatorError::NoHistory)?;
        tokio::task::spawn_blocking(move || {
            let reader = reader
                .lock()
                .map_err(|_| CoordinatorError::Internal("run reader poisoned".into()))?;
            query(&reader).map_err(CoordinatorError::from)
        })
        .await
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?
    }
}
