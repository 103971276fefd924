/*!
JSON lines: one object per line; columns in the first object's key order.
*/

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use conveyor_schemas::ReadOptions;

use super::{declared_schema, Batches, BATCH_ROWS};
use crate::error::{data_err, EtlError, Result};
use crate::guard::RecordGuard;

/// The file under a parser: no line may grow past the record limit.
type Guarded = RecordGuard<std::fs::File>;

/// Opens a whole JSON-lines file, its columns declared or inferred.
pub(crate) fn open(spec: &ReadOptions, f: Guarded, display: &Path) -> Result<Batches> {
    let display = display.to_path_buf();
    let mut reader = BufReader::new(f);
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

/// Reads a byte range of a JSON-lines file (the whole file, or one
/// partition) with the columns and types of `head`.
pub(crate) fn open_range(
    bytes: impl BufRead + Send + 'static,
    head: &SchemaRef,
    display: &Path,
) -> Result<Batches> {
    let display = display.to_path_buf();
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
