/*!
Reading what a client sends, with one clear error that names what and
where: JSON bodies under the size limit ([`read_json`]), query strings with
only known keys ([`Query`]), and ids in paths ([`run_id`], [`flow_name`],
[`task_name`]).
*/

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use conveyor_schemas::names;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.trim_start().starts_with("application/json") {
            return Err(ApiError::bad_request(format!(
                "the body must be JSON (Content-Type: application/json), not `{ct}`"
            )));
        }
    }
    let too_large = || {
        ApiError::too_large(format!(
            "the body is larger than the limit of {limit} bytes ([api] max_body)"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    // serde reads a struct from an array too (`[]` would be a run with
    // every field defaulted): every body of this API is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the body must be a JSON object (`{...}`)",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))
}

/// A query string, checked against the keys an endpoint knows.
pub struct Query {
    values: BTreeMap<String, String>,
}

impl Query {
    pub fn parse(req: &HttpRequest, known: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> =
            web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                .map_err(|e| {
                    ApiError::bad_request(format!("the query string does not parse: {e}"))
                })?
                .into_inner();
        let mut values = BTreeMap::new();
        for (k, v) in pairs {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{}`; this endpoint takes {}",
                    shorten(&k),
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if values.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{k}` is given twice"
                )));
            }
        }
        Ok(Query { values })
    }

    /// The value of `key`; an empty value counts as not given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn uint(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "query parameter `{key}` = `{}` must be an integer from {min} to {max}",
                shorten(text)
            ))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "query parameter `{key}` = `{}` must be true or false",
                shorten(other)
            ))),
        }
    }

    /// A time as ms since the epoch, or RFC 3339 in UTC
    /// (`2026-11-30T09:00:00Z`).
    pub fn time_ms(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        if let Ok(ms) = text.parse::<u64>() {
            return Ok(Some(ms));
        }
        humantime::parse_rfc3339_weak(text)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d: Duration| Some(d.as_millis() as u64))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter `{key}` = `{}` must be ms since the epoch or an RFC 3339 time in UTC, e.g. 2026-11-30T09:00:00Z",
                    shorten(text)
                ))
            })
    }
}

/// At most 80 characters of what a client sent, for an error message.
pub fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MAX).collect();
    s.push('…');
    s
}

/// The `{id}` of a path: a run id as the coordinator makes them.
pub fn run_id(req: &HttpRequest) -> Result<String, ApiError> {
    let id = req.match_info().query("id");
    names::check_run_id("run id", id).map_err(|_| {
        ApiError::bad_request(format!(
            "run id `{}` must be 1-{} characters of letters, digits, `_`, `-` or `.`",
            shorten(id).escape_debug(),
            names::MAX_ID
        ))
    })?;
    Ok(id.to_string())
}

/// The `{flow}` of a path.
pub fn flow_name(req: &HttpRequest) -> Result<String, ApiError> {
    let flow = req.match_info().query("flow");
    names::check_name("flow name", flow).map_err(|_| {
        ApiError::bad_request(format!(
            "flow name `{}` {}",
            shorten(flow).escape_debug(),
            names::NAME_RULE
        ))
    })?;
    Ok(flow.to_string())
}

/// The `{task}` of a path (a partition is `NAME@N`).
pub fn task_name(req: &HttpRequest) -> Result<String, ApiError> {
    let task = req.match_info().query("task");
    names::check_task_name("task name", task).map_err(|_| {
        ApiError::bad_request(format!(
            "task name `{}` {}, optionally followed by `@N` for a partition",
            shorten(task).escape_debug(),
            names::NAME_RULE
        ))
    })?;
    Ok(task.to_string())
}
