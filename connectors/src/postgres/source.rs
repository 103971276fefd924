/*!
A PostgreSQL query, read through `COPY (query) TO STDOUT (FORMAT binary)`.
(The query is followed by a line break wherever it is wrapped, so that one
ending in a `--` comment does not comment out the wrapping's end.)

The query is prepared first: its result's columns and types give the Arrow
schema before a row is read, and an unsupported type fails the task at once,
naming the column and the type. The session is read-only. A thread of its
own decodes the COPY stream into batches of [`BATCH_ROWS`] rows and hands
them over a channel two batches deep, so memory stays bounded whatever the
result's size; dropping the batches stops the read.

# Types
| PostgreSQL | Arrow |
|---|---|
| `int2`, `int4`, `int8` | `Int16`, `Int32`, `Int64` |
| `numeric(p,s)` (p ≤ 38) | `Decimal128(p, s)` |
| `float4`, `float8` | `Float32`, `Float64` |
| `bool` | `Boolean` |
| `text`, `varchar`, `bpchar`, `name` | `Utf8` (a `bpchar` keeps its padding) |
| `date` | `Date32` |
| `timestamp` | `Timestamp(µs)` |
| `timestamptz` | `Timestamp(µs, "UTC")` |
| `uuid`, `json`, `jsonb` | `Utf8` (`jsonb` as the server prints it) |
| `bytea` | `Binary` |

A `numeric` without a precision and scale (say, `sum(x)` of a numeric) has
no one Arrow type: rather than guess a scale and round, the task fails and
says to cast it in the query (`sum(x)::numeric(20,2)`). So does a numeric
wider than 38 digits. A `NaN` or infinite value, or an infinite date or
timestamp, is a data error naming the column.

# Partitions
With `partition_by` (an integer column of the result) and a partition
`i` of `n`, the task reads `min..=max` of that column cut into `n` equal
ranges, its share being range `i` (rows whose key is NULL go to partition 0).
Each partition reads the bounds and its rows in a transaction of its own, so
a table that changes while the partitions run may be read at different
moments: read an unchanging snapshot (or leave the extract unpartitioned)
when that matters.
*/

use std::io::{BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use conveyor_schemas::names::quote_sql_ident;
use conveyor_schemas::Partition;
use postgres::types::Type;

use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::sources::{field_list, Batches, ReadContext, Source, BATCH_ROWS};

use super::session::{self as pg, Session};

/// The rows of a query.
pub struct PgSource {
    pub url: String,
    pub query: String,
    pub partition_by: Option<String>,
    pub partition: Option<Partition>,
}

/// How one column's values are decoded.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Text,
    Jsonb,
    Uuid,
    Bytes,
    Date,
    Ts,
    TsTz,
    Numeric(u8, i8),
}

impl Source for PgSource {
    fn open(self: Box<Self>, _cx: &ReadContext) -> Result<Batches> {
        let mut session = Session::connect(&self.url)?;
        // An extract reads: whatever its query says, it changes nothing.
        session.execute_batch("SET default_transaction_read_only = on")?;
        let query = self.query.trim().trim_end_matches(';').trim_end();
        let stmt = session
            .client
            .prepare(query)
            .map_err(|e| session.error(e))?;
        let mut fields = Vec::new();
        let mut kinds = Vec::new();
        for col in stmt.columns() {
            let (kind, dt) = kind_of(col.name(), col.type_(), col.type_modifier())?;
            fields.push(Field::new(col.name(), dt, true));
            kinds.push(kind);
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let query = match (&self.partition_by, self.partition) {
            (Some(key), Some(part)) => {
                let pos = stmt
                    .columns()
                    .iter()
                    .position(|c| c.name() == key)
                    .ok_or_else(|| {
                        EtlError::Spec(format!(
                            "partition_by `{key}` is not a column of the query's result ({})",
                            field_list(&schema)
                        ))
                    })?;
                if !matches!(kinds[pos], Kind::I16 | Kind::I32 | Kind::I64) {
                    return Err(EtlError::Spec(format!(
                        "partition_by `{key}` is {}, not an integer column (int2, int4 or int8)",
                        stmt.columns()[pos].type_().name()
                    )));
                }
                share(&mut session, query, key, part)?
            }
            _ => query.to_string(),
        };
        let copy = format!("COPY ({query}\n) TO STDOUT (FORMAT binary)");
        let (tx, rx) = sync_channel::<Result<Option<RecordBatch>>>(2);
        let thread_schema = schema.clone();
        std::thread::Builder::new()
            .name("pg-copy-out".into())
            .spawn(move || {
                let mut session = session;
                let (shown, url) = (session.shown.clone(), session.url.clone());
                let result = match session.client.copy_out(copy.as_str()) {
                    Ok(reader) => decode(
                        BufReader::with_capacity(1 << 20, reader),
                        &thread_schema,
                        &kinds,
                        &shown,
                        &|batch| tx.send(Ok(Some(batch))).is_ok(),
                    ),
                    Err(e) => Err(pg::error(&shown, &url, e)),
                };
                let _ = tx.send(result.map(|()| None));
            })
            .map_err(|e| EtlError::Internal(format!("cannot start the COPY reader: {e}")))?;
        Ok(Batches {
            schema,
            iter: Box::new(Received { rx, done: false }),
        })
    }
}

/// The batches the reader thread sends; an end it did not announce is an
/// error, never a short read.
struct Received {
    rx: Receiver<Result<Option<RecordBatch>>>,
    done: bool,
}

impl Iterator for Received {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok(Some(batch))) => Some(Ok(batch)),
            Ok(Ok(None)) => {
                self.done = true;
                None
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                Some(Err(EtlError::Internal(
                    "the COPY reader stopped before the end of the rows".into(),
                )))
            }
        }
    }
}

