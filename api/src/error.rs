/*!
[`ApiError`]: every error the API answers, as `{"error": CODE, "message":
TEXT}` with its HTTP status. A flow that does not parse also lists its
problems, each with its key and line.
*/

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use conveyor_coordinator::handle::CoordinatorError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// One of `bad_request`, `unauthorized`, `forbidden`,
    /// `adhoc_disabled`, `not_found`, `method_not_allowed`, `conflict`, `too_large`, `invalid`, `not_supported`, `unavailable`,
    /// `internal`.
    pub error: &'static str,
    /// What went wrong and where, in one or more lines.
    pub message: String,
    /// With `invalid` for a flow: every problem of the flow text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<ProblemView>>,
}

/// One problem of a flow text.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProblemView {
    /// The dotted key, e.g. `tasks.load.path`.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// The `Allow` header of a 405: the methods the path takes.
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                problems: None,
            },
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// `POST /runs` with `[api] adhoc = false`.
    pub fn adhoc_disabled() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "adhoc_disabled",
            "this coordinator runs only its registered flows ([api] adhoc = false): start one with POST /api/v1/flows/{flow}/runs",
        )
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405, with the methods the path takes in its `Allow` header.
    pub fn method_not_allowed(message: impl Into<String>, allow: &'static str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        );
        e.allow = Some(allow);
        e
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A flow text that does not parse: 422, with each problem.
    pub fn invalid_flow(problems: &conveyor_flow::Problems) -> ApiError {
        let mut e = ApiError::invalid(format!("invalid flow\n{problems}"));
        e.body.problems = Some(
            problems
                .problems
                .iter()
                .map(|p| ProblemView {
                    key: p.key.clone(),
                    line: p.line,
                    message: p.message.clone(),
                })
                .collect(),
        );
        e
    }

    pub fn code(&self) -> &'static str {
        self.body.error
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.error, self.body.message)
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> ApiError {
        let message = e.to_string();
        let (status, code) = match e {
            CoordinatorError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CoordinatorError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CoordinatorError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            CoordinatorError::NotSupported(_) | CoordinatorError::NoHistory => {
                (StatusCode::NOT_IMPLEMENTED, "not_supported")
            }
            CoordinatorError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            CoordinatorError::NotTaken(_)
            | CoordinatorError::Store(_)
            | CoordinatorError::Internal(_) => {
                tracing::error!(error = %message, "API request failed in the coordinator");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(allow) = self.allow {
            res.insert_header((header::ALLOW, allow));
        }
        res.json(&self.body)
    }
}
