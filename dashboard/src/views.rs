/*!
The layout every page shares and the parts the pages and the live streams
both render (a run's row, the counts by state), so that a live update is
the same HTML as a reload.
*/

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use conveyor_coordinator::runstore::RunSummary;
use conveyor_schemas::FlowState;
use maud::{html, Markup, DOCTYPE};

use crate::fmt;
use crate::session::Viewer;

/// Bumped with the binary, so that a new version's files are fetched
/// despite their long cache lifetime.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What no page may do: be framed, run inline scripts, or talk elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// An HTML response with the dashboard's headers.
pub fn html_response(status: StatusCode, body: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "same-origin"))
        .body(body.into_string())
}

/// A whole page: the nav, then `main`.
pub fn page(title: &str, viewer: Option<&Viewer>, current: &str, main: Markup) -> Markup {
    let link = |href: &'static str, text: &'static str| {
        html! {
            @if current == href {
                a href=(href) aria-current="page" { (text) }
            } @else {
                a href=(href) { (text) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (title) " · Conveyor" }
                link rel="stylesheet" href=(format!("/static/app.css?v={ASSET_VERSION}"));
                script src=(format!("/static/htmx.min.js?v={ASSET_VERSION}")) defer {}
                script src=(format!("/static/htmx-ext-sse.min.js?v={ASSET_VERSION}")) defer {}
                script src=(format!("/static/app.js?v={ASSET_VERSION}")) defer {}
            }
            body {
                header.top {
                    span.brand { "Conveyor" }
                    nav aria-label="Pages" {
                        (link("/", "Overview"))
                        (link("/runs", "Runs"))
                        (link("/flows", "Flows"))
                        (link("/nodes", "Nodes"))
                    }
                    @if let Some(v) = viewer {
                        @if v.login {
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(v.session.csrf);
                                span.role { (role_name(v)) }
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

fn role_name(v: &Viewer) -> &'static str {
    if v.can_operate() {
        "operate"
    } else {
        "read"
    }
}

/// A page saying what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    html_response(
        status,
        page(
            title,
            None,
            "",
            html! {
                h1 { (status.as_u16()) " " (title) }
                p.form-error role="alert" { (message) }
                p { a href="/runs" { "Back to the runs" } }
            },
        ),
    )
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge state-{state}")) { (state) } }
}

/// How long a run took, or has been running.
pub fn run_duration(run: &RunSummary, now_ms: u64) -> String {
    match (run.started_ms.or(Some(run.created_ms)), run.ended_ms) {
        (Some(s), Some(e)) => fmt::duration(e.saturating_sub(s)),
        (Some(s), None) => format!("{} so far", fmt::duration(now_ms.saturating_sub(s))),
        _ => String::new(),
    }
}

/// One row of the runs table. `live` makes it listen for its own updates
/// (`run-ID` events of the page's stream) and replace itself.
pub fn run_row(run: &RunSummary, now_ms: u64, live: bool) -> Markup {
    let state = run.state.as_str();
    html! {
        tr.run data-run=(run.id) data-state=(state)
            sse-swap=[live.then(|| format!("run-{}", run.id))]
            hx-swap=[live.then_some("outerHTML")] {
            td { a href=(format!("/runs/{}", run.id)) { (run.id) } }
            td { a href=(format!("/runs?flow={}", run.flow)) { (run.flow) } }
            td.state { (badge(state)) }
            td { time datetime=(fmt::input_time(run.created_ms)) { (fmt::time(run.created_ms)) } }
            td.num { (run_duration(run, now_ms)) }
        }
    }
}

/// The counts by state, each linking to its filter.
pub fn counts(counts: &[(FlowState, u64)], flow: Option<&str>) -> Markup {
    let flow_q = flow.map(|f| format!("&flow={f}")).unwrap_or_default();
    html! {
        @for state in FlowState::ALL {
            @let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            a class=(format!("count state-{}", state.as_str())) data-count-state=(state.as_str())
                href=(format!("/runs?state={}{flow_q}", state.as_str())) {
                span.n { (n) } " " (state.as_str())
            }
        }
    }
}

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

pub fn forbidden(message: &str) -> HttpResponse {
    error_page(StatusCode::FORBIDDEN, message)
}
