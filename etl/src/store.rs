/*!
The artifact store: where artifacts, parts and commit markers live, and the
lock that serialises the commits of one task run, behind the
[`ArtifactStore`] trait. The commit protocol ([`crate::commit`]), the sinks
and the worker use only the trait, so an object store can take the place of
the directory without changing them. How outputs are committed is in
[`crate::commit`].

[`FsStore`] is the directory (local, or shared between servers). Its layout:
- `{flow_run}/{task}.arrow`: the committed Arrow IPC artifact of a task;
- `{flow_run}/{task}.done.json`: the commit marker, holding the task's
  [`TaskOutput`]. Its presence fences every later attempt of the same task run:
  a duplicate delivery answers with the recorded output and writes nothing;
- `{flow_run}/{task}.{ext}`: one part of a partitioned load, until gathered;
- `{flow_run}/{task}.lock`: the task run's lock;
- `.scratch/`: downloads being read, and the rows a SQL step reads from
  the steps before it.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_schemas::TaskOutput;

use crate::error::{EtlError, Result};
use crate::paths::{check_relative_path, check_run_id, check_task_name};
use crate::pending::{sweep_leftovers, Pending};

/// Where artifacts, parts and commit markers live. Objects are named by
/// keys, relative paths such as `{flow_run}/{task}.arrow` ([`artifact_key`],
/// [`part_key`]); a key from a message is confined to the store.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Starts writing object `key` for one attempt (`tag`): nothing is
    /// visible until [`PendingObject::put_if_absent`]. `sweep`: whether
    /// putting it removes what killed attempts left (see [`Pending::sweeping`]).
    fn create(&self, key: &str, tag: &str, sweep: bool) -> Result<Box<dyn PendingObject>>;

    /// A local file holding the committed object `key`, to read (or, on a
    /// directory store, to link).
    fn open(&self, key: &str) -> Result<PathBuf>;

    /// Removes object `key`; one already gone is no error.
    fn delete(&self, key: &str) -> Result<()>;

    /// The commit marker of a task run: the output it recorded, if any.
    fn marker(&self, flow_run: &str, task: &str) -> Result<Option<TaskOutput>>;

    /// Records `output` in the task run's commit marker unless one is there
    /// already: the first marker wins.
    fn put_marker_if_absent(
        &self,
        flow_run: &str,
        task: &str,
        tag: &str,
        output: &TaskOutput,
        sweep: bool,
    ) -> Result<()>;

    /// Removes what killed attempts of a committed task run left in the
    /// store: temporary artifacts and markers.
    fn sweep_committed(&self, flow_run: &str, task: &str) -> Result<()>;

    /// An exclusive lock on one task run (the fence of its commits), held
    /// until the returned guard is dropped. A process killed while holding
    /// it must release it.
    fn lock_task(&self, flow_run: &str, task: &str) -> Result<TaskLock>;

    /// Scratch directory for downloads.
    fn scratch_dir(&self) -> Result<PathBuf>;

    /// A run ended. A succeeded run's objects are deleted now; a failed or
    /// cancelled run's are kept, for a retry, until [`Self::sweep_runs`]
    /// finds its end older than the keep period.
    fn run_finished(&self, flow_run: &str, succeeded: bool) -> Result<()>;

    /// Deletes the runs that ended without success longer than `keep` ago,
    /// and runs untouched for longer than `keep` whose end this store never
    /// heard of (its node was down then). Returns the runs deleted.
    fn sweep_runs(&self, keep: std::time::Duration) -> Result<Vec<String>>;
}

/// The file that marks a run's end in its directory of a [`FsStore`]; its
/// modification time is when the run ended.
const RUN_FINISHED: &str = ".finished";

/// A task run's lock, held until dropped.
pub type TaskLock = Box<dyn std::any::Any + Send>;

/// An object being written for one attempt.
pub trait PendingObject: Send {
    /// A handle to write the object's bytes to.
    fn writer(&mut self) -> Result<File>;
    /// Where the bytes are being written, for errors.
    fn tmp_path(&self) -> &Path;
    /// Makes the written bytes durable.
    fn sync(&mut self) -> Result<()>;
    /// Puts the object in place unless one is there already. Returns false
    /// when another attempt put it first.
    fn put_if_absent(self: Box<Self>) -> Result<bool>;
}

/// The key of a task's Arrow IPC artifact.
pub fn artifact_key(flow_run: &str, task: &str) -> Result<String> {
    check_task_name("task name", task)?;
    check_run_id("flow run id", flow_run)?;
    Ok(format!("{flow_run}/{task}.arrow"))
}

/// The key of one part of a partitioned load, in its format.
pub fn part_key(flow_run: &str, task: &str, ext: &str) -> Result<String> {
    check_task_name("task name", task)?;
    check_run_id("flow run id", flow_run)?;
    Ok(format!("{flow_run}/{task}.{ext}"))
}

/// The artifact store as a directory.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        FsStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A run's directory, checked, not made.
    fn run_path(&self, flow_run: &str) -> Result<PathBuf> {
        check_run_id("flow run id", flow_run)?;
        Ok(self.root.join(flow_run))
    }

    /// A run's directory, made if it is not there.
    fn run_dir(&self, flow_run: &str) -> Result<PathBuf> {
        let dir = self.run_path(flow_run)?;
        std::fs::create_dir_all(&dir).map_err(|e| EtlError::io(&dir, e))?;
        Ok(dir)
    }

    /// Resolves a key, confined to the store.
    fn resolve(&self, key: &str) -> Result<PathBuf> {
        let clean = check_relative_path("artifact path", key)?;
        Ok(self.root.join(clean))
    }

    fn artifact_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        check_task_name("task name", task)?;
        Ok(self.run_dir(flow_run)?.join(format!("{task}.arrow")))
    }

    fn marker_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        Ok(self.run_dir(flow_run)?.join(marker_name(task)?))
    }
}

/// The file name of a task's commit marker in its run's directory.
fn marker_name(task: &str) -> Result<String> {
    check_task_name("task name", task)?;
    Ok(format!("{task}.done.json"))
}

/// A file of a [`FsStore`] being written: a [`Pending`] file beside its
/// final path, put in place with a hard link, which never replaces.
struct FsPending {
    pending: Pending,
    final_path: PathBuf,
}

impl PendingObject for FsPending {
    fn writer(&mut self) -> Result<File> {
        self.pending.writer()
    }

    fn tmp_path(&self) -> &Path {
        self.pending.tmp_path()
    }

    fn sync(&mut self) -> Result<()> {
        self.pending.sync()
    }

    fn put_if_absent(self: Box<Self>) -> Result<bool> {
        self.pending.commit_no_replace(&self.final_path)
    }
}

impl ArtifactStore for FsStore {
    fn create(&self, key: &str, tag: &str, sweep: bool) -> Result<Box<dyn PendingObject>> {
        let final_path = self.resolve(key)?;
        if let Some(dir) = final_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| EtlError::io(dir, e))?;
        }
        let pending = Pending::file(&final_path, tag)?.sweeping(sweep);
        Ok(Box::new(FsPending {
            pending,
            final_path,
        }))
    }

    fn open(&self, key: &str) -> Result<PathBuf> {
        self.resolve(key)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.resolve(key)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EtlError::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// An attempt killed after its rename, before removing its temporary
    /// name, leaves one behind.
    fn sweep_committed(&self, flow_run: &str, task: &str) -> Result<()> {
        sweep_leftovers(&self.marker_path(flow_run, task)?);
        sweep_leftovers(&self.artifact_path(flow_run, task)?);
        Ok(())
    }

    fn marker(&self, flow_run: &str, task: &str) -> Result<Option<TaskOutput>> {
        // Only read: the run's directory is not made (nor made again).
        let path = self.run_path(flow_run)?.join(marker_name(task)?);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EtlError::data(&path, format!("corrupt commit marker: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EtlError::io(&path, e)),
        }
    }

    /// An OS file lock (`flock`) on `{flow_run}/{task}.lock`: a process
    /// killed while holding it releases it.
    fn lock_task(&self, flow_run: &str, task: &str) -> Result<TaskLock> {
        check_task_name("task name", task)?;
        let path = self.run_dir(flow_run)?.join(format!("{task}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| EtlError::io(&path, e))?;
        file.lock().map_err(|e| EtlError::io(&path, e))?;
        Ok(Box::new(file))
    }

    fn put_marker_if_absent(
        &self,
        flow_run: &str,
        task: &str,
        tag: &str,
        output: &TaskOutput,
        sweep: bool,
    ) -> Result<()> {
        let path = self.marker_path(flow_run, task)?;
        if path.exists() {
            return Ok(());
        }
        let mut pending = Pending::file(&path, tag)?.sweeping(sweep);
        let mut file = pending.writer()?;
        let text = serde_json::to_vec(output).map_err(|e| EtlError::Internal(e.to_string()))?;
        file.write_all(&text)
            .map_err(|e| EtlError::io(pending.tmp_path(), e))?;
        drop(file);
        pending.commit_no_replace(&path)?;
        Ok(())
    }

    /// Inside the store, so renames stay on one disk.
    fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(".scratch");
        std::fs::create_dir_all(&dir).map_err(|e| EtlError::io(&dir, e))?;
        Ok(dir)
    }

    fn run_finished(&self, flow_run: &str, succeeded: bool) -> Result<()> {
        check_run_id("flow run id", flow_run)?;
        let dir = self.root.join(flow_run);
        if succeeded {
            return match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(EtlError::io(&dir, e)),
            };
        }
        if !dir.is_dir() {
            return Ok(());
        }
        let marker = dir.join(RUN_FINISHED);
        File::create(&marker).map_err(|e| EtlError::io(&marker, e))?;
        Ok(())
    }

    fn sweep_runs(&self, keep: std::time::Duration) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(EtlError::io(&self.root, e)),
        };
        let now = std::time::SystemTime::now();
        let older_than_keep = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > keep)
        };
        let mut deleted = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !path.is_dir() || check_run_id("run", &name).is_err() {
                continue;
            }
            let marker = path.join(RUN_FINISHED);
            let expired = if marker.exists() {
                older_than_keep(&marker)
            } else {
                older_than_keep(&path)
            };
            if expired && std::fs::remove_dir_all(&path).is_ok() {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_succeeded_run_goes_at_once_and_a_failed_one_after_the_keep_period() {
        let root = std::env::temp_dir().join(format!("conveyor-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = FsStore::new(&root);
        for run in ["ok-1", "failed-1", "orphan-1", "live-1"] {
            std::fs::create_dir_all(root.join(run)).unwrap();
            std::fs::write(root.join(run).join("t.arrow"), b"x").unwrap();
        }
        store.run_finished("ok-1", true).unwrap();
        assert!(!root.join("ok-1").exists());
        store.run_finished("failed-1", false).unwrap();
        assert!(root.join("failed-1/t.arrow").exists(), "kept for a retry");
        // Within the keep period nothing goes; past it, the failed run and
        // the orphan whose end was never heard of go.
        let hour = std::time::Duration::from_secs(3600);
        assert!(store.sweep_runs(hour).unwrap().is_empty());
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::write(root.join("live-1").join("u.arrow"), b"y").unwrap();
        let mut gone = store
            .sweep_runs(std::time::Duration::from_millis(20))
            .unwrap();
        gone.sort();
        assert_eq!(gone, ["failed-1", "orphan-1"]);
        assert!(root.join("live-1").exists(), "a run still writing stays");
        let _ = std::fs::remove_dir_all(&root);
    }
}
