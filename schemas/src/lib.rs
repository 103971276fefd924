/*!
The wire contract of Conveyor.

Every message that crosses RabbitMQ (or the in-process transport) is one of the
types below, serialised as JSON. A worker written in another language joins a
cluster by speaking these documents; the JSON Schema files in `schemas/json/`
are generated from these types and a test fails when they drift.

# Layout
- [`TaskMessage`]: coordinator → worker, one attempt of one task: a
  [`TaskSpec`], which is a [`SourceSpec`], [`Step`]s and a [`SinkSpec`].
- [`TaskUpdate`]: worker → coordinator, on the coordinator's durable reply queue.
- [`TaskLogs`]: worker → coordinator, the log lines of an attempt, on the
  same reply queue; an attempt's last lines ride in its final update
  ([`LogBatch`]).
- [`Heartbeat`]: worker → everyone, on the events topic exchange.
- [`RunFinished`]: coordinator → every worker node, on the events exchange.
- [`RunReport`]: the final report of a flow run (`conveyor run --json`).
- [`names`]: the rules for names and relative paths that messages carry.
- [`redact`]: secrets (URL userinfo) out of logs, reports and errors.
- [`secrets`]: `${env:NAME}` references, expanded by the worker that runs
  a task and kept out of what it reports.

# Versioning
Every message carries `schema_version` ([`SCHEMA_VERSION`]); a receiver
rejects (dead-letters) a version other than its own.
- Receivers ignore fields they do not know: no type here uses serde's
  `deny_unknown_fields`. So a new field that a receiver may safely ignore
  (optional, with a default that means "as before") is added without a
  bump, and a worker one version older keeps working.
- Anything a receiver must not ignore bumps the version: a new required
  field, a removed or renamed one, a changed meaning, or a new optional field
  whose absence would change the result (an older worker would silently do
  something else).
- A new enum arm (a connector: a [`SourceSpec`] or [`SinkSpec`] variant)
  needs no bump: an older worker cannot decode it and dead-letters the
  message, which fails the task instead of running something else.

Version 2 replaced the per-kind task specs (extract, transform, load,
gather) with one [`TaskSpec`]: a source, steps and a sink.
*/

pub mod names;
pub mod redact;
pub mod secrets;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The version of this contract. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// What a task does; also the AMQP binding key of its queue.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Extract,
    Transform,
    Load,
}

impl TaskKind {
    pub const ALL: [TaskKind; 3] = [TaskKind::Extract, TaskKind::Transform, TaskKind::Load];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Extract => "extract",
            TaskKind::Transform => "transform",
            TaskKind::Load => "load",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of one task, sent by the coordinator to the queue of its kind.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskMessage {
    pub schema_version: u32,
    /// Name of the flow, for logs.
    pub flow: String,
    /// Identifies the flow run; artifacts of the run live under it.
    pub flow_run: String,
    /// Name of the task inside the flow.
    pub task: String,
    /// Identifies this task within this flow run; stable across attempts.
    pub task_run: String,
    /// Starts at 1. Together with `task_run` it fences late results.
    pub attempt: u32,
    /// Queue that receives the [`TaskUpdate`]s of this attempt.
    pub reply_to: String,
    pub spec: TaskSpec,
}

/// What a task does, whatever its kind: read a source, apply the steps to
/// each batch, write a sink. An extract reads a file, glob or URL into an
/// artifact; a transform reads an artifact into an artifact; a load reads an
/// artifact into a file (or a part); a fused task (`fuse = true`) is one that
/// was not split: a file source, steps and a file sink.
///
/// A gather (the last step of a partitioned load) has the same shape, with a
/// [`SourceSpec::Parts`] source and a [`SinkSpec::File`] or [`SinkSpec::Dir`]
/// sink; it copies the parts' bytes (or Parquet row groups) and decodes
/// nothing, so it takes no steps.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskSpec {
    /// The queue this task is for: the AMQP binding key, and what a worker
    /// checks a delivery against. It does not limit the shape: any worker
    /// runs any source, steps and sink.
    pub kind: TaskKind,
    pub source: SourceSpec,
    /// Applied in order to each batch as it is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    pub sink: SinkSpec,
}

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        self.kind
    }
}

