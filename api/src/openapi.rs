/*!
The OpenAPI document: paths and bodies from the handlers' `utoipa`
annotations, plus the schemas of the wire contract (`RunReport` and what it
holds) from `conveyor-schemas`' JSON Schemas, so that each type is
described once. Checked in as `schemas/openapi.json`; regenerate it with
`cargo run -p conveyor-node -- schemas --openapi > schemas/openapi.json`.
*/

use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ProblemView};
use crate::routes;
use crate::types::*;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor API",
        description = "Operate runs on a Conveyor coordinator node. Send `Authorization: Bearer TOKEN`; a `read` token reads, an `operate` token also starts, cancels and retries runs. Errors are `{\"error\": CODE, \"message\": TEXT}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::health, routes::flows, routes::trigger, routes::submit, routes::list_runs,
        routes::get_run, routes::run_events, routes::cancel, routes::retry, routes::logs,
        routes::nodes, routes::openapi
    ),
    components(schemas(
        ErrorBody, ProblemView, Health, Flows, Flow, TriggerRequest, AdHocRequest, RunCreated,
        RunRetried, RunCancelled, RunList, RunRow, RunDetail, Attempt, Logs, Line, Nodes, Node
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The OpenAPI document, as served and as checked in.
pub fn document() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let contract = serde_json::to_value(schemars::schema_for!(conveyor_schemas::RunReport))
        .unwrap_or(Value::Null);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        let mut contract = rewrite_refs(contract);
        if let Some(defs) = contract
            .as_object_mut()
            .and_then(|c| c.remove("$defs"))
            .and_then(|d| d.as_object().cloned())
        {
            schemas.extend(defs);
        }
        if let Some(c) = contract.as_object_mut() {
            c.remove("$schema");
        }
        schemas.insert("RunReport".into(), contract);
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// JSON Schema's `#/$defs/X` is OpenAPI's `#/components/schemas/X`.
fn rewrite_refs(v: Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("#/$defs/") => {
            Value::String(s.replacen("#/$defs/", "#/components/schemas/", 1))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(rewrite_refs).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, rewrite_refs(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "unresolved $ref to {name}");
        }
        assert!(!text.contains("#/$defs/"));
        for path in ["/api/v1/runs", "/api/v1/runs/{id}/events", "/api/v1/nodes"] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
