/*!
The artifact store: where artifacts, parts and commit markers live, and the
lock that serialises the commits of one task run. How outputs are committed
is in [`crate::commit`].

Layout under the store root:
- `{flow_run}/{task}.arrow`: the committed Arrow IPC artifact of a task;
- `{flow_run}/{task}.done.json`: the commit marker, holding the task's
  [`TaskOutput`]. Its presence fences every later attempt of the same task run:
  a duplicate delivery answers with the recorded output and writes nothing;
- `{flow_run}/{task}.{ext}`: one part of a partitioned load, until gathered;
- `{flow_run}/{task}.lock`: the task run's lock;
- `.scratch/`: downloads being read.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_schemas::TaskOutput;

use crate::commit::{sweep_leftovers, Pending};
use crate::error::{EtlError, Result};
use crate::paths::{check_run_id, check_task_name};

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
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
    /// [`Pending::sweeping`].
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
        let mut pending = Pending::file(&path, tag)?.sweeping(sweep);
        let mut file = pending.writer()?;
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