/// Where a task reads from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceSpec {
    /// A file on the worker's file system (absolute once submitted).
    File {
        path: String,
        #[serde(flatten)]
        read: ReadOptions,
    },
    /// The files a glob matches on the worker's file system, in name order.
    /// A file whose name holds `[`, `*` or `?` and exists is read as that file.
    Glob {
        pattern: String,
        #[serde(flatten)]
        read: ReadOptions,
    },
    /// An http(s) URL, downloaded into the store's scratch directory.
    Url {
        url: String,
        #[serde(flatten)]
        read: ReadOptions,
    },
    /// An Arrow IPC artifact in the store: the output of an upstream task,
    /// filled in by the coordinator when it dispatches this one.
    Artifact(ArtifactRef),
    /// The parts of a partitioned load, in partition order, each a file of
    /// `format` in the store: the source of a gather.
    Parts {
        format: DataFormat,
        parts: Vec<ArtifactRef>,
    },
    /// The rows of a PostgreSQL query, read with `COPY (query) TO STDOUT
    /// (FORMAT binary)`. `url` is a libpq URL (`postgresql://user@host/db`),
    /// possibly with `${env:NAME}`, which the worker expands before it runs
    /// the task.
    Postgres {
        url: String,
        /// The query, its params already filled in as SQL literals.
        query: String,
        /// An integer column of the query's result: with `partition`, this
        /// task reads only its share of the key's range `[min, max]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<Partition>,
    },
    /// Named tables for a task whose first step is SQL (`inputs = { orders
    /// = "orders" }`, or `input = "x"` as the table `input`): each table is
    /// the artifacts of one upstream task, in partition order (one artifact
    /// unless that task was partitioned), read as one table. Filled in by
    /// the coordinator when it dispatches the task.
    Tables { tables: Vec<TableSource> },
}

/// One named table of a [`SourceSpec::Tables`] source.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TableSource {
    /// The table's name in SQL: lowercase letters, digits and `_`.
    pub name: String,
    /// Its rows: these artifacts, one after another.
    pub artifacts: Vec<ArtifactRef>,
}

/// How to read a file source: its format and that format's options.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ReadOptions {
    pub format: DataFormat,
    /// Declared columns, in file order. Absent: inferred without loss (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnSpec>>,
    /// CSV only: whether the first line is a header.
    #[serde(default = "default_true")]
    pub header: bool,
    /// CSV only: the field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Read only this share of the source: a byte range of a CSV or
    /// JSON-lines file, cut at record boundaries; a run of row groups of a
    /// Parquet file; or a run of the files a glob matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
}

impl SourceSpec {
    /// The read options of a file, glob or URL source.
    pub fn read_options(&self) -> Option<&ReadOptions> {
        match self {
            SourceSpec::File { read, .. }
            | SourceSpec::Glob { read, .. }
            | SourceSpec::Url { read, .. } => Some(read),
            SourceSpec::Artifact(_)
            | SourceSpec::Parts { .. }
            | SourceSpec::Tables { .. }
            | SourceSpec::Postgres { .. } => None,
        }
    }

    pub fn read_options_mut(&mut self) -> Option<&mut ReadOptions> {
        match self {
            SourceSpec::File { read, .. }
            | SourceSpec::Glob { read, .. }
            | SourceSpec::Url { read, .. } => Some(read),
            SourceSpec::Artifact(_)
            | SourceSpec::Parts { .. }
            | SourceSpec::Tables { .. }
            | SourceSpec::Postgres { .. } => None,
        }
    }

    /// The share of the source this task reads, if it reads a share.
    pub fn partition(&self) -> Option<Partition> {
        match self {
            SourceSpec::Postgres { partition, .. } => *partition,
            other => other.read_options().and_then(|r| r.partition),
        }
    }

    /// Sets the share of a partitionable source (a file, glob or query).
    pub fn set_partition(&mut self, part: Partition) {
        match self {
            SourceSpec::Postgres { partition, .. } => *partition = Some(part),
            other => {
                if let Some(read) = other.read_options_mut() {
                    read.partition = Some(part);
                }
            }
        }
    }
}

