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

use crate::coordinator::{
    CancelRun, Coordinator, ListNodes, LiveReport, RetryRun, RunChange, Submit, Submitted,
    SubscribeRuns, WatchRun,
};
use crate::runstore::{Overview, RunOrigin, RunPage, RunQuery, RunReader, RunSummary, StoreError};
use crate::schedules::Registry;

/// Why the coordinator could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The coordinator refused the flow: its database failed.
    #[error("the coordinator did not take the flow: {0}")]
    NotTaken(StoreError),
    /// The actor has stopped: the node is shutting down.
    #[error("the coordinator has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An in-memory coordinator (`conveyor run`) keeps no history.
    #[error(
        "this coordinator keeps no run history (it is not a coordinator node with a database)"
    )]
    NoHistory,
    /// A feature that this version does not have yet.
    #[error("{0} is not supported by this coordinator yet")]
    NotSupported(&'static str),
    /// No such run, task or registered flow (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the run's state: cancelling a run that
    /// already ended, or one already being cancelled (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but cannot be done: unknown or missing
    /// params, a flow that does not parse (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// A run as [`CoordinatorHandle::get`] sees it: live if the coordinator
/// holds it, else as last saved.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    /// The latest report: fresh from the coordinator for a live run.
    pub report: RunReport,
    /// The saved row (timestamps, flow); none for an in-memory coordinator.
    pub saved: Option<RunSummary>,
    /// Whether the coordinator holds the run in flight.
    pub live: bool,
}

/// One attempt of one task, as the history keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AttemptView {
    pub task: String,
    pub attempt: u32,
    /// The broker delivery of the attempt (1 = first).
    pub delivery: u32,
    pub node: Option<String>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// `Running`, `Succeeded`, `Failed`, `Cancelled`, or `Lost` (the
    /// worker went silent; the attempt's bar ends at its last sign of life).
    pub outcome: String,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub error: Option<conveyor_schemas::TaskError>,
}

/// Which log lines to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogQuery {
    pub run: String,
    pub task: String,
    /// One attempt; every attempt if none.
    pub attempt: Option<u32>,
    /// Lines after this sequence number (to follow: pass the last one seen).
    pub after: Option<u64>,
    /// At most this many lines; 0 means a default page.
    pub limit: usize,
}

/// One log line of a task attempt, as its worker wrote it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// Increases with every line of the run's task, across attempts.
    pub seq: u64,
    pub attempt: u32,
    pub ts_ms: u64,
    pub level: String,
    pub node: String,
    /// The message and its fields, as one line of text.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The attempt is still running: more lines may come.
    pub live: bool,
}

/// A node the coordinator hears from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeView {
    pub node: String,
    pub kinds: Vec<conveyor_schemas::TaskKind>,
    pub in_flight: Vec<String>,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    pub version: Option<String>,
}

