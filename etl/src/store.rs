/*!
The artifact store and the atomic commit of every output.

Layout under the store root:
- `{flow_run}/{task}.arrow`: the committed Arrow IPC artifact of a task;
- `{flow_run}/{task}.done.json`: the commit marker, holding the task's
  [`TaskOutput`]. Its presence fences every later attempt of the same task run:
  a duplicate delivery answers with the recorded output and writes nothing.

Every file is first written under a temporary name unique to the writer
(`.{name}.{attempt}-{pid}{salt}-{n}.tmp`, a random salt per process), fsynced, then moved to its final name, and the
directory is fsynced. An artifact is moved with a hard link, which never
replaces an existing file, so a late attempt cannot overwrite a committed one.

An attempt killed mid-write (SIGKILL, power loss) cannot remove its temporary
file. The attempt that commits the output removes every leftover temporary
file of the same name; a duplicate attempt still writing one then finds it
gone at commit time, sees the committed output, and steps aside.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_schemas::TaskOutput;

use crate::error::{EtlError, Result};
use crate::paths::{check_run_id, check_task_name};

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A file being written for one attempt; committed or removed, never left behind.
pub struct PendingFile {
    tmp: PathBuf,
    file: Option<File>,
    /// Remove other attempts' leftovers beside the output on commit.
    sweep: bool,
}

impl PendingFile {
    /// Creates a temporary file ([`tmp_name`]) beside `final_path`.
    pub fn create(final_path: &Path, tag: &str) -> Result<PendingFile> {
        let dir = final_path
            .parent()
            .ok_or_else(|| EtlError::Internal(format!("{} has no parent", final_path.display())))?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| EtlError::Internal(format!("{} has no name", final_path.display())))?;
        let tmp = dir.join(tmp_name(name, tag));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| EtlError::io(&tmp, e))?;
        Ok(PendingFile {
            tmp,
            file: Some(file),
            sweep: true,
        })
    }

    /// Whether the commit removes what killed attempts left beside the
    /// output. That lists the output's directory, which may hold many
    /// files: callers skip it when no earlier attempt can have run (see
    /// [`crate::Attempt::may_have_leftovers`]).
    pub fn sweeping(mut self, sweep: bool) -> Self {
        self.sweep = sweep;
        self
    }

    pub fn file(&mut self) -> Result<File> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| EtlError::Internal("pending file already closed".into()))?;
        file.try_clone().map_err(|e| EtlError::io(&self.tmp, e))
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Makes the written bytes durable (once; a commit then skips it).
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| EtlError::io(&self.tmp, e))?;
        }
        Ok(())
    }

    /// Moves the file to `final_path` unless something is already there.
    /// Returns false when another attempt committed first.
    pub fn commit_no_replace(mut self, final_path: &Path) -> Result<bool> {
        self.sync()?;
        let committed = match std::fs::hard_link(&self.tmp, final_path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            // Swept by the attempt that committed first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && final_path.exists() => false,
            Err(e) => return Err(EtlError::io(final_path, e)),
        };
        let _ = std::fs::remove_file(&self.tmp);
        // Whoever committed, the output is in place: the temporary files of
        // killed attempts are garbage now.
        if self.sweep {
            sweep_leftovers(final_path);
        }
        sync_parent(final_path)?;
        Ok(committed)
    }

    /// Moves the file to `final_path`, replacing what is there.
    pub fn commit_replace(mut self, final_path: &Path) -> Result<()> {
        self.sync()?;
        match std::fs::rename(&self.tmp, final_path) {
            Ok(()) if self.sweep => sweep_leftovers(final_path),
            Ok(()) => {}
            // Swept by an attempt that committed first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && final_path.exists() => {}
            Err(e) => return Err(EtlError::io(final_path, e)),
        }
        sync_parent(final_path)
    }
}

/// `.{name}.{tag}-{pid}{salt}-{n}.tmp`: unique to one writer, even when the
/// broker redelivers an attempt to the process still running it (after a
/// reconnect), so two writers never share a temporary file. The salt is
/// random per process, because a pid is unique only on one host: workers in
/// containers (often all pid 1) may share a store on a network file system.
/// Callers create the file exclusively, so a clash would be an error, never
/// a shared file.
pub(crate) fn tmp_name(name: &str, tag: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // RandomState is seeded from the OS's random source, per process.
    let salt = *SALT.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32
    });
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{name}.{tag}-{}{salt:08x}-{n}.tmp", std::process::id())
}

/// Removes the temporary files of other attempts at `final_path` (`.{name}.*.tmp`
/// beside it), left by attempts that were killed while writing.
pub(crate) fn sweep_leftovers(final_path: &Path) {
    let (Some(dir), Some(name)) = (
        final_path.parent(),
        final_path.file_name().and_then(|n| n.to_str()),
    ) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if n.starts_with(&prefix)
            && n.ends_with(".tmp")
            && if is_dir {
                // A directory of parts being gathered.
                std::fs::remove_dir_all(entry.path()).is_ok()
            } else {
                std::fs::remove_file(entry.path()).is_ok()
            }
        {
            tracing::info!(file = %entry.path().display(), "Removed a temporary file left by a killed attempt");
        }
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Committed files were moved away; anything left is a failed attempt.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| EtlError::io(dir, e))?;
    }
    Ok(())
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> ArtifactStore {
        ArtifactStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, flow_run: &str) -> Result<PathBuf> {
        check_run_id("flow run id", flow_run)?;
        let dir = self.root.join(flow_run);
        std::fs::create_dir_all(&dir).map_err(|e| EtlError::io(&dir, e))?;
        Ok(dir)
    }

    /// Relative store path of a task's artifact.
    pub fn artifact_rel(flow_run: &str, task: &str) -> String {
        format!("{flow_run}/{task}.arrow")
    }

    /// Relative store path of one part of a partitioned load, in its format.
    pub fn part_rel(flow_run: &str, task: &str, ext: &str) -> String {
        format!("{flow_run}/{task}.{ext}")
    }

    /// Absolute path of one part of a partitioned load, creating the run directory.
    pub fn part_path(&self, flow_run: &str, task: &str, ext: &str) -> Result<PathBuf> {
        check_task_name("task name", task)?;
        Ok(self.run_dir(flow_run)?.join(format!("{task}.{ext}")))
    }

    /// Absolute path of a task's artifact, creating the run directory.
    pub fn artifact_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        check_task_name("task name", task)?;
        Ok(self.run_dir(flow_run)?.join(format!("{task}.arrow")))
    }

    /// Resolves an artifact reference from a message, confined to the store.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let clean = crate::paths::check_relative_path("artifact path", rel)?;
        Ok(self.root.join(clean))
    }

    /// Removes what killed attempts of a committed task run left in the
    /// store: temporary artifacts and markers (an attempt killed after its
    /// rename, before removing its temporary name, leaves one behind).
    pub fn sweep_committed(&self, flow_run: &str, task: &str) -> Result<()> {
        sweep_leftovers(&self.marker_path(flow_run, task)?);
        sweep_leftovers(&self.artifact_path(flow_run, task)?);
        Ok(())
    }

    fn marker_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        check_task_name("task name", task)?;
        Ok(self.run_dir(flow_run)?.join(format!("{task}.done.json")))
    }

    /// The recorded output of a task run that already committed, if any.
    pub fn committed(&self, flow_run: &str, task: &str) -> Result<Option<TaskOutput>> {
        let path = self.marker_path(flow_run, task)?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EtlError::data(&path, format!("corrupt commit marker: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EtlError::io(&path, e)),
        }
    }

    /// An exclusive lock on one task run, held until the file is dropped. It
    /// is an OS file lock (`flock`): a process killed while holding it
    /// releases it.
    pub fn lock_task(&self, flow_run: &str, task: &str) -> Result<File> {
        check_task_name("task name", task)?;
        let path = self.run_dir(flow_run)?.join(format!("{task}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| EtlError::io(&path, e))?;
        file.lock().map_err(|e| EtlError::io(&path, e))?;
        Ok(file)
    }

    /// Records the task run's output. The first marker wins. `sweep`: see
    /// [`PendingFile::sweeping`].
    pub fn mark_committed(
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
        let mut pending = PendingFile::create(&path, tag)?.sweeping(sweep);
        let mut file = pending.file()?;
        let text = serde_json::to_vec(output).map_err(|e| EtlError::Internal(e.to_string()))?;
        file.write_all(&text)
            .map_err(|e| EtlError::io(pending.tmp_path(), e))?;
        drop(file);
        pending.commit_no_replace(&path)?;
        Ok(())
    }

    /// Scratch directory for downloads, inside the store so renames stay on one disk.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(".scratch");
        std::fs::create_dir_all(&dir).map_err(|e| EtlError::io(&dir, e))?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_sweeps_leftovers_and_a_swept_duplicate_steps_aside() {
        let dir = std::env::temp_dir().join(format!("conveyor-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let final_path = dir.join("t.arrow");
        // Left by an attempt killed mid-write, and an unrelated file.
        let killed = dir.join(".t.arrow.a1-99999.tmp");
        std::fs::write(&killed, b"partial").unwrap();
        std::fs::write(dir.join(".other.arrow.a1-1.tmp"), b"x").unwrap();
        // A duplicate attempt, still writing when the first one commits.
        let mut duplicate = PendingFile::create(&final_path, "a1-dup").unwrap();
        duplicate.file().unwrap().write_all(b"dup").unwrap();

        let mut first = PendingFile::create(&final_path, "a1").unwrap();
        first.file().unwrap().write_all(b"rows").unwrap();
        assert!(first.commit_no_replace(&final_path).unwrap());
        assert!(!killed.exists(), "leftover of the killed attempt not swept");
        assert!(!duplicate.tmp_path().exists());
        assert!(dir.join(".other.arrow.a1-1.tmp").exists());

        assert!(!duplicate.commit_no_replace(&final_path).unwrap());
        assert_eq!(std::fs::read(&final_path).unwrap(), b"rows");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_attempt_written_twice_in_one_process_uses_two_files() {
        let dir = std::env::temp_dir().join(format!("conveyor-twice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let final_path = dir.join("t.arrow");
        // A redelivery to the process still running the attempt: the second
        // writer's truncate must not reach the first writer's bytes.
        let mut a = PendingFile::create(&final_path, "a1").unwrap();
        a.file().unwrap().write_all(b"first writer, ").unwrap();
        let mut b = PendingFile::create(&final_path, "a1").unwrap();
        assert_ne!(a.tmp_path(), b.tmp_path());
        b.file().unwrap().write_all(b"second").unwrap();
        a.file().unwrap().write_all(b"all rows").unwrap();
        assert!(a.commit_no_replace(&final_path).unwrap());
        assert!(!b.commit_no_replace(&final_path).unwrap());
        assert_eq!(
            std::fs::read(&final_path).unwrap(),
            b"first writer, all rows"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
