/*!
The [`Sink`] and [`PendingOutput`] traits: a sink consumes a schema and a
stream of batches into an output that is written and durable but not
visible; committing it puts the output in place under the commit protocol
(see [`crate::commit`]).
*/

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use conveyor_schemas::TaskOutput;

use crate::error::{EtlError, Result};

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

/// An Arrow error while writing `path`, as an I/O error where it is one.
pub fn write_err(path: &Path) -> impl Fn(arrow::error::ArrowError) -> EtlError + '_ {
    move |e| match e {
        arrow::error::ArrowError::IoError(_, io) => EtlError::io(path, io),
        other => EtlError::Internal(format!("{}: {other}", path.display())),
    }
}
