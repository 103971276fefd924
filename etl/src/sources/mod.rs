/*!
Sources: where a task's rows come from, read batch by batch.

Every source opens into [`Batches`]: a schema plus an iterator of record
batches, so memory stays bounded by the batch size, not the file size.

# Layout
- this module: the [`Source`] trait, [`open`] (the engine's own sources, or
  the connector's, from the worker's registry), and the file readers the
  connectors' sources share ([`open_file`]): a whole file, or one
  partition of it (a byte range cut at record boundaries, or a run of
  Parquet row groups), in any of the file formats;
- [`csv`], [`jsonl`], [`parquet`]: the file formats;
- [`artifact`]: an Arrow IPC artifact in the store, or the parts of one
  table read one after another;

A file, a glob, a URL or a database is a connector's (in
`conveyor-connectors`): see [`crate::connector`].
*/

pub mod artifact;
pub mod csv;
pub mod jsonl;
pub mod parquet;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use conveyor_schemas::{ColumnSpec, ColumnType, DataFormat, Partition, ReadOptions, SourceSpec};

use crate::connector::Connectors;
use crate::error::{EtlError, Result};
use crate::guard::{Framing, RecordGuard};
use crate::partition::{self, Cut, RangeReader};
use crate::pending::Pending;
use crate::store::ArtifactStore;
use crate::typing::arrow_type;

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

/// An open source: its columns, then its rows, streamed.
pub struct Batches {
    pub schema: SchemaRef,
    pub iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// What a source may use while it opens.
pub struct ReadContext<'a> {
    pub store: &'a dyn ArtifactStore,
    /// The attempt's tag, for scratch file names.
    pub tag: &'a str,
    /// Longest CSV record or JSON line a source may hold, in bytes, so that a
    /// stray quote cannot make a reader buffer the rest of the file.
    pub max_record: u64,
    /// What this node's sources may read and fetch.
    pub policy: &'a crate::policy::SourcePolicy,
    /// The attempt's cancel flag ([`crate::attempt::Attempt::cancel`]): a download
    /// checks it between chunks, so an abandoned attempt stops soon.
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Something a task reads rows from.
pub trait Source {
    /// Opens the source: its schema now, its batches as they are read.
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches>;
}

/// The source a spec names: the engine's own, or a connector's.
pub fn source(spec: &SourceSpec, connectors: &Connectors) -> Result<Box<dyn Source>> {
    Ok(match spec {
        SourceSpec::Artifact(artifact) => Box::new(artifact::ArtifactSource(artifact.clone())),
        SourceSpec::Parts { .. } => {
            return Err(EtlError::Spec(
                "a parts source is only read by a gather, with no steps".into(),
            ))
        }
        SourceSpec::Tables { tables } => match tables.as_slice() {
            [one] => Box::new(artifact::ArtifactsSource {
                name: one.name.clone(),
                artifacts: one.artifacts.clone(),
            }),
            _ => {
                return Err(EtlError::Spec(format!(
                    "{} named tables are read by a SQL step: the first step must be SQL",
                    tables.len()
                )))
            }
        },
        // A connector's source.
        _ => return connectors.source(spec),
    })
}

/// Opens the source a spec names.
pub fn open(spec: &SourceSpec, connectors: &Connectors, cx: &ReadContext) -> Result<Batches> {
    source(spec, connectors)?.open(cx)
}

/// The file a source reads: a local path, or a download of a URL into scratch.
pub struct SourceFile {
    pub path: PathBuf,
    /// Shown in errors: the path, or the URL for downloads.
    pub display: PathBuf,
    /// Removed once the reader is done with it.
    pub download: Option<Pending>,
}

impl SourceFile {
    pub fn local(path: &Path) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            display: path.to_path_buf(),
            download: None,
        }
    }
}

/// Opens a file, or the partition of it that `read` names, keeping the file
/// (a download's scratch file) as long as its reader.
pub fn open_file(read: &ReadOptions, file: SourceFile, max_record: u64) -> Result<Batches> {
    let batches = match read.partition {
        Some(part) if part.count > 1 || part.index > 0 => {
            open_partition(read, &file, part, max_record)?
        }
        _ => open_whole(read, &file, max_record)?,
    };
    let mut iter = batches.iter;
    let iter = std::iter::from_fn(move || {
        let _keep = &file;
        iter.next()
    });
    Ok(Batches {
        schema: batches.schema,
        iter: Box::new(iter),
    })
}

