/*!
One handler per endpoint, each a thin call to the [`CoordinatorHandle`].
Every handler takes its role ([`CanRead`], [`CanOperate`]) first, so that a
request without the right token is refused before anything else is read.
*/

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use conveyor_coordinator::handle::{CoordinatorError, CoordinatorHandle, LogQuery};
use conveyor_coordinator::runstore::{Cursor, RunQuery, MAX_PAGE};
use conveyor_flow::{FlowSource, FlowSpec};
use conveyor_schemas::names;
use conveyor_schemas::FlowState;

use crate::auth::{CanOperate, CanRead};
use crate::error::{ApiError, ErrorBody};
use crate::input::{flow_name, read_json, run_id, shorten, task_name, Query};
use crate::sse;
use crate::types::*;

/// What every handler shares.
pub struct State {
    pub handle: CoordinatorHandle,
    /// The node's name, for `/health`.
    pub node: String,
    /// Where the relative paths of an ad-hoc flow resolve.
    pub flow_base: PathBuf,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
    /// `[api] adhoc`: whether `POST /runs` takes flow text.
    pub adhoc: bool,
    /// `[secrets] allow` of this node.
    pub secrets: conveyor_config::AllowList,
}

type Shared = web::Data<State>;

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// Liveness and version; needs no token.
#[utoipa::path(get, path = "/api/v1/health", tag = "node",
    responses((status = 200, description = "The API answers", body = Health)))]
pub async fn health(state: Shared) -> HttpResponse {
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            node: state.node.clone(),
            adhoc: state.adhoc,
        },
    )
}

/// The flows registered with `[coordinator] flows = "DIR"`.
#[utoipa::path(get, path = "/api/v1/flows", tag = "flows", security(("bearer" = [])),
    responses((status = 200, description = "The registered flows", body = Flows), (status = 401, description = "No token, or a wrong one", body = ErrorBody),
        (status = 501, description = "This coordinator has no registered flows", body = ErrorBody)))]
pub async fn flows(_: CanRead, state: Shared) -> Result<HttpResponse, ApiError> {
    let flows = state.handle.flows().await?;
    Ok(json(StatusCode::OK, &Flows { flows }))
}

/// Starts a run of a registered flow.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/runs", tag = "flows", security(("bearer" = [])),
    params(("flow" = String, Path, description = "A registered flow's name")),
    request_body = TriggerRequest,
    responses((status = 201, description = "The run started", body = RunCreated),
        (status = 400, description = "Bad JSON or flow name", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody), (status = 403, description = "A `read` token", body = ErrorBody),
        (status = 404, description = "No such registered flow", body = ErrorBody),
        (status = 413, description = "The body is over `[api] max_body`", body = ErrorBody),
        (status = 422, description = "Unknown or missing params", body = ErrorBody)))]
pub async fn trigger(
    _: CanOperate,
    req: HttpRequest,
    state: Shared,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let flow = flow_name(&req)?;
    let body: TriggerRequest = read_json(&req, body, state.max_body).await?;
    let run = state.handle.trigger(&flow, body.params).await?;
    tracing::info!(flow = %flow, flow_run = %run.flow_run, "Run started through the API");
    Ok(json(
        StatusCode::CREATED,
        &RunCreated {
            run_id: run.flow_run,
        },
    ))
}

/// Starts a run of an ad-hoc flow: the same path as `conveyor run --submit`.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])),
    request_body = AdHocRequest,
    responses((status = 201, description = "The run started", body = RunCreated),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody),
        (status = 403, description = "A `read` token, or `[api] adhoc = false` (error `adhoc_disabled`): only registered flows run", body = ErrorBody),
        (status = 413, description = "The body is over `[api] max_body`", body = ErrorBody),
        (status = 422, description = "The flow does not parse (every problem, with its key and line), or names a `${env:NAME}` outside the node's `[secrets] allow`", body = ErrorBody)))]
pub async fn submit(
    _: CanOperate,
    req: HttpRequest,
    state: Shared,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !state.adhoc {
        return Err(ApiError::adhoc_disabled());
    }
    let body: AdHocRequest = read_json(&req, body, state.max_body).await?;
    let source = FlowSource {
        file: "flow_text".into(),
        text: body.flow_text,
        base: state.flow_base.to_string_lossy().into_owned(),
        params: body.params,
    };
    let flow = FlowSpec::parse_source(&source).map_err(|p| ApiError::invalid_flow(&p))?;
    crate::guard::check_secrets(&state.secrets, &source.text)?;
    let name = flow.name.clone();
    let run = state.handle.submit(Arc::new(flow), source).await?;
    tracing::info!(flow = %name, flow_run = %run.flow_run, "Ad-hoc run started through the API");
    Ok(json(
        StatusCode::CREATED,
        &RunCreated {
            run_id: run.flow_run,
        },
    ))
}

