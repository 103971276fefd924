/*! Parquet, with the writer's default properties. */

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;

use crate::error::{EtlError, Result};
use crate::sink::BatchIter;

/// Streams `batches` as Parquet. Returns the rows written.
pub(crate) fn write(
    out: BufWriter<File>,
    path: &Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    let mut rows = 0u64;
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
    Ok(rows)
}