/// The Arrow type of a result column, or why it has none.
fn kind_of(name: &str, ty: &Type, typmod: i32) -> Result<(Kind, DataType)> {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    // By OID: the built-in types' OIDs are fixed (pg_type.dat).
    Ok(match ty.oid() {
        16 => (Kind::Bool, DataType::Boolean),
        21 => (Kind::I16, DataType::Int16),
        23 => (Kind::I32, DataType::Int32),
        20 => (Kind::I64, DataType::Int64),
        700 => (Kind::F32, DataType::Float32),
        701 => (Kind::F64, DataType::Float64),
        // text, varchar, bpchar, name, json
        25 | 1043 | 1042 | 19 | 114 => (Kind::Text, DataType::Utf8),
        3802 => (Kind::Jsonb, DataType::Utf8),
        2950 => (Kind::Uuid, DataType::Utf8),
        17 => (Kind::Bytes, DataType::Binary),
        1082 => (Kind::Date, DataType::Date32),
        1114 => (
            Kind::Ts,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        1184 => (Kind::TsTz, utc()),
        // numeric
        1700 => {
            if typmod < 4 {
                return Err(EtlError::Spec(format!(
                    "column `{name}` is a numeric without a precision and scale, so no one decimal type holds it without rounding; cast it in the query, e.g. `{}::numeric(38,6)` (at most 38 digits), or `::text`",
                    quote_sql_ident(name)
                )));
            }
            let p = ((typmod - 4) >> 16) & 0xffff;
            // An 11-bit signed scale: PostgreSQL 15 allows one below 0 or
            // above the precision (numeric(2,-3), numeric(3,5)).
            let s = (((typmod - 4) & 0x7ff) ^ 1024) - 1024;
            if s < 0 || s > p {
                return Err(EtlError::Spec(format!(
                    "column `{name}` is numeric({p},{s}), whose scale is outside 0 to {p}, which no decimal type here holds; cast it in the query, e.g. `{}::numeric({},{})`, or `::text`",
                    quote_sql_ident(name),
                    (p + s.max(0) - s.min(p)).clamp(1, 38),
                    s.clamp(0, 38)
                )));
            }
            if p > 38 {
                return Err(EtlError::Spec(format!(
                    "column `{name}` is numeric({p},{s}), wider than a decimal of 38 digits; cast it in the query, e.g. `{}::numeric(38,{})`, or `::text`",
                    quote_sql_ident(name),
                    s.min(38)
                )));
            }
            (
                Kind::Numeric(p as u8, s as i8),
                DataType::Decimal128(p as u8, s as i8),
            )
        }
        _ => {
            return Err(EtlError::Spec(format!(
                "column `{name}` has the PostgreSQL type `{}`, which Conveyor does not read; cast it in the query, e.g. `{}::text`",
                ty.name(),
                quote_sql_ident(name)
            )))
        }
    })
}

/// The query for partition `part` of the result, cut on `key`'s range.
fn share(session: &mut Session, query: &str, key: &str, part: Partition) -> Result<String> {
    let k = quote_sql_ident(key);
    let bounds = format!("SELECT min({k})::int8, max({k})::int8 FROM ({query}\n) AS conveyor_q");
    let row = session
        .client
        .query_one(bounds.as_str(), &[])
        .map_err(|e| session.error(e))?;
    let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    let base = format!("SELECT * FROM ({query}\n) AS conveyor_q WHERE ");
    let (Some(min), Some(max)) = (min, max) else {
        // No key at all: partition 0 reads every row, the others none.
        return Ok(if part.index == 0 {
            query.to_string()
        } else {
            format!("{base}false")
        });
    };
    let n = part.count.max(1) as i128;
    let span = max as i128 - min as i128 + 1;
    let edge = |i: i128| min as i128 + span * i / n;
    let (lo, hi) = (edge(part.index as i128), edge(part.index as i128 + 1));
    let mut cond = format!("({k} >= {lo} AND {k} < {hi})");
    if part.index == 0 {
        cond.push_str(&format!(" OR {k} IS NULL"));
    }
    Ok(format!("{base}{cond}"))
}

/// One column's values, being collected.
enum Col {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dec(Decimal128Builder),
}

impl Col {
    fn new(kind: Kind, dt: &DataType) -> Result<Col> {
        let n = BATCH_ROWS;
        Ok(match kind {
            Kind::Bool => Col::Bool(BooleanBuilder::with_capacity(n)),
            Kind::I16 => Col::I16(Int16Builder::with_capacity(n)),
            Kind::I32 => Col::I32(Int32Builder::with_capacity(n)),
            Kind::I64 => Col::I64(Int64Builder::with_capacity(n)),
            Kind::F32 => Col::F32(Float32Builder::with_capacity(n)),
            Kind::F64 => Col::F64(Float64Builder::with_capacity(n)),
            Kind::Text | Kind::Jsonb | Kind::Uuid => {
                Col::Text(StringBuilder::with_capacity(n, n * 16))
            }
            Kind::Bytes => Col::Bytes(BinaryBuilder::with_capacity(n, n * 16)),
            Kind::Date => Col::Date(Date32Builder::with_capacity(n)),
            Kind::Ts | Kind::TsTz => {
                Col::Ts(TimestampMicrosecondBuilder::with_capacity(n).with_data_type(dt.clone()))
            }
            Kind::Numeric(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(p, s)
                    .map_err(|e| EtlError::Internal(e.to_string()))?,
            ),
        })
    }

    fn null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Text(b) => b.append_null(),
            Col::Bytes(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Dec(b) => b.append_null(),
        }
    }

    /// Appends the binary value `v` of a column of `kind`.
    fn push(&mut self, kind: Kind, v: &[u8]) -> std::result::Result<(), String> {
        let fixed = |n: usize| -> std::result::Result<(), String> {
            if v.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "a value of {} bytes where {n} were expected",
                    v.len()
                ))
            }
        };
        match (self, kind) {
            (Col::Bool(b), _) => {
                fixed(1)?;
                b.append_value(v[0] != 0)
            }
            (Col::I16(b), _) => {
                fixed(2)?;
                b.append_value(i16::from_be_bytes([v[0], v[1]]))
            }
            (Col::I32(b), _) => {
                fixed(4)?;
                b.append_value(i32::from_be_bytes(v.try_into().unwrap()))
            }
            (Col::I64(b), _) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(v.try_into().unwrap()))
            }
            (Col::F32(b), _) => {
                fixed(4)?;
                b.append_value(f32::from_be_bytes(v.try_into().unwrap()))
            }
            (Col::F64(b), _) => {
                fixed(8)?;
                b.append_value(f64::from_be_bytes(v.try_into().unwrap()))
            }
            (Col::Text(b), Kind::Uuid) => {
                fixed(16)?;
                let h: String = v.iter().map(|x| format!("{x:02x}")).collect();
                b.append_value(format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
            (Col::Text(b), Kind::Jsonb) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err("a jsonb value of an unknown version".into()),
            },
            (Col::Text(b), _) => b.append_value(utf8(v)?),
            (Col::Bytes(b), _) => b.append_value(v),
            (Col::Date(b), _) => {
                fixed(4)?;
                let d = i32::from_be_bytes(v.try_into().unwrap());
                if d == i32::MAX || d == i32::MIN {
                    return Err("an infinite date has no Arrow date; filter it out or cast the column in the query".into());
                }
                b.append_value(
                    d.checked_add(pg::DAYS_1970_TO_2000)
                        .ok_or("a date out of Arrow's range")?,
                )
            }
            (Col::Ts(b), _) => {
                fixed(8)?;
                let t = i64::from_be_bytes(v.try_into().unwrap());
                if t == i64::MAX || t == i64::MIN {
                    return Err("an infinite timestamp has no Arrow timestamp; filter it out or cast the column in the query".into());
                }
                b.append_value(
                    t.checked_add(pg::MICROS_1970_TO_2000)
                        .ok_or("a timestamp out of Arrow's range")?,
                )
            }
            (Col::Dec(b), Kind::Numeric(_, s)) => b.append_value(pg::numeric_to_i128(v, s)?),
            (Col::Dec(_), _) => return Err("a decimal column of another kind".into()),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Bytes(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Dec(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Bool(b) => b.len(),
            Col::I16(b) => b.len(),
            Col::I32(b) => b.len(),
            Col::I64(b) => b.len(),
            Col::F32(b) => b.len(),
            Col::F64(b) => b.len(),
            Col::Text(b) => b.len(),
            Col::Bytes(b) => b.len(),
            Col::Date(b) => b.len(),
            Col::Ts(b) => b.len(),
            Col::Dec(b) => b.len(),
        }
    }
}

