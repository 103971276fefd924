/*!
A worker's metrics: their names and help text, and the handles the hot path
holds. The recorder itself is `conveyor_transport::metrics`.

The hot path is a task on a worker: [`TaskMetrics`] resolves the handles of
one kind once (labels and all), so that a task costs a few atomic adds and
no label set.

| metric | type | labels | where |
|---|---|---|---|
| `conveyor_tasks_total` | counter | kind, outcome | worker |
| `conveyor_task_duration_seconds` | histogram | kind | worker |
| `conveyor_task_rows_{in,out}_total` | counter | kind | worker |
| `conveyor_task_bytes_{in,out}_total` | counter | kind | worker (where known) |
| `conveyor_tasks_in_flight` | gauge | kind | worker |
*/

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conveyor_etl::Workspace;
use conveyor_schemas::{ErrorKind, SourceSpec, TaskKind, TaskOutput, TaskSpec};
use metrics::{Counter, Gauge, Histogram, Unit};

/// Task attempts a worker finished, by kind and [`TaskOutcome`].
pub const TASKS: &str = "conveyor_tasks_total";
/// How long a task attempt ran on its worker, from start to result.
pub const TASK_DURATION: &str = "conveyor_task_duration_seconds";
pub const TASK_ROWS_IN: &str = "conveyor_task_rows_in_total";
pub const TASK_ROWS_OUT: &str = "conveyor_task_rows_out_total";
pub const TASK_BYTES_IN: &str = "conveyor_task_bytes_in_total";
pub const TASK_BYTES_OUT: &str = "conveyor_task_bytes_out_total";
pub const TASKS_IN_FLIGHT: &str = "conveyor_tasks_in_flight";

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

/// Gives the task metrics their help text and unit.
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
        "Bytes of the files and artifacts read by the tasks that succeeded on this node, by kind (a whole file counts; globs, URLs, queries and a partition of a file do not)."
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
    /// glob, a URL, a query or a partition of a file is not counted). A few
    /// `stat` calls: blocking, like the task.
    pub fn by(ws: &Workspace, spec: &TaskSpec, output: &TaskOutput) -> Moved {
        let stored = |key: &str| ws.store.open(key).ok().and_then(|p| bytes_at(&p));
        let bytes_in = match &spec.source {
            SourceSpec::Artifact(a) => stored(&a.path),
            SourceSpec::Parts { parts, .. } => parts.iter().map(|p| stored(&p.path)).sum(),
            SourceSpec::Tables { tables } => tables
                .iter()
                .flat_map(|t| &t.artifacts)
                .map(|a| stored(&a.path))
                .sum(),
            // A connector's source: what its connector can tell from a size.
            other => ws.connectors.bytes_in(other),
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

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_transport::metrics::render;
    use conveyor_transport::metrics::testing::sample;

    fn rendered<T>(record: impl FnOnce() -> T) -> String {
        conveyor_transport::metrics::testing::rendered(describe, record)
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
    fn without_a_recorder_nothing_renders_and_nothing_breaks() {
        // This test binary never calls install(): the handles are no-ops.
        let m = TaskMetrics::new(TaskKind::Transform);
        let _running = m.running();
        m.finished(TaskOutcome::Cancelled, Duration::from_secs(1));
        assert!(render().is_none());
    }
}
