/*!
A PostgreSQL table, loaded exactly once.

# The attempt
An attempt opens a session and, in one transaction:
1. inserts the task run's fence row into `conveyor_commits(task_run,
   attempt, rows, committed_at)` (created beside the target if absent), with
   `ON CONFLICT DO NOTHING`. The row is the attempt's lock: a rival attempt
   of the same task run waits on it until this transaction ends, looking at
   its own cancel flag every second ([`take_fence`]). If the row
   was already there, another attempt committed: this one rolls back, copies
   nothing and answers with that attempt's row count;
2. `CREATE TABLE IF NOT EXISTS` the target, with `create = true` (from the
   rows' columns, see [`pg_type`]; with a primary key on `key` for
   `upsert`);
3. streams the batches with `COPY ... FROM STDIN (FORMAT binary)`, encoded
   here ([`encode_batch`]): for `append` straight into the target, which
   writes every row once; for `replace` and `upsert` into a `TEMP` table
   `conveyor_stage` (dropped on commit), so that readers of the target are
   not held up for the length of the copy.

Nothing of this is visible before the commit. If the worker dies mid-COPY
(even SIGKILLed), the server rolls the transaction back when the connection
goes: the target is untouched, the fence row and the temporary table are
gone, and the redelivery starts afresh. The session sets TCP keepalives, so
that a worker whose host vanished is found out within about a minute rather
than holding its fence row for the kernel's two hours.

# The commit
After the commit gate ([`Attempt::before_commit`]) and a look at the
attempt's cancel flag, still in the transaction:
1. move the rows: nothing more for `append`; `replace` is `TRUNCATE` then
   `INSERT ... SELECT` from the staging table (the table keeps its indexes,
   grants and dependent views; readers wait for the commit, then see all the
   new rows. Two things follow from `TRUNCATE`, PostgreSQL's own rules: a
   table that another table's foreign key references is refused, with the
   server's message; and a `REPEATABLE READ` reader whose snapshot is older
   than the commit sees the table empty, not the old rows); `upsert` is
   `INSERT ... ON CONFLICT (key) DO UPDATE` of the
   other columns, only where a value differs (an unchanged row is not
   rewritten), and needs a primary key or unique index on exactly `key`;
2. set the fence row's `rows`;
3. a last look at the cancel flag, then `COMMIT`.

The task run's marker in the store is then written too, so that a redelivery
answers at once.

Columns are matched by name (`COPY t ("a", "b")`, `INSERT INTO t ("a",
"b") SELECT ...`), so the target may have more columns (defaults fill them)
and other types that the server converts on assignment from the staging
table (an `int8` into an `int4`, a `timestamp` into a `timestamptz`, in the
session's UTC); a binary COPY straight into the target needs each column's
own type (see [`pg_type`] and [`converted_columns`]). A conversion that
would change a value (rounding `1.234` into a `numeric(12,2)`, or `1.5`
into an `int4`) refuses the load before the commit gate, so before anything
is moved ([`check_conversions`]). Identifiers are always quoted; values
only travel in the COPY stream or as bound parameters.

# Partitioned loads
Each partition's load writes its rows as a Parquet part into the store
(lossless for every type here); the gather ([`gather`]) copies every part in
its one transaction and commits them all at once.
*/

use std::io::Write;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, RecordBatch, UInt16Array,
    UInt32Array, UInt8Array,
};
use arrow::datatypes::{
    DataType, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use conveyor_schemas::names::{check_sql_column, quote_sql_ident};
use conveyor_schemas::{ArtifactRef, PgMode, PgTarget, TaskOutput};

use conveyor_etl::attempt::Attempt;
use conveyor_etl::workspace::Workspace;
use conveyor_etl::commit;
use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::sinks::{BatchIter, PendingOutput, Sink};

use super::session::{self as pg, Session};

/// The staging table of an attempt, in its session's temporary schema.
const STAGE: &str = "pg_temp.\"conveyor_stage\"";

/// A table, for one attempt.
pub struct PgSink<'a> {
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &'a PgTarget,
}

impl<'a> PgSink<'a> {
    pub fn new(ws: &'a Workspace, at: &'a Attempt<'a>, target: &'a PgTarget) -> Result<Self> {
        pg::quoted_table(&target.table)?;
        for k in &target.key {
            check_sql_column(k).map_err(|e| EtlError::Spec(format!("key: {e}")))?;
        }
        if target.mode == PgMode::Upsert && target.key.is_empty() {
            return Err(EtlError::Spec(
                "mode upsert needs a key: the columns of the table's primary key or unique index"
                    .into(),
            ));
        }
        Ok(PgSink { ws, at, target })
    }
}

impl<'a> Sink<'a> for PgSink<'a> {
    fn write(
        self: Box<Self>,
        schema: SchemaRef,
        batches: BatchIter,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let session = Session::connect(&self.target.url)?;
        load(self.ws, self.at, self.target, schema, session, batches, &[])
    }
}

