/*!
Arrow IPC artifacts in the store (`{flow_run}/{task}.arrow`): what a task
leaves for the tasks downstream. The first attempt to commit one wins; a
later one keeps the first (see [`crate::commit`]).
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::datatypes::SchemaRef;

use super::writer::{Destination, Encoder, EncodingSink};
use crate::attempt::Attempt;
use crate::error::{EtlError, Result};
use crate::sink::{write_err, BatchIter};
use crate::store::artifact_key;
use crate::workspace::Workspace;

/// The attempt's artifact, as a sink.
pub fn sink<'a>(ws: &'a Workspace, at: &'a Attempt<'a>) -> Result<EncodingSink<'a, Ipc>> {
    let key = artifact_key(at.flow_run, at.task)?;
    let destination = Destination::store(ws, at, "Artifact", key)?;
    Ok(EncodingSink::new(at, Ipc, destination))
}

/// Arrow IPC files, as an [`Encoder`].
#[derive(Clone, Copy, Debug)]
pub struct Ipc;

impl Encoder for Ipc {
    fn encode(
        &self,
        file: File,
        path: &Path,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<u64> {
        write_ipc(file, path, schema, batches)
    }
}

/// Streams `batches` into an Arrow IPC file. Returns the rows written.
pub fn write_ipc(file: File, path: &Path, schema: SchemaRef, batches: BatchIter) -> Result<u64> {
    let mut writer = arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), &schema)
        .map_err(write_err(path))?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(write_err(path))?;
    }
    writer.finish().map_err(write_err(path))?;
    let mut inner = writer.into_inner().map_err(write_err(path))?;
    inner.flush().map_err(|e| EtlError::io(path, e))?;
    Ok(rows)
}
