/*!
CSV, with or without a header line. Dates, timestamps and decimals are
written in their canonical text (see [`crate::canonical`]).
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::{write_err, BatchIter};
use crate::error::{EtlError, Result};
use crate::typing::text_columns;

/// Streams `batches` as CSV. Returns the rows written.
pub(crate) fn write(
    out: BufWriter<File>,
    header: bool,
    path: &Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(header)
        .build(out);
    let mut any = false;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        // Dates, timestamps and decimals in their canonical text, the one
        // the CSV reader accepts for them.
        let batch = text_columns(&batch).map_err(write_err(path))?;
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
    Ok(rows)
}
