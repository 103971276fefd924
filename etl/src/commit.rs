/*!
The commit protocol: how an attempt's output becomes the task run's output,
once, whatever attempts race, die or come late.

- Every output is first written under a temporary name unique to the writer
  beside its final name, as a [`crate::pending::Pending`] file or
  directory, fsynced, then moved to its final name, and the directory is
  fsynced. A pending output that is not committed is removed when dropped.
- Artifacts and parts in the store are put if absent ([`first_wins`],
  [`crate::store::PendingObject::put_if_absent`]; on the directory store a
  hard link, which never replaces an existing file), so a late attempt
  cannot overwrite a committed one.
- Outputs under the output root (a load's file, a gather's file or
  directory) replace what is there, fenced ([`commit_fenced`]): behind the
  commit gate ([`Attempt::before_commit`]), under the task run's lock,
  only if the task run has no commit marker yet, and the marker is written
  before the lock is released.
- The marker (in the store, holding the task's [`TaskOutput`]; put if
  absent, read, and locked per task run through
  [`crate::store::ArtifactStore`]) fences every later attempt: a duplicate delivery answers
  with the recorded output and writes nothing ([`committed_output`]).
- An attempt killed mid-write (SIGKILL, power loss) cannot remove its
  temporary file. The attempt that commits an output removes every leftover
  temporary file of the same name ([`crate::pending::sweep_leftovers`]); a duplicate attempt
  still writing one then finds it gone at commit time, sees the committed
  output, and steps aside. A gather whose parts are gone finds the winner's
  marker the same way (`gather_fenced`).
*/

use conveyor_schemas::{ArtifactRef, SourceSpec, TaskOutput, TaskSpec};

use crate::attempt::Attempt;
use crate::error::Result;
use crate::store::PendingObject;
use crate::workspace::Workspace;

/// Puts a store file (an artifact or a part) in place unless another
/// attempt already did: the first to commit wins. Returns whether this
/// attempt committed.
pub fn first_wins(pending: Box<dyn PendingObject>) -> Result<bool> {
    pending.put_if_absent()
}

/// Puts a final output in place with `commit` and records `output` in the
/// task run's marker, unless another attempt already did. The marker is the
/// fence: checking it, committing and writing it happen under the task run's
/// lock, so two attempts racing to commit cannot both replace the output.
/// Returns whether this attempt committed.
pub fn commit_fenced(
    ws: &Workspace,
    at: &Attempt,
    output: &TaskOutput,
    commit: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    if let Some(gate) = at.before_commit {
        gate()?;
    }
    let _lock = ws.store.lock_task(at.flow_run, at.task)?;
    // Last look under the lock: an attempt whose run ended commits nothing.
    at.check_cancelled()?;
    if ws.store.marker(at.flow_run, at.task)?.is_some() {
        tracing::info!(
            flow_run = at.flow_run,
            task = at.task,
            "Output already committed by another attempt; dropping this one"
        );
        ws.store.sweep_committed(at.flow_run, at.task)?;
        return Ok(false);
    }
    commit()?;
    record(ws, at, output)?;
    Ok(true)
}

/// Records `output` as the task run's output in its marker, unless one is
/// there already (the first marker wins).
pub fn record(ws: &Workspace, at: &Attempt, output: &TaskOutput) -> Result<()> {
    ws.store.put_marker_if_absent(
        at.flow_run,
        at.task,
        &at.tag(),
        output,
        at.may_have_leftovers(),
    )
}

/// The recorded output of a task run that already committed, for a
/// duplicate delivery to answer with, having removed what killed attempts
/// of it left behind (and a gather's parts, in case the attempt that
/// committed died before removing them).
pub fn committed_output(
    ws: &Workspace,
    flow_run: &str,
    task: &str,
    spec: &TaskSpec,
) -> Result<Option<TaskOutput>> {
    let Some(output) = ws.store.marker(flow_run, task)? else {
        return Ok(None);
    };
    ws.store.sweep_committed(flow_run, task)?;
    if let SourceSpec::Parts { parts, .. } = &spec.source {
        remove_parts(ws, parts);
    }
    Ok(Some(output))
}

/// Runs a gather's `work`, which commits fenced and then removes the parts.
/// A slower attempt finds the parts gone (the first one committed and
/// removed them): it answers with the winner's marker, removing the parts
/// again in case the winner died before it did.
pub fn gather_fenced(
    ws: &Workspace,
    at: &Attempt,
    parts: &[ArtifactRef],
    work: impl FnOnce() -> Result<TaskOutput>,
) -> Result<TaskOutput> {
    match work() {
        Ok(out) => Ok(out),
        Err(e) => match ws.store.marker(at.flow_run, at.task)? {
            Some(out) => {
                remove_parts(ws, parts);
                Ok(out)
            }
            None => Err(e),
        },
    }
}

/// Removes the store's copies of a committed gather's parts: they are in
/// the output.
pub fn remove_parts(ws: &Workspace, parts: &[ArtifactRef]) {
    for part in parts {
        let _ = ws.store.delete(&part.path);
    }
}
