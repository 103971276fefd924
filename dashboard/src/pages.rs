/*!
One handler per page and per form. A page asks [`Dash::viewer`] first (a
303 to `/login` without a session); a form asks [`Dash::poster`] first (403
without the session's CSRF token), then checks the role.
*/

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use conveyor_api::error::ApiError;
use conveyor_api::input::{run_id, Query};
use conveyor_coordinator::handle::{
    AttemptView, CoordinatorError, LogLine, RegisteredFlow, RunView,
};
use conveyor_coordinator::runstore::{Cursor, RunQuery, RunSummary};
use conveyor_flow::FlowSpec;
use conveyor_schemas::{names, FlowState};
use maud::{html, Markup};

use crate::app::{Dash, Viewer};
use crate::fmt;
use crate::svg::{self, DagTask};
use crate::views::{self, badge, html_response, page, run_row};
use crate::views::{forbidden, see_other};

type D = web::Data<Dash>;
/// A form's fields, read from the body whatever its declared type: a POST
/// that is not a form is then refused for its missing CSRF token (403),
/// like any other.
pub struct Form(Vec<(String, String)>);

impl std::ops::Deref for Form {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let text = String::from_utf8_lossy(body);
        Form(
            web::Query::<Vec<(String, String)>>::from_query(&text)
                .map(|q| q.into_inner())
                .unwrap_or_default(),
        )
    }
}

/// Runs per page of the runs table.
pub const RUNS_PAGE: usize = 50;
/// Log lines a run page shows at once (older ones a page back each).
pub const LOG_TAIL: usize = 200;
/// Latest runs shown per registered flow.
const FLOW_RUNS: usize = 5;

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A coordinator error as a page, with the API's status for it.
fn failed(e: CoordinatorError) -> HttpResponse {
    let e = ApiError::from(e);
    views::error_page(e.status_code(), &e.to_string())
}

fn api_failed(e: ApiError) -> HttpResponse {
    views::error_page(e.status_code(), &e.to_string())
}

macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

fn must_operate(v: &Viewer) -> Result<(), HttpResponse> {
    if v.can_operate() {
        Ok(())
    } else {
        Err(forbidden(
            "this session's token has the role `read`; starting, cancelling and retrying runs needs `operate`",
        ))
    }
}

// ----- Overview -----

