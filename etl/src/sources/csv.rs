/*!
CSV: read as text, then typed column by column without loss (see
[`crate::typing`]), from declared types or from the first batch.
*/

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use conveyor_schemas::{ColumnSpec, ColumnType, ReadOptions};

use super::{check_declared, column_type, Batches, BATCH_ROWS};
use crate::error::{data_err, EtlError, Result};
use crate::guard::RecordGuard;
use crate::typing::{arrow_type, convert_text, infer_column};

/// The file under a parser: no record may grow past the record limit.
type Guarded = RecordGuard<std::fs::File>;

fn csv_format(spec: &ReadOptions) -> Result<Format> {
    let delimiter = match spec.delimiter.as_bytes() {
        [b] if b.is_ascii() => *b,
        _ => {
            return Err(EtlError::Spec(format!(
                "CSV delimiter `{}` must be one ASCII character",
                spec.delimiter
            )))
        }
    };
    Ok(Format::default()
        .with_header(spec.header)
        .with_delimiter(delimiter))
}

/// Opens a whole CSV file; the first batch fixes the inferred types.
pub(crate) fn open(spec: &ReadOptions, mut f: Guarded, display: &Path) -> Result<Batches> {
    let format = csv_format(spec)?;
    let (found, _) = format
        .infer_schema(&mut f, Some(1))
        .map_err(data_err(display))?;
    if found.fields().is_empty() {
        return Err(EtlError::data(display, "is empty"));
    }
    f.seek(SeekFrom::Start(0))
        .map_err(|e| EtlError::io(display, e))?;

    let names: Vec<String> = match (&spec.schema, spec.header) {
        (Some(cols), false) => {
            if cols.len() != found.fields().len() {
                return Err(EtlError::data(
                    display,
                    format!(
                        "declared schema has {} columns but the first row has {}",
                        cols.len(),
                        found.fields().len()
                    ),
                ));
            }
            cols.iter().map(|c| c.name.clone()).collect()
        }
        _ => found.fields().iter().map(|f| f.name().clone()).collect(),
    };
    let text_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    if let Some(cols) = &spec.schema {
        check_declared(Some(cols), &text_schema_with_types(&names, cols), display)?;
    }
    let reader = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(BufReader::with_capacity(1 << 20, f))
        .map_err(data_err(display))?;
    let mut typed = TypedCsv {
        reader: Box::new(reader),
        display: display.to_path_buf(),
        types: spec
            .schema
            .as_ref()
            .map(|cols| cols.iter().map(|c| c.column_type).collect()),
        strict: spec.schema.is_none(),
        names,
        rows_seen: 0,
        header: spec.header,
        origin: String::new(),
        schema: None,
    };
    // The first batch fixes the inferred types, and so the schema.
    let first = match typed.next_batch() {
        Some(batch) => batch?,
        None if spec.header => {
            return Err(EtlError::data(display, "has a header but no data rows"));
        }
        None => return Err(EtlError::data(display, "is empty")),
    };
    let schema = first.schema();
    let iter = std::iter::once(Ok(first)).chain(std::iter::from_fn(move || typed.next_batch()));
    Ok(Batches {
        schema,
        iter: Box::new(iter),
    })
}

/// Reads a byte range of a CSV file (the whole file, or one partition) with
/// the columns and types of `head`. `starts_file`: the range starts the
/// file, so it holds the header if there is one.
pub(crate) fn open_range(
    spec: &ReadOptions,
    bytes: impl BufRead + Send + 'static,
    head: &SchemaRef,
    display: &Path,
    origin: String,
    starts_file: bool,
) -> Result<Batches> {
    let display = display.to_path_buf();
    let with_header = spec.header && starts_file;
    let format = csv_format(spec)?.with_header(with_header);
    let text_schema = Arc::new(Schema::new(
        head.fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(bytes)
        .map_err(data_err(&display))?;
    let mut typed = TypedCsv {
        reader: Box::new(reader),
        display: display.clone(),
        types: Some(
            head.fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
        ),
        strict: spec.schema.is_none(),
        names: head.fields().iter().map(|f| f.name().clone()).collect(),
        rows_seen: 0,
        header: with_header,
        origin,
        schema: Some(head.clone()),
    };
    Ok(Batches {
        schema: head.clone(),
        iter: Box::new(std::iter::from_fn(move || typed.next_batch())),
    })
}

/// A schema with the file's names and the declared types, for name checks.
fn text_schema_with_types(names: &[String], cols: &[ColumnSpec]) -> Schema {
    Schema::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let t = cols
                    .get(i)
                    .map(|c| c.column_type)
                    .unwrap_or(ColumnType::String);
                Field::new(n, arrow_type(t), true)
            })
            .collect::<Vec<_>>(),
    )
}

type TextBatches =
    Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>;

struct TypedCsv {
    reader: TextBatches,
    display: PathBuf,
    /// Column types: declared, or inferred from the first batch.
    types: Option<Vec<ColumnType>>,
    /// Inferred types only accept the exact text they write back.
    strict: bool,
    names: Vec<String>,
    rows_seen: usize,
    header: bool,
    /// Where row numbers count from, for errors: empty for a whole file.
    origin: String,
    schema: Option<SchemaRef>,
}

impl TypedCsv {
    fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(data_err(&self.display)(e))),
        };
        let result = self.type_batch(&batch);
        self.rows_seen += batch.num_rows();
        Some(result)
    }

    fn type_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let types = self.types.get_or_insert_with(|| {
            batch
                .columns()
                .iter()
                .map(|c| infer_column(c.as_string::<i32>()))
                .collect()
        });
        let schema = self
            .schema
            .get_or_insert_with(|| {
                Arc::new(Schema::new(
                    self.names
                        .iter()
                        .zip(types.iter())
                        .map(|(n, t)| Field::new(n, arrow_type(*t), true))
                        .collect::<Vec<_>>(),
                ))
            })
            .clone();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(types.len());
        for (i, column) in batch.columns().iter().enumerate() {
            let converted = convert_text(column.as_string::<i32>(), types[i], self.strict)
                .map_err(|bad| {
                    let row = self.rows_seen + bad.index + 1;
                    let how = if self.strict {
                        "inferred from the first rows; declare the column's type in the task's `schema`"
                    } else {
                        "declared in the task's `schema`"
                    };
                    EtlError::data(
                        &self.display,
                        format!(
                            "data row {row}{}{}, column `{}`: value `{}` is not a valid {} ({how})",
                            self.origin,
                            if self.header && self.origin.is_empty() { " (after the header)" } else { "" },
                            self.names[i],
                            bad.value.escape_debug(),
                            types[i].as_str()
                        ),
                    )
                })?;
            columns.push(converted);
        }
        RecordBatch::try_new(schema, columns).map_err(|e| EtlError::Internal(e.to_string()))
    }
}