/// Where a task writes to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkSpec {
    /// An Arrow IPC artifact in the store (`{flow_run}/{task}.arrow`), for
    /// the tasks downstream. The first attempt to commit it wins.
    Artifact,
    /// A file under the worker node's output root, replaced at commit.
    File(FileTarget),
    /// One partition of a partitioned load: the part, in the target's
    /// format, goes into the store for the gather to put in place.
    Part {
        /// The partition's number, from 0.
        index: u32,
        #[serde(flatten)]
        target: FileTarget,
    },
    /// A directory of `part-NNNNN.EXT` files under the output root: a
    /// gather's sink for a load with `parts = true`.
    Dir(FileTarget),
    /// A PostgreSQL table, written through a staging table and committed in
    /// one transaction with the task run's fence row.
    Postgres(PgTarget),
}

/// A PostgreSQL table a load writes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct PgTarget {
    /// A libpq URL (`postgresql://user@host/db`), possibly with `${env:NAME}`.
    pub url: String,
    /// `table` or `schema.table`, each part an unquoted identifier.
    pub table: String,
    pub mode: PgMode,
    /// The columns of the target's primary key or unique index: `upsert` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Create the table from the rows' columns if it does not exist.
    #[serde(default)]
    pub create: bool,
}

/// How a load puts its rows into a PostgreSQL table.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PgMode {
    /// Adds the rows.
    Append,
    /// Replaces every row of the table with these rows.
    Replace,
    /// Inserts the rows, updating those whose key is already there.
    Upsert,
}

impl PgMode {
    pub const ALL: [PgMode; 3] = [PgMode::Append, PgMode::Replace, PgMode::Upsert];

    pub fn as_str(self) -> &'static str {
        match self {
            PgMode::Append => "append",
            PgMode::Replace => "replace",
            PgMode::Upsert => "upsert",
        }
    }

    pub fn parse(s: &str) -> Option<PgMode> {
        PgMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A file (or directory of parts) under the worker node's output root.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct FileTarget {
    pub format: DataFormat,
    /// Relative path under the worker node's output root.
    pub path: String,
    /// CSV only: write a header line.
    #[serde(default = "default_true")]
    pub header: bool,
}

/// File formats a source can be read from or a load can write.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Csv,
    Parquet,
    Jsonl,
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Csv => "csv",
            DataFormat::Parquet => "parquet",
            DataFormat::Jsonl => "jsonl",
        }
    }
}

/// Column types Conveyor understands in declared schemas and casts.
///
/// On the wire, a type is its name as a flow writes it: `string`, `int64`,
/// `float64`, `boolean`, `date`, `timestamp` (no zone), `timestamptz` (an
/// instant, kept in UTC) or `decimal(P,S)` (precision 1..=38, scale 0..=P).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Boolean,
    /// A calendar day (Arrow `Date32`), written `2026-01-05`.
    Date,
    /// A date and time of day without a zone (Arrow `Timestamp(µs)`),
    /// written `2026-01-05T10:30:00.25`.
    Timestamp,
    /// An instant (Arrow `Timestamp(µs, "UTC")`), written in UTC:
    /// `2026-01-05T10:30:00.25Z`.
    TimestampTz,
    /// An exact decimal number (Arrow `Decimal128(P, S)`), written with
    /// exactly `scale` digits after the point: `decimal(10,2)` writes `1.50`.
    Decimal {
        precision: u8,
        scale: u8,
    },
}

/// Largest decimal precision: what a 128-bit integer holds.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

impl ColumnType {
    /// The types without parameters, in the order errors list them.
    pub const SIMPLE: [ColumnType; 7] = [
        ColumnType::String,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Boolean,
        ColumnType::Date,
        ColumnType::Timestamp,
        ColumnType::TimestampTz,
    ];

    /// What a flow may write as a type, for errors.
    pub const EXPECTED: &'static str =
        "string, int64, float64, boolean, date, timestamp, timestamptz or decimal(P,S)";

