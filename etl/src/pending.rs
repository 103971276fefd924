/*!
Outputs written under a temporary name and moved into place: the bottom of
the commit protocol ([`crate::commit`]), which the directory store
([`crate::store::FsStore`]) builds on too.

Every output is first written under a temporary name unique to the writer
(`tmp_name`: `.{name}.{attempt}-{pid}{salt}-{n}.tmp`, a random salt per
process) beside its final name, as a [`Pending`] file or directory,
fsynced, then moved to its final name, and the directory is fsynced. A
pending output that is not committed is removed when dropped. An attempt
killed mid-write (SIGKILL, power loss) cannot remove its temporary file:
the attempt that commits an output removes every leftover temporary file
of the same name ([`sweep_leftovers`]).
*/

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{EtlError, Result};

/// A file or directory being written for one attempt under a temporary
/// name beside its final name: committed (moved into place) or removed,
/// never left behind.
pub struct Pending {
    tmp: PathBuf,
    /// The open file of a pending file; `None` once synced, and for a directory.
    file: Option<File>,
    dir: bool,
    synced: bool,
    committed: bool,
    /// Remove other attempts' leftovers beside the output on commit.
    sweep: bool,
}

impl Pending {
    /// Creates a temporary file (`tmp_name`) beside `final_path`.
    pub fn file(final_path: &Path, tag: &str) -> Result<Pending> {
        let (dir, name) = parent_and_name(final_path)?;
        let tmp = dir.join(tmp_name(name, tag));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| EtlError::io(&tmp, e))?;
        Ok(Pending {
            tmp,
            file: Some(file),
            dir: false,
            synced: false,
            committed: false,
            sweep: true,
        })
    }

    /// Creates a temporary directory (`tmp_name`) beside `final_path`, and
    /// the directories above it.
    pub fn dir(final_path: &Path, tag: &str) -> Result<Pending> {
        let (dir, name) = parent_and_name(final_path)?;
        std::fs::create_dir_all(dir).map_err(|e| EtlError::io(dir, e))?;
        let tmp = dir.join(tmp_name(name, tag));
        std::fs::create_dir(&tmp).map_err(|e| EtlError::io(&tmp, e))?;
        Ok(Pending {
            tmp,
            file: None,
            dir: true,
            synced: false,
            committed: false,
            sweep: true,
        })
    }

    /// Whether the commit removes what killed attempts left beside the
    /// output. That lists the output's directory, which may hold many
    /// files: callers skip it when no earlier attempt can have run (see
    /// [`crate::attempt::Attempt::may_have_leftovers`]).
    pub fn sweeping(mut self, sweep: bool) -> Self {
        self.sweep = sweep;
        self
    }

    /// A handle on the pending file, to write to.
    pub fn writer(&mut self) -> Result<File> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| EtlError::Internal("pending file already closed".into()))?;
        file.try_clone().map_err(|e| EtlError::io(&self.tmp, e))
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Adds `part` to a pending directory as `name`: a hard link, or a
    /// durable copy on another file system.
    pub fn add(&self, part: &Path, name: &str) -> Result<()> {
        let dest = self.tmp.join(name);
        if std::fs::hard_link(part, &dest).is_err() {
            std::fs::copy(part, &dest).map_err(|e| EtlError::io(&dest, e))?;
            File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(|e| EtlError::io(&dest, e))?;
        }
        Ok(())
    }

    /// Makes what was written durable, once: a commit then skips it.
    /// Writers call it before the commit gate, so the sync overlaps the
    /// wait there rather than following it.
    pub fn sync(&mut self) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        if self.dir {
            File::open(&self.tmp)
                .and_then(|d| d.sync_all())
                .map_err(|e| EtlError::io(&self.tmp, e))?;
        } else if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| EtlError::io(&self.tmp, e))?;
        }
        self.synced = true;
        Ok(())
    }

    /// Moves a pending file to `final_path` unless something is already
    /// there. Returns false when another attempt committed first.
    pub fn commit_no_replace(mut self, final_path: &Path) -> Result<bool> {
        if self.dir {
            return Err(EtlError::Internal(
                "a directory is only committed by replacing".into(),
            ));
        }
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

    /// Moves the file or directory to `final_path`, replacing what is there.
    pub fn commit_replace(mut self, final_path: &Path) -> Result<()> {
        self.sync()?;
        if self.dir {
            if let Ok(meta) = std::fs::symlink_metadata(final_path) {
                // rename(2) cannot replace a non-empty directory: move the old
                // output aside first, then remove it.
                let old = self.tmp.with_extension("old.tmp");
                std::fs::rename(final_path, &old).map_err(|e| EtlError::io(final_path, e))?;
                let _ = if meta.is_dir() {
                    std::fs::remove_dir_all(&old)
                } else {
                    std::fs::remove_file(&old)
                };
            }
            std::fs::rename(&self.tmp, final_path).map_err(|e| EtlError::io(final_path, e))?;
            self.committed = true;
            if self.sweep {
                sweep_leftovers(final_path);
            }
            return sync_parent(final_path);
        }
        match std::fs::rename(&self.tmp, final_path) {
            Ok(()) if self.sweep => sweep_leftovers(final_path),
            Ok(()) => {}
            // Swept by an attempt that committed first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && final_path.exists() => {}
            Err(e) => return Err(EtlError::io(final_path, e)),
        }
        self.committed = true;
        sync_parent(final_path)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Committed outputs were moved away; anything left is a failed attempt.
        if self.dir {
            if !self.committed {
                let _ = std::fs::remove_dir_all(&self.tmp);
            }
        } else {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent_and_name(path: &Path) -> Result<(&Path, &str)> {
    let dir = path
        .parent()
        .ok_or_else(|| EtlError::Internal(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| EtlError::Internal(format!("{} has no name", path.display())))?;
    Ok((dir, name))
}

/// `.{name}.{tag}-{pid}{salt}-{n}.tmp`: unique to one writer, even when the
/// broker redelivers an attempt to the process still running it (after a
/// reconnect), so two writers never share a temporary file. The salt is
/// random per process, because a pid is unique only on one host: workers in
/// containers (often all pid 1) may share a store on a network file system.
/// Callers create the file exclusively, so a clash would be an error, never
/// a shared file.
fn tmp_name(name: &str, tag: &str) -> String {
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

fn sync_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| EtlError::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let mut duplicate = Pending::file(&final_path, "a1-dup").unwrap();
        duplicate.writer().unwrap().write_all(b"dup").unwrap();

        let mut first = Pending::file(&final_path, "a1").unwrap();
        first.writer().unwrap().write_all(b"rows").unwrap();
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
        let mut a = Pending::file(&final_path, "a1").unwrap();
        a.writer().unwrap().write_all(b"first writer, ").unwrap();
        let mut b = Pending::file(&final_path, "a1").unwrap();
        assert_ne!(a.tmp_path(), b.tmp_path());
        b.writer().unwrap().write_all(b"second").unwrap();
        a.writer().unwrap().write_all(b"all rows").unwrap();
        assert!(a.commit_no_replace(&final_path).unwrap());
        assert!(!b.commit_no_replace(&final_path).unwrap());
        assert_eq!(
            std::fs::read(&final_path).unwrap(),
            b"first writer, all rows"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