/// A flow registered with `[coordinator] flows = "DIR"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RegisteredFlow {
    pub name: String,
    pub file: String,
    /// Each param with its default (none: it must be given).
    pub params: BTreeMap<String, Option<String>>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    /// Next time the schedule fires, in ms since the epoch.
    pub next_fire_ms: Option<u64>,
    pub last_run: Option<String>,
}

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
        let id = id.to_string();
        let found = self
            .read(move |r| {
                if live.is_none() && r.get(&id)?.is_none() {
                    return Ok(None);
                }
                r.attempts(&id, run_live).map(Some)
            })
            .await?;
        found.ok_or_else(|| CoordinatorError::NotFound("no such run".into()))
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
                    return Ok(Err(format!("no run `{}`", query.run)));
                };
                if !report.tasks.iter().any(|t| t.name == query.task) {
                    return Ok(Err(format!(
                        "run `{}` has no task `{}`",
                        query.run, query.task
                    )));
                }
                r.task_logs(&query, run_live).map(Ok)
            })
            .await?;
        found.map_err(CoordinatorError::NotFound)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conveyor_flow::{CoordinatorMode, Launch, NodeConfig};
    use conveyor_schemas::FlowState;

    use super::*;
    use crate::node::Node;
    use crate::runstore::RunQuery;

    /// Runs `body` with the handle of a coordinator node that has a database
    /// and plays every role in this process, and a two-task flow `h` (`e`
    /// reads two rows of `in.csv`, `l` loads them).
    fn with_in_process_node(
        name: &str,
        body: impl AsyncFnOnce(CoordinatorHandle, Arc<FlowSpec>, FlowSource, &NodeConfig),
    ) {
        let dir =
            std::env::temp_dir().join(format!("conveyor-handle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.csv"), "a,b\n1,x\n2,y\n").unwrap();
        let flow_text = "[flow]\nname = \"h\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out.csv\"\n";
        let flow = Arc::new(FlowSpec::parse("h.toml", flow_text, &dir).unwrap());
        let source = FlowSource {
            file: "h.toml".into(),
            text: flow_text.into(),
            base: dir.display().to_string(),
            params: Default::default(),
        };
        let mut cfg = NodeConfig::embedded(&dir);
        if let Some(c) = cfg.coordinator.as_mut() {
            c.db = Some(dir.join("c.db"));
        }
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let system = actix::System::new();
        system.block_on(async {
            let roles = cfg.roles(Launch::Node).unwrap();
            assert_eq!(roles.coordinator, CoordinatorMode::Service);
            let node = Node::start(&cfg, &roles, io.handle().clone())
                .await
                .unwrap();
            let handle = node.coordinator.clone().unwrap();
            body(handle, flow, source, &cfg).await;
            node.shutdown(Duration::from_secs(1)).await;
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A coordinator node with a database, all roles in this process: the
    /// handle answers live questions from the actor and history from SQLite.
    #[test]
    fn the_handle_submits_watches_gets_and_lists_runs() {
        with_in_process_node("runs", async |handle, flow, source, _cfg| {
            let mut ids = Vec::new();
            for _ in 0..3 {
                let run = handle.submit(flow.clone(), source.clone()).await.unwrap();
                let watch = handle.watch(&run.flow_run).await.unwrap().expect("live");
                let done = run.done.await.unwrap();
                assert_eq!(done.state, FlowState::Succeeded, "{done:?}");
                // The watch saw the run through to its end.
                assert_eq!(watch.borrow().state, FlowState::Succeeded);
                ids.push(run.flow_run);
                // Distinct creation times, so the newest-first order is known.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Finished: served from the database, with its report and times.
            let seen = loop {
                let view = handle.get(&ids[0]).await.unwrap().unwrap();
                if !view.live {
                    break view;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(seen.report.state, FlowState::Succeeded);
            let saved = seen.saved.unwrap();
            assert_eq!(saved.flow, "h");
            assert!(saved.ended_ms.unwrap() >= saved.created_ms);
            assert!(handle.get("h-nosuchrun000").await.unwrap().is_none());
            let page = handle
                .list(RunQuery {
                    limit: 2,
                    ..RunQuery::default()
                })
                .await
                .unwrap();
            let listed: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
            assert!(page.next.is_some());
            // A run that ended can be neither cancelled nor, having
            // succeeded, retried; an unknown one is not found.
            assert!(matches!(
                handle.cancel(&ids[0]).await,
                Err(CoordinatorError::Conflict(m)) if m.contains("already ended (Succeeded)")
            ));
            assert!(matches!(
                handle.retry(&ids[0]).await,
                Err(CoordinatorError::Conflict(m)) if m.contains("nothing to retry")
            ));
            assert!(matches!(
                handle.cancel("h-nosuchrun000").await,
                Err(CoordinatorError::NotFound(_))
            ));
            assert!(matches!(
                handle.retry("h-nosuchrun000").await,
                Err(CoordinatorError::NotFound(_))
            ));
        });
    }

    /// A coordinator node with `[coordinator] flows`: it lists its flows,
    /// triggers one by name, and fires the scheduled one by itself.
    #[test]
    fn registered_flows_are_listed_triggered_and_scheduled() {
        let dir = std::env::temp_dir().join(format!("conveyor-handle-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("flows")).unwrap();
        std::fs::write(dir.join("flows/in.csv"), "a,b\n1,x\n").unwrap();
        let flow = |name: &str, extra: &str, params: &str, out: &str| {
            format!("[flow]\nname = \"{name}\"\n{extra}\n[params]\n{params}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{out}\"\n")
        };
        std::fs::write(
            dir.join("flows/manual.toml"),
            flow(
                "manual",
                "",
                "day = { default = \"d1\" }",
                "manual-{{ params.day }}.csv",
            ),
        )
        .unwrap();
        // `slot` needs no default: every scheduled run is given one.
        std::fs::write(
            dir.join("flows/tick.toml"),
            flow(
                "tick",
                "schedule = \"* * * * * *\"\ntimezone = \"Europe/Paris\"",
                "slot = {}",
                "tick.csv",
            ),
        )
        .unwrap();
        let mut cfg = NodeConfig::embedded(&dir);
        if let Some(c) = cfg.coordinator.as_mut() {
            c.db = Some(dir.join("c.db"));
            c.flows = Some(dir.join("flows"));
        }
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let system = actix::System::new();
        system.block_on(async {
            let roles = cfg.roles(Launch::Node).unwrap();
            let node = Node::start(&cfg, &roles, io.handle().clone())
                .await
                .unwrap();
            let handle = node.coordinator.clone().unwrap();
            let flows = handle.flows().await.unwrap();
            let names: Vec<&str> = flows.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["manual", "tick"]);
            assert_eq!(flows[0].schedule, None);
            assert_eq!(flows[0].next_fire_ms, None);
            assert_eq!(flows[1].schedule.as_deref(), Some("* * * * * *"));
            assert_eq!(flows[1].timezone.as_deref(), Some("Europe/Paris"));
            let now = crate::state::Clock::now().wall_ms;
            let next = flows[1].next_fire_ms.unwrap();
            assert!(next > now && next <= now + 1000, "{next} vs {now}");
            assert!(flows[1].file.ends_with("tick.toml"), "{}", flows[1].file);
            assert_eq!(
                flows[0].params,
                BTreeMap::from([("day".to_string(), Some("d1".to_string()))])
            );
            assert_eq!(
                flows[1].params,
                BTreeMap::from([("slot".to_string(), None)])
            );

            let day = BTreeMap::from([("day".to_string(), "d2".to_string())]);
            let run = handle.trigger("manual", day).await.unwrap();
            let done = run.done.await.unwrap();
            assert_eq!(done.state, FlowState::Succeeded, "{done:?}");
            assert!(dir.join("out/manual-d2.csv").is_file());
            assert!(matches!(
                handle.trigger("nope", BTreeMap::new()).await,
                Err(CoordinatorError::NotFound(m)) if m.contains("`nope`")
            ));
            let bad = BTreeMap::from([("month".to_string(), "1".to_string())]);
            assert!(matches!(
                handle.trigger("manual", bad).await,
                Err(CoordinatorError::Invalid(m)) if m.contains("params.month") && m.contains("declares only day")
            ));
            // A scheduled flow triggered by hand must be given its slot.
            assert!(matches!(
                handle.trigger("tick", BTreeMap::new()).await,
                Err(CoordinatorError::Invalid(m)) if m.contains("params.slot") && m.contains("is required")
            ));
            // The schedule fires within a few seconds, and its runs succeed.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let ticked = loop {
                let flows = handle.flows().await.unwrap();
                assert_eq!(flows[0].last_run.as_deref(), Some(run.flow_run.as_str()));
                if let Some(id) = flows[1].last_run.clone() {
                    break id;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the schedule did not fire"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(ticked.starts_with("tick-"), "{ticked}");
            // Its run got the slot, in the flow's zone (Paris in winter or summer).
            let db = rusqlite::Connection::open(dir.join("c.db")).unwrap();
            let params: String = db
                .query_row(
                    "SELECT params FROM flow_runs WHERE id = ?1",
                    [&ticked],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                params.starts_with("{\"slot\":\"20") && (params.ends_with("+01:00\"}") || params.ends_with("+02:00\"}")),
                "{params}"
            );
            assert!(handle.schedule_lags().contains_key("tick"));
            let page = handle
                .list(RunQuery {
                    flow: Some("tick".into()),
                    ..RunQuery::default()
                })
                .await
                .unwrap();
            assert!(!page.runs.is_empty());
            node.shutdown(Duration::from_secs(1)).await;
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The embedded transport carries task logs too: a coordinator node with
    /// a database, all roles in this process, records each attempt and the
    /// lines its task wrote, and reads them back through the handle.
    #[test]
    fn the_handle_reads_attempts_and_task_logs_of_an_in_process_run() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        // The worker's tasks run on other threads: the capture layer must be
        // the process's subscriber. Another test may have set one already.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(
            crate::tasklog::TaskLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        ));
        with_in_process_node("logs", async |handle, flow, source, cfg| {
            let run = handle.submit(flow.clone(), source.clone()).await.unwrap();
            let id = run.flow_run.clone();
            assert_eq!(run.done.await.unwrap().state, FlowState::Succeeded);
            let query = |task: &str| LogQuery {
                run: id.clone(),
                task: task.into(),
                ..LogQuery::default()
            };
            // The last lines travel beside the result: wait until they are in.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let page = loop {
                let page = handle.logs(query("l")).await.unwrap();
                if !page.live || std::time::Instant::now() > deadline {
                    break page;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(!page.live, "{page:?}");
            let texts: Vec<&str> = page.lines.iter().map(|l| l.message.as_str()).collect();
            assert!(
                texts.iter().any(|t| t.starts_with("Task started")),
                "{texts:?}"
            );
            assert!(
                texts
                    .iter()
                    .any(|t| t.starts_with("Task succeeded") && t.contains("rows_out=2")),
                "{texts:?}"
            );
            assert!(page
                .lines
                .iter()
                .all(|l| l.attempt == 1 && l.node == cfg.node_name));
            // After the last seq seen: nothing new.
            let last = page.lines.last().unwrap().seq;
            let after = handle
                .logs(LogQuery {
                    after: Some(last),
                    ..query("l")
                })
                .await
                .unwrap();
            assert!(after.lines.is_empty(), "{after:?}");
            let attempts = handle.attempts(&id).await.unwrap();
            let seen: Vec<(&str, u32, &str)> = attempts
                .iter()
                .map(|a| (a.task.as_str(), a.attempt, a.outcome.as_str()))
                .collect();
            assert_eq!(seen, [("e", 1, "Succeeded"), ("l", 1, "Succeeded")]);
            let load = &attempts[1];
            assert_eq!((load.rows_in, load.rows_out), (Some(2), Some(2)));
            assert!(load.bytes_out.is_some_and(|b| b > 0), "{load:?}");
            assert!(load.started_ms.unwrap() <= load.ended_ms.unwrap());
            assert!(
                attempts[0].bytes_in.is_some_and(|b| b == 12),
                "{:?}",
                attempts[0]
            );
            // Unknown runs and tasks are named.
            let err = handle.logs(query("nosuchtask")).await.unwrap_err();
            assert!(
                matches!(&err, CoordinatorError::NotFound(m) if m.contains("nosuchtask")),
                "{err:?}"
            );
            assert!(matches!(
                handle.attempts("h-nosuchrun000").await,
                Err(CoordinatorError::NotFound(_))
            ));
        });
    }
}