    /// The type's name as a flow writes it (`decimal(10,2)`).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            ColumnType::String => "string".into(),
            ColumnType::Int64 => "int64".into(),
            ColumnType::Float64 => "float64".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::TimestampTz => "timestamptz".into(),
            ColumnType::Decimal { precision, scale } => {
                format!("decimal({precision},{scale})").into()
            }
        }
    }

    /// The type named `s`, or why it is not one (without repeating `s`).
    pub fn parse(s: &str) -> Result<ColumnType, String> {
        if let Some(t) = ColumnType::SIMPLE.into_iter().find(|t| t.name() == s) {
            return Ok(t);
        }
        let Some(args) = s
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
        else {
            return Err(format!("expected {}", ColumnType::EXPECTED));
        };
        let number = |t: &str| -> Option<u8> {
            (!t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        let (precision, scale) = match args.split_once(',').map(|(p, s)| (number(p), number(s))) {
            Some((Some(p), Some(s))) => (p, s),
            _ => return Err(
                "a decimal is written `decimal(P,S)`: precision and scale, digits only, no spaces"
                    .into(),
            ),
        };
        if !(1..=MAX_DECIMAL_PRECISION).contains(&precision) {
            return Err(format!(
                "decimal precision {precision} is out of range; it must be 1 to {MAX_DECIMAL_PRECISION}"
            ));
        }
        if scale > precision {
            return Err(format!(
                "decimal scale {scale} is larger than its precision {precision}"
            ));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ColumnType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        ColumnType::parse(&text)
            .map_err(|why| serde::de::Error::custom(format!("column type `{text}`: {why}")))
    }
}

impl JsonSchema for ColumnType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ColumnType".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A column type: string, int64, float64, boolean, date, timestamp (no zone), timestamptz (an instant, in UTC) or decimal(P,S) (precision 1..=38, scale 0..=P).",
            "type": "string",
            "pattern": "^(string|int64|float64|boolean|date|timestamp|timestamptz|decimal\\([0-9]{1,3},[0-9]{1,3}\\))$"
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
}

/// Partition `index` of `count` (from 0).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

fn default_true() -> bool {
    true
}

fn default_delimiter() -> String {
    ",".to_string()
}

/// A committed intermediate artifact (Arrow IPC) in the artifact store.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ArtifactRef {
    /// Path relative to the artifact store root.
    pub path: String,
    pub rows: u64,
}

/// One transform step. Steps apply in order.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Remove these columns.
    Drop(Vec<String>),
    /// Keep only these columns, in this order.
    Select(Vec<String>),
    /// Rename columns, old name → new name.
    Rename(BTreeMap<String, String>),
    /// Keep the rows where `column op value` holds.
    Filter(FilterStep),
    /// Change a column's type; a value that does not convert is an error.
    Cast(CastStep),
    /// Replace the rows with the result of a SQL query (Apache DataFusion),
    /// which reads the rows so far as the table `input`, or, as a task's
    /// first step, the task's named [`SourceSpec::Tables`]. Params are
    /// already filled in as quoted literals.
    Sql { sql: String },
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct FilterStep {
    pub column: String,
    pub op: CompareOp,
    pub value: Literal,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
        }
    }

    pub fn parse(s: &str) -> Option<CompareOp> {
        CompareOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A constant in a filter.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct CastStep {
    pub column: String,
    pub to: ColumnType,
}

/// Worker → coordinator: progress and outcome of one attempt.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    pub schema_version: u32,
    pub flow_run: String,
    pub task: String,
    pub task_run: String,
    pub attempt: u32,
    /// The node that ran the attempt.
    pub node: String,
    /// How many times the broker has delivered this attempt (1 = first delivery).
    pub delivery: u32,
    pub status: UpdateStatus,
    /// The delivery's last log lines, carried by its final update
    /// (`succeeded` or `failed`) instead of a [`TaskLogs`] message of their
    /// own: one message fewer per attempt. Optional; a coordinator stores
    /// them exactly as it stores a [`TaskLogs`] with the same batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogBatch>,
}

