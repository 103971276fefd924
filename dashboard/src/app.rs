/*!
What every page shares: [`Dash`] (the handle and the sessions), who is
asking ([`Viewer`]), and the access decisions and answers that the pages and
the live streams all use.
*/

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use conveyor_api::auth::Auth;
use conveyor_config::ApiRole;
use conveyor_coordinator::handle::CoordinatorHandle;

pub use crate::session::Viewer;
use crate::session::{self, Session, Sessions};
use crate::views::{forbidden, see_other};

/// What every page shares.
pub struct Dash {
    pub handle: CoordinatorHandle,
    pub sessions: Sessions,
}

pub fn auth(req: &HttpRequest) -> Option<&Auth> {
    req.app_data::<web::Data<Auth>>().map(|a| a.get_ref())
}

/// `[api] adhoc`: whether the API takes ad-hoc flow text (true when the
/// pages are mounted without the API).
pub fn adhoc(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<conveyor_api::routes::State>>()
        .is_none_or(|s| s.adhoc)
}

/// Whether the API has no tokens (no token table at all counts as open:
/// the API always installs one).
pub fn is_open(req: &HttpRequest) -> bool {
    auth(req).is_none_or(Auth::is_open)
}

pub fn session_of(req: &HttpRequest, dash: &Dash) -> Option<Session> {
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
