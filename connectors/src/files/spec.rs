/*!
The files connector's wire spec: [`SourceSpec::File`] and
[`SourceSpec::Glob`] (with their [`ReadOptions`]), and [`SinkSpec::File`]
and [`SinkSpec::Dir`] (a [`FileTarget`] under the worker's output root).
The types are in `conveyor-schemas`, the wire contract, so that their JSON
Schemas are generated and checked with every other message.
*/

use conveyor_schemas::{SinkSpec, SourceSpec};

pub use conveyor_schemas::{DataFormat, FileTarget, ReadOptions};

/// Whether a source is a local file or glob.
pub fn is_source(spec: &SourceSpec) -> bool {
    matches!(spec, SourceSpec::File { .. } | SourceSpec::Glob { .. })
}

/// The target of a file sink, and whether it is a directory of parts.
pub fn target(spec: &SinkSpec) -> Option<(&FileTarget, bool)> {
    match spec {
        SinkSpec::File(target) => Some((target, false)),
        SinkSpec::Dir(target) => Some((target, true)),
        _ => None,
    }
}
