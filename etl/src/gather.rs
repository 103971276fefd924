/*!
Gathering the parts of a partitioned load into its output.

Each partition's load writes its part, in the load's format, into the
artifact store. The gather then puts them in place under the output root:
- one file: CSV and JSON-lines parts are appended byte for byte (only the
  first part has the CSV header); Parquet parts are joined by copying their
  encoded row groups, with no decoding or re-encoding;
- a directory (`parts = true`): the parts become `part-00000.EXT`, ... (hard
  links where the store shares a file system with the output).

The gather is a task like any other on the wire: a [`SourceSpec::Parts`]
source and a [`SinkSpec::File`] or [`SinkSpec::Dir`] sink. It is not run as
source → steps → sink because it decodes nothing.

Either way the output appears at once, by rename, when it is complete, and it
is fenced by the task run's commit marker like any load.
*/

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conveyor_schemas::{ArtifactRef, DataFormat, SinkSpec, SourceSpec, TaskOutput, TaskSpec};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::error::{EtlError, Result};
use crate::store::{sweep_leftovers, sync_parent, PendingFile};
use crate::{paths, Attempt, Workspace};

/// The parts of a partitioned load, and where the gather puts them.
struct Gather<'a> {
    format: DataFormat,
    parts: &'a [ArtifactRef],
    /// Relative path under the output root: the file, or with `dir` the
    /// directory.
    path: &'a str,
    /// A directory of `part-NNNNN.EXT` files instead of one file.
    dir: bool,
}

/// Puts `parts` (each a file of `format` in the store) in place as `sink`:
/// a file ([`SinkSpec::File`]) or a directory of parts ([`SinkSpec::Dir`]).
pub fn run_gather(
    ws: &Workspace,
    at: &Attempt,
    format: DataFormat,
    parts: &[ArtifactRef],
    sink: &SinkSpec,
) -> Result<TaskOutput> {
    let (target, dir) = match sink {
        SinkSpec::File(t) => (t, false),
        SinkSpec::Dir(t) => (t, true),
        SinkSpec::Artifact | SinkSpec::Part { .. } => {
            return Err(EtlError::Spec(
                "a gather writes a file or a directory of parts under the output root".into(),
            ))
        }
    };
    let spec = Gather {
        format,
        parts,
        path: &target.path,
        dir,
    };
    let target = paths::confine(&ws.output_root, "load path", spec.path)?;
    if !spec.dir {
        paths::check_not_a_directory(&target, spec.path)?;
    }
    match gather(ws, at, &spec, &target) {
        Ok(out) => Ok(out),
        // A slower attempt finds the parts gone: the first one committed.
        Err(e) => match ws.store.committed(at.flow_run, at.task)? {
            Some(out) => {
                // The attempt that committed may have died before this.
                remove(ws, spec.parts);
                Ok(out)
            }
            None => Err(e),
        },
    }
}

fn gather(ws: &Workspace, at: &Attempt, spec: &Gather, target: &Path) -> Result<TaskOutput> {
    let parts: Vec<PathBuf> = spec
        .parts
        .iter()
        .map(|p| ws.store.resolve(&p.path))
        .collect::<Result<_>>()?;
    let rows: u64 = spec.parts.iter().map(|p| p.rows).sum();
    let output = TaskOutput {
        rows_in: rows,
        rows_out: rows,
        artifact: None,
        location: target.display().to_string(),
    };
    let commit: Box<dyn FnOnce() -> Result<()>> = if spec.dir {
        let mut dir = PendingDir::create(target, &at.tag())?;
        dir.sweep = at.may_have_leftovers();
        for (i, part) in parts.iter().enumerate() {
            let name = format!("part-{i:05}.{}", spec.format.as_str());
            dir.add(part, &name)?;
        }
        dir.sync()?;
        let target = target.to_path_buf();
        Box::new(move || dir.commit_replace(&target))
    } else {
        let mut pending = PendingFile::create(target, &at.tag())?.sweeping(at.may_have_leftovers());
        let out = pending.file()?;
        match spec.format {
            DataFormat::Parquet => concat_parquet(&parts, out, pending.tmp_path())?,
            DataFormat::Csv | DataFormat::Jsonl => {
                let mut out = out;
                for part in &parts {
                    let mut f = File::open(part).map_err(|e| EtlError::io(part, e))?;
                    // copy_file_range on Linux: no trip through user space.
                    std::io::copy(&mut f, &mut out).map_err(|e| EtlError::io(part, e))?;
                }
            }
        }
        pending.sync()?;
        let target = target.to_path_buf();
        Box::new(move || pending.commit_replace(&target))
    };
    at.progress
        .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    // Whichever attempt committed, the parts are in the output now.
    crate::commit_fenced(ws, at, &output, commit)?;
    remove(ws, spec.parts);
    Ok(output)
}

