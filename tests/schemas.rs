//! The checked-in JSON Schemas must match the Rust message types.
//! After changing a type, regenerate them with
//! `cargo run -p conveyor-node -- schemas --out schemas/json`.

use crate::harness::workdir::repo_root;

#[test]
fn json_schemas_match_the_rust_types() {
    let dir = repo_root().join("schemas/json");
    let mut drift = Vec::new();
    let generated = conveyor_schemas::json_schemas();
    for (name, text) in &generated {
        let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if &on_disk != text {
            drift.push(name.to_string());
        }
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        generated.len(),
        "schemas/json holds files that no type generates"
    );
    assert!(
        drift.is_empty(),
        "schemas/json is out of date for {drift:?}; run `cargo run -p conveyor-node -- schemas --out schemas/json`"
    );
}

/// The checked-in OpenAPI document must match the API's handlers (the
/// served one is checked against it too, in `api.rs`).
#[test]
fn the_openapi_document_matches_the_handlers() {
    let out = std::process::Command::new(crate::harness::processes::conveyor_bin())
        .args(["schemas", "--openapi"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let on_disk =
        std::fs::read_to_string(repo_root().join("schemas/openapi.json")).unwrap_or_default();
    assert!(
        on_disk.as_bytes() == out.stdout.as_slice(),
        "schemas/openapi.json is out of date; run `cargo run -p conveyor-node -- schemas --openapi > schemas/openapi.json`"
    );
}
