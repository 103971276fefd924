/*!
Server-Sent Events: a run's reports as they change, and a task's log lines
as they come. Each stream is fed by a task of its own through a small
channel; when the client goes away the channel closes and the task ends.
A comment line every [`KEEP_ALIVE`] keeps proxies from closing an idle
stream and notices a client that left.
*/

use std::convert::Infallible;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use conveyor_coordinator::handle::{CoordinatorHandle, LogPage, LogQuery};
use conveyor_schemas::RunReport;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;

/// Longest silence on a stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a followed log is read again while its attempt runs.
const LOG_POLL: Duration = Duration::from_millis(300);

fn event<T: Serialize>(name: &str, data: &T) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        serde_json::json!({"error": "internal", "message": e.to_string()}).to_string()
    });
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// An SSE comment line, sent while nothing happens so that proxies keep
/// the stream open.
pub fn keep_alive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// A `text/event-stream` response of the events sent on `rx`, unbuffered;
/// it ends when every sender is gone.
pub fn stream(rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// A finished run: one `end` event.
pub fn one_end(report: &RunReport) -> HttpResponse {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(event("end", report));
    stream(rx)
}

/// A run in flight: its report now and on every change, then `end`; an
/// `error` event instead if the coordinator stops before the run ends.
pub fn run_reports(
    id: String,
    mut reports: watch::Receiver<RunReport>,
    handle: CoordinatorHandle,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(16);
    actix_web::rt::spawn(async move {
        loop {
            let report = reports.borrow_and_update().clone();
            if report.state.is_terminal() {
                let _ = tx.send(event("end", &report)).await;
                return;
            }
            if tx.send(event("report", &report)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = reports.changed() => {
                        if changed.is_err() {
                            // The coordinator let go of the run: it ended,
                            // and its final report is saved; or the
                            // coordinator stopped, and the run goes on
                            // when it restarts.
                            let last = match handle.get(&id).await {
                                Ok(Some(view)) => view.report,
                                _ => report,
                            };
                            let _ = if last.state.is_terminal() {
                                tx.send(event("end", &last)).await
                            } else {
                                tx.send(event("error", &serde_json::json!({
                                    "error": "unavailable",
                                    "message": format!("the coordinator stopped while run {id} was {}; it goes on when the coordinator restarts", last.state),
                                }))).await
                            };
                            return;
                        }
                        break;
                    }
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        if tx.send(keep_alive()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    stream(rx)
}

/// A task's log lines from `first` on, then every new line until the
/// attempt ends (`end`). An error on the way is an `error` event.
pub fn log_lines(mut query: LogQuery, first: LogPage, handle: CoordinatorHandle) -> HttpResponse {
    let (tx, rx) = mpsc::channel(64);
    actix_web::rt::spawn(async move {
        let mut page = first;
        let mut quiet = Duration::ZERO;
        loop {
            let got_lines = !page.lines.is_empty();
            for line in page.lines {
                query.after = Some(line.seq);
                if tx.send(event("line", &line)).await.is_err() {
                    return;
                }
            }
            if !page.live && !got_lines {
                let _ = tx
                    .send(Bytes::from_static(b"event: end\ndata: {}\n\n"))
                    .await;
                return;
            }
            if !got_lines {
                tokio::time::sleep(LOG_POLL).await;
                quiet += LOG_POLL;
                if quiet >= KEEP_ALIVE {
                    quiet = Duration::ZERO;
                    if tx.send(keep_alive()).await.is_err() {
                        return;
                    }
                }
            } else {
                quiet = Duration::ZERO;
            }
            page = match handle.logs(query.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    let e = ApiError::from(e);
                    let _ = tx
                        .send(event(
                            "error",
                            &serde_json::json!({"error": e.code(), "message": e.to_string()}),
                        ))
                        .await;
                    return;
                }
            };
        }
    });
    stream(rx)
}
