/*!
The [`Attempt`] being run: its names, its fence and its cancel flag. Every
module that writes takes it, with the [`crate::workspace::Workspace`]; it
lives here, below the sinks, the commit protocol and the task runner, so
that none of them imports from the crate root.
*/

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{EtlError, Result};

/// Identifies one attempt, for temporary file names and commit markers.
#[derive(Clone)]
pub struct Attempt<'a> {
    pub flow_run: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    /// The broker's delivery count of this attempt's message (1: first).
    pub delivery: u32,
    /// Rows read so far, for progress reports while the task runs.
    pub progress: &'a AtomicU64,
    /// Called before a load or gather replaces its output under the output
    /// root: an error keeps the output as it was. A worker waits here for
    /// the broker to route the task's start to its coordinator, so a task
    /// whose coordinator is gone never overwrites what a user can see.
    pub before_commit: Option<&'a dyn Fn() -> Result<()>>,
    /// Set when the attempt's run ended (cancelled, or failed): the attempt
    /// stops at the next batch, and commits nothing from then on.
    pub cancel: Option<&'a AtomicBool>,
}

impl Attempt<'_> {
    /// The attempt's part of a temporary file's name (`a{attempt}`).
    pub fn tag(&self) -> String {
        format!("a{}", self.attempt)
    }

    /// Whether an earlier attempt or delivery of this task run may have been
    /// killed mid-write, leaving temporary files for this one to remove. The
    /// first delivery of attempt 1 skips listing the output's directory.
    pub fn may_have_leftovers(&self) -> bool {
        self.attempt > 1 || self.delivery > 1
    }

    /// An error of kind `Cancelled` once the attempt's run ended.
    pub fn check_cancelled(&self) -> Result<()> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Acquire) => Err(EtlError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Counts the rows of `batches` into `progress` as they are read, and
    /// stops them with a `Cancelled` error once the run ended.
    pub(crate) fn counted<'b>(
        &'b self,
        batches: impl Iterator<Item = Result<arrow::array::RecordBatch>> + 'b,
    ) -> impl Iterator<Item = Result<arrow::array::RecordBatch>> + 'b {
        batches.map(|b| {
            self.check_cancelled()?;
            if let Ok(b) = &b {
                self.progress
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
            b
        })
    }
}