fn utf8(v: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(v)
        .map_err(|_| "text that is not UTF-8 (is the database's encoding UTF8?)".into())
}

/// Decodes a binary COPY stream into batches of `schema`, handing each to
/// `send`; stops early (with `Ok`) when `send` says nobody listens.
fn decode(
    mut r: impl Read,
    schema: &SchemaRef,
    kinds: &[Kind],
    shown: &str,
    send: &dyn Fn(RecordBatch) -> bool,
) -> Result<()> {
    let io = |e: std::io::Error| EtlError::Io {
        file: shown.into(),
        source: std::io::Error::new(e.kind(), format!("reading the COPY stream: {e}")),
    };
    let bad = |m: String| EtlError::data(std::path::Path::new(shown), m);
    let mut head = [0u8; 19];
    r.read_exact(&mut head).map_err(io)?;
    if &head[..11] != pg::SIGNATURE {
        return Err(bad(
            "the COPY stream does not start with the binary signature".into(),
        ));
    }
    let ext = u32::from_be_bytes(head[15..19].try_into().unwrap()) as u64;
    std::io::copy(&mut (&mut r).take(ext), &mut std::io::sink()).map_err(io)?;
    let mut cols: Vec<Col> = kinds
        .iter()
        .zip(schema.fields())
        .map(|(k, f)| Col::new(*k, f.data_type()))
        .collect::<Result<_>>()?;
    let mut buf = Vec::new();
    let mut row: u64 = 0;
    let flush = |cols: &mut Vec<Col>| -> Result<RecordBatch> {
        let arrays = cols.iter_mut().map(Col::finish).collect();
        RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| EtlError::Internal(format!("a COPY batch: {e}")))
    };
    loop {
        let mut n = [0u8; 2];
        r.read_exact(&mut n).map_err(io)?;
        let n = i16::from_be_bytes(n);
        if n == -1 {
            break;
        }
        if n as usize != kinds.len() {
            return Err(bad(format!(
                "row {} has {n} fields, not {}",
                row + 1,
                kinds.len()
            )));
        }
        row += 1;
        for (i, kind) in kinds.iter().enumerate() {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).map_err(io)?;
            let len = i32::from_be_bytes(len);
            if len < 0 {
                cols[i].null();
                continue;
            }
            buf.resize(len as usize, 0);
            r.read_exact(&mut buf).map_err(io)?;
            cols[i].push(*kind, &buf).map_err(|m| {
                bad(format!(
                    "row {row}, column `{}` ({}): {m}",
                    schema.field(i).name(),
                    schema.field(i).data_type()
                ))
            })?;
        }
        if cols.first().is_some_and(|c| c.len() >= BATCH_ROWS) && !send(flush(&mut cols)?) {
            return Ok(());
        }
    }
    if cols.first().is_some_and(|c| c.len() > 0) {
        send(flush(&mut cols)?);
    }
    Ok(())
}
