/*! JSON lines: one object per row. */

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{write_err, BatchIter};
use crate::error::{EtlError, Result};

/// Streams `batches` as JSON lines. Returns the rows written.
pub(crate) fn write(out: BufWriter<File>, path: &Path, batches: BatchIter) -> Result<u64> {
    let mut rows = 0u64;
    let mut writer = arrow::json::LineDelimitedWriter::new(out);
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(write_err(path))?;
    }
    writer.finish().map_err(write_err(path))?;
    let mut inner = writer.into_inner();
    inner.flush().map_err(|e| EtlError::io(path, e))?;
    Ok(rows)
}
