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
use conveyor_schemas::{
    ColumnSpec, ColumnType, DataFormat, ExtractSpec, Partition, SourceLocation,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{data_err, parquet_err, EtlError, Result};
use crate::guard::{Framing, RecordGuard};
use crate::partition::{self, Cut, RangeReader};
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

/// Opens an extract's source: a downloaded URL, a local file or its
/// partition, or the files a glob matches (or this partition's run of them).
pub fn open_source(
    spec: &ExtractSpec,
    store: &ArtifactStore,
    tag: &str,
    max_record: u64,
) -> Result<Batches> {
    let pattern = match &spec.source {
        // A file whose name holds `[`, `*` or `?` is read as that file.
        SourceLocation::Path(p) if is_glob(p) && !Path::new(p).exists() => p,
        other => {
            let file = fetch(other, store, tag)?;
            let batches = match spec.partition {
                Some(part) if part.count > 1 || part.index > 0 => {
                    open_partition(spec, &file, part, max_record)?
                }
                _ => open(spec, &file, max_record)?,
            };
            // A download's scratch file lives as long as its reader.
            let iter = batches.iter;
            let iter = std::iter::from_fn({
                let mut iter = iter;
                move || {
                    let _keep = &file;
                    iter.next()
                }
            });
            return Ok(Batches {
                schema: batches.schema,
                iter: Box::new(iter),
            });
        }
    };
    open_glob(spec, pattern, max_record)
}

/// Whether a path is a glob pattern.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

fn local(path: &Path) -> SourceFile {
    SourceFile {
        path: path.to_path_buf(),
        display: path.to_path_buf(),
        _download: None,
    }
}

/// The files of a glob, sorted, are read one after another; partition `i` of
/// `n` reads a contiguous run of them, so parts keep the files' order. The
/// first file fixes the columns and their types; every other file must have
/// the same columns, and its values must fit those types.
fn open_glob(spec: &ExtractSpec, pattern: &str, max_record: u64) -> Result<Batches> {
    let shown = Path::new(pattern);
    let entries =
        glob::glob(pattern).map_err(|e| EtlError::Spec(format!("bad glob `{pattern}`: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path =
            entry.map_err(|e| EtlError::io(e.path(), std::io::Error::other(e.to_string())))?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(EtlError::data(shown, "no file matches this glob"));
    }
    let head = open(spec, &local(&files[0]), max_record)?.schema;
    let (index, count) = spec
        .partition
        .map(|p| (p.index as usize, p.count.max(1) as usize))
        .unwrap_or((0, 1));
    let mine: Vec<PathBuf> =
        files[index * files.len() / count..(index + 1) * files.len() / count].to_vec();
    let spec = spec.clone();
    let schema = head.clone();
    let mut current: Option<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> = None;
    let mut queue = mine.into_iter();
    let iter = std::iter::from_fn(move || loop {
        if let Some(it) = current.as_mut() {
            if let Some(next) = it.next() {
                return Some(next);
            }
        }
        let path = queue.next()?;
        match same_columns(&spec, &path, &schema, max_record)
            .and_then(|()| open_fixed(&spec, &local(&path), &schema, max_record, None))
        {
            Ok(b) => current = Some(b.iter),
            Err(e) => {
                queue = Vec::new().into_iter();
                return Some(Err(e));
            }
        }
    });
    Ok(Batches {
        schema: head,
        iter: Box::new(iter),
    })
}

/// Checks that a file of a glob has the columns of the first one.
fn same_columns(spec: &ExtractSpec, path: &Path, head: &SchemaRef, max_record: u64) -> Result<()> {
    let own = open(spec, &local(path), max_record)?.schema;
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(&own) != names(head) {
        return Err(EtlError::data(
            path,
            format!(
                "has columns {} but the first file of the glob has {}; every file must have the same columns",
                names(&own).join(", "),
                names(head).join(", ")
            ),
        ));
    }
    Ok(())
}

/// Opens partition `part` of one file. Columns and types come from the
/// start of the file, as they would for the whole file, so every partition
/// agrees on them; a value that does not fit fails the partition, naming
/// the byte where the partition starts.
fn open_partition(
    spec: &ExtractSpec,
    file: &SourceFile,
    part: Partition,
    max_record: u64,
) -> Result<Batches> {
    let head = open(spec, file, max_record)?.schema;
    open_fixed(spec, file, &head, max_record, Some(part))
}

/// Opens a whole file, or one partition of it, with the columns and types of
/// `head`.
fn open_fixed(
    spec: &ExtractSpec,
    file: &SourceFile,
    head: &SchemaRef,
    max_record: u64,
    part: Option<Partition>,
) -> Result<Batches> {
    let display = file.display.clone();
    let f = File::open(&file.path).map_err(|e| EtlError::io(&display, e))?;
    let len = f.metadata().map_err(|e| EtlError::io(&display, e))?.len();
    let (index, count) = part.map(|p| (p.index, p.count)).unwrap_or((0, 1));
    let cut = match spec.format {
        DataFormat::Csv => Cut::Csv { quote: b'"' },
        DataFormat::Jsonl => Cut::Lines,
        DataFormat::Parquet => return open_parquet_share(spec, f, head, index, count, &display),
    };
    let (start, end) =
        partition::range(&f, len, index, count, cut).map_err(|e| EtlError::io(&display, e))?;
    let framing = match cut {
        Cut::Csv { quote } => Framing::Csv { quote },
        Cut::Lines => Framing::Lines,
    };
    let bytes = BufReader::with_capacity(
        1 << 20,
        RecordGuard::new(RangeReader::new(f, start, end), framing, max_record),
    );
    let origin = if part.is_some() {
        format!(" of partition {index} (from byte {start})")
    } else {
        String::new()
    };
    match spec.format {
        DataFormat::Csv => {
            // Only the share that starts the file holds its header.
            let with_header = spec.header && start == 0;
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
        _ => {
            let json = arrow::json::ReaderBuilder::new(head.clone())
                .with_batch_size(BATCH_ROWS)
                .build(bytes)
                .map_err(data_err(&display))?;
            let iter = json.map(move |b| b.map_err(data_err(&display)));
            Ok(Batches {
                schema: head.clone(),
                iter: Box::new(iter),
            })
        }
    }
}

/// Partition `index` of `count` of a Parquet file: a run of its row groups.
fn open_parquet_share(
    spec: &ExtractSpec,
    f: File,
    head: &SchemaRef,
    index: u32,
    count: u32,
    display: &Path,
) -> Result<Batches> {
    let display = display.to_path_buf();
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet_err(&display))?;
    let groups = builder.metadata().num_row_groups();
    let (index, count) = (index as usize, count.max(1) as usize);
    let mine: Vec<usize> = (index * groups / count..(index + 1) * groups / count).collect();
    let reader = builder
        .with_row_groups(mine)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err(&display))?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    if schema.fields() != head.fields() {
        return Err(EtlError::data(
            &display,
            format!(
                "columns differ from the first file of the glob: {} here, {} there",
                field_list(&schema),
                field_list(head)
            ),
        ));
    }
    let _ = spec;
    let iter = reader.map(move |b| b.map_err(data_err(&display)));
    Ok(Batches {
        schema: head.clone(),
        iter: Box::new(iter),
    })
}

fn field_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_type(t: &DataType) -> ColumnType {
    match t {
        DataType::Int64 => ColumnType::Int64,
        DataType::Float64 => ColumnType::Float64,
        DataType::Boolean => ColumnType::Boolean,
        _ => ColumnType::String,
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

fn csv_format(spec: &ExtractSpec) -> Result<Format> {
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

fn open_csv(spec: &ExtractSpec, mut f: Guarded, display: &Path) -> Result<Batches> {
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
