/*!
The artifact store and the atomic commit of every output.

Layout under the store root:
- `{flow_run}/{task}.arrow`: the committed Arrow IPC artifact of a task;
- `{flow_run}/{task}.done.json`: the commit marker, holding the task's
  [`TaskOutput`]. Its presence fences every later attempt of the same task run:
  a duplicate delivery answers with the recorded output and writes nothing.

Every file is first written under a temporary name unique to the attempt
(`.{name}.{attempt}-{pid}.tmp`), fsynced, then moved to its final name, and the
directory is fsynced. An artifact is moved with a hard link, which never
replaces an existing file, so a late attempt cannot overwrite a committed one.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_schemas::TaskOutput;

use crate::error::{EtlError, Result};
use crate::paths::check_name;

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A file being written for one attempt; committed or removed, never left behind.
pub struct PendingFile {
    tmp: PathBuf,
    file: Option<File>,
}

impl PendingFile {
    /// Creates `.{file_name}.{tag}.tmp` beside `final_path`.
    pub fn create(final_path: &Path, tag: &str) -> Result<PendingFile> {
        let dir = final_path
            .parent()
            .ok_or_else(|| EtlError::Internal(format!("{} has no parent", final_path.display())))?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| EtlError::Internal(format!("{} has no name", final_path.display())))?;
        let tmp = dir.join(format!(".{name}.{tag}-{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| EtlError::io(&tmp, e))?;
        Ok(PendingFile {
            tmp,
            file: Some(file),
        })
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

    fn sync(&mut self) -> Result<()> {
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
            Err(e) => return Err(EtlError::io(final_path, e)),
        };
        let _ = std::fs::remove_file(&self.tmp);
        sync_parent(final_path)?;
        Ok(committed)
    }

    /// Moves the file to `final_path`, replacing what is there.
    pub fn commit_replace(mut self, final_path: &Path) -> Result<()> {
        self.sync()?;
        std::fs::rename(&self.tmp, final_path).map_err(|e| EtlError::io(final_path, e))?;
        sync_parent(final_path)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Committed files were moved away; anything left is a failed attempt.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn sync_parent(path: &Path) -> Result<()> {
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
        check_name("flow run id", flow_run)?;
        let dir = self.root.join(flow_run);
        std::fs::create_dir_all(&dir).map_err(|e| EtlError::io(&dir, e))?;
        Ok(dir)
    }

    /// Relative store path of a task's artifact.
    pub fn artifact_rel(flow_run: &str, task: &str) -> String {
        format!("{flow_run}/{task}.arrow")
    }

    /// Absolute path of a task's artifact, creating the run directory.
    pub fn artifact_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        check_name("task name", task)?;
        Ok(self.run_dir(flow_run)?.join(format!("{task}.arrow")))
    }

    /// Resolves an artifact reference from a message, confined to the store.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let clean = crate::paths::check_relative_path("artifact path", rel)?;
        Ok(self.root.join(clean))
    }

    fn marker_path(&self, flow_run: &str, task: &str) -> Result<PathBuf> {
        check_name("task name", task)?;
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

    /// Records the task run's output. The first marker wins.
    pub fn mark_committed(
        &self,
        flow_run: &str,
        task: &str,
        tag: &str,
        output: &TaskOutput,
    ) -> Result<()> {
        let path = self.marker_path(flow_run, task)?;
        let mut pending = PendingFile::create(&path, tag)?;
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
