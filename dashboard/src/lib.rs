/*!
Conveyor's dashboard: HTML pages of a coordinator node's runs, flows and
nodes, served at `/` on the API's listener (mounted through
[`conveyor_api::ApiSetup::extra`]) and answered through the node's
[`CoordinatorHandle`], as the API is.

Every page is rendered on the server ([maud] templates, checked at compile
time) and reads without JavaScript. The vendored htmx and its SSE extension
(`static/`, with their licences) make pages live: a page opens one
Server-Sent Events stream ([`live`]) whose events replace its rows, its
run's state, and append log lines.

# Layout
- [`app`]: what every page shares ([`Dash`], [`Viewer`]) and the access
  checks; [`pages`]: one handler per page and per form; [`views`]: the layout and
  the parts pages share.
- [`session`]: the login cookie, sessions and CSRF tokens; access is
  decided here ([`Dash::viewer`], [`Dash::poster`]).
- [`svg`]: the task graph, the attempts' timeline and the overview charts.
- [`live`]: the SSE streams of the runs page and of a run's page.
- [`fmt`]: times, durations and sizes.

# Auth
With `[api] tokens`, a page without a session answers 303 to `/login`,
whose form takes a token (checked as the API checks a bearer token) and
sets the `conveyor_session` cookie. Every POST carries the session's CSRF
token (the hidden `csrf` field, or an `X-CSRF-Token` header), also when the
API has no tokens; a `read` session sees no buttons, and its POSTs get 403.
*/

// A refused request's `Err` is the response itself (a 303 or a 403 page),
// returned by the handler as it is: boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod app;
pub mod fmt;
pub mod live;
pub mod pages;
pub mod session;
pub mod svg;
pub mod views;

use std::sync::Arc;

use actix_web::web;
use conveyor_coordinator::handle::CoordinatorHandle;

pub use crate::app::{csrf_ok, Dash, Viewer};
use crate::session::Sessions;
pub use crate::views::{forbidden, see_other};

/// The dashboard's routes, for [`conveyor_api::ApiSetup::extra`]. The API's
/// token table ([`Auth`]) is read from the app, so the dashboard and the
/// API accept the same tokens.
pub fn mount(handle: CoordinatorHandle) -> conveyor_api::Mount {
    let dash = web::Data::new(Dash {
        handle,
        sessions: Sessions::default(),
    });
    Arc::new(move |cfg: &mut web::ServiceConfig| routes(cfg, dash.clone()))
}

/// Mounts the pages with `dash` (tests mount it on an app of their own).
pub fn routes(cfg: &mut web::ServiceConfig, dash: web::Data<Dash>) {
    let page = |path: &str| {
        web::resource(path)
            .app_data(dash.clone())
            .default_service(web::to(pages::wrong_method))
    };
    cfg.service(page("/").route(web::get().to(pages::overview)))
        .service(page("/runs").route(web::get().to(pages::runs)))
        .service(page("/runs/{id}").route(web::get().to(pages::run)))
        .service(page("/runs/{id}/cancel").route(web::post().to(pages::cancel)))
        .service(page("/runs/{id}/retry").route(web::post().to(pages::retry)))
        .service(page("/flows").route(web::get().to(pages::flows)))
        .service(page("/flows/{flow}/run").route(web::post().to(pages::run_now)))
        .service(page("/nodes").route(web::get().to(pages::nodes)))
        .service(
            page("/login")
                .route(web::get().to(pages::login_form))
                .route(web::post().to(pages::login)),
        )
        .service(page("/logout").route(web::post().to(pages::logout)))
        .service(page("/live/runs").route(web::get().to(live::runs)))
        .service(page("/live/runs/{id}").route(web::get().to(live::run)))
        .service(page("/static/{file}").route(web::get().to(pages::asset)));
}
