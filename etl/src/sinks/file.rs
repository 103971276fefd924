/*!
Files in the load formats: a file under the output root, replaced at
commit under the task run's fence; or one part of a partitioned load, put
into the store for the gather (the first attempt to commit it wins).
*/

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use conveyor_schemas::{ArtifactRef, FileTarget, TaskOutput};

use super::{encode, BatchIter, PendingOutput, Sink};
use crate::commit::{self, Pending};
use crate::error::Result;
use crate::store::{part_key, PendingObject};
use crate::{paths, Attempt, Workspace};

/// A file under the output root.
pub struct FileSink<'a> {
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &'a FileTarget,
    final_path: PathBuf,
    pending: Pending,
}

impl<'a> FileSink<'a> {
    pub fn create(ws: &'a Workspace, at: &'a Attempt<'a>, target: &'a FileTarget) -> Result<Self> {
        let final_path = paths::confine(&ws.output_root, "load path", &target.path)?;
        paths::check_not_a_directory(&final_path, &target.path)?;
        let pending = Pending::file(&final_path, &at.tag())?.sweeping(at.may_have_leftovers());
        Ok(FileSink {
            ws,
            at,
            target,
            final_path,
            pending,
        })
    }
}

impl<'a> Sink<'a> for FileSink<'a> {
    fn write(
        mut self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let rows = encode_target(
            self.target,
            self.pending.writer()?,
            self.pending.tmp_path(),
            schema,
            batches,
        )?;
        // Durable before the commit gate, so the fsync overlaps the worker's
        // wait for its start to be routed.
        self.pending.sync()?;
        Ok(Box::new(PendingLoad { sink: *self, rows }))
    }
}

struct PendingLoad<'a> {
    sink: FileSink<'a>,
    rows: u64,
}

impl PendingOutput for PendingLoad<'_> {
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput> {
        let FileSink {
            ws,
            at,
            final_path,
            pending,
            ..
        } = self.sink;
        let output = TaskOutput {
            rows_in,
            rows_out: self.rows,
            artifact: None,
            location: final_path.display().to_string(),
            bytes_in: None,
            bytes_out: None,
        };
        commit::commit_fenced(ws, at, &output, || pending.commit_replace(&final_path))?;
        Ok(output)
    }
}

/// One partition of a partitioned load, in the load's format, into the
/// artifact store for the gather.
pub struct PartSink<'a> {
    target: &'a FileTarget,
    key: String,
    pending: Box<dyn PendingObject>,
}

impl<'a> PartSink<'a> {
    pub fn create(ws: &'a Workspace, at: &'a Attempt<'a>, target: &'a FileTarget) -> Result<Self> {
        // The part checks the load's path too: fail before the gather would.
        paths::confine(&ws.output_root, "load path", &target.path)?;
        let key = part_key(at.flow_run, at.task, target.format.as_str())?;
        let pending = ws.store.create(&key, &at.tag(), at.may_have_leftovers())?;
        Ok(PartSink {
            target,
            key,
            pending,
        })
    }
}

impl<'a> Sink<'a> for PartSink<'a> {
    fn write(
        mut self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let rows = encode_target(
            self.target,
            self.pending.writer()?,
            self.pending.tmp_path(),
            schema,
            batches,
        )?;
        self.pending.sync()?;
        Ok(Box::new(PendingPart { sink: *self, rows }))
    }
}

struct PendingPart<'a> {
    sink: PartSink<'a>,
    rows: u64,
}

impl PendingOutput for PendingPart<'_> {
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput> {
        let PartSink { key, pending, .. } = self.sink;
        commit::first_wins(pending)?;
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

/// Streams `batches` in the target's format into `file`, a pending
/// output's temporary file at `tmp`.
fn encode_target(
    target: &FileTarget,
    file: std::fs::File,
    tmp: &std::path::Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    encode(target.format, target.header, file, tmp, schema, batches)
}
