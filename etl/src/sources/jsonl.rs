/*!
JSON lines: one object per line; columns in the first object's key order.

Errors name the line they are on, counted over the whole file (blank lines
included), also when a partition reads only a byte range of it. The arrow
decoder knows nothing of lines, so [`LineFed`] feeds it one line at a time:
a syntax error is then on the line just fed. A value that does not fit its
column only shows when a batch is decoded, so the batch's bytes are kept
and, on such an error, decoded again row by row to find the line at fault.
*/

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::reader::Decoder;
use conveyor_schemas::ReadOptions;

use super::columns::declared_schema;
use crate::error::{EtlError, Result};
use crate::guard::RecordGuard;
use crate::source::{Batches, BATCH_ROWS};

/// The file under a parser: no line may grow past the record limit.
type Guarded = RecordGuard<File>;

/// Opens a whole JSON-lines file, its columns declared or inferred.
pub(crate) fn open(spec: &ReadOptions, f: Guarded, display: &Path) -> Result<Batches> {
    let mut reader = BufReader::new(f);
    let schema = match spec.schema.as_deref() {
        Some(cols) => {
            // The JSON decoder reads these leniently (`1.5` into a
            // decimal(10,2)), which would change values silently.
            if let Some(col) = cols
                .iter()
                .find(|c| crate::typing::has_canonical_text(c.column_type))
            {
                return Err(EtlError::Spec(format!(
                    "{}: column `{}` is declared {}, which JSON lines cannot declare; declare it string and `cast` it to {}",
                    display.display(),
                    col.name,
                    col.column_type,
                    col.column_type
                )));
            }
            declared_schema(cols)
        }
        None => {
            let schema = infer_schema(&mut reader, display)?;
            std::io::Seek::rewind(&mut reader).map_err(|e| EtlError::io(display, e))?;
            schema
        }
    };
    if schema.fields().is_empty() {
        return Err(EtlError::data(display, "is empty: no JSON objects found"));
    }
    open_range(reader, &Arc::new(schema), display, LinesBefore::None)
}

/// Where a range's line 1 is in its file, for errors.
pub(crate) enum LinesBefore {
    /// The range starts the file.
    None,
    /// The range starts at this byte of the file: the lines before it are
    /// counted only if an error needs them.
    Count(File, u64),
}

impl LinesBefore {
    fn count(&self) -> std::io::Result<u64> {
        match self {
            LinesBefore::None => Ok(0),
            LinesBefore::Count(file, start) => crate::partition::count_byte(file, *start, b'\n'),
        }
    }
}

/// Reads a byte range of a JSON-lines file (the whole file, or one
/// partition) with the columns and types of `head`.
pub(crate) fn open_range(
    bytes: impl BufRead + Send + 'static,
    head: &SchemaRef,
    display: &Path,
    before: LinesBefore,
) -> Result<Batches> {
    let mut fed = LineFed {
        bytes,
        decoder: new_decoder(head, BATCH_ROWS)
            .map_err(|e| EtlError::data(display, e.to_string()))?,
        schema: head.clone(),
        display: display.to_path_buf(),
        line: 1,
        pending: Vec::new(),
        row_lines: Vec::new(),
        before,
    };
    Ok(Batches {
        schema: head.clone(),
        iter: Box::new(std::iter::from_fn(move || fed.next_batch().transpose())),
    })
}

fn new_decoder(schema: &SchemaRef, rows: usize) -> std::result::Result<Decoder, ArrowError> {
    arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows)
        .build_decoder()
}

/// The arrow decoder, fed one line at a time so that errors know their line.
struct LineFed<R> {
    bytes: R,
    decoder: Decoder,
    schema: SchemaRef,
    display: PathBuf,
    /// The line (1-based, in the range) of the next byte to feed.
    line: u64,
    /// The bytes fed since the last flush: a batch that fails to decode is
    /// decoded again from them, line by line, to find the line at fault.
    pending: Vec<u8>,
    /// Each line that starts a buffered row: its number and its offset in
    /// `pending`.
    row_lines: Vec<(u64, usize)>,
    before: LinesBefore,
}

