/*!
The files connector's sink: a file under the output root in a load format,
replaced at commit under the task run's fence (the data plane's one
writer, [`EncodingSink`], with a [`FileFormat`] encoder); and the gather
that puts the parts of a partitioned load in place there:
- one file: CSV and JSON-lines parts are appended byte for byte (only the
  first part has the CSV header); Parquet parts are joined by copying their
  encoded row groups, with no decoding or re-encoding;
- a directory (`parts = true`): the parts become `part-00000.EXT`, ... (hard
  links where the store shares a file system with the output).

Either way the output appears at once, by rename, when it is complete, and
it is fenced by the task run's commit marker like any load (see
[`conveyor_etl::commit`]).
*/

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conveyor_etl::attempt::Attempt;
use conveyor_etl::workspace::Workspace;
use conveyor_etl::commit;
use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::paths;
use conveyor_etl::pending::Pending;
use conveyor_etl::sinks::format::FileFormat;
use conveyor_etl::sinks::writer::{Destination, EncodingSink};
use conveyor_schemas::{ArtifactRef, DataFormat, FileTarget, TaskOutput};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// A file under the output root.
pub fn output<'a>(
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &FileTarget,
) -> Result<EncodingSink<'a, FileFormat>> {
    let final_path = paths::confine(&ws.output_root, "load path", &target.path)?;
    paths::check_not_a_directory(&final_path, &target.path)?;
    let destination = Destination::output(ws, at, final_path)?;
    Ok(EncodingSink::new(at, FileFormat::of(target), destination))
}

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

/// Puts `parts` (each a file of `format` in the store) in place as
/// `target`: a file, or with `dir` a directory of parts.
pub fn gather_into(
    ws: &Workspace,
    at: &Attempt,
    format: DataFormat,
    parts: &[ArtifactRef],
    target: &FileTarget,
    dir: bool,
) -> Result<TaskOutput> {
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
    commit::gather_fenced(ws, at, parts, || gather(ws, at, &spec, &target))
}

fn gather(ws: &Workspace, at: &Attempt, spec: &Gather, target: &Path) -> Result<TaskOutput> {
    let parts: Vec<PathBuf> = spec
        .parts
        .iter()
        .map(|p| ws.store.open(&p.path))
        .collect::<Result<_>>()?;
    let rows: u64 = spec.parts.iter().map(|p| p.rows).sum();
    let output = TaskOutput {
        rows_in: rows,
        rows_out: rows,
        artifact: None,
        location: target.display().to_string(),
        bytes_in: None,
        bytes_out: None,
    };
    let commit: Box<dyn FnOnce() -> Result<()>> = if spec.dir {
        let mut dir = Pending::dir(target, &at.tag())?.sweeping(at.may_have_leftovers());
        for (i, part) in parts.iter().enumerate() {
            let name = format!("part-{i:05}.{}", spec.format.as_str());
            dir.add(part, &name)?;
        }
        dir.sync()?;
        let target = target.to_path_buf();
        Box::new(move || dir.commit_replace(&target))
    } else {
        let mut pending = Pending::file(target, &at.tag())?.sweeping(at.may_have_leftovers());
        let out = pending.writer()?;
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
    commit::commit_fenced(ws, at, &output, commit)?;
    commit::remove_parts(ws, spec.parts);
    Ok(output)
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
