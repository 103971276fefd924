/*!
Prometheus metrics: their names and help text, the process-wide recorder,
and the handles the hot paths hold.

The code records through the `metrics` facade. A node that serves metrics
([`install`] at start: `[metrics] listen`, or a coordinator's API) installs
the Prometheus recorder of `metrics-exporter-prometheus`, and [`render`]
gives the text a scrape returns (the node binary's `scrape` listener serves
it; the API can serve it too). With no recorder installed, every handle is a no-op, so
`conveyor run` pays nothing.

The hot path is a task on a worker: [`TaskMetrics`] resolves the handles of
one kind once (labels and all), so that a task costs a few atomic adds and
no label set. A run's end, once per run, looks its counter up by flow name.

| metric | type | labels | where |
|---|---|---|---|
| `conveyor_tasks_total` | counter | kind, outcome | worker |
| `conveyor_task_duration_seconds` | histogram | kind | worker |
| `conveyor_task_rows_{in,out}_total` | counter | kind | worker |
| `conveyor_task_bytes_{in,out}_total` | counter | kind | worker (where known) |
| `conveyor_tasks_in_flight` | gauge | kind | worker |
| `conveyor_broker_reconnects_total` | counter | | every node |
| `conveyor_runs_total` | counter | flow, state | coordinator |
| `conveyor_runs_active` | gauge | | coordinator |
| `conveyor_schedule_lag_seconds` | gauge | | coordinator |
*/

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use conveyor_etl::Workspace;
use conveyor_schemas::{ErrorKind, FlowState, SourceSpec, TaskKind, TaskOutput, TaskSpec};
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Task attempts a worker finished, by kind and [`TaskOutcome`].
pub const TASKS: &str = "conveyor_tasks_total";
/// How long a task attempt ran on its worker, from start to result.
pub const TASK_DURATION: &str = "conveyor_task_duration_seconds";
pub const TASK_ROWS_IN: &str = "conveyor_task_rows_in_total";
pub const TASK_ROWS_OUT: &str = "conveyor_task_rows_out_total";
pub const TASK_BYTES_IN: &str = "conveyor_task_bytes_in_total";
pub const TASK_BYTES_OUT: &str = "conveyor_task_bytes_out_total";
pub const TASKS_IN_FLIGHT: &str = "conveyor_tasks_in_flight";
pub const BROKER_RECONNECTS: &str = "conveyor_broker_reconnects_total";
/// Runs that ended, by flow and final state.
pub const RUNS: &str = "conveyor_runs_total";
pub const RUNS_ACTIVE: &str = "conveyor_runs_active";
/// How late the coordinator fired the latest schedule slot.
pub const SCHEDULE_LAG: &str = "conveyor_schedule_lag_seconds";

/// Upper bounds of the task duration buckets, in seconds: 10 ms to 1 h.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// How often the recorder drops what it no longer needs (histogram samples
/// between scrapes), so that a node nobody scrapes does not grow.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How a task attempt ended on its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// It committed its output.
    Succeeded,
    /// It failed (retryable or not), or the worker crashed on it.
    Failed,
    /// Its run was cancelled or abandoned while it ran: it committed nothing.
    Cancelled,
    /// A redelivery of a task already committed, answered from its marker
    /// without doing the work again.
    Duplicate,
}

impl TaskOutcome {
    pub const ALL: [TaskOutcome; 4] = [
        TaskOutcome::Succeeded,
        TaskOutcome::Failed,
        TaskOutcome::Cancelled,
        TaskOutcome::Duplicate,
    ];

    /// The outcome of an attempt that failed with `e`: cancelled if its run
    /// was cancelled or abandoned while it ran, else failed.
    pub fn of_error(e: &conveyor_etl::EtlError) -> TaskOutcome {
        match e.kind() {
            ErrorKind::Cancelled | ErrorKind::Abandoned => TaskOutcome::Cancelled,
            _ => TaskOutcome::Failed,
        }
    }

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Succeeded => "succeeded",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Cancelled => "cancelled",
            TaskOutcome::Duplicate => "duplicate",
        }
    }
}

/// Why the recorder could not be installed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct InstallError(String);

static INSTALLED: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// The Prometheus recorder's settings: histogram buckets, and names as
/// written (counters already end in `_total`).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TASK_DURATION.into()), &DURATION_BUCKETS)
        .expect("the duration buckets are not empty")
}

