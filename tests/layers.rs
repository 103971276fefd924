//! The crate layering that DESIGN.md promises, checked on the real
//! dependency graph.

use std::process::Command;

/// Every crate in the normal (non-dev) dependency tree of `package`.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_flow_crate_pulls_in_no_arrow_lapin_actix_or_sqlite() {
    let deps = dependencies("conveyor-flow");
    assert!(deps.iter().any(|d| d == "toml_edit"), "{deps:?}");
    for banned in ["arrow", "parquet", "lapin", "actix", "rusqlite", "tokio"] {
        assert!(
            !deps
                .iter()
                .any(|d| d == banned || d.starts_with(&format!("{banned}-"))),
            "conveyor-flow depends on {banned}: {deps:?}"
        );
    }
}

#[test]
fn the_data_plane_pulls_in_no_actix_lapin_or_sqlite() {
    let deps = dependencies("conveyor-etl");
    assert!(deps.iter().any(|d| d == "arrow"), "{deps:?}");
    for banned in ["lapin", "actix", "rusqlite"] {
        assert!(
            !deps
                .iter()
                .any(|d| d == banned || d.starts_with(&format!("{banned}-"))),
            "conveyor-etl depends on {banned}: {deps:?}"
        );
    }
}