/// Opens a whole file, its columns and types declared or inferred.
pub fn open_whole(read: &ReadOptions, file: &SourceFile, max_record: u64) -> Result<Batches> {
    let f = File::open(&file.path).map_err(|e| EtlError::io(&file.display, e))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(EtlError::data(&file.display, "is a directory, not a file"));
    }
    match read.format {
        DataFormat::Csv => {
            let f = RecordGuard::new(f, Framing::Csv { quote: b'"' }, max_record);
            csv::open(read, f, &file.display)
        }
        DataFormat::Parquet => parquet::open(read, f, &file.display),
        DataFormat::Jsonl => {
            let f = RecordGuard::new(f, Framing::Lines, max_record);
            jsonl::open(read, f, &file.display)
        }
    }
}

/// Opens partition `part` of one file. Columns and types come from the
/// start of the file, as they would for the whole file, so every partition
/// agrees on them; a value that does not fit fails the partition, naming
/// the byte where the partition starts.
fn open_partition(
    read: &ReadOptions,
    file: &SourceFile,
    part: Partition,
    max_record: u64,
) -> Result<Batches> {
    let head = open_whole(read, file, max_record)?.schema;
    open_fixed(read, file, &head, max_record, Some(part))
}

/// Opens a whole file, or one partition of it, with the columns and types of
/// `head`.
pub fn open_fixed(
    read: &ReadOptions,
    file: &SourceFile,
    head: &SchemaRef,
    max_record: u64,
    part: Option<Partition>,
) -> Result<Batches> {
    let display = file.display.clone();
    let f = File::open(&file.path).map_err(|e| EtlError::io(&display, e))?;
    let len = f.metadata().map_err(|e| EtlError::io(&display, e))?.len();
    let (index, count) = part.map(|p| (p.index, p.count)).unwrap_or((0, 1));
    let cut = match read.format {
        DataFormat::Csv => Cut::Csv { quote: b'"' },
        DataFormat::Jsonl => Cut::Lines,
        DataFormat::Parquet => return parquet::open_share(f, head, index, count, &display),
    };
    let (start, end) =
        partition::range(&f, len, index, count, cut).map_err(|e| EtlError::io(&display, e))?;
    let framing = match cut {
        Cut::Csv { quote } => Framing::Csv { quote },
        Cut::Lines => Framing::Lines,
    };
    let lines_before = if start == 0 {
        jsonl::LinesBefore::None
    } else {
        let again = f.try_clone().map_err(|e| EtlError::io(&display, e))?;
        jsonl::LinesBefore::Count(again, start)
    };
    let bytes = RecordGuard::new(RangeReader::new(f, start, end), framing, max_record);
    let origin = if part.is_some() {
        format!(" of partition {index} (from byte {start})")
    } else {
        String::new()
    };
    match read.format {
        // Only the share that starts the file holds its header.
        DataFormat::Csv => csv::open_range(read, bytes, head, &display, origin, start == 0),
        _ => jsonl::open_range(
            BufReader::with_capacity(1 << 20, bytes),
            head,
            &display,
            lines_before,
        ),
    }
}

pub fn field_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn column_type(t: &DataType) -> ColumnType {
    crate::typing::column_type(t).unwrap_or(ColumnType::String)
}

pub(crate) fn declared_schema(cols: &[ColumnSpec]) -> Schema {
    Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, arrow_type(c.column_type), true))
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn check_declared(
    declared: Option<&[ColumnSpec]>,
    actual: &Schema,
    file: &Path,
) -> Result<()> {
    let Some(cols) = declared else { return Ok(()) };
    let names: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
    if cols.len() != names.len() {
        return Err(EtlError::data(
            file,
            format!(
                "declared schema has {} columns but the file has {} ({})",
                cols.len(),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    for (i, (col, name)) in cols.iter().zip(&names).enumerate() {
        if col.name != *name {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column {} is `{name}` in the file but `{}` in the schema",
                    i + 1,
                    col.name
                ),
            ));
        }
        let want = arrow_type(col.column_type);
        let have = actual.field(i).data_type();
        if &want != have {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column `{name}` is {have} in the file but {} in the schema",
                    col.column_type
                ),
            ));
        }
    }
    Ok(())
}
