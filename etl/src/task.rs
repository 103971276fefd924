/*!
One attempt of a task, from its source through its steps to its sink's
committed output ([`run_task`]); a gather (a [`SourceSpec::Parts`] source)
goes to [`crate::gather`] instead.
*/

use conveyor_schemas::{SourceSpec, Step, TableSource, TaskOutput, TaskSpec};

use crate::attempt::Attempt;
use crate::error::{EtlError, Result};
use crate::gather;
use crate::pending::Pending;
use crate::sinks;
use crate::sources;
use crate::sql;
use crate::transform;
use crate::workspace::Connectors;
use crate::workspace::Workspace;

/// Runs one attempt of a task: opens the source, applies the steps to each
/// batch as it is read, writes the sink, and commits it fenced. A gather
/// (a [`SourceSpec::Parts`] source) copies its parts instead.
pub fn run_task(ws: &Workspace, at: &Attempt, spec: &TaskSpec) -> Result<TaskOutput> {
    let output = run_task_unsized(ws, at, spec)?;
    Ok(with_sizes(ws, spec, output))
}

/// Fills in the bytes a task read and wrote, where a file's size says it:
/// a whole input file or artifact, the parts of a gather, an output file or
/// artifact. A partition of a file, a glob, a URL or a directory of parts
/// are left unknown.
fn with_sizes(ws: &Workspace, spec: &TaskSpec, mut output: TaskOutput) -> TaskOutput {
    let size = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    let artifact_size = |key: &str| ws.store.open(key).ok().and_then(|p| size(&p));
    output.bytes_in = match &spec.source {
        SourceSpec::Artifact(a) => artifact_size(&a.path),
        SourceSpec::Parts { parts, .. } => parts
            .iter()
            .map(|p| artifact_size(&p.path))
            .sum::<Option<u64>>(),
        SourceSpec::Tables { tables } => tables
            .iter()
            .flat_map(|t| &t.artifacts)
            .map(|a| artifact_size(&a.path))
            .sum::<Option<u64>>(),
        other => ws.connectors.bytes_in(other),
    };
    output.bytes_out = match &output.artifact {
        Some(a) => artifact_size(&a.path),
        None => size(std::path::Path::new(&output.location)),
    };
    output
}

fn run_task_unsized(ws: &Workspace, at: &Attempt, spec: &TaskSpec) -> Result<TaskOutput> {
    if let SourceSpec::Parts { format, parts } = &spec.source {
        if !spec.steps.is_empty() {
            return Err(EtlError::Spec(
                "a gather copies its parts as they are: it takes no steps".into(),
            ));
        }
        return gather::run_gather(ws, at, *format, parts, &spec.sink);
    }
    let tag = at.tag();
    let cx = sources::ReadContext {
        store: ws.store.as_ref(),
        tag: &tag,
        max_record: ws.max_record_bytes,
        policy: &ws.sources,
        cancel: at.cancel,
    };
    let rows_in = std::cell::Cell::new(0u64);
    let (schema, mut iter) =
        open_with_steps(&spec.source, &spec.steps, &ws.connectors, &cx, at, &rows_in)?;
    let pending = sinks::open(&spec.sink, ws, at)?.write(schema, &mut iter)?;
    drop(iter);
    at.check_cancelled()?;
    pending.commit(rows_in.get())
}

type Batch = Result<arrow::array::RecordBatch>;

/// A schema and the batches that follow it, as they flow between steps.
type Rows<'a> = (
    arrow::datatypes::SchemaRef,
    Box<dyn Iterator<Item = Batch> + 'a>,
);

