/*!
The flow model: what a parsed flow is, before the coordinator runs it.
*/

use std::collections::BTreeMap;
use std::time::Duration;

use conveyor_schemas::{DataFormat, SinkSpec, SourceSpec, Step, TaskKind};

pub use conveyor_schemas::names::partition_name;

#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    pub name: String,
    /// Tasks in a topological order: every task comes after its dependencies.
    pub tasks: Vec<TaskDef>,
    /// Overrides the coordinator's wait for a live worker.
    pub worker_wait: Option<Duration>,
    /// `[flow] schedule`: when a registered flow runs by itself.
    pub schedule: Option<crate::schedule::Schedule>,
    /// `[flow] fail_fast = true`: the first failed task ends the run and
    /// skips every other task. By default only the tasks that depend on it
    /// are skipped; independent branches run to completion.
    pub fail_fast: bool,
    /// `[params]`: each param with its default (none: a run must give it).
    pub params: crate::params::Declared,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Delay before attempt 2; doubles each attempt, with jitter, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskDef {
    pub name: String,
    pub kind: TaskKind,
    /// The task whose output this one reads (transform and load, with
    /// `input = "x"`). A transform with `inputs` has none: its tables are in
    /// [`TaskInput::Tables`].
    pub input: Option<String>,
    /// Tasks that must succeed first; includes `input`.
    pub after: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub body: TaskBody,
}

/// What a task does: the shape of the wire's [`conveyor_schemas::TaskSpec`]
/// (a source, steps and a sink), but for the source of a task that reads
/// other tasks' outputs, which exist only once those tasks ran.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskBody {
    pub input: TaskInput,
    pub steps: Vec<Step>,
    /// Before partition expansion, a load with `parts = true` has a
    /// [`SinkSpec::Dir`] sink; expansion turns loads of partitioned inputs
    /// into [`SinkSpec::Part`]s and a gather.
    pub sink: SinkSpec,
}

/// Where a task's rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskInput {
    /// A source of its own (extracts, and fused tasks).
    Source(SourceSpec),
    /// The artifact of the task named by [`TaskDef::input`], filled in as a
    /// [`SourceSpec::Artifact`] when this task is dispatched.
    Upstream,
    /// Named tables for the task's first step, a SQL step: `inputs = {
    /// orders = "orders" }` (or `input = "x"` over a partitioned `x`, as the
    /// table `input`). Filled in as a [`SourceSpec::Tables`] when this task
    /// is dispatched.
    Tables(Vec<TableInput>),
    /// The parts written by these tasks, in partition order: a gather. Made
    /// by the flow parser, never written by users; it keeps the load's name.
    /// Filled in as a [`SourceSpec::Parts`] when the gather is dispatched.
    Parts {
        format: DataFormat,
        tasks: Vec<String>,
    },
}

/// One named table of [`TaskInput::Tables`].
#[derive(Clone, Debug, PartialEq)]
pub struct TableInput {
    /// The table's name in SQL.
    pub name: String,
    /// The tasks whose artifacts make the table, in order: the upstream
    /// task, or after partition expansion each of its partitions.
    pub tasks: Vec<String>,
}

impl TaskBody {
    /// Whether a step is SQL: such a task reads its whole input at once, so
    /// it is neither split per partition nor fused into a partitioned extract.
    pub fn has_sql(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Sql { .. }))
    }

    /// The source of a task that reads one, if it has its own.
    pub fn source(&self) -> Option<&SourceSpec> {
        match &self.input {
            TaskInput::Source(s) => Some(s),
            _ => None,
        }
    }
}

/// Most partitions one task may be split into (the connectors' options
/// check it).
pub use conveyor_connectors::MAX_PARTITIONS;

/// The flow a run was started from, kept so that it can be parsed again
/// (after a coordinator restart, or on another node).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSource {
    pub file: String,
    pub text: String,
    /// Directory that relative paths of the flow resolve against.
    pub base: String,
    /// The values of the flow's `[params]` for this run (`--param k=v`, or
    /// the API's `params`); a param not given takes its default.
    pub params: BTreeMap<String, String>,
}

impl FlowSpec {
    pub fn task(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.iter().find(|t| t.name == name)
    }
}
