/*!
CSV, with or without a header line. Dates, timestamps and decimals are
written in their canonical text (see [`crate::canonical`]).
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{EtlError, Result};
use crate::sink::{write_err, BatchIter};
use crate::typing::text_columns;

/// Streams `batches` as CSV. Returns the rows written.
///
/// A null is an empty field (`1,,3`) and an empty string a quoted one
/// (`1,"",3`), the two spellings the CSV reader tells apart, so that a CSV
/// round trip keeps them apart too. Other fields are quoted only when they
/// hold a comma, a quote or a line break, as arrow's CSV writer does.
pub(crate) fn write(
    mut out: BufWriter<File>,
    header: bool,
    path: &Path,
    schema: SchemaRef,
    batches: BatchIter,
) -> Result<u64> {
    let io = |e: std::io::Error| EtlError::io(path, e);
    if header {
        let mut line = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            push_field(
                &mut line,
                field.name().as_bytes(),
                schema.fields().len() == 1,
            );
        }
        line.push(b'\n');
        out.write_all(&line).map_err(io)?;
    }
    let options = FormatOptions::default().with_null("");
    let mut rows = 0u64;
    let mut line = Vec::with_capacity(1 << 16);
    let mut text = String::with_capacity(256);
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        // Dates, timestamps and decimals in their canonical text, the one
        // the CSV reader accepts for them.
        let batch = text_columns(&batch).map_err(write_err(path))?;
        let columns = batch.columns();
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(write_err(path))?;
        let alone = columns.len() == 1;
        for row in 0..batch.num_rows() {
            for (i, (column, format)) in columns.iter().zip(&formatters).enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                if column.is_null(row) {
                    if alone {
                        // A line of its own would read as no row at all.
                        line.extend_from_slice(b"\"\"");
                    }
                    continue;
                }
                text.clear();
                format
                    .value(row)
                    .write(&mut text)
                    .map_err(|e| EtlError::Internal(format!("{}: {e}", path.display())))?;
                push_field(&mut line, text.as_bytes(), true);
            }
            line.push(b'\n');
            if line.len() >= 1 << 16 {
                out.write_all(&line).map_err(io)?;
                line.clear();
            }
        }
    }
    out.write_all(&line).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(rows)
}

/// Appends one field: quoted when it holds a comma, a quote or a line
/// break, or when it is empty and `quote_empty`.
fn push_field(line: &mut Vec<u8>, value: &[u8], quote_empty: bool) {
    let needs_quotes = if value.is_empty() {
        quote_empty
    } else {
        value
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    };
    if !needs_quotes {
        line.extend_from_slice(value);
        return;
    }
    line.push(b'"');
    for &b in value {
        if b == b'"' {
            line.push(b'"');
        }
        line.push(b);
    }
    line.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn written(batch: RecordBatch, header: bool) -> String {
        let dir = std::env::temp_dir().join(format!("conveyor-csv-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.csv");
        let file = File::create(&path).unwrap();
        let schema = batch.schema();
        let mut batches = std::iter::once(Ok(batch));
        write(BufWriter::new(file), header, &path, schema, &mut batches).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        text
    }

    fn uuid_like() -> String {
        format!(
            "{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }

    #[test]
    fn a_null_is_an_empty_field_and_an_empty_string_a_quoted_one() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name, full", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
            Arc::new(StringArray::from(vec![
                Some(""),
                None,
                Some("say \"hi\", then\nleave"),
                Some("plain"),
            ])),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        assert_eq!(
            written(batch, true),
            "id,\"name, full\"\n1,\"\"\n,\n3,\"say \"\"hi\"\", then\nleave\"\n4,plain\n"
        );
    }

    #[test]
    fn a_null_alone_on_its_line_is_still_a_row() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        let column: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let batch = RecordBatch::try_new(schema, vec![column]).unwrap();
        assert_eq!(written(batch, false), "x\n\"\"\n");
    }
}
