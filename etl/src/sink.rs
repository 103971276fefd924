/*! Writers: the load formats (CSV, Parquet, JSON lines) and Arrow IPC artifacts. */

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use conveyor_schemas::DataFormat;
use parquet::arrow::ArrowWriter;

use crate::error::{EtlError, Result};

fn write_err(path: &Path) -> impl Fn(arrow::error::ArrowError) -> EtlError + '_ {
    move |e| match e {
        arrow::error::ArrowError::IoError(_, io) => EtlError::io(path, io),
        other => EtlError::Internal(format!("{}: {other}", path.display())),
    }
}

/// Streams `batches` into an Arrow IPC file. Returns the rows written.
pub fn write_ipc(
    file: File,
    path: &Path,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch>>,
) -> Result<u64> {
    let mut writer = arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), &schema)
        .map_err(write_err(path))?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(write_err(path))?;
    }
    writer.finish().map_err(write_err(path))?;
    let mut inner = writer.into_inner().map_err(write_err(path))?;
    inner.flush().map_err(|e| EtlError::io(path, e))?;
    Ok(rows)
}

/// Streams `batches` into the load's format. Returns the rows written.
pub fn write(
    format: DataFormat,
    header: bool,
    file: File,
    path: &Path,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch>>,
) -> Result<u64> {
    let out = BufWriter::with_capacity(1 << 20, file);
    let mut rows = 0u64;
    match format {
        DataFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(header)
                .build(out);
            let mut any = false;
            for batch in batches {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(write_err(path))?;
                any = true;
            }
            if !any && header {
                // Keep the header even when no rows survived.
                writer
                    .write(&RecordBatch::new_empty(schema))
                    .map_err(write_err(path))?;
            }
            let mut inner = writer.into_inner();
            inner.flush().map_err(|e| EtlError::io(path, e))?;
        }
        DataFormat::Parquet => {
            let mut writer = ArrowWriter::try_new(out, schema, None)
                .map_err(|e| EtlError::Internal(format!("{}: {e}", path.display())))?;
            for batch in batches {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer
                    .write(&batch)
                    .map_err(|e| EtlError::Internal(format!("{}: {e}", path.display())))?;
            }
            let mut inner = writer
                .into_inner()
                .map_err(|e| EtlError::Internal(format!("{}: {e}", path.display())))?;
            inner.flush().map_err(|e| EtlError::io(path, e))?;
        }
        DataFormat::Jsonl => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for batch in batches {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(write_err(path))?;
            }
            writer.finish().map_err(write_err(path))?;
            let mut inner = writer.into_inner();
            inner.flush().map_err(|e| EtlError::io(path, e))?;
        }
    }
    Ok(rows)
}