impl TaskUpdate {
    /// An update about `msg`'s attempt, from `node`, on delivery `delivery`.
    pub fn for_attempt(
        msg: &TaskMessage,
        node: &str,
        delivery: u32,
        status: UpdateStatus,
    ) -> TaskUpdate {
        TaskUpdate {
            schema_version: SCHEMA_VERSION,
            flow_run: msg.flow_run.clone(),
            task: msg.task.clone(),
            task_run: msg.task_run.clone(),
            attempt: msg.attempt,
            node: node.to_string(),
            delivery,
            status,
            logs: None,
        }
    }

    /// The same update carrying `logs`, the delivery's last log lines.
    pub fn with_logs(mut self, logs: Option<LogBatch>) -> TaskUpdate {
        self.logs = logs;
        self
    }

    /// Takes the log lines this update carries, as the [`TaskLogs`] they
    /// stand for.
    pub fn take_logs(&mut self) -> Option<TaskLogs> {
        let batch = self.logs.take()?;
        Some(TaskLogs {
            schema_version: self.schema_version,
            flow_run: self.flow_run.clone(),
            task: self.task.clone(),
            task_run: self.task_run.clone(),
            attempt: self.attempt,
            node: self.node.clone(),
            delivery: self.delivery,
            first_line: batch.first_line,
            dropped: batch.dropped,
            last: batch.last,
            lines: batch.lines,
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum UpdateStatus {
    /// The worker took the task.
    Started,
    /// Rows read so far; sent at most about once a second while the task runs.
    Progress { rows: u64 },
    /// The output is committed.
    Succeeded(TaskOutput),
    /// The attempt failed; `error.retryable` says whether another attempt can help.
    Failed { error: TaskError },
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskOutput {
    pub rows_in: u64,
    pub rows_out: u64,
    /// The intermediate artifact, for extract and transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// Where the data ended up: the artifact path, or the load's file on its node.
    pub location: String,
    /// Bytes the task read: the sizes of its input files or artifacts, where
    /// the worker knows them (absent from workers before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes the task wrote: the size of its output file or artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
}

/// Worker → coordinator, on the coordinator's reply queue beside the
/// [`TaskUpdate`]s: a batch of the log lines one delivery of a task attempt
/// wrote (the tracing events inside its span). Sent about once a second
/// while the attempt runs; the last batch, with `last` set, usually rides
/// inside the attempt's final [`TaskUpdate`] instead ([`TaskUpdate::logs`]).
///
/// It has no `status`, so it never decodes as a [`TaskUpdate`]: a receiver
/// tells the two apart by shape, the same way on every transport.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskLogs {
    pub schema_version: u32,
    pub flow_run: String,
    pub task: String,
    pub task_run: String,
    pub attempt: u32,
    /// The node that ran the attempt.
    pub node: String,
    /// The broker delivery of the attempt (1 = first), as in [`TaskUpdate`].
    pub delivery: u32,
    /// The index of `lines[0]` among every line this delivery wrote, from 0.
    /// A receiver skips the lines it already has, so a batch delivered twice
    /// is stored once.
    pub first_line: u64,
    /// Lines the worker dropped just before this batch, because the
    /// coordinator did not take them as fast as the task wrote them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The delivery ended: no more lines come from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    pub lines: Vec<TaskLogLine>,
}

/// A batch of a delivery's log lines inside its final [`TaskUpdate`]: the
/// fields of a [`TaskLogs`] that the update does not already carry, with the
/// same meaning.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct LogBatch {
    /// The index of `lines[0]` among every line this delivery wrote, from 0.
    pub first_line: u64,
    /// Lines the worker dropped just before this batch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The delivery ended: no more lines come from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    pub lines: Vec<TaskLogLine>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One log line of a task attempt.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskLogLine {
    /// When it was written, in ms since the Unix epoch, by the worker's clock.
    pub ts_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message, then its fields as `key=value`, on one line.
    pub message: String,
}

/// Why an attempt failed. The coordinator decides retry or fail from `retryable`
/// alone, never from the message text.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input data is bad: missing file, malformed CSV, missing column.
    Data,
    /// The task spec is bad: hostile path, unknown kind, bad parameter.
    Spec,
    /// An I/O or network failure that may pass.
    Io,
    /// The attempt ran past its timeout.
    Timeout,
    /// No live worker of the kind was seen within the wait.
    NoWorker,
    /// The worker crashed on the task, or the broker dead-lettered it.
    WorkerLost,
    /// The run was abandoned: its coordinator's reply queue is gone, so the
    /// attempt committed nothing a user can see and dropped the task.
    /// Expected after a client's run is given up; nobody receives it.
    Abandoned,
    /// The run was cancelled while the attempt ran; it committed nothing.
    Cancelled,
    /// A bug in Conveyor.
    Internal,
}

/// Coordinator → every worker node, on the events topic exchange with
/// routing key `run.finished`: a flow run ended. Workers delete a succeeded
/// run's artifacts, and keep a failed run's for a retry, for `[storage]
/// keep_failed`. Best effort: a node that misses it sweeps at start and
/// hourly.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct RunFinished {
    pub schema_version: u32,
    pub flow_run: String,
    pub state: FlowState,
}

/// Worker liveness, published every heartbeat interval.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub schema_version: u32,
    pub node: String,
    pub kinds: Vec<TaskKind>,
    /// Task-run ids the node holds right now.
    pub in_flight: Vec<String>,
    /// The sender's heartbeat interval; receivers expire it after three of these.
    pub interval_ms: u64,
    /// The sender's Conveyor version (absent from nodes before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    Running,
    /// A ready task has no live worker of its kind; see the task's state.
    WaitingForWorker,
    Succeeded,
    Failed,
    /// Cancelled by a user: queued tasks were not started, running attempts
    /// were aborted and committed nothing.
    Cancelled,
}