/// Installs the Prometheus recorder for the whole process, describes every
/// metric, and starts its upkeep. Call it before the node starts its roles:
/// a handle taken before is a no-op for good. Later calls return the same
/// handle.
pub fn install() -> Result<&'static PrometheusHandle, InstallError> {
    INSTALLED
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| InstallError(e.to_string()))?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("conveyor-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .map_err(|e| InstallError(format!("cannot start its upkeep thread: {e}")))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The Prometheus text of every metric of this process, as a scrape of
/// `/metrics` returns it; `None` when no recorder was installed.
pub fn render() -> Option<String> {
    match INSTALLED.get() {
        Some(Ok(handle)) => Some(handle.render()),
        _ => None,
    }
}

/// Whether this process installed the recorder: what only metrics need
/// (a task's bytes) is skipped when not.
pub fn recording() -> bool {
    matches!(INSTALLED.get(), Some(Ok(_)))
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gives every metric its help text and unit, and registers the node-wide
/// ones at zero so that they are scraped before anything happens.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        TASKS,
        Unit::Count,
        "Task attempts this node's workers finished, by kind and outcome (succeeded, failed, cancelled, or duplicate: a redelivery answered from its commit marker)."
    );
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "How long task attempts ran on this node, from start to result, by kind."
    );
    describe_counter!(
        TASK_ROWS_IN,
        Unit::Count,
        "Rows read by the tasks that succeeded on this node, by kind."
    );
    describe_counter!(
        TASK_ROWS_OUT,
        Unit::Count,
        "Rows written by the tasks that succeeded on this node, by kind."
    );
    describe_counter!(
        TASK_BYTES_IN,
        Unit::Bytes,
        "Bytes of the files and artifacts read by the tasks that succeeded on this node, by kind (globs and URLs are not counted)."
    );
    describe_counter!(
        TASK_BYTES_OUT,
        Unit::Bytes,
        "Bytes of the files and artifacts committed by the tasks that succeeded on this node, by kind."
    );
    describe_gauge!(
        TASKS_IN_FLIGHT,
        Unit::Count,
        "Task attempts running on this node now, by kind."
    );
    describe_counter!(
        BROKER_RECONNECTS,
        Unit::Count,
        "Times this node reconnected to the broker after losing its connection."
    );
    describe_counter!(
        RUNS,
        Unit::Count,
        "Flow runs this coordinator saw end, by flow and final state."
    );
    describe_gauge!(
        RUNS_ACTIVE,
        Unit::Count,
        "Flow runs this coordinator holds in flight now."
    );
    describe_gauge!(
        SCHEDULE_LAG,
        Unit::Seconds,
        "How late the coordinator fired the latest schedule slot, in seconds."
    );
    metrics::counter!(BROKER_RECONNECTS).increment(0);
}

/// Counts one reconnect to the broker.
pub fn broker_reconnected() {
    metrics::counter!(BROKER_RECONNECTS).increment(1);
}

/// Sets how late the latest schedule slot fired.
pub fn set_schedule_lag(lag: Duration) {
    metrics::gauge!(SCHEDULE_LAG).set(lag.as_secs_f64());
}

/// The metrics of one task kind on a worker, resolved once: a task then
/// costs atomic adds, never a label set or a registry lookup.
#[derive(Clone)]
pub struct TaskMetrics(Arc<KindHandles>);

struct KindHandles {
    /// By [`TaskOutcome`], in [`TaskOutcome::ALL`] order.
    outcomes: [Counter; 4],
    duration: Histogram,
    rows_in: Counter,
    rows_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    in_flight: Gauge,
}

/// What a succeeded task moved; bytes only where known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
}

impl Moved {
    /// What a succeeded task of `spec` moved, with its `output`: its rows,
    /// and the bytes of the files and artifacts it read and committed (a
    /// glob or a URL source is not counted). A few `stat` calls: blocking,
    /// like the task.
    pub fn by(ws: &Workspace, spec: &TaskSpec, output: &TaskOutput) -> Moved {
        let stored = |key: &str| ws.store.open(key).ok().and_then(|p| bytes_at(&p));
        let bytes_in = match &spec.source {
            SourceSpec::File { path, .. } => bytes_at(Path::new(path)),
            SourceSpec::Artifact(a) => stored(&a.path),
            SourceSpec::Parts { parts, .. } => parts.iter().map(|p| stored(&p.path)).sum(),
            SourceSpec::Tables { tables } => tables
                .iter()
                .flat_map(|t| &t.artifacts)
                .map(|a| stored(&a.path))
                .sum(),
            SourceSpec::Glob { .. } | SourceSpec::Url { .. } | SourceSpec::Postgres { .. } => None,
        };
        let bytes_out = match &output.artifact {
            Some(a) => stored(&a.path),
            None if Path::new(&output.location).is_absolute() => {
                bytes_at(Path::new(&output.location))
            }
            None => stored(&output.location),
        };
        Moved {
            rows_in: output.rows_in,
            rows_out: output.rows_out,
            bytes_in,
            bytes_out,
        }
    }
}

