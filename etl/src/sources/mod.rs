/*!
Sources: where a task's rows come from, read batch by batch.

Every source opens into [`Batches`]: a schema plus an iterator of record
batches, so memory stays bounded by the batch size, not the file size.

# Layout
- this module: [`open`], the engine's own sources, or the connector's,
  from the worker's registry;
- [`source`](mod@source): the [`Source`] trait, [`Batches`] and [`ReadContext`];
- [`file`]: the file readers the connectors' sources share
  ([`open_file`]): a whole file, or one partition of it (a byte range cut
  at record boundaries, or a run of Parquet row groups), in any format;
- [`columns`]: declared schemas and column checks;
- [`csv`], [`jsonl`], [`parquet`]: the file formats;
- [`artifact`]: an Arrow IPC artifact in the store, or the parts of one
  table read one after another;

A file, a glob, a URL or a database is a connector's (in
`conveyor-connectors`): see [`crate::workspace`].
*/

pub mod artifact;
pub mod columns;
pub mod csv;
pub mod file;
pub mod jsonl;
pub mod parquet;

use conveyor_schemas::SourceSpec;

use crate::error::{EtlError, Result};
use crate::workspace::Connectors;

pub use crate::source::{Batches, ReadContext, Source, BATCH_ROWS};
pub use columns::field_list;
pub use file::{open_file, open_fixed, open_whole, SourceFile};

/// The source a spec names: the engine's own, or a connector's.
pub fn source(spec: &SourceSpec, connectors: &Connectors) -> Result<Box<dyn Source>> {
    Ok(match spec {
        SourceSpec::Artifact(artifact) => Box::new(artifact::ArtifactSource(artifact.clone())),
        SourceSpec::Parts { .. } => {
            return Err(EtlError::Spec(
                "a parts source is only read by a gather, with no steps".into(),
            ))
        }
        SourceSpec::Tables { tables } => match tables.as_slice() {
            [one] => Box::new(artifact::ArtifactsSource {
                name: one.name.clone(),
                artifacts: one.artifacts.clone(),
            }),
            _ => {
                return Err(EtlError::Spec(format!(
                    "{} named tables are read by a SQL step: the first step must be SQL",
                    tables.len()
                )))
            }
        },
        // A connector's source.
        _ => return connectors.source(spec),
    })
}

/// Opens the source a spec names.
pub fn open(spec: &SourceSpec, connectors: &Connectors, cx: &ReadContext) -> Result<Batches> {
    source(spec, connectors)?.open(cx)
}