impl FlowState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FlowState::Succeeded | FlowState::Failed | FlowState::Cancelled
        )
    }

    /// Every state, in the order tables show them.
    pub const ALL: [FlowState; 5] = [
        FlowState::Running,
        FlowState::WaitingForWorker,
        FlowState::Succeeded,
        FlowState::Failed,
        FlowState::Cancelled,
    ];

    /// The state named `text` (as [`FlowState::as_str`] writes it).
    pub fn parse(text: &str) -> Option<FlowState> {
        FlowState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The name on the wire (`Succeeded`), for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Running => "Running",
            FlowState::WaitingForWorker => "WaitingForWorker",
            FlowState::Succeeded => "Succeeded",
            FlowState::Failed => "Failed",
            FlowState::Cancelled => "Cancelled",
        }
    }
}

impl std::fmt::Display for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for its inputs.
    Pending,
    /// Ready, but no live worker of its kind has been seen.
    WaitingForWorker,
    /// Published; no worker has taken it yet.
    Queued,
    Running,
    /// Failed with a retryable error; waits out its backoff.
    RetryWaiting,
    Succeeded,
    Failed,
    /// Not run because the flow failed first.
    Skipped,
    /// Stopped, or never started, because its run was cancelled.
    Cancelled,
    /// Not run again in a retried run: the committed output of the run it
    /// retries is used. Counts as succeeded for the tasks that read it.
    Reused,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::Cancelled
                | TaskState::Reused
        )
    }

    /// The name on the wire (`RetryWaiting`), for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "Pending",
            TaskState::WaitingForWorker => "WaitingForWorker",
            TaskState::Queued => "Queued",
            TaskState::Running => "Running",
            TaskState::RetryWaiting => "RetryWaiting",
            TaskState::Succeeded => "Succeeded",
            TaskState::Failed => "Failed",
            TaskState::Skipped => "Skipped",
            TaskState::Cancelled => "Cancelled",
            TaskState::Reused => "Reused",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final (or current) state of a flow run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct RunReport {
    pub flow: String,
    pub flow_run: String,
    pub state: FlowState,
    pub elapsed_ms: u64,
    /// Why the flow failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tasks: Vec<TaskReport>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TaskReport {
    pub name: String,
    pub kind: TaskKind,
    pub state: TaskState,
    /// Attempts started, counting broker redeliveries.
    pub attempts: u32,
    pub node: Option<String>,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    /// Rows the running attempt has read so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_so_far: Option<u64>,
    pub output: Option<String>,
    pub error: Option<TaskError>,
}