impl<R: BufRead> LineFed<R> {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let buf = self
                .bytes
                .fill_buf()
                .map_err(|e| EtlError::io(&self.display, e))?;
            if buf.is_empty() {
                break;
            }
            let take = memchr::memchr(b'\n', buf).map_or(buf.len(), |at| at + 1);
            let chunk = &buf[..take];
            let rows = self.decoder.len();
            let used = match self.decoder.decode(chunk) {
                Ok(used) => used,
                Err(e) => return Err(self.error_at(self.line, e)),
            };
            if self.decoder.len() > rows {
                self.row_lines.push((self.line, self.pending.len()));
            }
            self.pending.extend_from_slice(&chunk[..used]);
            let ended_line = chunk[..used].ends_with(b"\n");
            self.bytes.consume(used);
            if ended_line {
                self.line += 1;
            }
            if used < take {
                break; // a full batch
            }
        }
        if self.decoder.has_partial_record() {
            let line = self.row_lines.last().map_or(self.line, |r| r.0);
            return Err(self.error_at(
                line,
                ArrowError::JsonError("the object is not closed before the end".into()),
            ));
        }
        match self.decoder.flush() {
            Ok(batch) => {
                self.pending.clear();
                self.row_lines.clear();
                Ok(batch)
            }
            Err(e) => {
                let (line, e) = self.find_bad_row(e);
                Err(self.error_at(line, e))
            }
        }
    }

    /// Decodes the failed batch's rows again one line at a time: the first
    /// that fails is the line at fault.
    fn find_bad_row(&self, batch_error: ArrowError) -> (u64, ArrowError) {
        let first = self.row_lines.first().map_or(self.line, |r| r.0);
        for (i, &(line, from)) in self.row_lines.iter().enumerate() {
            let to = self
                .row_lines
                .get(i + 1)
                .map_or(self.pending.len(), |r| r.1);
            let Ok(mut one) = new_decoder(&self.schema, 64) else {
                break;
            };
            if let Err(e) = one
                .decode(&self.pending[from..to])
                .and_then(|_| one.flush())
            {
                return (line, e);
            }
        }
        (first, batch_error)
    }

    fn error_at(&self, line: u64, e: ArrowError) -> EtlError {
        let e = match e {
            ArrowError::IoError(_, io) => return EtlError::io(&self.display, io),
            ArrowError::JsonError(text) => text,
            other => other.to_string(),
        };
        let line = match self.before.count() {
            Ok(before) => (before + line).to_string(),
            Err(_) => format!("{line} of the partition"),
        };
        EtlError::data(&self.display, format!("line {line}{}", in_field(&e)))
    }
}

/// Arrow's "whilst decoding field 'a': whilst decoding field 'b': why" as
/// ", field `a.b`: why".
fn in_field(message: &str) -> String {
    let mut path = Vec::new();
    let mut rest = message;
    while let Some(tail) = rest.strip_prefix("whilst decoding field '") {
        let Some((name, after)) = tail.split_once("': ") else {
            break;
        };
        path.push(name);
        rest = after;
    }
    if path.is_empty() {
        format!(": {rest}")
    } else {
        format!(", field `{}`: {rest}", path.join("."))
    }
}

/// Infers the columns of a whole file, in its first object's key order.
/// Inference sorts columns by name; the file's own order is the one a user
/// expects back.
fn infer_schema(reader: &mut impl BufRead, file: &Path) -> Result<Schema> {
    let mut text = Vec::new();
    let mut line = 0u64;
    let mut order: Option<Vec<String>> = None;
    let mut failure: Option<EtlError> = None;
    let values = std::iter::from_fn(|| loop {
        text.clear();
        line += 1;
        let read = match reader.read_until(b'\n', &mut text) {
            Ok(n) => n,
            Err(e) => {
                failure = Some(EtlError::io(file, e));
                return Some(Err(ArrowError::JsonError(String::new())));
            }
        };
        if read == 0 {
            return None;
        }
        if text.trim_ascii().is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&text).and_then(|value| {
            if order.is_none() {
                order = Some(object_keys(&text)?);
            }
            Ok(value)
        });
        return Some(match parsed {
            Ok(value) if value.is_object() => Ok(value),
            Ok(_) => {
                failure = Some(EtlError::data(
                    file,
                    format!("line {line}: a JSON-lines record must be an object"),
                ));
                Err(ArrowError::JsonError(String::new()))
            }
            Err(e) => {
                let bare = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let why = bare.strip_suffix(&suffix).unwrap_or(&bare);
                failure = Some(EtlError::data(
                    file,
                    format!("line {line}, column {}: {why}", e.column()),
                ));
                Err(ArrowError::JsonError(String::new()))
            }
        });
    });
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(values);
    if let Some(e) = failure {
        return Err(e);
    }
    let schema = inferred.map_err(crate::error::data_err(file))?;
    Ok(in_key_order(schema, order.as_deref().unwrap_or_default()))
}

