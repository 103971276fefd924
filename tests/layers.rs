//! The crate layering that DESIGN.md and ARCHITECTURE.md promise, checked
//! on the real dependency graph (`cargo metadata`, `cargo tree`) and on the
//! sources' own imports:
//! - each workspace crate depends only on the crates of the layers below it
//!   (the table [`LAYERS`]), so no circle can form between crates;
//! - the HTTP API, the dashboard and the coordinator compile without the
//!   data plane (no Arrow, Parquet, DataFusion, PostgreSQL client or lapin);
//! - the worker is the only runtime crate that uses the data plane;
//! - inside every crate, the top-level modules import one another without a
//!   circle, and none imports an item defined in its crate root (`lib.rs`):
//!   the root only declares modules and re-exports. (Test modules may use
//!   anything.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each workspace crate, bottom up, with the workspace crates it may depend
/// on (normal dependencies). A crate may only name crates listed before it.
const LAYERS: &[(&str, &[&str])] = &[
    ("conveyor-schemas", &[]),
    ("conveyor-diag", &["conveyor-schemas"]),
    ("conveyor-etl", &["conveyor-schemas"]),
    (
        "conveyor-connectors",
        &["conveyor-schemas", "conveyor-diag", "conveyor-etl"],
    ),
    (
        "conveyor-flow",
        &["conveyor-schemas", "conveyor-diag", "conveyor-connectors"],
    ),
    (
        "conveyor-config",
        &["conveyor-schemas", "conveyor-diag", "conveyor-flow"],
    ),
    ("conveyor-transport", &["conveyor-schemas"]),
    (
        "conveyor-coordinator",
        &[
            "conveyor-schemas",
            "conveyor-flow",
            "conveyor-config",
            "conveyor-transport",
        ],
    ),
    (
        "conveyor-worker",
        &[
            "conveyor-schemas",
            "conveyor-config",
            "conveyor-etl",
            "conveyor-connectors",
            "conveyor-transport",
        ],
    ),
    (
        "conveyor-api",
        &[
            "conveyor-schemas",
            "conveyor-flow",
            "conveyor-config",
            "conveyor-coordinator",
        ],
    ),
    (
        "conveyor-dashboard",
        &[
            "conveyor-schemas",
            "conveyor-flow",
            "conveyor-config",
            "conveyor-coordinator",
            "conveyor-api",
        ],
    ),
    (
        "conveyor-node",
        &[
            "conveyor-schemas",
            "conveyor-flow",
            "conveyor-config",
            "conveyor-connectors",
            "conveyor-transport",
            "conveyor-coordinator",
            "conveyor-worker",
            "conveyor-api",
            "conveyor-dashboard",
        ],
    ),
    ("conveyor-bench-ceiling", &[]),
];

/// The data plane and the broker client: what the control plane's crates
/// must compile without.
const DATA_PLANE: &[&str] = &[
    "arrow",
    "parquet",
    "datafusion",
    "tokio-postgres",
    "postgres",
    "lapin",
    "conveyor-etl",
];

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Every crate in the normal (non-dev) dependency tree of `package`, built
/// alone (so with only the features it asks for itself).
fn dependencies(package: &str) -> Vec<String> {
    let out = cargo()
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

fn names_any(deps: &[String], banned: &str) -> bool {
    deps.iter()
        .any(|d| d == banned || d.starts_with(&format!("{banned}-")))
}

/// The workspace's crates: name, folder, and the workspace crates each
/// names as a normal dependency.
fn workspace() -> Vec<(String, PathBuf, BTreeSet<String>)> {
    let out = cargo()
        .args([
            "metadata",
            "--offline",
            "--format-version",
            "1",
            "--no-deps",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        // The root package is the integration tests: it may use anything.
        .filter(|p| p["name"] != "conveyor")
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest"));
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| members.contains(*d))
                .map(str::to_string)
                .collect();
            (name, manifest.parent().expect("folder").to_path_buf(), deps)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let crates = workspace();
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    for (i, (name, allowed)) in LAYERS.iter().enumerate() {
        for dep in *allowed {
            assert!(
                rank.get(dep).is_some_and(|r| *r < i),
                "the table is wrong: {name} may depend on {dep}, which is not below it"
            );
        }
    }
    for (name, _, deps) in &crates {
        let allowed = LAYERS
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not in tests/layers.rs LAYERS: give it a layer"))
            .1;
        for dep in deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} depends on {dep}, which its layer does not allow (tests/layers.rs LAYERS)"
            );
        }
    }
}

#[test]
fn the_api_dashboard_and_coordinator_compile_without_the_data_plane() {
    for package in ["conveyor-api", "conveyor-dashboard", "conveyor-coordinator"] {
        let deps = dependencies(package);
        assert!(
            deps.iter().any(|d| d == "conveyor-coordinator"),
            "{package}: {deps:?}"
        );
        assert_none_of(package, &deps, DATA_PLANE);
    }
}

#[test]
fn the_worker_is_the_only_runtime_crate_that_uses_the_data_plane() {
    assert!(names_any(&dependencies("conveyor-worker"), "conveyor-etl"));
    for package in ["conveyor-transport", "conveyor-config"] {
        assert_none_of(package, &dependencies(package), DATA_PLANE);
    }
}

