/*!
The HTTP connector's wire spec: [`SourceSpec::Url`], an http(s) URL and
the [`conveyor_schemas::ReadOptions`] of what it returns. The type is in
`conveyor-schemas`, the wire contract.
*/

use conveyor_schemas::SourceSpec;

/// Whether a source is a URL.
pub fn is_source(spec: &SourceSpec) -> bool {
    matches!(spec, SourceSpec::Url { .. })
}
