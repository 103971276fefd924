/*!
Arrow IPC artifacts in the store (`{flow_run}/{task}.arrow`): what a task
leaves for the tasks downstream. The first attempt to commit one wins; a
later one keeps the first (see [`crate::commit`]).
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::datatypes::SchemaRef;
use conveyor_schemas::{ArtifactRef, TaskOutput};

use super::{write_err, BatchIter, PendingOutput, Sink};
use crate::commit;
use crate::error::{EtlError, Result};
use crate::store::{artifact_key, PendingObject};
use crate::{Attempt, Workspace};

pub struct ArtifactSink<'a> {
    at: &'a Attempt<'a>,
    key: String,
    pending: Box<dyn PendingObject>,
}

impl<'a> ArtifactSink<'a> {
    pub fn create(ws: &'a Workspace, at: &'a Attempt<'a>) -> Result<Self> {
        let key = artifact_key(at.flow_run, at.task)?;
        let pending = ws.store.create(&key, &at.tag(), at.may_have_leftovers())?;
        Ok(ArtifactSink { at, key, pending })
    }
}

impl<'a> Sink<'a> for ArtifactSink<'a> {
    fn write(
        mut self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let rows = write_ipc(
            self.pending.writer()?,
            self.pending.tmp_path(),
            schema,
            batches,
        )?;
        self.pending.sync()?;
        Ok(Box::new(PendingArtifact { sink: *self, rows }))
    }
}

struct PendingArtifact<'a> {
    sink: ArtifactSink<'a>,
    rows: u64,
}

impl PendingOutput for PendingArtifact<'_> {
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput> {
        let ArtifactSink { at, key, pending } = self.sink;
        if !commit::first_wins(pending)? {
            tracing::info!(
                flow_run = at.flow_run,
                task = at.task,
                "Artifact already committed by another attempt; keeping the first"
            );
        }
        Ok(TaskOutput {
            rows_in,
            rows_out: self.rows,
            artifact: Some(ArtifactRef {
                path: key.clone(),
                rows: self.rows,
            }),
            location: key,
            bytes_in: None,
            bytes_out: None,
        })
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