/// Opens the attempt's transaction, takes the task run's fence row in it and
/// copies `batches` in: straight into the target for `append`, into a
/// staging table otherwise. Nothing is visible until the commit.
fn load<'a>(
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &'a PgTarget,
    schema: SchemaRef,
    mut session: Session,
    batches: BatchIter,
    parts: &'a [ArtifactRef],
) -> Result<Box<dyn PendingOutput + 'a>> {
    let table = pg::quoted_table(&target.table)?;
    let fence = pg::fence_table(&target.table)?;
    let columns = column_list(&schema)?;
    // A key the rows do not carry would never conflict: every run would
    // insert its rows again.
    if let Some(missing) = target
        .key
        .iter()
        .find(|k| schema.field_with_name(k).is_err())
    {
        return Err(EtlError::Spec(format!(
            "{}: upsert key column `{missing}` is not a column of the rows loaded",
            target.table
        )));
    }
    ensure_fence_table(&mut session, &fence)?;
    // A rival attempt waits on this attempt's fence row for as long as the
    // copy takes; should this worker's host vanish, the server finds out
    // within about a minute and rolls back (these only apply over TCP).
    // UTC: the server converts between `timestamp` and `timestamptz` (a
    // load into a column of the other kind) in the session's zone, which
    // must not depend on the server's or the role's settings.
    session.execute_batch(
        "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 5; \
         SET tcp_keepalives_count = 6; SET TIME ZONE 'UTC'",
    )?;
    let task_run = format!("{}.{}", at.flow_run, at.task);
    let fenced = take_fence(&mut session, at, &fence, &task_run)?;
    let committed_by = match fenced {
        Some(_) => None,
        None => {
            // Another attempt of the task run committed (this insert waited
            // for its transaction to end): answer from its fence row.
            session.execute_batch("ROLLBACK")?;
            let row = session
                .client
                .query_one(
                    format!("SELECT attempt, rows FROM {fence} WHERE task_run = $1").as_str(),
                    &[&task_run],
                )
                .map_err(|e| session.error(e))?;
            Some((row.get(0), row.get::<_, i64>(1) as u64))
        }
    };
    let mut pending = PendingTable {
        ws,
        at,
        target,
        schema,
        session,
        task_run,
        fence,
        rows: 0,
        staged_append: false,
        converted: Vec::new(),
        committed_by,
        parts,
    };
    if pending.committed_by.is_some() {
        return Ok(Box::new(pending));
    }
    let session = &mut pending.session;
    let schema = &pending.schema;
    if target.create {
        let mut defs = column_defs(schema)?;
        if target.mode == PgMode::Upsert {
            defs.push(format!("PRIMARY KEY ({})", quoted_list(&target.key)));
        }
        let create = format!("CREATE TABLE IF NOT EXISTS {table} ({})", defs.join(", "));
        if let Err(e) = session.client.batch_execute(&create) {
            // Two first loads that create the table at the same moment: the
            // loser's CREATE fails on the catalogue's unique index. Its
            // retry finds the table.
            if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
                return Err(EtlError::Io {
                    file: std::path::PathBuf::from(&session.shown),
                    source: std::io::Error::other(format!(
                        "{}: another load created the table at the same moment; retrying",
                        target.table
                    )),
                });
            }
            return Err(session.error(e));
        }
    }
    if target.mode == PgMode::Upsert {
        check_unique_key(&mut session.client, &table, target).map_err(|e| match e {
            Checked::Pg(e) => session.error(e),
            Checked::Spec(m) => EtlError::Spec(format!("{}: {m}", target.table)),
        })?;
    }
    let converted = converted_columns(session, &table, schema)?;
    let direct = target.mode == PgMode::Append && converted.is_empty();
    pending.converted = converted;
    let into = if direct {
        table
    } else {
        session.execute_batch(&format!(
            "CREATE TEMP TABLE \"conveyor_stage\" ({}) ON COMMIT DROP",
            column_defs(schema)?.join(", ")
        ))?;
        pending.staged_append = target.mode == PgMode::Append;
        STAGE.to_string()
    };
    pending.rows = copy_in(session, &into, &columns, batches, at.task)?;
    Ok(Box::new(pending))
}

/// How long the fence insert waits on a rival attempt's transaction before
/// it looks at the cancel flag and waits again.
const FENCE_WAIT: &str = "1s";

/// Begins the attempt's transaction and inserts the task run's fence row:
/// `Some` when this attempt holds it, `None` when another attempt already
/// committed the task run. While a rival attempt's transaction holds the
/// row, the insert waits for it to end, [`FENCE_WAIT`] at a time, looking
/// at the attempt's cancel flag between waits: a cancelled run's attempt
/// stops waiting.
fn take_fence(
    session: &mut Session,
    at: &Attempt,
    fence: &str,
    task_run: &str,
) -> Result<Option<postgres::Row>> {
    let insert = format!(
        "INSERT INTO {fence} (task_run, attempt, rows) VALUES ($1, $2, 0) \
         ON CONFLICT (task_run) DO NOTHING RETURNING rows"
    );
    loop {
        session.execute_batch(&format!("BEGIN; SET LOCAL lock_timeout = '{FENCE_WAIT}'"))?;
        match session
            .client
            .query_opt(insert.as_str(), &[&task_run, &(at.attempt as i32)])
        {
            Ok(row) => {
                session.execute_batch("SET LOCAL lock_timeout = 0")?;
                return Ok(row);
            }
            Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                session.execute_batch("ROLLBACK")?;
                at.check_cancelled()?;
            }
            Err(e) => return Err(session.error(e)),
        }
    }
}