/// The size of a file, or of the files in a directory (a load's parts).
fn bytes_at(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len());
    }
    let entries = std::fs::read_dir(path).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
    )
}

impl TaskMetrics {
    /// The handles of `kind`, registered at zero so that a scrape shows
    /// every outcome of every kind the node runs.
    pub fn new(kind: TaskKind) -> TaskMetrics {
        let k = kind.as_str();
        let outcomes = TaskOutcome::ALL.map(|o| {
            let c = metrics::counter!(TASKS, "kind" => k, "outcome" => o.as_str());
            c.increment(0);
            c
        });
        let counter = |name: &'static str| {
            let c = metrics::counter!(name, "kind" => k);
            c.increment(0);
            c
        };
        TaskMetrics(Arc::new(KindHandles {
            outcomes,
            duration: metrics::histogram!(TASK_DURATION, "kind" => k),
            rows_in: counter(TASK_ROWS_IN),
            rows_out: counter(TASK_ROWS_OUT),
            bytes_in: counter(TASK_BYTES_IN),
            bytes_out: counter(TASK_BYTES_OUT),
            in_flight: {
                let g = metrics::gauge!(TASKS_IN_FLIGHT, "kind" => k);
                g.set(0.0);
                g
            },
        }))
    }

    /// Counts an attempt that ran for `ran` and ended in `outcome`.
    pub fn finished(&self, outcome: TaskOutcome, ran: Duration) {
        let i = TaskOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.0.outcomes[i].increment(1);
        self.0.duration.record(ran.as_secs_f64());
    }

    /// Counts what a succeeded attempt read and wrote.
    pub fn moved(&self, moved: &Moved) {
        self.0.rows_in.increment(moved.rows_in);
        self.0.rows_out.increment(moved.rows_out);
        if let Some(b) = moved.bytes_in {
            self.0.bytes_in.increment(b);
        }
        if let Some(b) = moved.bytes_out {
            self.0.bytes_out.increment(b);
        }
    }

    /// Counts an attempt as running until the guard is dropped.
    pub fn running(&self) -> InFlight {
        self.0.in_flight.increment(1.0);
        InFlight(self.0.in_flight.clone())
    }
}

/// An attempt counted in `conveyor_tasks_in_flight`, until dropped (however
/// the attempt ends).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The task metrics of every kind, built once per node.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// By kind, in [`TaskKind::ALL`] order.
    kinds: Arc<Vec<(TaskKind, TaskMetrics)>>,
}

impl WorkerMetrics {
    /// The metrics of `kinds` (the kinds a node runs).
    pub fn new(kinds: impl IntoIterator<Item = TaskKind>) -> WorkerMetrics {
        WorkerMetrics {
            kinds: Arc::new(
                kinds
                    .into_iter()
                    .map(|k| (k, TaskMetrics::new(k)))
                    .collect(),
            ),
        }
    }

    /// The metrics of `kind`; resolved now if the node was not built to run it.
    pub fn of(&self, kind: TaskKind) -> TaskMetrics {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| TaskMetrics::new(kind))
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics::new([])
    }
}

/// A coordinator's metrics.
pub struct CoordinatorMetrics {
    active: Gauge,
}

impl CoordinatorMetrics {
    /// Registers the coordinator's gauges at zero.
    pub fn new() -> CoordinatorMetrics {
        let active = metrics::gauge!(RUNS_ACTIVE);
        active.set(0.0);
        metrics::gauge!(SCHEDULE_LAG).set(0.0);
        CoordinatorMetrics { active }
    }

    /// The runs held in flight now.
    pub fn active(&self, runs: usize) {
        self.active.set(runs as f64);
    }