#[test]
fn the_flow_crate_pulls_in_no_arrow_lapin_actix_or_sqlite() {
    let deps = dependencies("conveyor-flow");
    assert!(deps.iter().any(|d| d == "toml_edit"), "{deps:?}");
    assert_none_of(
        "conveyor-flow",
        &deps,
        &["arrow", "parquet", "lapin", "actix", "rusqlite", "tokio"],
    );
}

#[test]
fn the_data_plane_pulls_in_no_actix_lapin_or_sqlite() {
    let deps = dependencies("conveyor-etl");
    assert!(deps.iter().any(|d| d == "arrow"), "{deps:?}");
    assert_none_of("conveyor-etl", &deps, &["lapin", "actix", "rusqlite"]);
}

/// `text` without its comments (line, doc and block), so that a doc link
/// to `crate::x` is not taken for an import.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with('"') {
            // Skip a string literal (escapes included).
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            rest = rest.get(i + 1..).unwrap_or("");
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `code` without its `#[cfg(test)]` modules: a test may build any of its
/// crate's types, wherever they are defined.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        if !after.trim_start().starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The names `code` reaches through `crate::`: `crate::a::b` gives `a`, and
/// `crate::{a::x, b}` gives `a` and `b`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue; // `$crate::`, `other_crate::`, `foo::crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        names.insert(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
                if depth == 0 {
                    names.insert(ident(group[start..j].trim()));
                    break;
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

/// The Rust files of `src`, by the top-level module each belongs to (the
/// crate root's files under `""`).
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut by_module: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let module = match first.as_str() {
            "lib" | "main" => String::new(),
            // A binary's own folder (src/bin/NAME.rs) is a crate of its own.
            "bin" => continue,
            _ => first,
        };
        by_module.entry(module).or_default().push(file);
    }
    by_module
}

/// The items a crate root defines itself (not its `pub use` re-exports).
fn root_items(root: &str) -> BTreeSet<String> {
    let kinds = ["struct", "enum", "fn", "trait", "type", "const", "static"];
    code_of(root)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| w.starts_with("pub"));
            let kind = words.next()?;
            kinds
                .contains(&kind)
                .then(|| words.next())
                .flatten()
                .map(|n| {
                    n.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect()
                })
        })
        .collect()
}

/// A circle in `edges`, as the modules around it, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut found = path[at..].to_vec();
            found.push(m.to_string());
            return Some(found);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, path) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

#[test]
fn no_crate_has_an_import_circle_or_an_upward_import() {
    let mut problems = Vec::new();
    for (name, dir, _) in workspace() {
        let src = dir.join("src");
        let by_module = modules(&src);
        let root = ["lib.rs", "main.rs"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(src.join(f)).ok())
            .collect::<String>();
        let defined_in_root = root_items(&root);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, files) in by_module.iter().filter(|(m, _)| !m.is_empty()) {
            for file in files {
                let code =
                    without_tests(&code_of(&std::fs::read_to_string(file).expect("readable")));
                for used in crate_paths(&code) {
                    if by_module.contains_key(&used) {
                        if &used != module {
                            edges.entry(module.clone()).or_default().insert(used);
                        }
                    } else if defined_in_root.contains(&used) {
                        problems.push(format!(
                            "{name}: {} imports `{used}` from the crate root, which defines it: move it into a module of its own",
                            file.display()
                        ));
                    }
                }
            }
        }
        if let Some(found) = circle(&edges) {
            problems.push(format!(
                "{name}: the modules import one another in a circle: {}",
                found.join(" -> ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_source_scan_sees_imports_circles_and_root_items() {
    let code = code_of(
        "//! see [`crate::doc`]\nuse crate::{a::X, b};\nfn f() { crate::c::g(); \"crate::d\"; }\n/* crate::e */",
    );
    assert_eq!(
        crate_paths(&code),
        ["a", "b", "c"].map(String::from).into_iter().collect()
    );
    assert_eq!(
        root_items("pub mod m;\npub use m::Y;\npub struct Workspace;\npub(crate) fn run() {}\n"),
        ["Workspace", "run"].map(String::from).into_iter().collect()
    );
    let edges = |pairs: &[(&str, &str)]| {
        let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            e.entry(a.to_string()).or_default().insert(b.to_string());
        }
        e
    };
    assert_eq!(
        circle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(circle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        without_tests("use crate::a;\n#[cfg(test)]\nmod tests { use crate::{b, c}; fn t() { if x { } } }\nuse crate::d;"),
        "use crate::a;\n\nuse crate::d;"
    );
}

/// Fails if `deps` (of `package`) holds any of `banned`, or a crate named
/// after one (`arrow-array`).
fn assert_none_of(package: &str, deps: &[String], banned: &[&str]) {
    for banned in banned {
        assert!(
            !names_any(deps, banned),
            "{package} depends on {banned} (cargo tree -p {package} -e normal): {deps:?}"
        );
    }
}

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
