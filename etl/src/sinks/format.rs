/*!
The load formats by name: [`encode`] streams rows into a file in a
[`DataFormat`], and [`FileFormat`] is that as an [`Encoder`] for the
writer ([`super::writer`]).
*/

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use arrow::datatypes::SchemaRef;
use conveyor_schemas::{DataFormat, FileTarget};

use super::csv;
use super::jsonl;
use super::parquet;
use super::writer::Encoder;
use crate::error::Result;
use crate::sink::BatchIter;

/// Streams `batches` into `file` in `format`. Returns the rows written.
pub fn encode(
    format: DataFormat,
    header: bool,
    file: File,
    path: &Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    let out = BufWriter::with_capacity(1 << 20, file);
    match format {
        DataFormat::Csv => csv::write(out, header, path, schema, batches),
        DataFormat::Parquet => parquet::write(out, path, schema, batches),
        DataFormat::Jsonl => jsonl::write(out, path, batches),
    }
}

/// A load format and, for CSV, whether to write the header.
#[derive(Clone, Copy, Debug)]
pub struct FileFormat {
    pub format: DataFormat,
    pub header: bool,
}

impl FileFormat {
    /// The format a load's target is written in.
    pub fn of(target: &FileTarget) -> FileFormat {
        FileFormat {
            format: target.format,
            header: target.header,
        }
    }
}

impl Encoder for FileFormat {
    fn encode(
        &self,
        file: File,
        path: &Path,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<u64> {
        encode(self.format, self.header, file, path, schema, batches)
    }
}
