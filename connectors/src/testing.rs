/*!
Test helpers: a task table read through the registry, as the flow parser
reads it, with every problem's key and line.
*/

use std::path::Path;

use conveyor_diag::diag::{parse_document, Diag, Tbl};
use conveyor_schemas::{SinkSpec, SourceSpec};

use crate::registry;

/// Each problem's key and line.
pub type Found = Vec<(String, Option<usize>)>;

/// Reads `[task]` of `text` with `read`, then reports its unknown keys.
fn read<T>(text: &str, read: impl FnOnce(&mut Tbl) -> Option<T>) -> (Option<T>, Found) {
    let doc = parse_document("f.toml", text).expect("TOML");
    let diag = Diag::new(text);
    let mut root = Tbl::new(&diag, "", doc.as_table(), None);
    let mut task = root.table("task").expect("a [task] table");
    let spec = read(&mut task);
    task.finish();
    root.finish();
    let found = match diag.finish("f.toml") {
        Ok(()) => Vec::new(),
        Err(problems) => problems
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.line))
            .collect(),
    };
    (spec, found)
}

/// An extract's `[task]` table, read by the connector that claims it;
/// relative paths resolve against `/flows`.
pub fn extract(text: &str) -> (Option<SourceSpec>, Found) {
    read(text, |t| registry::read_source(t, Path::new("/flows")))
}

/// A load's `[task]` table, read by the connector that claims it.
pub fn load(text: &str) -> (Option<SinkSpec>, Found) {
    read(text, registry::read_sink)
}

/// `(key, line)` pairs, for comparing.
pub fn at(pairs: &[(&str, usize)]) -> Found {
    pairs
        .iter()
        .map(|(k, l)| (k.to_string(), Some(*l)))
        .collect()
}