/// The columns of the rows whose type in `table` is not the one the rows
/// would give it ([`pg_type`]), nor one that reads that type's binary form
/// unchanged (`varchar` and `char` for `text`; a `numeric` of the same
/// scale and no fewer digits): each with its type in the table, as
/// `format_type` writes it. With none, a binary COPY can go straight into
/// the table. Any other type (an `int4` for `int8` rows, a `timestamptz`
/// for timestamps without a zone, a `numeric(12,2)` for `numeric(38,9)`
/// rows) takes a conversion, which the server does on assignment from a
/// staging table, and [`check_conversions`] then makes sure it changes no
/// value. A table or column that does not exist is not listed: the COPY or
/// the `INSERT` says so.
fn converted_columns(
    session: &mut Session,
    table: &str,
    schema: &Schema,
) -> Result<Vec<(String, String)>> {
    let found = session
        .client
        .query(
            "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .map_err(|e| session.error(e))?;
    let theirs: std::collections::HashMap<String, (String, String)> = found
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut converted = Vec::new();
    for f in schema.fields() {
        let Some((name, formatted)) = theirs.get(f.name().as_str()) else {
            continue;
        };
        let ours = pg_type(f.name(), f.data_type())?;
        // A type modifier (a length, a precision) can change a value on the
        // way in: `timestamp(3)` rounds, `varchar(5)` cuts trailing spaces.
        let modified = formatted.contains('(');
        let same = match (f.data_type(), name.as_str()) {
            (DataType::Decimal128(p, s), "numeric") => match numeric_typmod(formatted) {
                None => !modified,
                Some((tp, ts)) => ts == i32::from(*s) && tp >= i32::from(*p),
            },
            _ => {
                !modified
                    && (*name == ours
                        || (ours == "text" && matches!(name.as_str(), "varchar" | "bpchar")))
            }
        };
        if !same {
            converted.push((f.name().clone(), formatted.clone()));
        }
    }
    Ok(converted)
}

/// `(precision, scale)` of a `numeric(p,s)` as `format_type` writes it
/// (PostgreSQL 15's scale may be below 0); `None` for an unconstrained
/// `numeric`.
fn numeric_typmod(formatted: &str) -> Option<(i32, i32)> {
    let inner = formatted.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// `n` of a `character(n)` as `format_type` writes it.
fn bpchar_length(formatted: &str) -> Option<u32> {
    formatted
        .strip_prefix("character(")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// Refuses the load if converting a staged column to its type in the table
/// would change a value: `1.234` into a `numeric(12,2)`, `1.5` into an
/// `int4`, a fraction of a second into a `timestamp(0)`, `'ab '` into a
/// `varchar(2)`. PostgreSQL rounds and trims those on assignment without a
/// word; the rule here is that a load changes no value. The check casts
/// explicitly, so a text too long for a `varchar(n)` (which assignment would
/// refuse) is refused here too, shown cut to `n`.
fn check_conversions(
    session: &mut Session,
    target: &PgTarget,
    schema: &Schema,
    converted: &[(String, String)],
) -> Result<()> {
    for (column, theirs) in converted {
        let field = schema.field_with_name(column).map_err(|e| {
            EtlError::Internal(format!("column `{column}` of the rows is gone: {e}"))
        })?;
        let ours = pg_type(column, field.data_type())?;
        let c = quote_sql_ident(column);
        // `theirs` comes from the server's catalogue (format_type quotes
        // what needs quoting); `ours` from pg_type's fixed names.
        // A `character(n)` pads to n, and its text drops the padding, so a
        // round trip would show every short value as changed: what it can
        // change is a value longer than n (spaces past n are cut).
        let (became, differs) = match bpchar_length(theirs) {
            Some(n) => (format!("left({c}, {n})"), format!("char_length({c}) > {n}")),
            None => (
                format!("({c}::{theirs})::text"),
                format!("({c}::{theirs})::{ours} IS DISTINCT FROM {c}"),
            ),
        };
        let changed = session
            .client
            .query_opt(
                format!("SELECT {c}::text, {became} FROM {STAGE} WHERE {differs} LIMIT 1").as_str(),
                &[],
            )
            .map_err(|e| session.error(e))?;
        if let Some(row) = changed {
            let (was, became): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            return Err(EtlError::Spec(format!(
                "{}: column `{column}` is {theirs} in the table, and the value `{}` would be stored as `{}`; nothing was loaded (widen the column, or cast the rows in a step first)",
                target.table,
                was.as_deref().unwrap_or("NULL"),
                became.as_deref().unwrap_or("NULL"),
            )));
        }
    }
    Ok(())
}

/// Creates the fence table beside the target if it is absent, outside the
/// attempt's transaction (two first loads may race to create it).
fn ensure_fence_table(session: &mut Session, fence: &str) -> Result<()> {
    // Created only when absent: CREATE needs the CREATE privilege on the
    // schema even when the table exists, which a loader may not have.
    let exists = session
        .client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&fence])
        .map(|row| row.get::<_, bool>(0))
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {fence} (task_run text PRIMARY KEY, attempt int NOT NULL, rows bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())"
    );
    if let Err(e) = session.execute_batch(&create) {
        // A concurrent creator won: the table is there now.
        session.execute_batch(&create).map_err(|_| e)?;
    }
    Ok(())
}

/// `"a" int8, "b" text, ...`: the columns of a table that holds the rows.
fn column_defs(schema: &Schema) -> Result<Vec<String>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(format!(
                "{} {}",
                quote_sql_ident(f.name()),
                pg_type(f.name(), f.data_type())?
            ))
        })
        .collect()
}

