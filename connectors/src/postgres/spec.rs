/*!
The PostgreSQL connector's wire spec: [`SourceSpec::Postgres`] (a query,
read with `COPY (query) TO STDOUT (FORMAT binary)`, optionally one key
range of it) and [`SinkSpec::Postgres`] (a [`PgTarget`] table and its
[`PgMode`]). The types are in `conveyor-schemas`, the wire contract, so
that their JSON Schemas are generated and checked with every other message.
*/

use conveyor_schemas::{DataFormat, FileTarget, SinkSpec, SourceSpec};

pub use conveyor_schemas::{PgMode, PgTarget};

/// Whether a source is a PostgreSQL query.
pub fn is_source(spec: &SourceSpec) -> bool {
    matches!(spec, SourceSpec::Postgres { .. })
}

/// The table of a PostgreSQL sink.
pub fn target(spec: &SinkSpec) -> Option<&PgTarget> {
    match spec {
        SinkSpec::Postgres(target) => Some(target),
        _ => None,
    }
}

/// The parts of a partitioned load into a table: Parquet files, lossless
/// for every type the sink loads; its gather copies them all in one
/// transaction.
pub fn parts_target() -> FileTarget {
    FileTarget {
        format: DataFormat::Parquet,
        path: "postgres-part.parquet".into(),
        header: false,
    }
}
