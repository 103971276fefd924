/*!
The pages' live updates: one Server-Sent Events stream per page, whose
events carry HTML that the htmx SSE extension swaps in (`sse-swap`).

- `/live/runs` (the runs page): `counts` (the counts by state), `run-ID` (a
  run's new row, replacing its old one) and `new` (a row to add at the top
  for a run that started). Changes come from the coordinator's broadcast
  ([`CoordinatorHandle::changes`]), gathered for [`BATCH`] and read back in
  one query, so a busy coordinator costs a page a few events a second, not
  one per change. On connect the page's rows are sent once again, so that
  a change between the page's render and the stream's start is not lost.
- `/live/runs/ID` (a run's page): `run` (the run's state, buttons, graph,
  timeline and tasks, at most every [`RUN_EVERY`]), `line` (one log line of
  the task shown, with its `seq` as the event id, so a reconnect resumes
  after it), then `end` once the run ended and its last lines are in.

[`CoordinatorHandle::changes`]: conveyor_coordinator::handle::CoordinatorHandle::changes
*/

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use conveyor_api::input::{run_id, Query};
use conveyor_api::sse::{keep_alive, stream};
use conveyor_coordinator::handle::LogQuery;
use conveyor_coordinator::runstore::{Cursor, RunQuery};
use tokio::sync::{broadcast, mpsc};

use crate::app::{Dash, Viewer};
use crate::fmt;
use crate::pages::{log_line, run_live_part, Filters, RunParts, RUNS_PAGE};
use crate::views::{counts, run_row};

/// Longest silence on a stream: a comment line then keeps proxies from
/// closing it and notices a client that left.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long the runs stream gathers changes before it reads them back.
pub const BATCH: Duration = Duration::from_millis(250);

/// Most rows one runs page gets added live; past it, a reload shows more.
pub const MAX_NEW_ROWS: usize = 200;

/// Least time between two renders of a run's live part.
pub const RUN_EVERY: Duration = Duration::from_millis(500);

/// How often a run's page looks for new log lines.
const LOG_POLL: Duration = Duration::from_millis(400);

