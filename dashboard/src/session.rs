/*!
Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept
here with its role, its CSRF token and its expiry. The token a user logs in
with never leaves the login request: the cookie names the session, not the
token.

A session with no role is a visitor's who has not logged in yet: it only
carries the CSRF token of the login form. When the API has no tokens, a
visitor's first page makes an `operate` session, so that its POSTs carry a
CSRF token too.
*/

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpResponse;
use conveyor_config::ApiRole;
use rand::Rng;

/// The cookie's name.
pub const COOKIE: &str = "conveyor_session";

/// How long a session lasts without a new login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept; past it the expired ones go, then the oldest.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub id: String,
    /// None until its user logs in.
    pub role: Option<ApiRole>,
    /// Every POST of this session must carry it.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    pub fn can_operate(&self) -> bool {
        self.role == Some(ApiRole::Operate)
    }

    /// Whether `given` is this session's CSRF token (in time that depends
    /// only on the token's length).
    pub fn csrf_matches(&self, given: &str) -> bool {
        conveyor_api::auth::same_bytes(given.as_bytes(), self.csrf.as_bytes())
    }
}

/// The sessions of this node's dashboard, in memory: a restart logs
/// everyone out.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
    max: usize,
}

/// 32 random bytes in hex, from the OS-seeded thread generator.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(LIFETIME, MAX_SESSIONS)
    }
}

impl Sessions {
    pub fn new(lifetime: Duration, max: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            lifetime,
            max: max.max(1),
        }
    }

    /// A new session with a fresh id and CSRF token.
    pub fn create(&self, role: Option<ApiRole>) -> Session {
        let now = Instant::now();
        let session = Session {
            id: random_hex(),
            role,
            csrf: random_hex(),
            expires: now + self.lifetime,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= self.max {
            // Visitors (no role yet: anyone who opened the login page) go
            // first, so that a flood of them cannot log anybody out.
            let oldest = map
                .values()
                .min_by_key(|s| (s.role.is_some(), s.expires))
                .map(|s| s.id.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session `id`; an expired one is forgotten.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a `Cookie` header, if it names one.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The `Set-Cookie` value for session `id`: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it), for the whole site.
pub fn set_cookie(id: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_random_ids_and_its_own_csrf_token() {
        let sessions = Sessions::default();
        let a = sessions.create(Some(ApiRole::Read));
        let b = sessions.create(Some(ApiRole::Read));
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_ne!(a.id, a.csrf);
        assert_eq!(a.id.len(), 64);
        assert_eq!(sessions.get(&a.id), Some(a.clone()));
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..63]));
        assert!(!a.can_operate());
        sessions.remove(&a.id);
        assert_eq!(sessions.get(&a.id), None);
        assert!(sessions.get("not-a-session").is_none());
    }

    #[test]
    fn expired_sessions_are_forgotten_and_the_table_is_bounded() {
        let sessions = Sessions::new(Duration::ZERO, 3);
        let s = sessions.create(Some(ApiRole::Operate));
        assert_eq!(sessions.get(&s.id), None, "a session past its expiry");
        let sessions = Sessions::new(LIFETIME, 3);
        let ids: Vec<String> = (0..10).map(|_| sessions.create(None).id).collect();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(&ids[9]).is_some(), "the newest stays");
        assert!(sessions.get(&ids[0]).is_none(), "the oldest went");
    }

    #[test]
    fn a_flood_of_visitors_logs_nobody_out() {
        let sessions = Sessions::new(LIFETIME, 3);
        let operator = sessions.create(Some(ApiRole::Operate)).id;
        let visitors: Vec<String> = (0..100).map(|_| sessions.create(None).id).collect();
        assert_eq!(sessions.len(), 3);
        assert!(
            sessions.get(&operator).is_some(),
            "the logged-in session stays"
        );
        assert!(sessions.get(&visitors[99]).is_some());
        assert!(sessions.get(&visitors[0]).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_read_back_by_name() {
        let c = set_cookie("abc", LIFETIME);
        assert!(c.starts_with("conveyor_session=abc;"), "{c}");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
        assert_eq!(
            from_cookie_header("a=1; conveyor_session=xyz; b=2"),
            Some("xyz")
        );
        assert_eq!(from_cookie_header("conveyor_session="), None);
        assert_eq!(from_cookie_header("other_session=xyz"), None);
    }
}
