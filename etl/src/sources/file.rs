/*!
Files in the load formats, read whole or one partition at a time: what the
connectors' file, glob and URL sources share. A partition is a byte range
cut at record boundaries (CSV, JSON lines) or a run of Parquet row groups.
*/

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use conveyor_schemas::{DataFormat, Partition, ReadOptions};

use super::csv;
use super::jsonl;
use super::parquet;
use crate::error::{EtlError, Result};
use crate::guard::{Framing, RecordGuard};
use crate::partition::{self, Cut, RangeReader};
use crate::pending::Pending;
use crate::source::Batches;

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
