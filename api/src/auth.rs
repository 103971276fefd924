/*!
Bearer tokens and roles. A request names its token in `Authorization:
Bearer T`; the token's role (`read` or `operate`) decides what it may do.
Handlers ask for a role by taking [`CanRead`] or [`CanOperate`] as their
first argument, so a request is refused before its body is read.

With no token configured the API is open (the server refuses that off
loopback, see [`conveyor_config::ApiConfig::exposure_problem`]).
*/

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use conveyor_config::{ApiRole, ApiToken};

use crate::error::ApiError;

/// The tokens the API accepts.
pub struct Auth {
    tokens: Vec<ApiToken>,
}

impl Auth {
    pub fn new(tokens: Vec<ApiToken>) -> Auth {
        Auth { tokens }
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The role of `given` (the dashboard's login form asks this), none if
    /// it is no configured token. Every token is compared, each in time
    /// that depends only on the configured token's length, so timing tells
    /// nothing of which or how much of a token matched.
    pub fn role_of(&self, given: &str) -> Option<ApiRole> {
        let mut role = None;
        for t in &self.tokens {
            if same_bytes(given.as_bytes(), t.token.as_bytes()) {
                role = role.max(Some(t.role));
            }
        }
        role
    }

    /// The role of the request's token.
    fn role(&self, req: &HttpRequest) -> Result<ApiRole, ApiError> {
        if self.is_open() {
            return Ok(ApiRole::Operate);
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this API needs a token: send `Authorization: Bearer TOKEN`",
            ));
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            })?;
        self.role_of(given)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid for this API"))
    }
}

/// Compares `given` with `secret` in time that depends only on `secret`'s
/// length.
pub fn same_bytes(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = (given.len() != secret.len()) as u8;
    for (i, s) in secret.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ s;
    }
    diff == 0
}

fn require(req: &HttpRequest, need: ApiRole) -> Result<(), ApiError> {
    let auth = req
        .app_data::<web::Data<Auth>>()
        .ok_or_else(|| ApiError::internal("the API has no token table"))?;
    let role = auth.role(req)?;
    if role < need {
        return Err(ApiError::forbidden(
            "this token has the role `read`; starting, cancelling and retrying runs needs `operate`",
        ));
    }
    Ok(())
}

/// A request whose token may read.
pub struct CanRead;

/// A request whose token may also start, cancel and retry runs.
pub struct CanOperate;

impl FromRequest for CanRead {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(require(req, ApiRole::Read).map(|()| CanRead))
    }
}

impl FromRequest for CanOperate {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(require(req, ApiRole::Operate).map(|()| CanOperate))
    }
}

#[cfg(test)]
mod tests {
    use super::same_bytes;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_bytes(b"secret-token", b"secret-token"));
        assert!(!same_bytes(b"secret-tokeX", b"secret-token"));
        assert!(!same_bytes(b"secret-token-longer", b"secret-token"));
        assert!(!same_bytes(b"secret", b"secret-token"));
        assert!(!same_bytes(b"", b"secret-token"));
    }
}
