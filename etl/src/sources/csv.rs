/*!
CSV: read as text, then typed column by column without loss (see
[`crate::typing`]), from declared types or from the first batch.

arrow-csv reads every empty field as a null. A quoted empty field (`""`) is
an empty string, though: [`QuotedEmpties`] notes where they are as the
bytes pass, and each batch puts them back before it is typed, so a column
that holds one is text.
*/

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use conveyor_schemas::{ColumnSpec, ColumnType, ReadOptions};

use super::columns::{check_declared, column_type};
use crate::error::{data_err, EtlError, Result};
use crate::guard::RecordGuard;
use crate::quoted_empty::{EmptyCells, QuotedEmpties};
use crate::source::{Batches, BATCH_ROWS};
use crate::typing::{arrow_type, convert_text, infer_column};

/// The file under a parser: no record may grow past the record limit.
type Guarded = RecordGuard<std::fs::File>;

fn delimiter(spec: &ReadOptions) -> Result<u8> {
    match spec.delimiter.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(EtlError::Spec(format!(
            "CSV delimiter `{}` must be one ASCII character",
            spec.delimiter
        ))),
    }
}

fn csv_format(spec: &ReadOptions) -> Result<Format> {
    Ok(Format::default()
        .with_header(spec.header)
        .with_delimiter(delimiter(spec)?))
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
    let scan = QuotedEmpties::new(f, delimiter(spec)?, b'"');
    let empties = scan.cells();
    let reader = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(BufReader::with_capacity(1 << 20, scan))
        .map_err(data_err(display))?;
    let mut typed = TypedCsv {
        reader: Box::new(reader),
        empties,
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
    bytes: impl Read + Send + 'static,
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
    let scan = QuotedEmpties::new(bytes, delimiter(spec)?, b'"');
    let empties = scan.cells();
    let reader = arrow::csv::ReaderBuilder::new(text_schema)
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(BufReader::with_capacity(1 << 20, scan))
        .map_err(data_err(&display))?;
    let mut typed = TypedCsv {
        reader: Box::new(reader),
        empties,
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
    /// Where the quoted empty fields (`""`) are, which the reader read as nulls.
    empties: EmptyCells,
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
        let text = self.with_empty_strings(batch);
        let declared = self.types.is_some();
        let types = self.types.get_or_insert_with(|| {
            text.iter()
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
        for (i, column) in text.iter().enumerate() {
            // A declared type other than text keeps reading `""` as a
            // missing value, as it always has.
            let column = if declared && !self.strict && types[i] != ColumnType::String {
                batch.column(i)
            } else {
                column
            };
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
                            "data row {row}{}{}, column `{}`: {} ({how})",
                            self.origin,
                            if self.header && self.origin.is_empty() { " (after the header)" } else { "" },
                            self.names[i],
                            bad.describe(types[i]),
                        ),
                    )
                })?;
            columns.push(converted);
        }
        RecordBatch::try_new(schema, columns).map_err(|e| EtlError::Internal(e.to_string()))
    }

    /// The batch's text columns, with an empty string, not a null, where
    /// the field was `""`.
    fn with_empty_strings(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        let mut columns = batch.columns().to_vec();
        // Records counted by the scan include the header.
        let first = (self.rows_seen + usize::from(self.header)) as u64;
        let cells = self.empties.take_before(first + batch.num_rows() as u64);
        let mut rows_of: Vec<Vec<bool>> = vec![Vec::new(); columns.len()];
        for (record, column) in cells {
            let (Some(rows), Some(row)) = (rows_of.get_mut(column), record.checked_sub(first))
            else {
                continue;
            };
            rows.resize(batch.num_rows(), false);
            if let Some(slot) = rows.get_mut(row as usize) {
                *slot = true;
            }
        }
        for (column, rows) in columns.iter_mut().zip(&rows_of) {
            if rows.is_empty() {
                continue;
            }
            let patched: StringArray = column
                .as_string::<i32>()
                .iter()
                .zip(rows)
                .map(|(v, &empty)| if empty { Some(v.unwrap_or("")) } else { v })
                .collect();
            *column = Arc::new(patched);
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{DataType, Int64Type};
    use conveyor_schemas::{DataFormat, Partition, ReadOptions};

    use crate::error::Result;
    use crate::sources::file::{open_file, SourceFile};

    /// Reads `text` as a CSV file with a header, whole or as partition
    /// `part`, into one batch.
    fn read(name: &str, text: &str, part: Option<(u32, u32)>) -> Result<RecordBatch> {
        let dir = std::env::temp_dir().join(format!("conveyor-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let read = ReadOptions {
            format: DataFormat::Csv,
            schema: None,
            header: true,
            delimiter: ",".into(),
            partition: part.map(|(index, count)| Partition { index, count }),
        };
        let result = open_file(&read, SourceFile::local(&path), 1 << 20).and_then(|b| {
            let batches = b.iter.collect::<Result<Vec<_>>>()?;
            Ok(concat_batches(&b.schema, &batches).unwrap())
        });
        let _ = std::fs::remove_file(&path);
        result
    }

    fn texts(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
        let values = batch.column(column).as_string::<i32>();
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn a_quoted_empty_field_is_an_empty_string_and_makes_its_column_text() {
        let batch = read("quoted.csv", "a,b,c,d\n1,\"\",\"\",\n2,3,4,5\n", None).unwrap();
        let types: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Int64
            ]
        );
        let s = |v: &str| Some(v.to_string());
        assert_eq!(texts(&batch, 1), [s(""), s("3")]);
        assert_eq!(texts(&batch, 2), [s(""), s("4")]);
        // An unquoted empty field stays a missing value.
        let d = batch.column(3).as_primitive::<Int64Type>();
        assert!(d.is_null(0) && d.value(1) == 5);
    }

    #[test]
    fn quoted_empty_fields_land_on_their_rows_in_every_partition_and_batch() {
        let mut text = String::from("id,note\n");
        for i in 0..20_000 {
            let note = match i % 3 {
                0 => "\"\"".to_string(),
                1 => String::new(),
                _ => format!("\"n,{i}\""),
            };
            text.push_str(&format!("{i},{note}\n"));
        }
        let expect = |i: i64| match i % 3 {
            0 => Some(String::new()),
            1 => None,
            _ => Some(format!("n,{i}")),
        };
        for count in [1, 3] {
            for index in 0..count {
                let batch = read("many.csv", &text, Some((index, count))).unwrap();
                let ids = batch.column(0).as_primitive::<Int64Type>();
                let notes = texts(&batch, 1);
                assert!(batch.num_rows() > 0);
                for (row, note) in notes.iter().enumerate() {
                    assert_eq!(*note, expect(ids.value(row)), "part {index} of {count}");
                }
            }
        }
    }

    #[test]
    fn a_quoted_empty_field_after_the_first_batch_in_an_int_column_fails_naming_it() {
        let mut text = String::from("id,n\n");
        for i in 0..9000 {
            text.push_str(&format!("{i},{}\n", if i == 8500 { "\"\"" } else { "7" }));
        }
        let err = read("late.csv", &text, None).unwrap_err().to_string();
        assert!(
            err.contains("data row 8501") && err.contains("column `n`"),
            "{err}"
        );
    }
}
