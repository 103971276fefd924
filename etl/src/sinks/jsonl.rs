/*!
JSON lines: one object per row, every column in every row: a null is written
as an explicit `null`, so that rows keep their shape. Dates, timestamps and
decimals are JSON strings of their canonical text (see [`crate::canonical`]):
a decimal as a string keeps every digit, which a JSON number read as a float
would not.
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{EtlError, Result};
use crate::sink::{write_err, BatchIter};

/// Streams `batches` as JSON lines. Returns the rows written.
pub(crate) fn write(out: BufWriter<File>, path: &Path, batches: BatchIter) -> Result<u64> {
    let mut rows = 0u64;
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(out);
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        let batch = crate::typing::text_columns(&batch).map_err(write_err(path))?;
        writer.write(&batch).map_err(write_err(path))?;
    }
    writer.finish().map_err(write_err(path))?;
    let mut inner = writer.into_inner();
    inner.flush().map_err(|e| EtlError::io(path, e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn nulls_are_written_so_every_row_has_every_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![None, Some("")])),
            ],
        )
        .unwrap();
        let path =
            std::env::temp_dir().join(format!("conveyor-nulls-{}.jsonl", std::process::id()));
        let out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut batches = std::iter::once(Ok(batch));
        let rows = super::write(out, &path, &mut batches).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(rows, 2);
        assert_eq!(text, "{\"a\":1,\"b\":null}\n{\"a\":null,\"b\":\"\"}\n");
    }
}
