/*!
The one writer behind every sink that encodes rows into a file: an Arrow
IPC artifact, a part of a partitioned load, a file under the output root.
Each is the same three moves, write → sync → commit, and differs only in
its [`Encoder`] (how rows become bytes) and its [`Destination`] (where the
bytes go and how they are put in place).

- A [`Destination::Store`] object (an artifact, a part) is put if absent:
  the first attempt to commit it wins, a later one keeps the first.
- A [`Destination::Output`] file replaces what is under the output root,
  fenced by the task run's marker ([`crate::commit::commit_fenced`]).
*/

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use conveyor_schemas::{ArtifactRef, TaskOutput};

use crate::attempt::Attempt;
use crate::commit;
use crate::error::Result;
use crate::pending::Pending;
use crate::sink::{BatchIter, PendingOutput, Sink};
use crate::store::PendingObject;
use crate::workspace::Workspace;

/// How rows become the bytes of one file.
pub trait Encoder {
    /// Streams `batches` into `file`, a pending output's temporary file at
    /// `path` (for errors). Returns the rows written.
    fn encode(&self, file: File, path: &Path, schema: SchemaRef, batches: BatchIter)
        -> Result<u64>;
}

/// Where an encoded file goes, and how it is put in place.
pub enum Destination<'a> {
    /// An object in the store under `key`, put if absent. `what` names it
    /// in the log when another attempt put it first (`Artifact`, `Part`).
    Store {
        what: &'static str,
        key: String,
        pending: Box<dyn PendingObject>,
    },
    /// A file under the output root, replaced at commit under the task
    /// run's fence.
    Output {
        ws: &'a Workspace,
        final_path: PathBuf,
        pending: Pending,
    },
}

impl<'a> Destination<'a> {
    /// The store object `key`, for this attempt.
    pub fn store(
        ws: &Workspace,
        at: &Attempt,
        what: &'static str,
        key: String,
    ) -> Result<Destination<'a>> {
        let pending = ws.store.create(&key, &at.tag(), at.may_have_leftovers())?;
        Ok(Destination::Store { what, key, pending })
    }

    /// The file `final_path` under the output root (already confined), for
    /// this attempt.
    pub fn output(ws: &'a Workspace, at: &Attempt, final_path: PathBuf) -> Result<Destination<'a>> {
        let pending = Pending::file(&final_path, &at.tag())?.sweeping(at.may_have_leftovers());
        Ok(Destination::Output {
            ws,
            final_path,
            pending,
        })
    }

    fn writer(&mut self) -> Result<(File, &Path)> {
        match self {
            Destination::Store { pending, .. } => Ok((pending.writer()?, pending.tmp_path())),
            Destination::Output { pending, .. } => Ok((pending.writer()?, pending.tmp_path())),
        }
    }

    fn sync(&mut self) -> Result<()> {
        match self {
            Destination::Store { pending, .. } => pending.sync(),
            Destination::Output { pending, .. } => pending.sync(),
        }
    }
}

/// A sink that encodes its rows with `E` into a [`Destination`].
pub struct EncodingSink<'a, E> {
    at: &'a Attempt<'a>,
    encoder: E,
    destination: Destination<'a>,
}

impl<'a, E: Encoder> EncodingSink<'a, E> {
    pub fn new(at: &'a Attempt<'a>, encoder: E, destination: Destination<'a>) -> Self {
        EncodingSink {
            at,
            encoder,
            destination,
        }
    }
}

impl<'a, E: Encoder> Sink<'a> for EncodingSink<'a, E> {
    fn write(
        mut self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let (file, tmp) = self.destination.writer()?;
        let rows = self.encoder.encode(file, tmp, schema, batches)?;
        // Durable before the commit gate, so the fsync overlaps the worker's
        // wait for its start to be routed.
        self.destination.sync()?;
        Ok(Box::new(Encoded {
            at: self.at,
            destination: self.destination,
            rows,
        }))
    }
}

/// An encoded file, durable, waiting for its commit.
struct Encoded<'a> {
    at: &'a Attempt<'a>,
    destination: Destination<'a>,
    rows: u64,
}

impl PendingOutput for Encoded<'_> {
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput> {
        let Encoded {
            at,
            destination,
            rows,
        } = *self;
        match destination {
            Destination::Store { what, key, pending } => {
                if !commit::first_wins(pending)? {
                    tracing::info!(
                        flow_run = at.flow_run,
                        task = at.task,
                        "{what} already committed by another attempt; keeping the first"
                    );
                }
                Ok(TaskOutput {
                    rows_in,
                    rows_out: rows,
                    artifact: Some(ArtifactRef {
                        path: key.clone(),
                        rows,
                    }),
                    location: key,
                    bytes_in: None,
                    bytes_out: None,
                })
            }
            Destination::Output {
                ws,
                final_path,
                pending,
            } => {
                let output = TaskOutput {
                    rows_in,
                    rows_out: rows,
                    artifact: None,
                    location: final_path.display().to_string(),
                    bytes_in: None,
                    bytes_out: None,
                };
                commit::commit_fenced(ws, at, &output, || pending.commit_replace(&final_path))?;
                Ok(output)
            }
        }
    }
}
