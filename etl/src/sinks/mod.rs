/*!
Sinks: where a task's rows go.

A [`Sink`] consumes a schema and a stream of batches into a
[`PendingOutput`]: written and durable, but not visible. Committing it puts
the output in place under the commit protocol (see [`crate::commit`]), so
that of all the attempts of one task run exactly one output wins.

# Layout
- this module: the [`Sink`] and [`PendingOutput`] traits, [`open`] (one arm
  per [`SinkSpec`] variant), and [`encode`], the file formats by name;
- [`csv`], [`jsonl`], [`parquet`]: the file formats' writers;
- [`artifact`]: Arrow IPC artifacts in the store, for downstream tasks;
- [`file`](mod@file): a file under the output root, and one part of a partitioned
  load (into the store, for the gather);
- [`postgres`]: a PostgreSQL table, copied in one transaction that first
  takes the task run's fence row (an append straight into the table,
  `replace` and `upsert` through a staging table).

A new connector is one file here implementing [`Sink`] and one [`SinkSpec`]
arm.
*/

pub mod artifact;
pub mod csv;
pub mod file;
pub mod jsonl;
pub mod parquet;
pub mod postgres;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use conveyor_schemas::{DataFormat, SinkSpec, TaskOutput};

use crate::error::{EtlError, Result};
use crate::{Attempt, Workspace};

/// The batches a sink consumes.
pub type BatchIter<'b> = &'b mut dyn Iterator<Item = Result<RecordBatch>>;

/// Something a task writes rows to.
pub trait Sink<'a> {
    /// Streams the batches into an output that nobody sees yet. It is
    /// durable when this returns, so that the sync overlaps the worker's
    /// wait at the commit gate rather than following it.
    fn write(
        self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>>;
}

/// A written output, waiting for its commit.
pub trait PendingOutput {
    /// Puts the output in place, fenced against every other attempt of the
    /// task run, and returns what the task reports. `rows_in`: the rows the
    /// task read.
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput>;
}

/// The sink a spec names, for one attempt.
pub fn open<'a>(
    spec: &'a SinkSpec,
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
) -> Result<Box<dyn Sink<'a> + 'a>> {
    Ok(match spec {
        SinkSpec::Artifact => Box::new(artifact::ArtifactSink::create(ws, at)?),
        SinkSpec::File(target) => Box::new(file::FileSink::create(ws, at, target)?),
        SinkSpec::Part { target, .. } => Box::new(file::PartSink::create(ws, at, target)?),
        SinkSpec::Postgres(target) => Box::new(postgres::PgSink::new(ws, at, target)?),
        SinkSpec::Dir(_) => {
            return Err(EtlError::Spec(
                "a directory of parts is only written by a gather, from a parts source".into(),
            ))
        }
    })
}

/// Streams `batches` into `file` in `format`. Returns the rows written.
pub fn encode(
    format: DataFormat,
    header: bool,
    file: File,
    path: &Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    let out = BufWriter::with_capacity(1 << 20, file);
    match format {
        DataFormat::Csv => csv::write(out, header, path, schema, batches),
        DataFormat::Parquet => parquet::write(out, path, schema, batches),
        DataFormat::Jsonl => jsonl::write(out, path, batches),
    }
}

pub(crate) fn write_err(path: &Path) -> impl Fn(arrow::error::ArrowError) -> EtlError + '_ {
    move |e| match e {
        arrow::error::ArrowError::IoError(_, io) => EtlError::io(path, io),
        other => EtlError::Internal(format!("{}: {other}", path.display())),
    }
}