pub async fn overview(req: HttpRequest, dash: D) -> HttpResponse {
    let v = try_page!(dash.viewer(&req));
    let now = fmt::now_ms();
    let hour = 3_600_000;
    // Whole hours, so that each bar is one clock hour.
    let since = (now / hour + 1) * hour - 24 * hour;
    let stats = try_page!(dash.handle.overview(since).await.map_err(failed));
    let counts = try_page!(dash.handle.counts(None).await.map_err(failed));
    let nodes = try_page!(dash.handle.nodes().await.map_err(failed));
    let runs: u64 = stats.hours.iter().map(|h| h.runs).sum();
    let failed_n: u64 = stats.hours.iter().map(|h| h.failed).sum();
    let ended: u64 = stats.hours.iter().map(|h| h.ended).sum();
    let rate = |f: u64, e: u64| if e == 0 { 0.0 } else { f as f64 / e as f64 };
    let mut per_hour = Vec::new();
    let mut fail_rate = Vec::new();
    for h in 0..24u32 {
        let s = stats.hours.iter().find(|s| s.hour == h);
        let (n, f, e) = s.map_or((0, 0, 0), |s| (s.runs, s.failed, s.ended));
        let label = if h % 6 == 0 {
            fmt::time(since + h as u64 * hour)[11..16].to_string()
        } else {
            String::new()
        };
        let at = &fmt::time(since + h as u64 * hour)[..16];
        per_hour.push(svg::Bar {
            label: label.clone(),
            parts: vec![(n.saturating_sub(f) as f64, "ok"), (f as f64, "failed")],
            title: format!("{at}: {n} runs, {f} failed"),
        });
        fail_rate.push(svg::Bar {
            label,
            parts: vec![(rate(f, e) * 100.0, "failed")],
            title: format!("{at}: {:.0}% of {e} ended runs failed", rate(f, e) * 100.0),
        });
    }
    let durations: Vec<(String, u64, u64)> = stats
        .flows
        .iter()
        .map(|f| (f.flow.clone(), f.p50_ms, f.p95_ms))
        .collect();
    let body = html! {
        h1 { "Overview" }
        p.lede { "The last 24 hours, to " (fmt::time(now)) " UTC." }
        div.stats {
            div.stat { span.n { (runs) } " runs" }
            div.stat { span.n { (format!("{:.1}%", rate(failed_n, ended) * 100.0)) } " failed" }
            div.stat { span.n { (nodes.len()) } " live nodes" }
        }
        div #counts.counts { (views::counts(&counts, None)) }
        div.charts {
            figure {
                figcaption { "Runs per hour (failed in red)" }
                (svg::bars("runs-per-hour", "Runs per hour over the last 24 hours", &per_hour))
            }
            figure {
                figcaption { "Failure rate per hour, % of ended runs" }
                (svg::bars("failure-rate", "Failure rate per hour over the last 24 hours", &fail_rate))
            }
            figure {
                figcaption { "Duration per flow: p50 (dark) and p95" }
                @if durations.is_empty() {
                    p { "No run ended in the last 24 hours." }
                } @else {
                    (svg::hbars("durations", "p50 and p95 run duration per flow", &durations))
                }
            }
        }
        @if !stats.flows.is_empty() {
            div.table-wrap {
                table #flow-stats {
                    caption { "Ended runs per flow, last 24 h" }
                    thead { tr { th scope="col" { "Flow" } th.num scope="col" { "Ended" } th.num scope="col" { "Failed" } th.num scope="col" { "p50" } th.num scope="col" { "p95" } } }
                    tbody {
                        @for f in &stats.flows {
                            tr {
                                td { a href=(format!("/runs?flow={}", f.flow)) { (f.flow) } }
                                td.num { (f.ended) }
                                td.num { (f.failed) }
                                td.num { (fmt::duration(f.p50_ms)) }
                                td.num { (fmt::duration(f.p95_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    v.finish(html_response(
        StatusCode::OK,
        page("Overview", Some(&v), "/", body),
    ))
}

// ----- Runs -----

/// The runs page's filters, read from its query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub flow: Option<String>,
    pub state: Option<FlowState>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub cursor: Option<Cursor>,
}

impl Filters {
    /// The filters of `req`, each checked as the API checks it.
    pub fn parse(req: &HttpRequest) -> Result<Filters, String> {
        Filters::parse_with(req, &[])
    }

    /// As [`Filters::parse`], also allowing the keys `extra` (unread).
    pub fn parse_with(req: &HttpRequest, extra: &[&str]) -> Result<Filters, String> {
        let mut known = vec!["flow", "state", "since", "until", "cursor"];
        known.extend_from_slice(extra);
        let q = Query::parse(req, &known).map_err(|e| e.to_string())?;
        let flow = match q.get("flow") {
            Some(f) => {
                names::check_name("flow", f)
                    .map_err(|_| format!("flow `{f}` {}", names::NAME_RULE))?;
                Some(f.to_string())
            }
            None => None,
        };
        let state = match q.get("state") {
            Some(s) => Some(FlowState::parse(s).ok_or_else(|| {
                format!(
                    "state `{s}` is not a run state; expected one of {}",
                    FlowState::ALL.map(|s| s.as_str()).join(", ")
                )
            })?),
            None => None,
        };
        let time = |key: &str| -> Result<Option<u64>, String> {
            match q.get(key) {
                Some(t) => fmt::parse_time(t).map(Some).ok_or_else(|| {
                    format!("`{key}` = `{t}` is not a time; give a date and time in UTC, e.g. 2026-11-30T09:00")
                }),
                None => Ok(None),
            }
        };
        let (since_ms, until_ms) = (time("since")?, time("until")?);
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if s >= u {
                return Err("`since` must be before `until`".into());
            }
        }
        let cursor = match q.get("cursor") {
            Some(c) => Some(
                Cursor::decode(c)
                    .filter(|c| names::check_run_id("run id", &c.id).is_ok())
                    .ok_or_else(|| format!("`cursor` = `{c}` is not a page cursor"))?,
            ),
            None => None,
        };
        Ok(Filters {
            flow,
            state,
            since_ms,
            until_ms,
            cursor,
        })
    }

    /// The query string of these filters, without the cursor.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.flow {
            parts.push(format!("flow={f}"));
        }
        if let Some(s) = self.state {
            parts.push(format!("state={}", s.as_str()));
        }
        if let Some(s) = self.since_ms {
            parts.push(format!("since={s}"));
        }
        if let Some(u) = self.until_ms {
            parts.push(format!("until={u}"));
        }
        parts.join("&")
    }

    /// Whether a run of `flow` in `state`, created now, belongs in this
    /// view's first page.
    pub fn takes_new(&self, flow: &str, state: FlowState) -> bool {
        self.cursor.is_none()
            && self.until_ms.is_none()
            && self.flow.as_deref().is_none_or(|f| f == flow)
            && self.state.is_none_or(|s| s == state)
    }
}

pub async fn runs(req: HttpRequest, dash: D) -> HttpResponse {
    let v = try_page!(dash.viewer(&req));
    let (filters, problem) = match Filters::parse(&req) {
        Ok(f) => (f, None),
        Err(e) => (Filters::default(), Some(e)),
    };
    let page_q = RunQuery {
        flow: filters.flow.clone(),
        state: filters.state,
        since_ms: filters.since_ms,
        until_ms: filters.until_ms,
        limit: RUNS_PAGE,
        after: filters.cursor.clone(),
    };
    let list = try_page!(dash.handle.list(page_q).await.map_err(failed));
    let counts = try_page!(dash
        .handle
        .counts(filters.flow.clone())
        .await
        .map_err(failed));
    let registered = try_page!(dash.handle.flows().await.map_err(failed));
    let mut flow_names: Vec<String> = registered.into_iter().map(|f| f.name).collect();
    if let Some(f) = &filters.flow {
        if !flow_names.contains(f) {
            flow_names.push(f.clone());
        }
    }
    let now = fmt::now_ms();
    let q = filters.query();
    let live_url = format!(
        "/live/runs?{q}{}new={}",
        if q.is_empty() { "" } else { "&" },
        u8::from(filters.takes_new_any())
    );
    let body = html! {
        h1 { "Runs" }
        form #filters method="get" action="/runs" {
            label { "Flow " select name="flow" {
                option value="" { "Any flow" }
                @for f in &flow_names {
                    option value=(f) selected[filters.flow.as_deref() == Some(f.as_str())] { (f) }
                }
            } }
            label { "State " select name="state" {
                option value="" { "Any state" }
                @for s in FlowState::ALL {
                    option value=(s.as_str()) selected[filters.state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "Since (UTC) " input type="datetime-local" step="1" name="since" value=[filters.since_ms.map(fmt::input_time)]; }
            label { "Until (UTC) " input type="datetime-local" step="1" name="until" value=[filters.until_ms.map(fmt::input_time)]; }
            button type="submit" { "Filter" }
            @if !q.is_empty() { a href="/runs" { "Clear" } }
        }
        @if let Some(p) = &problem {
            p.form-error role="alert" { (p) }
        }
        section #runs-live hx-ext="sse" sse-connect=(live_url) {
            div #counts.counts sse-swap="counts" { (views::counts(&counts, filters.flow.as_deref())) }
            div.table-wrap {
                table #runs {
                    thead { tr {
                        th scope="col" { "Run" } th scope="col" { "Flow" } th scope="col" { "State" }
                        th scope="col" { "Created (UTC)" } th scope="col" { "Duration" }
                    } }
                    tbody #runs-body sse-swap=[filters.takes_new_any().then_some("new")] hx-swap="afterbegin" {
                        @for run in &list.runs { (run_row(run, now, true)) }
                    }
                }
            }
        }
        @if list.runs.is_empty() {
            p.empty { "No runs" @if !q.is_empty() { " match these filters" } "." }
        }
        nav.pager aria-label="Pages of runs" {
            @if filters.cursor.is_some() {
                a href=(format!("/runs?{q}")) { "← Newest" }
            }
            @if let Some(next) = &list.next {
                a href=(format!("/runs?{q}{}cursor={}", if q.is_empty() { "" } else { "&" }, next.encode())) { "Older →" }
            }
        }
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.finish(html_response(status, page("Runs", Some(&v), "/runs", body)))
}

impl Filters {
    /// Whether this view shows new runs at the top as they start.
    pub fn takes_new_any(&self) -> bool {
        self.cursor.is_none() && self.until_ms.is_none()
    }
}

// ----- One run -----

/// Everything a run's live part shows.
pub struct RunParts {
    pub view: RunView,
    pub attempts: Vec<AttemptView>,
    pub spec: Option<FlowSpec>,
}

impl RunParts {
    pub async fn load(dash: &Dash, id: &str) -> Result<Option<RunParts>, CoordinatorError> {
        let spec = dash.handle.flow_of(id).await?;
        RunParts::load_with(dash, id, spec).await
    }

    /// As [`RunParts::load`], with the run's flow already parsed.
    pub async fn load_with(
        dash: &Dash,
        id: &str,
        spec: Option<FlowSpec>,
    ) -> Result<Option<RunParts>, CoordinatorError> {
        let Some(view) = dash.handle.get(id).await? else {
            return Ok(None);
        };
        let attempts = match dash.handle.attempts(id).await {
            Ok(a) => a,
            Err(CoordinatorError::NotSupported(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Some(RunParts {
            view,
            attempts,
            spec,
        }))
    }

    pub fn state(&self) -> FlowState {
        self.view.report.state
    }
}

/// The part of a run's page that changes while it runs: its state, buttons,
/// graph, timeline and tasks.
pub fn run_live_part(parts: &RunParts, v: &Viewer, now: u64) -> Markup {
    let report = &parts.view.report;
    let id = &report.flow_run;
    let state = report.state;
    let live = parts.view.live && !state.is_terminal();
    let dag_tasks: Vec<DagTask> = report
        .tasks
        .iter()
        .map(|t| DagTask {
            name: t.name.clone(),
            state: t.state.as_str().to_string(),
            after: parts
                .spec
                .as_ref()
                .and_then(|s| s.task(&t.name))
                .map(|d| d.after.clone())
                .unwrap_or_default(),
        })
        .collect();
    let task_names: Vec<String> = report.tasks.iter().map(|t| t.name.clone()).collect();
    html! {
        div.run-head {
            span #run-state data-state=(state.as_str()) { (badge(state.as_str())) }
            span { "elapsed " (fmt::duration(report.elapsed_ms)) }
            @if v.can_operate() {
                @if live {
                    form #cancel-form method="post" action=(format!("/runs/{id}/cancel")) {
                        input type="hidden" name="csrf" value=(v.session.csrf);
                        button #cancel type="submit" { "Cancel run" }
                    }
                } @else if state.is_terminal() {
                    form #retry-form method="post" action=(format!("/runs/{id}/retry")) {
                        input type="hidden" name="csrf" value=(v.session.csrf);
                        button #retry type="submit" { "Retry run" }
                    }
                }
            }
        }
        @if let Some(e) = &report.error {
            p.run-error.error { (e) }
        }
        h2 { "Tasks" }
        figure.chart { (svg::dag(&dag_tasks)) }
        h2 { "Timeline" }
        figure.chart {
            @if parts.attempts.is_empty() {
                p { "No attempt started yet." }
            } @else {
                (svg::timeline(&task_names, &parts.attempts, now))
            }
        }
        div.table-wrap {
            table #tasks {
                thead { tr {
                    th scope="col" { "Task" } th scope="col" { "Kind" } th scope="col" { "State" }
                    th scope="col" { "Attempts" } th scope="col" { "Node" }
                    th scope="col" { "Rows in" } th scope="col" { "Rows out" }
                    th scope="col" { "Bytes in" } th scope="col" { "Bytes out" }
                    th scope="col" { "Duration" } th scope="col" { "Error" }
                } }
                tbody {
                    @for t in &report.tasks {
                        @let mine: Vec<&AttemptView> = parts.attempts.iter().filter(|a| a.task == t.name).collect();
                        @let last = mine.last();
                        @let first_start = mine.iter().filter_map(|a| a.started_ms).min();
                        @let last_end = mine.iter().filter_map(|a| svg::attempt_end(a, now)).max();
                        @let tstate = t.state.as_str().to_string();
                        tr.task data-task=(t.name) data-state=(tstate) {
                            td { a href=(format!("/runs/{id}?task={}#logs", t.name)) { (t.name) } }
                            td { (t.kind.to_string()) }
                            td { (badge(&tstate)) }
                            td.num { (t.attempts) }
                            td { (t.node.as_deref().unwrap_or("")) }
                            td.num { (t.rows_in.or(t.rows_so_far).map(|n| n.to_string()).unwrap_or_default()) }
                            td.num { (t.rows_out.map(|n| n.to_string()).unwrap_or_default()) }
                            td.num { (last.and_then(|a| a.bytes_in).map(fmt::bytes).unwrap_or_default()) }
                            td.num { (last.and_then(|a| a.bytes_out).map(fmt::bytes).unwrap_or_default()) }
                            td.num { (match (first_start, last_end) { (Some(s), Some(e)) => fmt::duration(e - s), _ => String::new() }) }
                            td.error data-kind=[t.error.as_ref().map(|e| format!("{:?}", e.kind).to_lowercase())] {
                                @if let Some(e) = &t.error { (e.message) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The task whose logs a run page shows: the one asked for, else the first
/// failed one, else the last one that started, else the first.
pub fn log_task(parts: &RunParts, asked: Option<&str>) -> Option<String> {
    let tasks = &parts.view.report.tasks;
    if let Some(a) = asked.filter(|a| tasks.iter().any(|t| t.name == *a)) {
        return Some(a.to_string());
    }
    tasks
        .iter()
        .find(|t| t.error.is_some())
        .or_else(|| {
            parts
                .attempts
                .iter()
                .max_by_key(|a| a.started_ms)
                .and_then(|a| tasks.iter().find(|t| t.name == a.task))
        })
        .or(tasks.first())
        .map(|t| t.name.clone())
}

pub fn log_line(l: &LogLine) -> Markup {
    html! {
        li.log-line data-seq=(l.seq) data-attempt=(l.attempt) class=(format!("level-{}", l.level.to_lowercase())) {
            span.ts { (fmt::time(l.ts_ms)[11..].to_string()) }
            " " span.level { (l.level) }
            " " span.node { "#" (l.attempt) " " (l.node) }
            " " span.msg { (l.message) }
        }
    }
}

pub async fn run(req: HttpRequest, dash: D) -> HttpResponse {
    let v = try_page!(dash.viewer(&req));
    let id = try_page!(run_id(&req).map_err(api_failed));
    let q = try_page!(Query::parse(&req, &["task", "before"]).map_err(api_failed));
    let before = try_page!(q.uint("before", 1, i64::MAX as u64).map_err(api_failed));
    let parts = match RunParts::load(&dash, &id).await {
        Ok(Some(p)) => p,
        Ok(None) => return views::error_page(StatusCode::NOT_FOUND, &format!("no run `{id}`")),
        Err(e) => return failed(e),
    };
    let origin = try_page!(dash.handle.origin(&id).await.map_err(failed)).unwrap_or_default();
    let task = log_task(&parts, q.get("task"));
    let lines = match &task {
        Some(t) => try_page!(dash
            .handle
            .log_tail(&id, t, before, LOG_TAIL)
            .await
            .map_err(failed)),
        None => Vec::new(),
    };
    let now = fmt::now_ms();
    let report = &parts.view.report;
    let saved = parts.view.saved.as_ref();
    let live = parts.view.live && !report.state.is_terminal();
    // The stream follows the newest lines; an older page stays still.
    let follow = live && before.is_none();
    let after = lines.last().map_or(0, |l| l.seq);
    let live_url = format!(
        "/live/runs/{id}?after={after}{}",
        task.as_ref()
            .map(|t| format!("&task={t}"))
            .unwrap_or_default()
    );
    let body = html! {
        h1 { "Run " span.mono { (id) } }
        dl.facts {
            dt { "Flow" } dd { a href=(format!("/runs?flow={}", report.flow)) { (report.flow) } }
            @if let Some(s) = saved {
                dt { "Created" } dd { (fmt::time(s.created_ms)) " UTC" }
                @if let Some(e) = s.ended_ms { dt { "Ended" } dd { (fmt::time(e)) " UTC" } }
            }
            @if let Some(r) = &origin.retry_of {
                dt { "Retries" } dd { a href=(format!("/runs/{r}")) { (r) } }
            }
            @if !origin.params.is_empty() {
                dt { "Params" }
                dd { @for (k, val) in &origin.params { code { (k) " = " (val) } " " } }
            }
        }
        @if follow {
            section #run-live-stream hx-ext="sse" sse-connect=(live_url) sse-close="end" {
                div #run-live sse-swap="run" { (run_live_part(&parts, &v, now)) }
                (logs_panel(&id, &parts, task.as_deref(), &lines, before, true))
            }
        } @else {
            div #run-live { (run_live_part(&parts, &v, now)) }
            (logs_panel(&id, &parts, task.as_deref(), &lines, before, false))
        }
    };
    v.finish(html_response(
        StatusCode::OK,
        page(&format!("Run {id}"), Some(&v), "/runs", body),
    ))
}

fn logs_panel(
    id: &str,
    parts: &RunParts,
    task: Option<&str>,
    lines: &[LogLine],
    before: Option<u64>,
    follow: bool,
) -> Markup {
    let tq = task.map(|t| format!("task={t}&")).unwrap_or_default();
    html! {
        section.logs aria-labelledby="logs-title" {
            h2 #logs-title { "Logs" @if let Some(t) = task { " of " span.mono { (t) } } }
            nav.task-picker aria-label="Logs of task" {
                @for t in &parts.view.report.tasks {
                    @if Some(t.name.as_str()) == task {
                        a href=(format!("/runs/{id}?task={}#logs", t.name)) aria-current="true" { (t.name) }
                    } @else {
                        a href=(format!("/runs/{id}?task={}#logs", t.name)) { (t.name) }
                    }
                }
            }
            nav.pager {
                @if lines.len() >= LOG_TAIL {
                    @if let Some(first) = lines.first() {
                        a href=(format!("/runs/{id}?{tq}before={}#logs", first.seq)) { "← Older lines" }
                    }
                }
                @if before.is_some() {
                    a href=(format!("/runs/{id}?{tq}#logs").replace("?#", "#")) { "Newest lines →" }
                }
            }
            ol #logs.log aria-live=[follow.then_some("polite")]
                sse-swap=[follow.then_some("line")] hx-swap=[follow.then_some("beforeend")] {
                @for l in lines { (log_line(l)) }
            }
            @if lines.is_empty() { p.empty { "No log lines." } }
        }
    }
}

// ----- Cancel, retry -----

pub async fn cancel(req: HttpRequest, dash: D, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let v = try_page!(dash.poster(&req, field(&form, "csrf")));
    try_page!(must_operate(&v));
    let id = try_page!(run_id(&req).map_err(api_failed));
    match dash.handle.cancel(&id).await {
        Ok(()) => {
            tracing::info!(flow_run = %id, "Run cancelled from the dashboard");
            see_other(&format!("/runs/{id}"))
        }
        Err(e) => failed(e),
    }
}

pub async fn retry(req: HttpRequest, dash: D, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let v = try_page!(dash.poster(&req, field(&form, "csrf")));
    try_page!(must_operate(&v));
    let id = try_page!(run_id(&req).map_err(api_failed));
    match dash.handle.retry(&id).await {
        Ok(run) => {
            tracing::info!(flow_run = %run.flow_run, retry_of = %id, "Run retried from the dashboard");
            see_other(&format!("/runs/{}", run.flow_run))
        }
        Err(e) => failed(e),
    }
}

// ----- Flows -----

/// A Run-now form that was refused: which flow, what was sent, and why.
struct Refused<'a> {
    flow: &'a str,
    values: &'a BTreeMap<String, String>,
    error: String,
}

async fn flows_page(
    dash: &Dash,
    v: &Viewer,
    refused: Option<Refused<'_>>,
    adhoc: bool,
) -> HttpResponse {
    let flows = try_page!(dash.handle.flows().await.map_err(failed));
    let mut last_runs = Vec::with_capacity(flows.len());
    for f in &flows {
        let page = try_page!(dash
            .handle
            .list(RunQuery {
                flow: Some(f.name.clone()),
                limit: FLOW_RUNS,
                ..RunQuery::default()
            })
            .await
            .map_err(failed));
        last_runs.push(page.runs);
    }
    let body = html! {
        h1 { "Flows" }
        @if !adhoc {
            p #adhoc-off.note {
                "Ad-hoc flow text is off on this coordinator (" code { "[api] adhoc = false" }
                "): only the registered flows below run, from here or through the API."
            }
        }
        @if flows.is_empty() {
            p.empty { "No registered flows: set " code { "[coordinator] flows = \"DIR\"" } " to register the flows of a directory." }
        }
        @for (f, runs) in flows.iter().zip(&last_runs) {
            (flow_card(f, runs, v, refused.as_ref().filter(|r| r.flow == f.name)))
        }
    };
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    v.finish(html_response(
        status,
        page("Flows", Some(v), "/flows", body),
    ))
}

fn flow_card(
    f: &RegisteredFlow,
    runs: &[RunSummary],
    v: &Viewer,
    refused: Option<&Refused>,
) -> Markup {
    let now = fmt::now_ms();
    html! {
        section.flow id=(format!("flow-{}", f.name)) data-flow=(f.name) {
            h2 { (f.name) }
            dl.facts {
                dt { "File" } dd.mono { (f.file) }
                dt { "Schedule" }
                dd {
                    @if let Some(s) = &f.schedule {
                        code { (s) } " (" (f.timezone.as_deref().unwrap_or("UTC")) ")"
                    } @else { "none (runs when triggered)" }
                }
                @if let Some(next) = f.next_fire_ms {
                    dt { "Next run" } dd { (fmt::time(next)) " UTC" }
                }
                dt { "Params" }
                dd {
                    @if f.params.is_empty() { "none" }
                    @for (k, d) in &f.params {
                        code { (k) @if let Some(d) = d { " = " (d) } @else { " (required)" } } " "
                    }
                }
            }
            @if !runs.is_empty() {
                h3 { "Latest runs" }
                div.table-wrap {
                    table.flow-runs {
                        thead { tr { th scope="col" { "Run" } th scope="col" { "Flow" } th scope="col" { "State" } th scope="col" { "Created (UTC)" } th scope="col" { "Duration" } } }
                        tbody { @for r in runs { (run_row(r, now, false)) } }
                    }
                }
            }
            @if v.can_operate() {
                form.run-now data-flow=(f.name) method="post" action=(format!("/flows/{}/run", f.name)) {
                    input type="hidden" name="csrf" value=(v.session.csrf);
                    @for (k, d) in &f.params {
                        @let input_id = format!("p-{}-{}", f.name, k);
                        @let sent = refused.and_then(|r| r.values.get(k));
                        label for=(input_id) { (k) @if d.is_none() { " (required)" } }
                        input id=(input_id) type="text" name=(format!("param.{k}"))
                            value=[sent.map(String::as_str)] placeholder=[d.as_deref()];
                    }
                    @if let Some(r) = refused {
                        p.form-error role="alert" { (r.error) }
                    }
                    button type="submit" { "Run now" }
                }
            }
        }
    }
}

pub async fn flows(req: HttpRequest, dash: D) -> HttpResponse {
    let v = try_page!(dash.viewer(&req));
    flows_page(&dash, &v, None, crate::app::adhoc(&req)).await
}

pub async fn run_now(req: HttpRequest, dash: D, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let v = try_page!(dash.poster(&req, field(&form, "csrf")));
    try_page!(must_operate(&v));
    let flow = try_page!(conveyor_api::input::flow_name(&req).map_err(api_failed));
    // An empty field is a param not given: it takes its default.
    let mut params = BTreeMap::new();
    let mut sent = BTreeMap::new();
    for (k, val) in form.iter() {
        if let Some(name) = k.strip_prefix("param.") {
            sent.insert(name.to_string(), val.clone());
            if !val.is_empty() {
                params.insert(name.to_string(), val.clone());
            }
        }
    }
    match dash.handle.trigger(&flow, params).await {
        Ok(run) => {
            tracing::info!(flow = %flow, flow_run = %run.flow_run, "Run started from the dashboard");
            see_other(&format!("/runs/{}", run.flow_run))
        }
        Err(CoordinatorError::Invalid(error)) => {
            flows_page(
                &dash,
                &v,
                Some(Refused {
                    flow: &flow,
                    values: &sent,
                    error,
                }),
                crate::app::adhoc(&req),
            )
            .await
        }
        Err(e) => failed(e),
    }
}

// ----- Nodes -----

pub async fn nodes(req: HttpRequest, dash: D) -> HttpResponse {
    let v = try_page!(dash.viewer(&req));
    let nodes = try_page!(dash.handle.nodes().await.map_err(failed));
    let body = html! {
        h1 { "Nodes" }
        p.lede { "The nodes whose heartbeats this coordinator hears." }
        div.table-wrap {
            table #nodes {
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "Kinds" } th scope="col" { "In flight" }
                    th scope="col" { "Heartbeat" } th scope="col" { "Version" }
                } }
                tbody {
                    @for n in &nodes {
                        tr.node data-node=(n.node) {
                            td.mono { (n.node) }
                            td { (n.kinds.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")) }
                            td {
                                span.num { (n.in_flight.len()) }
                                @if !n.in_flight.is_empty() {
                                    " " span.mono.small { (n.in_flight.iter().take(5).cloned().collect::<Vec<_>>().join(", ")) @if n.in_flight.len() > 5 { " …" } }
                                }
                            }
                            td.num { (fmt::duration(n.heartbeat_age_ms)) " ago" }
                            td { (n.version.as_deref().unwrap_or("?")) }
                        }
                    }
                }
            }
        }
        @if nodes.is_empty() { p.empty { "No node has sent a heartbeat yet." } }
    };
    v.finish(html_response(
        StatusCode::OK,
        page("Nodes", Some(&v), "/nodes", body),
    ))
}

// ----- Login -----

fn login_page(csrf: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        "",
        html! {
            h1 { "Log in" }
            form #login method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                @if let Some(e) = error { p.form-error role="alert" { (e) } }
                button type="submit" { "Log in" }
            }
            p.lede { "Use a token of the node's " code { "[api] tokens" } ": a " code { "read" } " token shows runs, an " code { "operate" } " token may also start, cancel and retry them." }
        },
    )
}

pub async fn login_form(req: HttpRequest, dash: D) -> HttpResponse {
    if crate::app::is_open(&req) {
        return see_other("/runs");
    }
    // A visitor's session, to carry the login form's CSRF token.
    let (session, new) = match crate::app::session_of(&req, &dash) {
        Some(s) => (s, false),
        None => (dash.sessions.create(None), true),
    };
    let mut res = html_response(StatusCode::OK, login_page(&session.csrf, None));
    if new {
        if let Ok(v) = header::HeaderValue::from_str(&crate::session::set_cookie(
            &session.id,
            crate::session::LIFETIME,
        )) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

pub async fn login(req: HttpRequest, dash: D, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let Some(visitor) = crate::app::session_of(&req, &dash) else {
        return forbidden("no session: open the login page first, then send its form");
    };
    if !crate::app::csrf_ok(&req, &visitor, field(&form, "csrf")) {
        return forbidden("the login form's CSRF token is missing or does not match; reload the page and try again");
    }
    let Some(auth) = crate::app::auth(&req) else {
        return see_other("/runs");
    };
    if auth.is_open() {
        return see_other("/runs");
    }
    let token = field(&form, "token").unwrap_or_default().trim();
    let Some(role) = auth.role_of(token) else {
        tracing::info!("Dashboard login refused: not a configured token");
        return html_response(
            StatusCode::UNAUTHORIZED,
            login_page(
                &visitor.csrf,
                Some("This token is not valid for this node."),
            ),
        );
    };
    // A new id on login: a session id seen before it is worth nothing after.
    dash.sessions.remove(&visitor.id);
    let session = dash.sessions.create(Some(role));
    let mut res = see_other("/runs");
    if let Ok(v) = header::HeaderValue::from_str(&crate::session::set_cookie(
        &session.id,
        crate::session::LIFETIME,
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

pub async fn logout(req: HttpRequest, dash: D, body: web::Bytes) -> HttpResponse {
    let form = Form::parse(&body);
    let v = try_page!(dash.poster(&req, field(&form, "csrf")));
    dash.sessions.remove(&v.session.id);
    let mut res = see_other("/login");
    if let Ok(c) = header::HeaderValue::from_str(&crate::session::clear_cookie()) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

// ----- Static files -----

/// A vendored or own file, embedded in the binary.
pub fn asset_bytes(name: &str) -> Option<(&'static [u8], &'static str)> {
    Some(match name {
        "htmx.min.js" => (
            include_bytes!("../static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx-ext-sse.min.js" => (
            include_bytes!("../static/htmx-ext-sse.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (
            include_bytes!("../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "LICENSE-htmx.txt" => (
            include_bytes!("../static/LICENSE-htmx.txt"),
            "text/plain; charset=utf-8",
        ),
        "LICENSE-htmx-ext-sse.txt" => (
            include_bytes!("../static/LICENSE-htmx-ext-sse.txt"),
            "text/plain; charset=utf-8",
        ),
        _ => return None,
    })
}

pub async fn asset(req: HttpRequest) -> HttpResponse {
    let name = req.match_info().query("file");
    match asset_bytes(name) {
        Some((bytes, ct)) => HttpResponse::Ok()
            .content_type(ct)
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .insert_header(("x-content-type-options", "nosniff"))
            .body(bytes),
        None => views::error_page(StatusCode::NOT_FOUND, "no such file"),
    }
}

pub async fn wrong_method(req: HttpRequest) -> HttpResponse {
    views::error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{} does not take {}", req.path(), req.method()),
    )
}