    /// Counts a run of `flow` that ended in `state`.
    pub fn run_ended(&self, flow: &str, state: FlowState) {
        metrics::counter!(RUNS, "flow" => flow.to_string(), "state" => state.as_str()).increment(1);
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        CoordinatorMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered text of what `record` does, on a recorder of its own,
    /// while what it returns (an [`InFlight`], say) is still held.
    fn rendered<T>(record: impl FnOnce() -> T) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        let held = metrics::with_local_recorder(&recorder, || {
            describe();
            record()
        });
        let text = handle.render();
        drop(held);
        text
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn task_metrics_render_with_help_types_and_buckets() {
        let text = rendered(|| {
            let workers = WorkerMetrics::new([TaskKind::Extract, TaskKind::Load]);
            let extract = workers.of(TaskKind::Extract);
            {
                let _running = extract.running();
                extract.finished(TaskOutcome::Succeeded, Duration::from_millis(30));
                extract.moved(&Moved {
                    rows_in: 10,
                    rows_out: 8,
                    bytes_in: Some(100),
                    bytes_out: None,
                });
            }
            let still = workers.of(TaskKind::Load).running();
            extract.finished(TaskOutcome::Failed, Duration::from_secs(2));
            extract.finished(TaskOutcome::Duplicate, Duration::from_millis(1));
            still
        });
        assert!(
            text.contains("# HELP conveyor_tasks_total Task attempts"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE conveyor_tasks_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE conveyor_task_duration_seconds histogram"),
            "{text}"
        );
        let s =
            |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(
            s(r#"conveyor_tasks_total{kind="extract",outcome="succeeded"}"#),
            "1"
        );
        assert_eq!(
            s(r#"conveyor_tasks_total{kind="extract",outcome="failed"}"#),
            "1"
        );
        assert_eq!(
            s(r#"conveyor_tasks_total{kind="extract",outcome="duplicate"}"#),
            "1"
        );
        // Registered at zero: a scrape shows every outcome of every kind.
        assert_eq!(
            s(r#"conveyor_tasks_total{kind="load",outcome="cancelled"}"#),
            "0"
        );
        assert_eq!(s(r#"conveyor_task_rows_in_total{kind="extract"}"#), "10");
        assert_eq!(s(r#"conveyor_task_rows_out_total{kind="extract"}"#), "8");
        assert_eq!(s(r#"conveyor_task_bytes_in_total{kind="extract"}"#), "100");
        assert_eq!(s(r#"conveyor_task_bytes_out_total{kind="extract"}"#), "0");
        assert_eq!(s(r#"conveyor_tasks_in_flight{kind="extract"}"#), "0");
        assert_eq!(s(r#"conveyor_tasks_in_flight{kind="load"}"#), "1");
        assert_eq!(
            s(r#"conveyor_task_duration_seconds_bucket{kind="extract",le="0.01"}"#),
            "1"
        );
        assert_eq!(
            s(r#"conveyor_task_duration_seconds_bucket{kind="extract",le="0.05"}"#),
            "2"
        );
        assert_eq!(
            s(r#"conveyor_task_duration_seconds_bucket{kind="extract",le="3600"}"#),
            "3"
        );
        assert_eq!(
            s(r#"conveyor_task_duration_seconds_bucket{kind="extract",le="+Inf"}"#),
            "3"
        );
        assert_eq!(
            s(r#"conveyor_task_duration_seconds_count{kind="extract"}"#),
            "3"
        );
        assert_eq!(s("conveyor_broker_reconnects_total"), "0");
    }

    #[test]
    fn coordinator_metrics_count_runs_by_flow_and_state() {
        let text = rendered(|| {
            let coord = CoordinatorMetrics::new();
            coord.active(3);
            coord.run_ended("daily", FlowState::Succeeded);
            coord.run_ended("daily", FlowState::Succeeded);
            coord.run_ended("daily", FlowState::Failed);
            coord.run_ended("hourly", FlowState::Cancelled);
            coord.active(0);
            set_schedule_lag(Duration::from_millis(1500));
            broker_reconnected();
        });
        let s =
            |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(
            s(r#"conveyor_runs_total{flow="daily",state="Succeeded"}"#),
            "2"
        );
        assert_eq!(
            s(r#"conveyor_runs_total{flow="daily",state="Failed"}"#),
            "1"
        );
        assert_eq!(
            s(r#"conveyor_runs_total{flow="hourly",state="Cancelled"}"#),
            "1"
        );
        assert_eq!(s("conveyor_runs_active"), "0");
        assert_eq!(s("conveyor_schedule_lag_seconds"), "1.5");
        assert_eq!(s("conveyor_broker_reconnects_total"), "1");
        assert!(text.contains("# TYPE conveyor_runs_active gauge"), "{text}");
        assert!(
            text.contains("# HELP conveyor_schedule_lag_seconds How late"),
            "{text}"
        );
    }

    #[test]
    fn without_a_recorder_nothing_renders_and_nothing_breaks() {
        // This test binary never calls install(): the handles are no-ops.
        let m = TaskMetrics::new(TaskKind::Transform);
        let _running = m.running();
        m.finished(TaskOutcome::Cancelled, Duration::from_secs(1));
        assert!(render().is_none());
    }
}
