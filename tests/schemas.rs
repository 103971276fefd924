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
