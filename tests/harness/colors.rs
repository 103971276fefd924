//! The colors ETL (extract the repository's CSV, drop a column, load it),
//! the flow most tests run, and its promise: what "nothing lost, nothing
//! doubled" means once it finished.

use std::path::{Path, PathBuf};

use conveyor_schemas::TaskKind;

use super::broker::{names_of, queue_depth_at};
use super::workdir::{repo_root, tmp_files, TestDir};

/// The colors CSV with its HEX column removed, as the load must write it.
pub fn expected_colors_without_hex() -> String {
    let input = std::fs::read_to_string(repo_root().join("examples/data/colors.csv")).unwrap();
    input
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ',');
            let name = parts.next().unwrap();
            let _hex = parts.next();
            format!("{name},{}\n", parts.next().unwrap())
        })
        .collect()
}

/// The promise for one colors flow on the broker at `url`: the output holds
/// exactly the expected rows, no temporary file is left under `storage`, the
/// task queues are drained and nothing was dead-lettered.
pub fn assert_colors_promise(url: &str, ns: &str, storage: &Path) {
    let written = std::fs::read_to_string(storage.join("out/colors.csv")).unwrap();
    assert_eq!(
        written,
        expected_colors_without_hex(),
        "rows lost or duplicated"
    );
    assert!(tmp_files(storage).is_empty(), "{:?}", tmp_files(storage));
    for kind in TaskKind::ALL {
        assert_eq!(
            queue_depth_at(url, &names_of(ns).task_queue(kind)),
            0,
            "{kind} queue not drained"
        );
    }
    assert_eq!(
        queue_depth_at(url, &names_of(ns).dead_letter_queue()),
        0,
        "unexpected dead letters"
    );
}

/// A flow file for the colors ETL, with extract reading the repository's CSV.
pub fn colors_flow(dir: &TestDir, name: &str, extra_flow: &str) -> PathBuf {
    let csv = repo_root().join("examples/data/colors.csv");
    dir.write(
        &format!("{name}.toml"),
        &format!(
            "[flow]\nname = \"{name}\"\n{extra_flow}\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n\n[tasks.transform]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"HEX\"] }}]\n\n[tasks.load]\nkind = \"load\"\ninput = \"transform\"\npath = \"colors.csv\"\n",
            csv.display()
        ),
    )
}
