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

/// Fails if `deps` (of `package`) holds any of `banned`, or a crate named
/// after one (`arrow-array`).
fn assert_none_of(package: &str, deps: &[String], banned: &[&str]) {
    for banned in banned {
        assert!(
            !deps
                .iter()
                .any(|d| d == banned || d.starts_with(&format!("{banned}-"))),
            "{package} depends on {banned}: {deps:?}"
        );
    }
}

/// The data plane, and the crates above the flow parser: what the API, the
/// dashboard and `conveyor validate` must not compile through it.
const DATA_PLANE: &[&str] = &[
    "arrow",
    "parquet",
    "datafusion",
    "postgres",
    "tokio-postgres",
    "lapin",
    "conveyor-etl",
];

#[test]
fn the_connectors_options_and_the_flow_parser_compile_without_the_data_plane() {
    // Without the `runtime` feature a connector is its options and specs.
    let deps = dependencies("conveyor-connectors");
    assert!(deps.iter().any(|d| d == "conveyor-diag"), "{deps:?}");
    assert_none_of("conveyor-connectors", &deps, DATA_PLANE);
    assert_none_of("conveyor-connectors", &deps, &["conveyor-flow"]);
    let deps = dependencies("conveyor-flow");
    assert!(deps.iter().any(|d| d == "conveyor-connectors"), "{deps:?}");
    assert_none_of("conveyor-flow", &deps, DATA_PLANE);
    let deps = dependencies("conveyor-diag");
    assert_none_of(
        "conveyor-diag",
        &deps,
        &["conveyor-flow", "conveyor-connectors", "arrow"],
    );
}

#[test]
fn the_data_plane_does_not_import_the_connectors_or_the_flow_parser_above_it() {
    let deps = dependencies("conveyor-etl");
    assert_none_of(
        "conveyor-etl",
        &deps,
        &["conveyor-connectors", "conveyor-flow", "postgres", "ureq"],
    );
}

/// The `use` lines of a crate's modules that import from above them:
/// `use super::X` where `X` is not a sibling module (an item of the parent
/// module), and `use crate::X` where `X` is not a module (an item of the
/// crate root). Test modules' `use super::*;` are their own parent's.
fn upward_imports(src: &std::path::Path) -> Vec<String> {
    /// A module of the directory: its own file or folder, or one declared
    /// inline in the directory's `lib.rs` or `mod.rs` (`mod list { ... }`).
    fn is_module(dir: &std::path::Path, name: &str) -> bool {
        let inline = format!("mod {name} {{");
        dir.join(format!("{name}.rs")).is_file()
            || dir.join(name).join("mod.rs").is_file()
            || ["lib.rs", "mod.rs"]
                .iter()
                .any(|f| std::fs::read_to_string(dir.join(f)).is_ok_and(|t| t.contains(&inline)))
    }
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file");
        let dir = file.parent().expect("a directory");
        // A `mod.rs`'s children are in its directory; another file's
        // siblings are too. A file's parent module is the one that
        // declares it: for `x/mod.rs`, the module of `x`'s directory.
        let siblings = if file.file_name().is_some_and(|n| n == "mod.rs") {
            dir.parent().expect("a parent")
        } else {
            dir
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let (base, rest) = if let Some(rest) = line.strip_prefix("use super::") {
                (siblings, rest)
            } else if let Some(rest) = line.strip_prefix("use crate::") {
                (src, rest)
            } else {
                continue;
            };
            if rest == "*;" {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || !is_module(base, &name) {
                found.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    found
}

#[test]
fn the_data_plane_and_the_connectors_have_no_upward_imports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["etl", "connectors"] {
        let found = upward_imports(&root.join(krate).join("src"));
        assert!(
            found.is_empty(),
            "imports from a parent module or the crate root in {krate}:\n{}",
            found.join("\n")
        );
    }
}
