/*!
The JSON bodies of the API, as the OpenAPI document describes them. Types of
the wire contract that already have a JSON Schema ([`RunReport`],
`TaskError`, `TaskKind`) are referenced by name; their schemas come from
`conveyor-schemas` (see [`crate::openapi`]).
*/

use std::collections::BTreeMap;

use conveyor_coordinator::runstore::RunSummary;
/// The coordinator's own view types are the API's bodies: one definition
/// of each, named here as the API (and its OpenAPI document) names them.
pub use conveyor_coordinator::view::{
    AttemptView as Attempt, LogLine as Line, LogPage as Logs, NodeView as Node,
    RegisteredFlow as Flow,
};
use conveyor_schemas::RunReport;
use serde::{Deserialize, Serialize};
use utoipa::openapi::Ref;
use utoipa::ToSchema;

fn run_report_ref() -> Ref {
    Ref::from_schema_name("RunReport")
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the API answers.
    pub status: &'static str,
    pub version: &'static str,
    /// The node's name.
    pub node: String,
    /// `[api] adhoc`: whether `POST /api/v1/runs` takes flow text (false:
    /// only registered flows run through the API).
    pub adhoc: bool,
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

#[derive(Serialize, ToSchema)]
pub struct Nodes {
    pub nodes: Vec<Node>,
}

#[derive(Serialize, ToSchema)]
pub struct Flows {
    pub flows: Vec<Flow>,
}