/// One event whose data is `html` (each of its lines a `data:` line).
pub fn event(name: &str, id: Option<u64>, html: &str) -> Bytes {
    let mut s = format!("event: {name}\n");
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    for line in html.replace('\r', "&#13;").split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

fn stream_viewer(req: &HttpRequest, dash: &Dash) -> Result<Viewer, HttpResponse> {
    // No redirect for a stream: a session that expired gets a 403 and the
    // page keeps what it shows.
    dash.viewer(req)
        .map_err(|_| crate::views::forbidden("no session: reload the page (and log in)"))
}

/// The runs page's stream (see the module's doc).
pub async fn runs(req: HttpRequest, dash: web::Data<Dash>) -> HttpResponse {
    if let Err(r) = stream_viewer(&req, &dash) {
        return r;
    }
    let filters = match Filters::parse_with(&req, &["new"]) {
        Ok(f) => f,
        Err(e) => return crate::views::error_page(actix_web::http::StatusCode::BAD_REQUEST, &e),
    };
    // Subscribed before the page is read again: no change falls between.
    let mut changes = match dash.handle.changes().await {
        Ok(c) => c,
        Err(e) => {
            return crate::views::error_page(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            )
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let dash = dash.into_inner();
    actix_web::rt::spawn(async move {
        let now = fmt::now_ms();
        let first = match dash
            .handle
            .list(RunQuery {
                flow: filters.flow.clone(),
                state: filters.state,
                since_ms: filters.since_ms,
                until_ms: filters.until_ms,
                limit: RUNS_PAGE,
                after: filters.cursor.clone(),
            })
            .await
        {
            Ok(p) => p.runs,
            Err(_) => return,
        };
        // The rows this page has; a run created after the newest of them
        // that matches the filters is added at the top.
        let mut known: HashSet<String> = first.iter().map(|r| r.id.clone()).collect();
        let newest = first
            .iter()
            .map(|r| Cursor {
                created_ms: r.created_ms,
                id: r.id.clone(),
            })
            .next();
        for run in &first {
            let row = run_row(run, now, true).into_string();
            if tx
                .send(event(&format!("run-{}", run.id), None, &row))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut added = 0usize;
        loop {
            // Wait for a change, or send a keep-alive.
            let first_change = tokio::select! {
                c = changes.recv() => c,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(keep_alive()).await.is_err() { return; }
                    continue;
                }
            };
            let mut ids: BTreeMap<String, ()> = BTreeMap::new();
            match first_change {
                Ok(c) => {
                    ids.insert(c.id, ());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
            tokio::time::sleep(BATCH).await;
            loop {
                match changes.try_recv() {
                    Ok(c) => {
                        ids.insert(c.id, ());
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                }
            }
            let ids: Vec<String> = ids.into_keys().collect();
            let mut runs = match dash.handle.summaries(ids).await {
                Ok(r) => r,
                Err(_) => return,
            };
            runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            let now = fmt::now_ms();
            for run in &runs {
                let row = run_row(run, now, true).into_string();
                let is_new = !known.contains(&run.id)
                    && added < MAX_NEW_ROWS
                    && filters.takes_new(&run.flow, run.state)
                    && filters.since_ms.is_none_or(|s| run.created_ms >= s)
                    && newest
                        .as_ref()
                        .is_none_or(|n| (run.created_ms, &run.id) > (n.created_ms, &n.id));
                let sent = if known.contains(&run.id) {
                    tx.send(event(&format!("run-{}", run.id), None, &row)).await
                } else if is_new {
                    known.insert(run.id.clone());
                    added += 1;
                    tx.send(event("new", None, &row)).await
                } else {
                    Ok(())
                };
                if sent.is_err() {
                    return;
                }
            }
            let counts = match dash.handle.counts(filters.flow.clone()).await {
                Ok(c) => c,
                Err(_) => return,
            };
            let html = counts_html(&counts, filters.flow.as_deref());
            if tx.send(event("counts", None, &html)).await.is_err() {
                return;
            }
        }
    });
    stream(rx)
}

fn counts_html(c: &[(conveyor_schemas::FlowState, u64)], flow: Option<&str>) -> String {
    counts(c, flow).into_string()
}

/// A run page's stream (see the module's doc).
pub async fn run(req: HttpRequest, dash: web::Data<Dash>) -> HttpResponse {
    let v = match stream_viewer(&req, &dash) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match run_id(&req) {
        Ok(id) => id,
        Err(e) => {
            return crate::views::error_page(
                actix_web::http::StatusCode::BAD_REQUEST,
                &e.to_string(),
            )
        }
    };
    let q = match Query::parse(&req, &["task", "after"]) {
        Ok(q) => q,
        Err(e) => {
            return crate::views::error_page(
                actix_web::http::StatusCode::BAD_REQUEST,
                &e.to_string(),
            )
        }
    };
    let task = q.get("task").map(str::to_string);
    // A reconnecting EventSource says the last line it got.
    let resumed = req
        .headers()
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let after = q
        .uint("after", 0, i64::MAX as u64)
        .ok()
        .flatten()
        .max(resumed);
    let mut watch = match dash.handle.watch(&id).await {
        Ok(w) => w,
        Err(e) => {
            return crate::views::error_page(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            )
        }
    };
    let spec = dash.handle.flow_of(&id).await.ok().flatten();
    let (tx, rx) = mpsc::channel(64);
    let dash = dash.into_inner();
    actix_web::rt::spawn(async move {
        let mut query = LogQuery {
            run: id.clone(),
            task: task.clone().unwrap_or_default(),
            after,
            ..LogQuery::default()
        };
        let mut dirty = true;
        let mut last_render: Option<Instant> = None;
        let mut quiet = Duration::ZERO;
        loop {
            // The run's part, when it changed and not too often.
            if dirty && last_render.is_none_or(|t| t.elapsed() >= RUN_EVERY) {
                let parts = match RunParts::load_with(&dash, &id, spec.clone()).await {
                    Ok(Some(p)) => p,
                    _ => return,
                };
                let html = run_live_part(&parts, &v, fmt::now_ms()).into_string();
                if tx.send(event("run", None, &html)).await.is_err() {
                    return;
                }
                dirty = false;
                last_render = Some(Instant::now());
                quiet = Duration::ZERO;
            }
            let ended = watch
                .as_ref()
                .is_none_or(|w| w.borrow().state.is_terminal());
            // New log lines of the task shown.
            let mut logs_live = false;
            if task.is_some() {
                match dash.handle.logs(query.clone()).await {
                    Ok(page) => {
                        logs_live = page.live;
                        for line in &page.lines {
                            query.after = Some(line.seq);
                            let html = log_line(line).into_string();
                            if tx.send(event("line", Some(line.seq), &html)).await.is_err() {
                                return;
                            }
                            quiet = Duration::ZERO;
                        }
                        if !page.lines.is_empty() {
                            continue;
                        }
                    }
                    Err(_) => return,
                }
            }
            if ended && !dirty && !logs_live {
                let _ = tx.send(event("end", None, "")).await;
                return;
            }
            // Wait for the run to change, or for the next look at the logs.
            let wait = if dirty { RUN_EVERY } else { LOG_POLL };
            match watch.as_mut() {
                Some(w) => tokio::select! {
                    changed = w.changed() => {
                        dirty = true;
                        if changed.is_err() {
                            // The coordinator let go of the run: it ended
                            // (read it from the history from now on).
                            watch = None;
                        }
                    }
                    _ = tokio::time::sleep(wait) => { quiet += wait; }
                },
                None => {
                    tokio::time::sleep(wait).await;
                    quiet += wait;
                }
            }
            if quiet >= KEEP_ALIVE {
                quiet = Duration::ZERO;
                if tx.send(keep_alive()).await.is_err() {
                    return;
                }
            }
        }
    });
    stream(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_each_line_of_its_html_as_data() {
        let e = event("line", Some(7), "<li>a\nb\rc</li>");
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            "event: line\nid: 7\ndata: <li>a\ndata: b&#13;c</li>\n\n"
        );
        let e = event("end", None, "");
        assert_eq!(std::str::from_utf8(&e).unwrap(), "event: end\ndata: \n\n");
    }
}
