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
- [`pages`]: one handler per page and per form; [`views`]: the layout and
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

pub mod fmt;
pub mod live;
pub mod pages;
pub mod session;
pub mod svg;
pub mod views;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use conveyor_actors::handle::CoordinatorHandle;
use conveyor_api::auth::Auth;
use conveyor_flow::ApiRole;

use crate::session::{Session, Sessions};

/// What every page shares.
pub struct Dash {
    pub handle: CoordinatorHandle,
    pub sessions: Sessions,
}

/// Who asks for a page, and the cookie to set if their session is new.
pub struct Viewer {
    pub session: Session,
    pub set_cookie: Option<String>,
    /// The API has tokens: there is a login, and a logout button.
    pub login: bool,
}

impl Viewer {
    pub fn can_operate(&self) -> bool {
        self.session.can_operate()
    }

    /// `response` with this viewer's new cookie, if any.
    pub fn finish(&self, mut response: HttpResponse) -> HttpResponse {
        if let Some(cookie) = &self.set_cookie {
            if let Ok(v) = header::HeaderValue::from_str(cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        response
    }
}

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

fn auth(req: &HttpRequest) -> Option<&Auth> {
    req.app_data::<web::Data<Auth>>().map(|a| a.get_ref())
}

/// Whether the API has no tokens (no token table at all counts as open:
/// the API always installs one).
fn is_open(req: &HttpRequest) -> bool {
    auth(req).is_none_or(Auth::is_open)
}

fn session_of(req: &HttpRequest, dash: &Dash) -> Option<Session> {
    let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
    // A browser may send several Cookie headers; actix joins none.
    let id = session::from_cookie_header(header)?;
    dash.sessions.get(id)
}

impl Dash {
    /// The viewer of a page: its session; a new `operate` session when the
    /// API has no tokens; else a 303 to `/login`.
    pub fn viewer(&self, req: &HttpRequest) -> Result<Viewer, HttpResponse> {
        let login = !is_open(req);
        match session_of(req, self) {
            Some(s) if s.role.is_some() => Ok(Viewer {
                session: s,
                set_cookie: None,
                login,
            }),
            _ if !login => {
                let s = self.sessions.create(Some(ApiRole::Operate));
                Ok(Viewer {
                    set_cookie: Some(session::set_cookie(&s.id, session::LIFETIME)),
                    session: s,
                    login,
                })
            }
            _ => Err(see_other("/login")),
        }
    }

    /// The sender of a POST: a session with a role whose CSRF token is the
    /// form's `csrf` field or the `X-CSRF-Token` header; else 403.
    pub fn poster(
        &self,
        req: &HttpRequest,
        form_csrf: Option<&str>,
    ) -> Result<Viewer, HttpResponse> {
        let session = session_of(req, self).filter(|s| s.role.is_some());
        let Some(session) = session else {
            return Err(forbidden(
                "no session: open the dashboard (and log in) first, then use its forms",
            ));
        };
        if !csrf_ok(req, &session, form_csrf) {
            return Err(forbidden(
                "the form's CSRF token is missing or does not match this session; reload the page and try again",
            ));
        }
        Ok(Viewer {
            session,
            set_cookie: None,
            login: !is_open(req),
        })
    }
}

/// Whether the request carries `session`'s CSRF token.
pub fn csrf_ok(req: &HttpRequest, session: &Session, form_csrf: Option<&str>) -> bool {
    let header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    form_csrf
        .or(header)
        .is_some_and(|given| session.csrf_matches(given))
}

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

pub fn forbidden(message: &str) -> HttpResponse {
    views::error_page(StatusCode::FORBIDDEN, message)
}