/// Streams `batches` into `table`'s `columns` with a binary COPY. Returns
/// the rows copied.
fn copy_in(
    session: &mut Session,
    table: &str,
    columns: &str,
    batches: BatchIter,
    task: &str,
) -> Result<u64> {
    let shown = session.shown.clone();
    let url = session.url.clone();
    let io = |e: std::io::Error| EtlError::Io {
        file: shown.clone().into(),
        source: e,
    };
    let copy = format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)");
    let mut writer = session
        .client
        .copy_in(copy.as_str())
        .map_err(|e| pg::error(&shown, &url, e))?;
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(pg::SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let mut rows = 0u64;
    let mut first = true;
    for batch in batches {
        let batch = batch?;
        encode_batch(&batch, &mut buf)?;
        rows += batch.num_rows() as u64;
        writer.write_all(&buf).map_err(io)?;
        buf.clear();
        if first {
            first = false;
            if let Some(ms) = pause_mid_copy(task) {
                writer.flush().map_err(io)?;
                tracing::warn!(task, ms, "Failpoint: pausing mid-COPY");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    writer.write_all(&buf).map_err(io)?;
    writer.finish().map_err(|e| pg::error(&shown, &url, e))?;
    Ok(rows)
}

/// The failpoint `pause-mid-copy=MS@TASK` (in `CONVEYOR_FAILPOINTS`, in a
/// build with the `failpoints` feature): after the first batch of `task`
/// is sent, the COPY pauses for MS ms, so a test can kill the
/// worker there.
fn pause_mid_copy(_task: &str) -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        let spec = std::env::var("CONVEYOR_FAILPOINTS").unwrap_or_default();
        for item in spec.split(',').map(str::trim) {
            let Some((action, t)) = item.split_once('@') else {
                continue;
            };
            if let Some(("pause-mid-copy", ms)) = action.split_once('=') {
                if t == _task {
                    return ms.parse().ok();
                }
            }
        }
    }
    None
}

/// `"a", "b", ...`: the rows' columns, checked and quoted.
fn column_list(schema: &Schema) -> Result<String> {
    if schema.fields().is_empty() {
        return Err(EtlError::Spec("the rows have no columns to load".into()));
    }
    schema
        .fields()
        .iter()
        .map(|f| {
            check_sql_column(f.name())
                .map(|()| quote_sql_ident(f.name()))
                .map_err(|e| EtlError::Spec(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .map(|c| c.join(", "))
}

/// The PostgreSQL type that holds an Arrow type without loss.
pub fn pg_type(column: &str, t: &DataType) -> Result<String> {
    Ok(match t {
        DataType::Boolean => "bool".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "int2".into(),
        DataType::Int32 | DataType::UInt16 => "int4".into(),
        DataType::Int64 | DataType::UInt32 => "int8".into(),
        DataType::Float32 => "float4".into(),
        DataType::Float64 => "float8".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            "text".into()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) if *s >= 0 => format!("numeric({p},{s})"),
        other => {
            return Err(EtlError::Spec(format!(
                "column `{column}` is {other}, which Conveyor does not load into PostgreSQL; cast it first"
            )))
        }
    })
}

/// Appends the rows of `batch` to `out` in the binary COPY format.
pub fn encode_batch(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let schema = batch.schema();
    let cols: Vec<Encoder> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| Encoder::new(f.name(), a))
        .collect::<Result<_>>()?;
    let n = cols.len() as i16;
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&n.to_be_bytes());
        for (c, col) in cols.iter().enumerate() {
            col.put(row, out).map_err(|m| EtlError::Data {
                file: "rows to load".into(),
                message: format!("column `{}`, row {}: {m}", schema.field(c).name(), row + 1),
            })?;
        }
    }
    Ok(())
}

/// One column of a batch, typed once per batch.
enum Encoder<'b> {
    Null,
    Bool(&'b BooleanArray),
    I8(&'b Int8Array),
    I16(&'b Int16Array),
    I32(&'b Int32Array),
    I64(&'b Int64Array),
    U8(&'b UInt8Array),
    U16(&'b UInt16Array),
    U32(&'b UInt32Array),
    F32(&'b Float32Array),
    F64(&'b Float64Array),
    Text(&'b dyn Array, TextKind),
    Date(&'b Date32Array),
    /// Microseconds: the array and the factor (or divisor, for ns) to them.
    Ts(&'b dyn Array, TimeUnit),
    Dec(&'b Decimal128Array, i8),
}

#[derive(Clone, Copy)]
enum TextKind {
    Utf8,
    Large,
    View,
    Bin,
    LargeBin,
    BinView,
}

impl<'b> Encoder<'b> {
    fn new(name: &str, a: &'b ArrayRef) -> Result<Encoder<'b>> {
        let a = a.as_ref();
        Ok(match a.data_type() {
            DataType::Null => Encoder::Null,
            DataType::Boolean => Encoder::Bool(a.as_boolean()),
            DataType::Int8 => Encoder::I8(a.as_primitive()),
            DataType::Int16 => Encoder::I16(a.as_primitive()),
            DataType::Int32 => Encoder::I32(a.as_primitive()),
            DataType::Int64 => Encoder::I64(a.as_primitive()),
            DataType::UInt8 => Encoder::U8(a.as_primitive()),
            DataType::UInt16 => Encoder::U16(a.as_primitive()),
            DataType::UInt32 => Encoder::U32(a.as_primitive()),
            DataType::Float32 => Encoder::F32(a.as_primitive()),
            DataType::Float64 => Encoder::F64(a.as_primitive()),
            DataType::Utf8 => Encoder::Text(a, TextKind::Utf8),
            DataType::LargeUtf8 => Encoder::Text(a, TextKind::Large),
            DataType::Utf8View => Encoder::Text(a, TextKind::View),
            DataType::Binary => Encoder::Text(a, TextKind::Bin),
            DataType::LargeBinary => Encoder::Text(a, TextKind::LargeBin),
            DataType::BinaryView => Encoder::Text(a, TextKind::BinView),
            DataType::Date32 => Encoder::Date(a.as_primitive()),
            DataType::Timestamp(unit, _) => Encoder::Ts(a, *unit),
            DataType::Decimal128(_, s) if *s >= 0 => Encoder::Dec(a.as_primitive(), *s),
            other => {
                return Err(pg_type(name, other).err().unwrap_or_else(|| {
                    EtlError::Internal(format!("column `{name}`: no encoder for {other}"))
                }))
            }
        })
    }

    /// Appends the length-prefixed value of `row`, or -1 for NULL.
    fn put(&self, row: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        fn fixed(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        fn var(out: &mut Vec<u8>, bytes: &[u8]) -> std::result::Result<(), String> {
            let len = i32::try_from(bytes.len()).map_err(|_| "a value over 2 GiB")?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
            Ok(())
        }
        let null = match self {
            Encoder::Null => true,
            Encoder::Bool(a) => a.is_null(row),
            Encoder::I8(a) => a.is_null(row),
            Encoder::I16(a) => a.is_null(row),
            Encoder::I32(a) => a.is_null(row),
            Encoder::I64(a) => a.is_null(row),
            Encoder::U8(a) => a.is_null(row),
            Encoder::U16(a) => a.is_null(row),
            Encoder::U32(a) => a.is_null(row),
            Encoder::F32(a) => a.is_null(row),
            Encoder::F64(a) => a.is_null(row),
            Encoder::Text(a, _) | Encoder::Ts(a, _) => a.is_null(row),
            Encoder::Date(a) => a.is_null(row),
            Encoder::Dec(a, _) => a.is_null(row),
        };
        if null {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        match self {
            Encoder::Null => {}
            Encoder::Bool(a) => fixed(out, &[a.value(row) as u8]),
            Encoder::I8(a) => fixed(out, &(a.value(row) as i16).to_be_bytes()),
            Encoder::I16(a) => fixed(out, &a.value(row).to_be_bytes()),
            Encoder::I32(a) => fixed(out, &a.value(row).to_be_bytes()),
            Encoder::I64(a) => fixed(out, &a.value(row).to_be_bytes()),
            Encoder::U8(a) => fixed(out, &(a.value(row) as i16).to_be_bytes()),
            Encoder::U16(a) => fixed(out, &(a.value(row) as i32).to_be_bytes()),
            Encoder::U32(a) => fixed(out, &(a.value(row) as i64).to_be_bytes()),
            Encoder::F32(a) => fixed(out, &a.value(row).to_be_bytes()),
            Encoder::F64(a) => fixed(out, &a.value(row).to_be_bytes()),
            Encoder::Text(a, kind) => {
                let bytes: &[u8] = match kind {
                    TextKind::Utf8 => a.as_string::<i32>().value(row).as_bytes(),
                    TextKind::Large => a.as_string::<i64>().value(row).as_bytes(),
                    TextKind::View => a.as_string_view().value(row).as_bytes(),
                    TextKind::Bin => a.as_binary::<i32>().value(row),
                    TextKind::LargeBin => a.as_binary::<i64>().value(row),
                    TextKind::BinView => a.as_binary_view().value(row),
                };
                if matches!(kind, TextKind::Utf8 | TextKind::Large | TextKind::View)
                    && bytes.contains(&0)
                {
                    return Err(
                        "text with a NUL character, which PostgreSQL text cannot hold".into(),
                    );
                }
                var(out, bytes)?;
            }
            Encoder::Date(a) => {
                let d = a
                    .value(row)
                    .checked_sub(pg::DAYS_1970_TO_2000)
                    .ok_or("a date out of PostgreSQL's range")?;
                fixed(out, &d.to_be_bytes());
            }
            Encoder::Ts(a, unit) => {
                let micros = match unit {
                    TimeUnit::Second => a
                        .as_primitive::<TimestampSecondType>()
                        .value(row)
                        .checked_mul(1_000_000),
                    TimeUnit::Millisecond => a
                        .as_primitive::<TimestampMillisecondType>()
                        .value(row)
                        .checked_mul(1_000),
                    TimeUnit::Microsecond => {
                        Some(a.as_primitive::<TimestampMicrosecondType>().value(row))
                    }
                    TimeUnit::Nanosecond => {
                        let ns = a.as_primitive::<TimestampNanosecondType>().value(row);
                        if ns % 1000 != 0 {
                            return Err("a timestamp with nanoseconds, which PostgreSQL (microseconds) would round".into());
                        }
                        Some(ns / 1000)
                    }
                };
                let t = micros
                    .and_then(|m| m.checked_sub(pg::MICROS_1970_TO_2000))
                    .ok_or("a timestamp out of PostgreSQL's range")?;
                fixed(out, &t.to_be_bytes());
            }
            Encoder::Dec(a, s) => pg::i128_to_numeric(a.value(row), *s, out),
        }
        Ok(())
    }
}

/// Rows copied in an open transaction that holds the task run's fence row,
/// waiting for the commit.
struct PendingTable<'a> {
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
    target: &'a PgTarget,
    schema: SchemaRef,
    session: Session,
    /// `flow_run.task`, the fence row's key.
    task_run: String,
    /// The fence table, quoted.
    fence: String,
    rows: u64,
    /// An `append` whose rows went through the staging table, because the
    /// target's column types differ from the rows'.
    staged_append: bool,
    /// Columns the move converts to the table's type ([`converted_columns`]).
    converted: Vec<(String, String)>,
    /// Another attempt committed the task run: its attempt and rows. This
    /// one copied nothing and its transaction is rolled back.
    committed_by: Option<(i32, u64)>,
    /// A gather's parts, removed once committed.
    parts: &'a [ArtifactRef],
}

impl PendingOutput for PendingTable<'_> {
    fn commit(self: Box<Self>, rows_in: u64) -> Result<TaskOutput> {
        let PendingTable {
            ws,
            at,
            target,
            schema,
            mut session,
            task_run,
            fence,
            rows,
            staged_append,
            converted,
            committed_by,
            parts,
        } = *self;
        let location = format!("{} table {}", session.shown, target.table);
        let output = |rows_out: u64| TaskOutput {
            rows_in,
            rows_out,
            artifact: None,
            location: location.clone(),
            bytes_in: None,
            bytes_out: None,
        };
        if let Some((attempt, committed)) = committed_by {
            tracing::info!(
                flow_run = at.flow_run,
                task = at.task,
                attempt,
                "Rows already committed by another attempt; dropping this one"
            );
            let out = output(committed);
            commit::record(ws, at, &out)?;
            commit::remove_parts(ws, parts);
            return Ok(out);
        }
        // Before the commit gate, which should be followed by the commit
        // alone: this reads every staged row of each converted column.
        check_conversions(&mut session, target, &schema, &converted)?;
        if let Some(gate) = at.before_commit {
            gate()?;
        }
        at.check_cancelled()?;
        let table = pg::quoted_table(&target.table)?;
        let cols = &column_list(&schema)?;
        let moved = match target.mode {
            PgMode::Append if staged_append => Some(format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {STAGE}"
            )),
            PgMode::Append => None,
            PgMode::Replace => Some(format!(
                "TRUNCATE {table}; INSERT INTO {table} ({cols}) SELECT {cols} FROM {STAGE}"
            )),
            PgMode::Upsert => {
                let others: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .filter(|n| !target.key.contains(n))
                    .map(|n| quote_sql_ident(n))
                    .collect();
                let action = if others.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    let set: Vec<String> = others
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}"))
                        .collect();
                    let mine: Vec<String> =
                        others.iter().map(|c| format!("conveyor_t.{c}")).collect();
                    let theirs: Vec<String> =
                        others.iter().map(|c| format!("EXCLUDED.{c}")).collect();
                    format!(
                        "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                        set.join(", "),
                        row_of(&mine),
                        row_of(&theirs)
                    )
                };
                Some(format!(
                    "INSERT INTO {table} AS conveyor_t ({cols}) SELECT {cols} FROM {STAGE} ON CONFLICT ({}) {action}",
                    quoted_list(&target.key)
                ))
            }
        };
        if let Some(moved) = moved {
            session.execute_batch(&moved)?;
        }
        session
            .client
            .execute(
                // The commit's own time: now() would be the transaction's start.
                format!(
                    "UPDATE {fence} SET rows = $2, committed_at = clock_timestamp() WHERE task_run = $1"
                )
                .as_str(),
                &[&task_run, &(rows as i64)],
            )
            .map_err(|e| session.error(e))?;
        // Last look: an attempt whose run ended commits nothing.
        at.check_cancelled()?;
        session.execute_batch("COMMIT")?;
        let out = output(rows);
        commit::record(ws, at, &out)?;
        commit::remove_parts(ws, parts);
        Ok(out)
    }
}

/// `(a, b)`, or `ROW(a)` for one column (so that it is a row, not a value).
fn row_of(cols: &[String]) -> String {
    if cols.len() == 1 {
        format!("ROW({})", cols[0])
    } else {
        format!("({})", cols.join(", "))
    }
}

fn quoted_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_sql_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

enum Checked {
    Pg(postgres::Error),
    Spec(String),
}

/// That the target has a primary key or unique index on exactly the key's
/// columns: `ON CONFLICT (key)` needs one.
fn check_unique_key(
    tx: &mut postgres::Client,
    table: &str,
    target: &PgTarget,
) -> std::result::Result<(), Checked> {
    let exists = tx
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
        .map_err(Checked::Pg)?;
    if !exists.get::<_, bool>(0) {
        return Err(Checked::Spec(
            "the table does not exist; create it, or set create = true".into(),
        ));
    }
    // Sorted byte by byte on both sides (COLLATE "C" in the query): the
    // database's own collation may order `Region` and `id` otherwise.
    let mut key = target.key.clone();
    key.sort();
    let found = tx
        .query_opt(
            "SELECT 1 FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisunique \
             AND i.indpred IS NULL AND i.indexprs IS NULL \
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text COLLATE \"C\") FROM pg_attribute a \
                  WHERE a.attrelid = i.indrelid \
                  AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])) = $2::text[] \
             LIMIT 1",
            &[&table, &key],
        )
        .map_err(Checked::Pg)?;
    if found.is_none() {
        return Err(Checked::Spec(format!(
            "mode upsert needs a primary key or unique index on exactly ({}); the table has none",
            target.key.join(", ")
        )));
    }
    Ok(())
}

/// Puts the Parquet parts of a partitioned load into the table: copies them
/// all into one staging table and commits them in one transaction.
pub fn gather(
    ws: &Workspace,
    at: &Attempt,
    parts: &[ArtifactRef],
    target: &PgTarget,
) -> Result<TaskOutput> {
    commit::gather_fenced(ws, at, parts, || {
        let mut files = Vec::with_capacity(parts.len());
        for part in parts {
            let path = ws.store.open(&part.path)?;
            let f = std::fs::File::open(&path).map_err(|e| EtlError::io(&path, e))?;
            let read = conveyor_schemas::ReadOptions {
                format: conveyor_schemas::DataFormat::Parquet,
                schema: None,
                header: false,
                delimiter: ",".into(),
                partition: None,
            };
            files.push((
                path.clone(),
                conveyor_etl::sources::parquet::open(&read, f, &path)?,
            ));
        }
        let Some((_, first)) = files.first() else {
            return Err(EtlError::Internal("a gather with no parts".into()));
        };
        let schema = first.schema.clone();
        for (path, b) in &files[1..] {
            if b.schema.fields() != schema.fields() {
                return Err(EtlError::data(path, "part has other columns than part 0"));
            }
        }
        let rows_in: u64 = parts.iter().map(|p| p.rows).sum();
        let mut iter = files.into_iter().flat_map(|(_, b)| b.iter);
        PgSink::new(ws, at, target)?;
        let session = Session::connect(&target.url)?;
        let pending = load(ws, at, target, schema, session, &mut iter, parts)?;
        at.progress
            .fetch_add(rows_in, std::sync::atomic::Ordering::Relaxed);
        pending.commit(rows_in)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_etl::sources::Source;
    use arrow::array::{
        BinaryArray, Date32Array, Decimal128Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Field;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A database of this test's own on the test server, dropped after.
    struct Db {
        name: String,
        url: String,
    }

    impl Db {
        fn create(test: &str) -> Db {
            let admin = std::env::var("CONVEYOR_TEST_PG_URL")
                .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("conveyor_test_{test}_{}", std::process::id());
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .unwrap();
            c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .unwrap();
            let base = &admin[..admin.rfind('/').unwrap()];
            Db {
                url: format!("{base}/{name}"),
                name,
            }
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let admin = self.url.replace(&self.name, "postgres");
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    fn batch() -> RecordBatch {
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("ok", DataType::Boolean, true),
            Field::new("i2", DataType::Int16, true),
            Field::new("i4", DataType::Int32, true),
            Field::new("i8", DataType::Int64, true),
            Field::new("f4", DataType::Float32, true),
            Field::new("f8", DataType::Float64, true),
            Field::new("Text \"quoted\"", DataType::Utf8, true),
            Field::new("by", DataType::Binary, true),
            Field::new("d", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("tz", utc, true),
            Field::new("big", DataType::Decimal128(38, 10), true),
            Field::new("small", DataType::Decimal128(5, 2), true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(0), None])),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
            Arc::new(Float32Array::from(vec![Some(1.5), Some(-0.0), None])),
            Arc::new(Float64Array::from(vec![Some(0.1), Some(f64::MAX), None])),
            Arc::new(StringArray::from(vec![
                Some("naïve 🚀 '\\"),
                Some(""),
                None,
            ])),
            Arc::new(BinaryArray::from(vec![
                Some(&[0u8, 255, 16][..]),
                Some(&[][..]),
                None,
            ])),
            // 2024-02-29, 0001-01-01.
            Arc::new(Date32Array::from(vec![Some(19782), Some(-719162), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(946_684_799_999_999),
                Some(-1),
                None,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_709_231_399_999_999), Some(0), None])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![
                    Some(99999999999999999999999999999999999999i128),
                    Some(-1),
                    None,
                ])
                .with_precision_and_scale(38, 10)
                .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(-99999), Some(0), None])
                    .with_precision_and_scale(5, 2)
                    .unwrap(),
            ),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    /// A database, a scratch directory and a store for one test, and an
    /// append into `public.rt` (created) there.
    fn fixture(test: &str) -> (Db, std::path::PathBuf, Workspace, PgTarget) {
        let db = Db::create(test);
        let dir = std::env::temp_dir().join(format!("conveyor-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ws = Workspace {
            store: Arc::new(conveyor_etl::store::FsStore::new(dir.join("artifacts"))),
            output_root: dir.join("out"),
            max_record_bytes: 1 << 20,
            sources: Default::default(),
            connectors: Default::default(),
        };
        let target = PgTarget {
            url: db.url.clone(),
            table: "public.rt".into(),
            mode: PgMode::Append,
            key: vec![],
            create: true,
        };
        (db, dir, ws, target)
    }

    /// Opens `target` for the attempt `at` and copies `input` in: the
    /// output waiting for its commit, or why the attempt stopped.
    fn write<'a>(
        ws: &'a Workspace,
        at: &'a Attempt<'a>,
        target: &'a PgTarget,
        input: &RecordBatch,
    ) -> Result<Box<dyn PendingOutput + 'a>> {
        let mut iter = vec![Ok(input.clone())].into_iter();
        Box::new(PgSink::new(ws, at, target).unwrap()).write(input.schema(), &mut iter)
    }

    #[test]
    fn every_type_round_trips_through_the_encoder_and_decoder_on_a_real_server() {
        let (db, dir, ws, target) = fixture("etl_codec");
        let progress = AtomicU64::new(0);
        let at = Attempt {
            flow_run: "r1",
            task: "l",
            attempt: 1,
            delivery: 1,
            progress: &progress,
            before_commit: None,
            cancel: None,
        };
        let input = batch();
        let pending = write(&ws, &at, &target, &input).unwrap();
        let out = pending.commit(3).unwrap();
        assert_eq!(out.rows_out, 3);
        assert!(
            out.location.ends_with("table public.rt"),
            "{}",
            out.location
        );

        // The server read the values we meant, not just ones we read back.
        let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        c.batch_execute("SET TIME ZONE 'UTC'").unwrap();
        let row = c
            .query_one(
                "SELECT concat_ws('|', ok, i2, i4, i8, f4, f8, \"Text \"\"quoted\"\"\", by, d, ts, tz, big, small) FROM rt WHERE ok",
                &[],
            )
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            "t|-32768|-2147483648|-9223372036854775808|1.5|0.1|naïve 🚀 '\\|\\x00ff10|2024-02-29|1999-12-31 23:59:59.999999|2024-02-29 18:29:59.999999+00|9999999999999999999999999999.9999999999|-999.99"
        );

        // And reading the table gives the batch back, types and all.
        let tag = "a1".to_string();
        let cx = conveyor_etl::sources::ReadContext {
            store: ws.store.as_ref(),
            tag: &tag,
            max_record: 1 << 20,
            policy: &ws.sources,
            cancel: None,
        };
        let source = Box::new(crate::postgres::source::PgSource {
            url: db.url.clone(),
            query: "SELECT * FROM rt ORDER BY i4;".into(),
            partition_by: None,
            partition: None,
        });
        let read = source.open(&cx).unwrap();
        let batches: Vec<RecordBatch> = read.iter.map(|b| b.unwrap()).collect();
        let back = arrow::compute::concat_batches(&read.schema, &batches).unwrap();
        assert_eq!(back, input);

        // A second attempt of the same task run commits nothing.
        let again = Attempt {
            attempt: 2,
            ..at.clone()
        };
        let out = write(&ws, &again, &target, &input)
            .unwrap()
            .commit(3)
            .unwrap();
        assert_eq!(out.rows_out, 3);
        let n: i64 = c.query_one("SELECT count(*) FROM rt", &[]).unwrap().get(0);
        assert_eq!(n, 3, "the fence held");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_first_loads_creating_the_table_at_once_end_in_a_retry_not_a_failure() {
        let (db, dir, ws, target) = fixture("etl_create_race");
        // Another run's load is creating the same table, not yet committed.
        let mut rival = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        rival
            .batch_execute("BEGIN; CREATE TABLE public.rt (x int8)")
            .unwrap();
        let progress = AtomicU64::new(0);
        let attempt = || Attempt {
            flow_run: "r1",
            task: "l",
            attempt: 1,
            delivery: 1,
            progress: &progress,
            before_commit: None,
            cancel: None,
        };
        let input = batch();
        let raced = std::thread::scope(|s| {
            let loser = s.spawn(|| {
                let at = attempt();
                write(&ws, &at, &target, &input).map(|_| ())
            });
            // Until the loser's CREATE waits on the rival's.
            let mut watch = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE IF NOT EXISTS%'",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 0
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the CREATE never waited"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            rival.batch_execute("COMMIT").unwrap();
            loser.join().unwrap()
        });
        let err = raced.expect_err("the CREATE lost the race");
        assert!(err.retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("created the table at the same moment"),
            "{err}"
        );
        // The retry finds the table, and its other columns refuse the load
        // with the server's own message (not another race).
        let at = attempt();
        let err = write(&ws, &at, &target, &input)
            .map(|_| ())
            .expect_err("the table has other columns");
        assert!(!err.retryable(), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_attempt_waiting_on_a_rivals_fence_row_stops_at_a_cancel_and_answers_from_its_commit() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (db, dir, ws, target) = fixture("etl_rival");
        // A rival attempt holds the task run's fence row in an open
        // transaction, as one does for the length of its COPY.
        let mut rival = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        rival
            .batch_execute(
                "CREATE TABLE conveyor_commits (task_run text PRIMARY KEY, attempt int NOT NULL, \
                 rows bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())",
            )
            .unwrap();
        rival
            .batch_execute(
                "BEGIN; INSERT INTO conveyor_commits (task_run, attempt, rows) VALUES ('r1.l', 1, 0)",
            )
            .unwrap();
        let progress = AtomicU64::new(0);
        let cancel = AtomicBool::new(false);
        let attempt = || Attempt {
            flow_run: "r1",
            task: "l",
            attempt: 2,
            delivery: 2,
            progress: &progress,
            before_commit: None,
            cancel: Some(&cancel),
        };
        let input = batch();
        let started = std::time::Instant::now();
        let waited = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let at = attempt();
                write(&ws, &at, &target, &input).map(|_| ())
            });
            std::thread::sleep(std::time::Duration::from_millis(1500));
            assert!(
                !waiter.is_finished(),
                "the attempt waits while the rival holds the row"
            );
            cancel.store(true, Ordering::Release);
            waiter.join().unwrap()
        });
        let err = waited.expect_err("a cancelled attempt stops waiting");
        assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Cancelled, "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));

        // The rival commits 3 rows: the next attempt answers from its row,
        // and copies nothing.
        rival
            .batch_execute("UPDATE conveyor_commits SET rows = 3; COMMIT")
            .unwrap();
        cancel.store(false, Ordering::Release);
        let at = attempt();
        let out = write(&ws, &at, &target, &input).unwrap().commit(3).unwrap();
        assert_eq!(out.rows_out, 3);
        let tables: i64 = rival
            .query_one("SELECT count(*) FROM pg_class WHERE relname = 'rt'", &[])
            .unwrap()
            .get(0);
        assert_eq!(tables, 0, "nothing was created or copied");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
