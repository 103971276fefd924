/*!
What the coordinator answers with: the views of runs, attempts, log lines,
nodes and registered flows that [`crate::handle::CoordinatorHandle`] returns,
and [`CoordinatorError`]. The HTTP API serves these same types as its JSON
bodies (with the cargo feature `openapi`, each derives its OpenAPI schema,
under the name the API has always given it), so there is one definition of
each, not a copy per layer.

This module sits below the actor: the actor, the handle and the history all
use it, and it uses none of them.
*/

use std::collections::BTreeMap;

use conveyor_schemas::RunReport;

use crate::runstore::{RunSummary, StoreError};

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

impl CoordinatorError {
    /// The one wording of a run that is not there, for every endpoint.
    pub fn no_run(id: &str) -> CoordinatorError {
        CoordinatorError::NotFound(format!("no run `{id}`"))
    }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Attempt))]
pub struct AttemptView {
    pub task: String,
    pub attempt: u32,
    /// The broker delivery of the attempt (1 = first).
    pub delivery: u32,
    pub node: Option<String>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// `Running`, `Succeeded`, `Failed`, `Cancelled` or `Lost` (the
    /// worker went silent; the attempt's bar ends at its last sign of life).
    pub outcome: String,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::task_error_or_null))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Line))]
pub struct LogLine {
    /// Increases with every line of the run's task, across attempts: pass
    /// the last one seen as `after`.
    pub seq: u64,
    pub attempt: u32,
    pub ts_ms: u64,
    pub level: String,
    pub node: String,
    /// The message and its fields, as one line of text.
    pub message: String,
}

/// A page of a task's log lines.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Logs))]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The attempt is still running: more lines may come.
    pub live: bool,
}

/// A live node: one the coordinator hears from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Node))]
pub struct NodeView {
    pub node: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::task_kinds))]
    pub kinds: Vec<conveyor_schemas::TaskKind>,
    /// Task-run ids it holds.
    pub in_flight: Vec<String>,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    pub version: Option<String>,
}

/// A flow registered with `[coordinator] flows = "DIR"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Flow))]
pub struct RegisteredFlow {
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

/// The schemas of the fields whose types come from the wire contract: they
/// are referenced by name, and `conveyor-schemas` gives their definitions.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{OneOfBuilder, Type};
    use utoipa::openapi::{ArrayBuilder, Object, Ref, RefOr, Schema};

    pub fn task_kinds() -> ArrayBuilder {
        ArrayBuilder::new().items(Ref::from_schema_name("TaskKind"))
    }

    pub fn task_error_or_null() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name("TaskError"))
            .item(Object::with_type(Type::Null))
            .into()
    }
}
