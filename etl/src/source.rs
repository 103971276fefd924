/*!
Sources: CSV, Parquet and JSON lines, read batch by batch.

Every source is opened into [`Batches`]: a schema plus an iterator of record
batches, so memory stays bounded by the batch size, not the file size.
*/

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use conveyor_schemas::{ColumnSpec, ColumnType, DataFormat, ExtractSpec, SourceLocation};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{data_err, parquet_err, EtlError, Result};
use crate::guard::{Framing, RecordGuard};
use crate::store::{ArtifactStore, PendingFile};
use crate::typing::{arrow_type, convert_text, infer_column};

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

pub struct Batches {
    pub schema: SchemaRef,
    pub iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// The file a source reads: a local path, or a download of a URL into scratch.
pub struct SourceFile {
    pub path: PathBuf,
    /// Shown in errors: the path, or the URL for downloads.
    pub display: PathBuf,
    _download: Option<PendingFile>,
}

pub fn fetch(location: &SourceLocation, store: &ArtifactStore, tag: &str) -> Result<SourceFile> {
    match location {
        SourceLocation::Path(p) => Ok(SourceFile {
            path: PathBuf::from(p),
            display: PathBuf::from(p),
            _download: None,
        }),
        SourceLocation::Url(url) => {
            let fetch_err = |message: String, retryable: bool| EtlError::Fetch {
                url: url.clone(),
                message,
                retryable,
            };
            let response = ureq::get(url).call().map_err(|e| match e {
                ureq::Error::StatusCode(code) => fetch_err(
                    format!("server answered HTTP {code}"),
                    code >= 500 || code == 429,
                ),
                ureq::Error::BadUri(m) => fetch_err(format!("bad URL: {m}"), false),
                other => fetch_err(other.to_string(), true),
            })?;
            let scratch = store.scratch_dir()?.join("download");
            let mut pending = PendingFile::create(&scratch, tag)?;
            let mut file = pending.file()?;
            std::io::copy(&mut response.into_body().into_reader(), &mut file)
                .map_err(|e| fetch_err(format!("download failed: {e}"), true))?;
            Ok(SourceFile {
                path: pending.tmp_path().to_path_buf(),
                display: PathBuf::from(url),
                _download: Some(pending),
            })
        }
    }
}

/// The file under a parser: no record may grow past `max_record` bytes.
type Guarded = RecordGuard<File>;

/// Opens a source. `max_record` bounds one CSV record or JSON line, so that a
/// stray quote cannot make the reader buffer the rest of the file.
pub fn open(spec: &ExtractSpec, file: &SourceFile, max_record: u64) -> Result<Batches> {
    let f = File::open(&file.path).map_err(|e| EtlError::io(&file.display, e))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(EtlError::data(&file.display, "is a directory, not a file"));
    }
    match spec.format {
        DataFormat::Csv => {
            let f = RecordGuard::new(f, Framing::Csv { quote: b'"' }, max_record);
            open_csv(spec, f, &file.display)
        }
        DataFormat::Parquet => {
            let display = file.display.clone();
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(parquet_err(&display))?
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(parquet_err(&display))?;
            let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
            check_declared(spec.schema.as_deref(), &schema, &display)?;
            let iter = reader.map(move |b| b.map_err(data_err(&display)));
            Ok(Batches {
                schema,
                iter: Box::new(iter),
            })
        }
        DataFormat::Jsonl => {
            let display = file.display.clone();
            let mut reader = BufReader::new(RecordGuard::new(f, Framing::Lines, max_record));
            let schema = match spec.schema.as_deref() {
                Some(cols) => declared_schema(cols),
                None => {
                    let (schema, _) =
                        arrow::json::reader::infer_json_schema_from_seekable(&mut reader, None)
                            .map_err(data_err(&display))?;
                    reader
                        .seek(SeekFrom::Start(0))
                        .map_err(|e| EtlError::io(&display, e))?;
                    let order = first_object_keys(&mut reader, &display)?;
                    reader
                        .seek(SeekFrom::Start(0))
                        .map_err(|e| EtlError::io(&display, e))?;
                    in_key_order(schema, &order)
                }
            };
            if schema.fields().is_empty() {
                return Err(EtlError::data(&display, "is empty: no JSON objects found"));
            }
            let schema = Arc::new(schema);
            let json = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH_ROWS)
                .build(reader)
                .map_err(data_err(&display))?;
            let iter = json.map(move |b| b.map_err(data_err(&display)));
            Ok(Batches {
                schema,
                iter: Box::new(iter),
            })
        }
    }
}

