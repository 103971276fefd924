/*!
The JSON bodies of the API, as the OpenAPI document describes them. Types of
the wire contract that already have a JSON Schema ([`RunReport`],
`TaskError`, `TaskKind`) are referenced by name; their schemas come from
`conveyor-schemas` (see [`crate::openapi`]).
*/

use std::collections::BTreeMap;

use conveyor_actors::handle::{AttemptView, LogLine, NodeView, RegisteredFlow};
use conveyor_actors::runstore::RunSummary;
use conveyor_schemas::{RunReport, TaskError, TaskKind};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{OneOfBuilder, Type};
use utoipa::openapi::{ArrayBuilder, Object, Ref, RefOr, Schema};
use utoipa::ToSchema;

fn run_report_ref() -> Ref {
    Ref::from_schema_name("RunReport")
}

fn task_kinds_ref() -> ArrayBuilder {
    ArrayBuilder::new().items(Ref::from_schema_name("TaskKind"))
}

fn task_error_or_null() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(Ref::from_schema_name("TaskError"))
        .item(Object::with_type(Type::Null))
        .into()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the API answers.
    pub status: &'static str,
    pub version: &'static str,
    /// The node's name.
    pub node: String,
}

/// `POST /flows/{flow}/runs`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Values of the flow's `[params]`; a param not given takes its default.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// `POST /runs`: an ad-hoc flow, as a flow file's text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdHocRequest {
    /// The flow file's TOML. Its relative paths resolve against the
    /// coordinator's `[coordinator] flows` directory, or else the directory
    /// of the coordinator node's config file.
    pub flow_text: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunCreated {
    pub run_id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunRetried {
    /// The new run.
    pub run_id: String,
    /// The run it retries.
    pub retry_of: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunCancelled {
    pub run_id: String,
    /// `Cancelled`.
    pub state: String,
}

/// One run in a list.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunRow {
    pub id: String,
    pub flow: String,
    /// A `FlowState`: `Running`, `WaitingForWorker`, `Succeeded`, `Failed`
    /// or `Cancelled`.
    pub state: String,
    /// When the run was created, in ms since the epoch.
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// Why it failed, in one line.
    pub error: Option<String>,
}

impl From<RunSummary> for RunRow {
    fn from(r: RunSummary) -> RunRow {
        RunRow {
            error: r.report.and_then(|rep| rep.error),
            id: r.id,
            flow: r.flow,
            state: r.state.as_str().to_string(),
            created_ms: r.created_ms,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
        }
    }
}

/// A page of runs, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Runs by state, of the `flow` filter's flow (or of every flow); the
    /// other filters do not apply. States with no run are left out.
    pub counts: BTreeMap<String, u64>,
}

/// One run with its history.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    #[schema(schema_with = run_report_ref)]
    pub report: RunReport,
    pub params: BTreeMap<String, String>,
    pub created_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// The run this one retries.
    pub retry_of: Option<String>,
    /// Whether the coordinator holds the run in flight.
    pub live: bool,
    /// Every attempt of every task, in start order.
    pub attempts: Vec<Attempt>,
}

/// One attempt of one task.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    pub task: String,
    pub attempt: u32,
    /// The broker delivery of the attempt (1 = first).
    pub delivery: u32,
    pub node: Option<String>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// `Running`, `Succeeded`, `Failed`, `Cancelled` or `Lost`.
    pub outcome: String,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    #[schema(schema_with = task_error_or_null)]
    pub error: Option<TaskError>,
}

impl From<AttemptView> for Attempt {
    fn from(a: AttemptView) -> Attempt {
        Attempt {
            task: a.task,
            attempt: a.attempt,
            delivery: a.delivery,
            node: a.node,
            started_ms: a.started_ms,
            ended_ms: a.ended_ms,
            outcome: a.outcome,
            rows_in: a.rows_in,
            rows_out: a.rows_out,
            bytes_in: a.bytes_in,
            bytes_out: a.bytes_out,
            error: a.error,
        }
    }
}

/// One log line of a task attempt.
#[derive(Serialize, ToSchema)]
pub struct Line {
    /// Increases with every line of the run's task, across attempts: pass
    /// the last one seen as `after`.
    pub seq: u64,
    pub attempt: u32,
    pub ts_ms: u64,
    pub level: String,
    pub node: String,
    pub message: String,
}

impl From<LogLine> for Line {
    fn from(l: LogLine) -> Line {
        Line {
            seq: l.seq,
            attempt: l.attempt,
            ts_ms: l.ts_ms,
            level: l.level,
            node: l.node,
            message: l.message,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Logs {
    pub lines: Vec<Line>,
    /// The attempt is still running: more lines may come.
    pub live: bool,
}

/// A live node.
#[derive(Serialize, ToSchema)]
pub struct Node {
    pub node: String,
    #[schema(schema_with = task_kinds_ref)]
    pub kinds: Vec<TaskKind>,
    /// Task-run ids it holds.
    pub in_flight: Vec<String>,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    pub version: Option<String>,
}

impl From<NodeView> for Node {
    fn from(n: NodeView) -> Node {
        Node {
            node: n.node,
            kinds: n.kinds,
            in_flight: n.in_flight,
            heartbeat_age_ms: n.heartbeat_age_ms,
            version: n.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Nodes {
    pub nodes: Vec<Node>,
}

/// A flow registered with `[coordinator] flows = "DIR"`.
#[derive(Serialize, ToSchema)]
pub struct Flow {
    pub name: String,
    pub file: String,
    /// Each param with its default (null: it must be given).
    pub params: BTreeMap<String, Option<String>>,
    /// A cron expression.
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    /// Next time the schedule fires, in ms since the epoch.
    pub next_fire_ms: Option<u64>,
    /// The id of its latest run.
    pub last_run: Option<String>,
}

impl From<RegisteredFlow> for Flow {
    fn from(f: RegisteredFlow) -> Flow {
        Flow {
            name: f.name,
            file: f.file,
            params: f.params,
            schedule: f.schedule,
            timezone: f.timezone,
            next_fire_ms: f.next_fire_ms,
            last_run: f.last_run,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Flows {
    pub flows: Vec<Flow>,
}