/// A flow handed to a coordinator node by `conveyor run --submit`, on the
/// `<namespace>.submissions` queue. The coordinator parses `flow_text` as if
/// it were the file `flow_file` in the directory `flow_base`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct FlowSubmission {
    pub schema_version: u32,
    /// Chosen by the client; a redelivered submission with a known id is
    /// answered with the flow run it already started, not run twice.
    pub request_id: String,
    pub flow_file: String,
    pub flow_text: String,
    /// Absolute directory that relative paths of the flow resolve against.
    pub flow_base: String,
    /// The client's queue for [`FlowEvent`]s (through the replies exchange).
    pub reply_to: String,
    /// The submitting node's name, for logs.
    pub client: String,
    /// Values of the flow's `[params]` for this run (`--param NAME=VALUE`);
    /// a param not given takes its default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// What a coordinator tells the client of a submitted flow.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct FlowEvent {
    pub schema_version: u32,
    pub request_id: String,
    /// The coordinator node that holds the run.
    pub coordinator: String,
    pub event: FlowEventKind,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FlowEventKind {
    /// The run is recorded in the coordinator's database; it will finish even
    /// if the client goes away.
    Accepted { report: RunReport },
    /// The run changed (sent at most a few times per second).
    Progress { report: RunReport },
    /// The run reached a terminal state.
    Finished { report: RunReport },
    /// The coordinator could not accept the flow.
    Rejected { error: String },
}

