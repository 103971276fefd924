/*!
Confinement of paths that arrive in flows and messages.

A load's `path` and every name used to build an artifact path come from a flow
file or a message, so they are hostile until checked: no absolute paths, no
`..`, no NUL, no over-long names, and no symlink under the root that leads out.
*/

use std::path::{Path, PathBuf};

use crate::error::{EtlError, Result};

use conveyor_schemas::names;

fn spec(e: names::NameError) -> EtlError {
    EtlError::Spec(e.0)
}

/// Checks the syntax of a relative path from a flow or message, without touching
/// the file system ([`names::check_relative_path`]).
pub fn check_relative_path(what: &str, path: &str) -> Result<PathBuf> {
    names::check_relative_path(what, path).map_err(spec)
}

/// A task name from a message, used as one path component ([`names::check_task_name`]).
pub fn check_task_name(what: &str, name: &str) -> Result<()> {
    names::check_task_name(what, name).map_err(spec)
}

/// A flow-run id from a message, used as one path component ([`names::check_run_id`]).
pub fn check_run_id(what: &str, id: &str) -> Result<()> {
    names::check_run_id(what, id).map_err(spec)
}

/// Fails when a single-file load would replace a directory: replacing it
/// would delete whatever is in it, and rename(2) cannot anyway.
pub fn check_not_a_directory(target: &Path, relative: &str) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => Err(EtlError::Spec(format!(
            "load path `{relative}` is a directory under the output root ({}); a load \
             with `parts = true` may have written it. Remove it, or load to another path",
            target.display()
        ))),
        _ => Ok(()),
    }
}

/// Resolves `relative` under `root`, creating parent directories, and proves
/// that the parent directory really lies inside `root` after symlinks.
pub fn confine(root: &Path, what: &str, relative: &str) -> Result<PathBuf> {
    let clean = check_relative_path(what, relative)?;
    std::fs::create_dir_all(root).map_err(|e| EtlError::io(root, e))?;
    let root_real = root.canonicalize().map_err(|e| EtlError::io(root, e))?;
    let target = root_real.join(&clean);
    let parent = target
        .parent()
        .ok_or_else(|| EtlError::Spec(format!("{what} `{relative}` names no file")))?;
    // Walk down component by component so that a symlink is caught before we
    // create anything through it.
    let mut current = root_real.clone();
    for component in parent
        .strip_prefix(&root_real)
        .map_err(|_| EtlError::Internal("path escaped its root".into()))?
        .components()
    {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) => check_component(&current, &meta, &root_real, what, relative)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&current) {
                    Ok(()) => {}
                    // Another load created it since: a directory that
                    // exists is no error, once it is checked like any other.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let meta = std::fs::symlink_metadata(&current)
                            .map_err(|e| EtlError::io(&current, e))?;
                        check_component(&current, &meta, &root_real, what, relative)?;
                    }
                    Err(e) => return Err(EtlError::io(&current, e)),
                }
            }
            Err(e) => return Err(EtlError::io(&current, e)),
        }
    }
    let parent_real = parent.canonicalize().map_err(|e| EtlError::io(parent, e))?;
    if !parent_real.starts_with(&root_real) {
        return Err(EtlError::Spec(format!(
            "{what} `{relative}` leads out of the output root"
        )));
    }
    let file_name = target
        .file_name()
        .ok_or_else(|| EtlError::Spec(format!("{what} `{relative}` names no file")))?;
    let final_path = parent_real.join(file_name);
    if let Ok(meta) = std::fs::symlink_metadata(&final_path) {
        if meta.file_type().is_symlink() {
            return Err(EtlError::Spec(format!(
                "{what} `{relative}` is a symlink; refusing to write through it"
            )));
        }
    }
    Ok(final_path)
}

/// An existing directory on the way to a load's file: a directory, or a
/// symlink that stays under the root.
fn check_component(
    current: &Path,
    meta: &std::fs::Metadata,
    root_real: &Path,
    what: &str,
    relative: &str,
) -> Result<()> {
    if meta.file_type().is_symlink() {
        let real = current
            .canonicalize()
            .map_err(|e| EtlError::io(current, e))?;
        if !real.starts_with(root_real) {
            return Err(EtlError::Spec(format!(
                "{what} `{relative}` leads out of the output root through the symlink {}",
                current.display()
            )));
        }
    } else if !meta.is_dir() {
        return Err(EtlError::Spec(format!(
            "{what} `{relative}`: {} is not a directory",
            current.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules themselves are tested in `conveyor_schemas::names`; here,
    /// that a broken rule is a spec error of the data plane.
    #[test]
    fn a_hostile_relative_path_is_a_spec_error() {
        let err = check_relative_path("load path", "../x").unwrap_err();
        assert!(matches!(err, EtlError::Spec(_)), "{err}");
        assert_eq!(
            check_relative_path("p", "./a/b.csv").unwrap(),
            PathBuf::from("a/b.csv")
        );
    }

    #[test]
    fn symlink_out_of_the_root_is_refused() {
        let base = std::env::temp_dir().join(format!("conveyor-confine-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let err = confine(&root, "load path", "escape/x.csv").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let ok = confine(&root, "load path", "sub/dir/x.csv").unwrap();
        assert!(ok.starts_with(root.canonicalize().unwrap()));
        assert!(ok.parent().unwrap().is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Issue 22, item 17: loads that create the same new directories at
    /// once all succeed (one used to fail with `File exists`).
    #[test]
    fn loads_creating_the_same_new_directory_at_once_all_succeed() {
        let base = std::env::temp_dir().join(format!("conveyor-race-{}", std::process::id()));
        for round in 0..20 {
            let root = base.join(format!("root{round}"));
            std::fs::create_dir_all(&root).unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let (root, barrier) = (root.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        confine(&root, "load path", &format!("a/b/c/d/part-{i}.csv"))
                    })
                })
                .collect();
            for t in threads {
                let path = t.join().unwrap().unwrap();
                assert!(path.parent().unwrap().is_dir());
            }
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