/// Runs, newest first, a page at a time (keyset pagination), with counts
/// by state.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])),
    params(
        ("flow" = Option<String>, Query, description = "Only this flow's runs"),
        ("state" = Option<String>, Query, description = "Only runs in this state: Running, WaitingForWorker, Succeeded, Failed or Cancelled"),
        ("since" = Option<String>, Query, description = "Created at or after: ms since the epoch, or RFC 3339 in UTC"),
        ("until" = Option<String>, Query, description = "Created before: ms since the epoch, or RFC 3339 in UTC"),
        ("limit" = Option<u32>, Query, description = "Runs per page, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of runs", body = RunList),
        (status = 400, description = "A bad query parameter, named", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody)))]
pub async fn list_runs(
    _: CanRead,
    req: HttpRequest,
    state: Shared,
) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(
        &req,
        &["flow", "state", "since", "until", "limit", "cursor"],
    )?;
    let flow = match q.get("flow") {
        Some(f) => {
            names::check_name("flow", f).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter `flow` = `{}` {}",
                    shorten(f).escape_debug(),
                    names::NAME_RULE
                ))
            })?;
            Some(f.to_string())
        }
        None => None,
    };
    let state_filter = match q.get("state") {
        Some(s) => Some(FlowState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter `state` = `{}` is not a run state; expected one of {}",
                shorten(s).escape_debug(),
                FlowState::ALL.map(|s| s.as_str()).join(", ")
            ))
        })?),
        None => None,
    };
    let since_ms = q.time_ms("since")?;
    let until_ms = q.time_ms("until")?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if s >= u {
            return Err(ApiError::bad_request(format!(
                "query parameter `since` ({s}) must be before `until` ({u})"
            )));
        }
    }
    let limit = q.uint("limit", 1, MAX_PAGE as u64)?.unwrap_or(0) as usize;
    let after = match q.get("cursor") {
        Some(c) => Some(
            Cursor::decode(c)
                .filter(|c| names::check_run_id("run id", &c.id).is_ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query parameter `cursor` = `{}` is not a cursor; pass the `next_cursor` of a page",
                        shorten(c).escape_debug()
                    ))
                })?,
        ),
        None => None,
    };
    let page = state
        .handle
        .list(RunQuery {
            flow: flow.clone(),
            state: state_filter,
            since_ms,
            until_ms,
            limit,
            after,
        })
        .await?;
    let counts = state.handle.counts(flow).await?;
    Ok(json(
        StatusCode::OK,
        &RunList {
            runs: page.runs.into_iter().map(RunRow::from).collect(),
            next_cursor: page.next.map(|c| c.encode()),
            counts: counts
                .into_iter()
                .map(|(s, n)| (s.as_str().to_string(), n))
                .collect(),
        },
    ))
}

fn no_run(id: &str) -> ApiError {
    CoordinatorError::no_run(id).into()
}

/// One run: its report, params, times, and every attempt of every task.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "A run id")),
    responses((status = 200, description = "The run", body = RunDetail),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody), (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn get_run(
    _: CanRead,
    req: HttpRequest,
    state: Shared,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&req)?;
    let view = state.handle.get(&id).await?.ok_or_else(|| no_run(&id))?;
    let origin = state.handle.origin(&id).await?.unwrap_or_default();
    let attempts = match state.handle.attempts(&id).await {
        Ok(a) => a,
        // A coordinator without attempt history still shows the run.
        Err(CoordinatorError::NotSupported(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let saved = view.saved.as_ref();
    Ok(json(
        StatusCode::OK,
        &RunDetail {
            report: view.report,
            params: origin.params,
            created_ms: saved.map(|s| s.created_ms),
            started_ms: saved.and_then(|s| s.started_ms),
            ended_ms: saved.and_then(|s| s.ended_ms),
            retry_of: origin.retry_of,
            live: view.live,
            attempts,
        },
    ))
}

/// Server-Sent Events of a run: `event: report` with the run's report on
/// every change, then `event: end` with the final report, and the stream
/// closes. A finished run sends one `end` event. If the coordinator stops
/// first, an `event: error` (`{error, message}`) ends the stream.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "A run id")),
    responses((status = 200, description = "`text/event-stream`: `report` events, then one `end` event; each `data` is a RunReport", content_type = "text/event-stream", body = String),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody), (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn run_events(
    _: CanRead,
    req: HttpRequest,
    state: Shared,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&req)?;
    let watch = state.handle.watch(&id).await?;
    match watch {
        Some(rx) => Ok(sse::run_reports(id, rx, state.handle.clone())),
        None => {
            let view = state.handle.get(&id).await?.ok_or_else(|| no_run(&id))?;
            Ok(sse::one_end(&view.report))
        }
    }
}

/// Cancels a run: queued tasks are not started, running attempts are
/// aborted and commit nothing.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "A run id")),
    responses((status = 202, description = "Cancelling: the run ends Cancelled", body = RunCancelled),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody), (status = 403, description = "A `read` token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run already ended or is being cancelled", body = ErrorBody)))]