/// Removes the store's copies of a committed gather's parts: they are in
/// the output. Called for a redelivered gather that finds its marker, in
/// case the attempt that committed died before removing them; does nothing
/// for any other task.
pub fn remove_parts(ws: &Workspace, spec: &TaskSpec) {
    if let SourceSpec::Parts { parts, .. } = &spec.source {
        remove(ws, parts);
    }
}

fn remove(ws: &Workspace, parts: &[ArtifactRef]) {
    for part in parts {
        if let Ok(path) = ws.store.resolve(&part.path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Joins Parquet files with the same schema by copying their row groups.
fn concat_parquet(parts: &[PathBuf], out: File, out_path: &Path) -> Result<()> {
    let pq = |path: &Path| {
        let path = path.to_path_buf();
        move |e: parquet::errors::ParquetError| {
            EtlError::Internal(format!("{}: {e}", path.display()))
        }
    };
    let mut inputs = Vec::with_capacity(parts.len());
    for part in parts {
        let file = File::open(part).map_err(|e| EtlError::io(part, e))?;
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .map_err(pq(part))?;
        inputs.push((part, file, meta));
    }
    let Some((_, _, first)) = inputs.first() else {
        return Err(EtlError::Internal("a gather with no parts".into()));
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    for (part, _, meta) in &inputs[1..] {
        if meta.file_metadata().schema() != first.file_metadata().schema() {
            return Err(EtlError::data(
                part,
                "part has a different schema from part 0",
            ));
        }
    }
    // Keeps the Arrow schema that readers use to restore exact types.
    let props = WriterProperties::builder()
        .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
        .build();
    let mut writer = SerializedFileWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, out),
        schema,
        Arc::new(props),
    )
    .map_err(pq(out_path))?;
    for (part, file, meta) in &inputs {
        for rg in meta.row_groups() {
            let mut rg_out = writer.next_row_group().map_err(pq(out_path))?;
            for column in rg.columns() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as _,
                    rows_written: rg.num_rows() as _,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                rg_out.append_column(file, close).map_err(pq(part))?;
            }
            rg_out.close().map_err(pq(out_path))?;
        }
    }
    let buf = writer.into_inner().map_err(pq(out_path))?;
    buf.into_inner()
        .map_err(|e| EtlError::io(out_path, e.into_error()))?;
    Ok(())
}

/// A directory being filled for one attempt (named by [`crate::store::tmp_name`])
/// beside the target, moved into place when complete, removed otherwise.
struct PendingDir {
    tmp: PathBuf,
    committed: bool,
    sweep: bool,
}

impl PendingDir {
    fn create(target: &Path, tag: &str) -> Result<PendingDir> {
        let (Some(dir), Some(name)) =
            (target.parent(), target.file_name().and_then(|n| n.to_str()))
        else {
            return Err(EtlError::Internal(format!(
                "{} has no name",
                target.display()
            )));
        };
        std::fs::create_dir_all(dir).map_err(|e| EtlError::io(dir, e))?;
        let tmp = dir.join(crate::store::tmp_name(name, tag));
        std::fs::create_dir(&tmp).map_err(|e| EtlError::io(&tmp, e))?;
        Ok(PendingDir {
            tmp,
            committed: false,
            sweep: true,
        })
    }

    fn add(&self, part: &Path, name: &str) -> Result<()> {
        let dest = self.tmp.join(name);
        if std::fs::hard_link(part, &dest).is_err() {
            // Another file system: copy, then make it durable.
            std::fs::copy(part, &dest).map_err(|e| EtlError::io(&dest, e))?;
            File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(|e| EtlError::io(&dest, e))?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|d| d.sync_all())
            .map_err(|e| EtlError::io(&self.tmp, e))
    }

    /// Puts the directory at `target`, replacing what is there.
    fn commit_replace(mut self, target: &Path) -> Result<()> {
        if let Ok(meta) = std::fs::symlink_metadata(target) {
            // rename(2) cannot replace a non-empty directory: move the old
            // output aside first, then remove it.
            let old = self.tmp.with_extension("old.tmp");
            std::fs::rename(target, &old).map_err(|e| EtlError::io(target, e))?;
            let _ = if meta.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            };
        }
        std::fs::rename(&self.tmp, target).map_err(|e| EtlError::io(target, e))?;
        self.committed = true;
        if self.sweep {
            sweep_leftovers(target);
        }
        sync_parent(target)
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