/// Keys of the first JSON object, in file order. Schema inference sorts
/// columns by name; the file's own order is the one a user expects back.
fn first_object_keys(reader: &mut BufReader<Guarded>, file: &Path) -> Result<Vec<String>> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut line = String::new();
    while line.trim().is_empty() {
        line.clear();
        if std::io::BufRead::read_line(reader, &mut line).map_err(|e| EtlError::io(file, e))? == 0 {
            return Ok(Vec::new());
        }
    }
    let mut de = serde_json::Deserializer::from_str(line.trim());
    de.deserialize_map(Keys)
        .map_err(|e| EtlError::data(file, format!("line 1: {e}")))
}

/// Puts `schema`'s fields in `order`; fields not in it keep their place after.
fn in_key_order(schema: Schema, order: &[String]) -> Schema {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.sort_by_key(|f| {
        order
            .iter()
            .position(|k| k == f.name())
            .unwrap_or(usize::MAX)
    });
    Schema::new(fields)
}

fn declared_schema(cols: &[ColumnSpec]) -> Schema {
    Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, arrow_type(c.column_type), true))
            .collect::<Vec<_>>(),
    )
}

fn check_declared(declared: Option<&[ColumnSpec]>, actual: &Schema, file: &Path) -> Result<()> {
    let Some(cols) = declared else { return Ok(()) };
    let names: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
    if cols.len() != names.len() {
        return Err(EtlError::data(
            file,
            format!(
                "declared schema has {} columns but the file has {} ({})",
                cols.len(),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    for (i, (col, name)) in cols.iter().zip(&names).enumerate() {
        if col.name != *name {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column {} is `{name}` in the file but `{}` in the schema",
                    i + 1,
                    col.name
                ),
            ));
        }
        let want = arrow_type(col.column_type);
        let have = actual.field(i).data_type();
        if &want != have {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column `{name}` is {have} in the file but {} in the schema",
                    col.column_type.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn open_csv(spec: &ExtractSpec, mut f: Guarded, display: &Path) -> Result<Batches> {
    let delimiter = match spec.delimiter.as_bytes() {
        [b] if b.is_ascii() => *b,
        _ => {
            return Err(EtlError::Spec(format!(
                "CSV delimiter `{}` must be one ASCII character",
                spec.delimiter
            )))
        }
    };
    let format = Format::default()
        .with_header(spec.header)
        .with_delimiter(delimiter);
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
        reader,
        display: display.to_path_buf(),
        types: spec
            .schema
            .as_ref()
            .map(|cols| cols.iter().map(|c| c.column_type).collect()),
        strict: spec.schema.is_none(),
        names,
        rows_seen: 0,
        header: spec.header,
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

struct TypedCsv {
    reader: arrow::csv::Reader<BufReader<Guarded>>,
    display: PathBuf,
    /// Column types: declared, or inferred from the first batch.
    types: Option<Vec<ColumnType>>,
    /// Inferred types only accept the exact text they write back.
    strict: bool,
    names: Vec<String>,
    rows_seen: usize,
    header: bool,
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
                            "data row {row}{}, column `{}`: value `{}` is not a valid {} ({how})",
                            if self.header { " (after the header)" } else { "" },
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