/// The JSON Schema documents of the contract, as (file name, pretty JSON).
pub fn json_schemas() -> Vec<(&'static str, String)> {
    fn render(schema: schemars::Schema) -> String {
        let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        text.push('\n');
        text
    }
    vec![
        (
            "task_message.schema.json",
            render(schemars::schema_for!(TaskMessage)),
        ),
        (
            "task_update.schema.json",
            render(schemars::schema_for!(TaskUpdate)),
        ),
        (
            "task_logs.schema.json",
            render(schemars::schema_for!(TaskLogs)),
        ),
        (
            "heartbeat.schema.json",
            render(schemars::schema_for!(Heartbeat)),
        ),
        (
            "run_finished.schema.json",
            render(schemars::schema_for!(RunFinished)),
        ),
        (
            "run_report.schema.json",
            render(schemars::schema_for!(RunReport)),
        ),
        (
            "flow_submission.schema.json",
            render(schemars::schema_for!(FlowSubmission)),
        ),
        (
            "flow_event.schema.json",
            render(schemars::schema_for!(FlowEvent)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_message_round_trips_through_json() {
        let msg = TaskMessage {
            schema_version: SCHEMA_VERSION,
            flow: "colors".into(),
            flow_run: "fr1".into(),
            task: "transform".into(),
            task_run: "fr1.transform".into(),
            attempt: 2,
            reply_to: "ns.replies".into(),
            spec: TaskSpec {
                kind: TaskKind::Transform,
                source: SourceSpec::Artifact(ArtifactRef {
                    path: "fr1/extract.arrow".into(),
                    rows: 3,
                }),
                steps: vec![
                    Step::Drop(vec!["HEX".into()]),
                    Step::Filter(FilterStep {
                        column: "n".into(),
                        op: CompareOp::Ge,
                        value: Literal::Int(3),
                    }),
                ],
                sink: SinkSpec::Artifact,
            },
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert!(text.contains(r#""kind":"transform""#), "{text}");
        assert!(text.contains(r#"{"drop":["HEX"]}"#), "{text}");
        let back: TaskMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn every_task_shape_round_trips_through_json() {
        let read = ReadOptions {
            format: DataFormat::Csv,
            schema: None,
            header: true,
            delimiter: ",".into(),
            partition: Some(Partition { index: 1, count: 4 }),
        };
        let target = FileTarget {
            format: DataFormat::Parquet,
            path: "out/colors.parquet".into(),
            header: true,
        };
        let artifact = ArtifactRef {
            path: "fr1/e.arrow".into(),
            rows: 3,
        };
        let shapes = [
            (
                SourceSpec::File {
                    path: "/data/a.csv".into(),
                    read: read.clone(),
                },
                SinkSpec::Artifact,
            ),
            (
                SourceSpec::Glob {
                    pattern: "/data/*.csv".into(),
                    read: read.clone(),
                },
                SinkSpec::Part {
                    index: 1,
                    target: target.clone(),
                },
            ),
            (
                SourceSpec::Url {
                    url: "https://x/a.csv".into(),
                    read,
                },
                SinkSpec::File(target.clone()),
            ),
            (
                SourceSpec::Artifact(artifact.clone()),
                SinkSpec::Dir(target),
            ),
            (
                SourceSpec::Parts {
                    format: DataFormat::Csv,
                    parts: vec![artifact.clone()],
                },
                SinkSpec::Artifact,
            ),
            (
                SourceSpec::Tables {
                    tables: vec![TableSource {
                        name: "orders".into(),
                        artifacts: vec![artifact.clone(), artifact.clone()],
                    }],
                },
                SinkSpec::Artifact,
            ),
            (
                SourceSpec::Postgres {
                    url: "postgresql://u:p@db/x".into(),
                    query: "SELECT 1".into(),
                    partition_by: Some("id".into()),
                    partition: Some(Partition { index: 0, count: 2 }),
                },
                SinkSpec::Postgres(PgTarget {
                    url: "${env:PG_URL}".into(),
                    table: "public.colors".into(),
                    mode: PgMode::Upsert,
                    key: vec!["id".into()],
                    create: true,
                }),
            ),
        ];
        for (source, sink) in shapes {
            let spec = TaskSpec {
                kind: TaskKind::Load,
                source,
                steps: vec![
                    Step::Drop(vec!["HEX".into()]),
                    Step::Sql {
                        sql: "SELECT * FROM input".into(),
                    },
                ],
                sink,
            };
            let text = serde_json::to_string(&spec).unwrap();
            assert_eq!(
                serde_json::from_str::<TaskSpec>(&text).unwrap(),
                spec,
                "{text}"
            );
        }
    }

    #[test]
    fn column_types_keep_their_old_names_and_carry_decimal_parameters() {
        for (text, t) in [
            ("string", ColumnType::String),
            ("int64", ColumnType::Int64),
            ("float64", ColumnType::Float64),
            ("boolean", ColumnType::Boolean),
            ("date", ColumnType::Date),
            ("timestamp", ColumnType::Timestamp),
            ("timestamptz", ColumnType::TimestampTz),
            (
                "decimal(38,10)",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
            ),
        ] {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::to_string(&t).unwrap(), json);
            assert_eq!(serde_json::from_str::<ColumnType>(&json).unwrap(), t);
        }
        for (bad, why) in [
            ("decimal(39,0)", "out of range"),
            ("decimal(0,0)", "out of range"),
            ("decimal(5,6)", "larger than its precision"),
            ("decimal(10, 2)", "no spaces"),
            ("decimal", "expected string"),
            ("Date", "expected string"),
        ] {
            let err = ColumnType::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            let wire = serde_json::from_str::<ColumnType>(&format!("\"{bad}\""));
            assert!(wire.unwrap_err().to_string().contains(bad));
        }
    }

    #[test]
    fn unknown_fields_are_ignored_so_an_older_receiver_reads_a_newer_message() {
        let text = r#"{"schema_version":2,"node":"a","kinds":["extract"],"in_flight":[],"interval_ms":5,"extra":1}"#;
        assert_eq!(serde_json::from_str::<Heartbeat>(text).unwrap().node, "a");
        let task = r#"{"schema_version":2,"flow":"f","flow_run":"r","task":"t","task_run":"r.t",
            "attempt":1,"reply_to":"q","later":true,"spec":{"kind":"extract","later":1,
            "source":{"type":"file","path":"/a.csv","format":"csv","later":{}},
            "sink":{"type":"artifact","later":[]}}}"#;
        let msg: TaskMessage = serde_json::from_str(task).unwrap();
        assert_eq!(msg.spec.sink, SinkSpec::Artifact);
        // An unknown connector is not guessed at: the message does not decode.
        let unknown = task.replace(r#""type":"artifact""#, r#""type":"teleport""#);
        assert!(serde_json::from_str::<TaskMessage>(&unknown).is_err());
    }
}