/// The rows of a task: its source, through its steps, counting the rows
/// that go in. Batch steps map each batch as it comes; a SQL step
/// ([`sql`]) reads the rows so far as the table `input` (from a scratch
/// Arrow IPC file, so that memory stays flat however many rows there are)
/// or, as the first step, the task's named tables straight from the store.
fn open_with_steps<'a>(
    source: &SourceSpec,
    steps: &'a [Step],
    connectors: &Connectors,
    cx: &sources::ReadContext,
    at: &'a Attempt,
    rows_in: &'a std::cell::Cell<u64>,
) -> Result<Rows<'a>> {
    let first_sql = match steps.first() {
        Some(Step::Sql { sql }) => Some(sql.as_str()),
        _ => None,
    };
    let tables = match (source, first_sql) {
        (SourceSpec::Tables { tables }, Some(_)) => Some(tables.clone()),
        (SourceSpec::Artifact(a), Some(_)) => Some(vec![TableSource {
            name: "input".into(),
            artifacts: vec![a.clone()],
        }]),
        _ => None,
    };
    let (mut rows, mut done): (Rows<'a>, usize) = match (tables, first_sql) {
        (Some(tables), Some(sql)) => {
            rows_in.set(
                tables
                    .iter()
                    .flat_map(|t| &t.artifacts)
                    .map(|a| a.rows)
                    .sum(),
            );
            let mut named = Vec::with_capacity(tables.len());
            for t in tables {
                let paths = t
                    .artifacts
                    .iter()
                    .map(|a| cx.store.open(&a.path))
                    .collect::<Result<Vec<_>>>()?;
                named.push((t.name, paths));
            }
            let step = sql::SqlStep {
                task: at.task,
                number: 1,
                sql,
            };
            (sql::query(&step, named, false, at)?, 1)
        }
        _ => {
            let batches = sources::open(source, connectors, cx)?;
            let iter = at.counted(batches.iter).inspect(move |b| {
                if let Ok(b) = b {
                    rows_in.set(rows_in.get() + b.num_rows() as u64);
                }
            });
            ((batches.schema, Box::new(iter)), 0)
        }
    };
    while done < steps.len() {
        if let Step::Sql { sql } = &steps[done] {
            // The rows so far go to a scratch Arrow IPC file, which the
            // query streams (and may scan more than once, for a self-join)
            // without holding them in memory. The file goes when the
            // query's rows are dropped. Its rows were counted on the way in.
            let (schema, mut iter) = rows;
            let mut file = Pending::file(&cx.store.scratch_dir()?.join("sql-input"), cx.tag)?;
            let writer = file.writer()?;
            sinks::artifact::write_ipc(writer, file.tmp_path(), schema, &mut iter)?;
            let step = sql::SqlStep {
                task: at.task,
                number: done + 1,
                sql,
            };
            let input = vec![("input".to_string(), vec![file.tmp_path().to_path_buf()])];
            let (schema, out) = sql::query(&step, input, true, at)?;
            rows = (
                schema,
                Box::new(KeepWhileRead {
                    rows: out,
                    _file: file,
                }),
            );
            done += 1;
            continue;
        }
        let end = steps[done..]
            .iter()
            .position(|s| matches!(s, Step::Sql { .. }))
            .map_or(steps.len(), |i| done + i);
        rows = with_steps(rows, &steps[done..end], done)?;
        done = end;
    }
    Ok(rows)
}

/// Rows read from a scratch file, which is removed once they are dropped.
struct KeepWhileRead<'a> {
    rows: Box<dyn Iterator<Item = Batch> + 'a>,
    _file: Pending,
}

impl Iterator for KeepWhileRead<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rows.next()
    }
}

/// Maps `rows` through the batch steps `steps` (numbered from `first` + 1
/// in errors).
fn with_steps<'a>(rows: Rows<'a>, steps: &'a [Step], first: usize) -> Result<Rows<'a>> {
    let (schema, input) = rows;
    let out_schema = transform::plan_from(&schema, steps, first)?;
    let mut row_base = 0usize;
    let iter = input.map(move |batch| {
        let batch = batch?;
        let out = transform::apply_from(&batch, steps, first, row_base)?;
        row_base += batch.num_rows();
        Ok(out)
    });
    Ok((out_schema, Box::new(iter)))
}