/// The keys of one JSON object, in their order.
fn object_keys(text: &[u8]) -> serde_json::Result<Vec<String>> {
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
    serde_json::Deserializer::from_slice(text.trim_ascii()).deserialize_map(Keys)
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

#[cfg(test)]
mod tests {
    use conveyor_schemas::{ColumnSpec, ColumnType, DataFormat, Partition, ReadOptions};

    use crate::error::EtlError;
    use crate::sources::file::{open_file, SourceFile};

    /// Reads `text` as a JSON-lines file (or one partition of it) to the
    /// end, and returns the error that stopped it.
    fn read_error(
        name: &str,
        text: &str,
        schema: Option<Vec<ColumnSpec>>,
        part: Option<(u32, u32)>,
    ) -> EtlError {
        let dir = std::env::temp_dir().join(format!("conveyor-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let read = ReadOptions {
            format: DataFormat::Jsonl,
            schema,
            header: true,
            delimiter: ",".into(),
            partition: part.map(|(index, count)| Partition { index, count }),
        };
        let result = open_file(&read, SourceFile::local(&path), 1 << 20)
            .and_then(|batches| batches.iter.collect::<Result<Vec<_>, _>>());
        let _ = std::fs::remove_file(&path);
        result.expect_err("the read should fail")
    }

    fn int_id() -> Option<Vec<ColumnSpec>> {
        Some(vec![ColumnSpec {
            name: "id".into(),
            column_type: ColumnType::Int64,
        }])
    }

    fn assert_data_error(err: &EtlError, needles: &[&str]) {
        assert!(
            matches!(err, EtlError::Data { .. }) && !err.retryable(),
            "{err:?}"
        );
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }

    #[test]
    fn a_syntax_error_names_its_line_in_the_file() {
        // Inferred columns: the error comes from inference.
        let err = read_error("syntax.jsonl", "{\"id\":1}\n{\"id\":}\n", None, None);
        assert_data_error(&err, &["syntax.jsonl", "line 2, column 7"]);
        assert!(!err.to_string().contains("line 1"), "{err}");
        // Declared columns: from the decoder; blank lines count.
        let text = "{\"id\":1}\n\n{\"id\":2}\n{\"id\" 3}\n{\"id\":4}\n";
        let err = read_error("declared.jsonl", text, int_id(), None);
        assert_data_error(&err, &["declared.jsonl", "line 4:"]);
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_line_and_field() {
        let text = "{\"id\":1}\n{\"id\":2}\n\n{\"id\":\"x\"}\n{\"id\":5}\n";
        let err = read_error("clash.jsonl", text, int_id(), None);
        assert_data_error(&err, &["clash.jsonl", "line 4, field `id`"]);
        // Inferred as text (a number and a string), the number clashes.
        let text = "{\"n\":\"a\",\"id\":\"a\"}\n{\"n\":\"b\",\"id\":7}\n";
        let err = read_error("mixed.jsonl", text, None, None);
        assert_data_error(&err, &["mixed.jsonl", "line 2, field `id`"]);
    }

    #[test]
    fn a_partition_names_the_line_in_the_whole_file() {
        let mut text = String::new();
        for i in 1..=300 {
            if i == 250 {
                text.push_str("{\"id\":\"bad\"}\n");
            } else {
                text.push_str(&format!("{{\"id\":{i}}}\n"));
            }
        }
        let err = read_error("part.jsonl", &text, int_id(), Some((2, 3)));
        assert_data_error(&err, &["part.jsonl", "line 250, field `id`"]);
        let text = text.replace("{\"id\":\"bad\"}", "{\"id\":,}");
        let err = read_error("part_syntax.jsonl", &text, int_id(), Some((2, 3)));
        assert_data_error(&err, &["part_syntax.jsonl", "line 250:"]);
    }
}