pub async fn cancel(
    _: CanOperate,
    req: HttpRequest,
    state: Shared,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&req)?;
    state.handle.cancel(&id).await?;
    tracing::info!(flow_run = %id, "Run cancelled through the API");
    Ok(json(
        StatusCode::ACCEPTED,
        &RunCancelled {
            run_id: id,
            state: FlowState::Cancelled.as_str().into(),
        },
    ))
}

/// Starts a new run that re-runs the failed, cancelled and skipped tasks
/// and reuses the committed outputs of the succeeded ones.
#[utoipa::path(post, path = "/api/v1/runs/{id}/retry", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "A run id")),
    responses((status = 201, description = "The new run started", body = RunRetried),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No token, or a wrong one", body = ErrorBody), (status = 403, description = "A `read` token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has not ended", body = ErrorBody)))]
pub async fn retry(
    _: CanOperate,
    req: HttpRequest,
    state: Shared,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&req)?;
    let run = state.handle.retry(&id).await?;
    tracing::info!(flow_run = %run.flow_run, retry_of = %id, "Run retried through the API");
    Ok(json(
        StatusCode::CREATED,
        &RunRetried {
            run_id: run.flow_run,
            retry_of: id,
        },
    ))
}

/// The log lines of a task's attempts. With `follow=true`, Server-Sent
/// Events: `event: line` per line, then `event: end` when no more can come.
#[utoipa::path(get, path = "/api/v1/runs/{id}/tasks/{task}/logs", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "A run id"),
        ("task" = String, Path, description = "A task name (`NAME@N` for a partition)"),
        ("attempt" = Option<u32>, Query, description = "Only this attempt (default: every attempt)"),
        ("after" = Option<u64>, Query, description = "Only lines after this `seq`"),
        ("follow" = Option<bool>, Query, description = "Stream lines as they come (SSE)")),
    responses((status = 200, description = "Log lines (with `follow=true`: `text/event-stream` of `line` events, then `end`)", body = Logs),
        (status = 400, description = "A bad id or query parameter, named", body = ErrorBody), (status = 401, description = "No token, or a wrong one", body = ErrorBody),
        (status = 404, description = "No such run, task or attempt", body = ErrorBody)))]
pub async fn logs(_: CanRead, req: HttpRequest, state: Shared) -> Result<HttpResponse, ApiError> {
    let id = run_id(&req)?;
    let task = task_name(&req)?;
    let q = Query::parse(&req, &["attempt", "after", "follow"])?;
    let query = LogQuery {
        run: id,
        task,
        attempt: q.uint("attempt", 1, u32::MAX as u64)?.map(|a| a as u32),
        after: q.uint("after", 0, i64::MAX as u64)?,
        limit: 0,
    };
    let follow = q.bool("follow")?;
    let first = state.handle.logs(query.clone()).await?;
    if follow {
        return Ok(sse::log_lines(query, first, state.handle.clone()));
    }
    Ok(json(StatusCode::OK, &first))
}

/// The live nodes: their kinds, in-flight tasks, last heartbeat, version.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "node", security(("bearer" = [])),
    responses((status = 200, description = "The live nodes", body = Nodes), (status = 401, description = "No token, or a wrong one", body = ErrorBody)))]
pub async fn nodes(_: CanRead, state: Shared) -> Result<HttpResponse, ApiError> {
    let nodes = state.handle.nodes().await?;
    Ok(json(StatusCode::OK, &Nodes { nodes }))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "node",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi(state: Shared) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}

/// Renders the node's metrics as Prometheus text, for `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The node's metrics, in Prometheus text (mounted when the node has them).
pub async fn metrics(_: CanRead, render: web::Data<MetricsRender>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render())
}

/// Any path the API does not have.
pub async fn no_such_endpoint(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no endpoint {} {}; the endpoints are listed at /api/v1/openapi.json",
        req.method(),
        shorten(req.path())
    )))
}

/// A known path with a method it does not take; `allow`: the ones it does.
pub async fn wrong_method(req: HttpRequest, allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(
        format!(
            "{} does not take {}; it takes {allow}",
            shorten(req.path()),
            req.method()
        ),
        allow,
    ))
}
