/*!
SQL steps on Apache DataFusion.

A SQL step replaces the rows so far with the result of one query. Its
tables are either the task's named inputs (artifacts in the store, as the
task's first step: `inputs = { orders = "orders" }`, or `input = "x"` as the
table `input`), or the rows the steps before it produced, as the table
`input`.

- Each step gets a [`SessionContext`] of its own, with only its tables.
- A table is streamed: every scan reopens its Arrow IPC files, one
  DataFusion partition per file (a partitioned upstream task's parts are
  scanned in parallel). Rows that earlier steps (or the task's own source)
  produced come as one scratch file, written by the caller.
- DataFusion is async: each query runs on a small multi-thread tokio
  runtime of its own, driven from the task's blocking thread, so the
  worker's actors and I/O runtime are never blocked by it. The result is
  streamed batch by batch into the next step or the sink.
- The attempt's cancel flag is looked at between result batches and at
  least every [`TICK`] while DataFusion works (an aggregate may read its
  whole input before it returns a batch); a cancelled query is dropped,
  which stops its DataFusion tasks.
- Errors name the task, the step, the query and DataFusion's message, with
  the line and column where DataFusion reports one.
*/

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;

use crate::attempt::Attempt;
use crate::error::{EtlError, Result};

/// Longest wait for a result batch before the cancel flag is looked at again.
pub const TICK: Duration = Duration::from_millis(100);

/// One SQL step of a task, for running it and for its errors.
pub struct SqlStep<'q> {
    /// The task's name.
    pub task: &'q str,
    /// The step's number in the task's steps, from 1.
    pub number: usize,
    pub sql: &'q str,
}

/// The result of a query: its schema, and its batches as DataFusion makes them.
pub type Rows<'a> = (
    SchemaRef,
    Box<dyn Iterator<Item = Result<RecordBatch>> + 'a>,
);

/// Runs `step` over the named `tables`, each the Arrow IPC files of its
/// rows (in order; one file or the parts of a partitioned task). With
/// `counted`, the rows were already counted in the attempt's progress (a
/// scratch file of the task's own rows): their reads add nothing. Planning
/// errors (a syntax error, an unknown table or column) come back here,
/// before any row is read.
pub fn query<'a>(
    step: &SqlStep,
    tables: Vec<(String, Vec<PathBuf>)>,
    counted: bool,
    at: &'a Attempt,
) -> Result<Rows<'a>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("conveyor-sql")
        .enable_time()
        .build()
        .map_err(|e| EtlError::Internal(format!("cannot start the SQL runtime: {e}")))?;
    let mut config = SessionConfig::new().with_target_partitions(threads);
    // Spans let planning errors (an unknown column) say where they are.
    config.options_mut().sql_parser.collect_spans = true;
    // `CAST(x AS VARCHAR)` gives Utf8, the string type every step and sink
    // reads by its text rules, rather than Utf8View.
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let ctx = SessionContext::new_with_config(config);
    let read = Arc::new(AtomicU64::new(0));
    for (name, paths) in tables {
        // Reads of rows already counted go to a counter nobody reports.
        let reads = if counted {
            Arc::new(AtomicU64::new(0))
        } else {
            read.clone()
        };
        let provider = artifact_table(&name, paths, &reads)?;
        ctx.register_table(name.as_str(), provider)
            .map_err(|e| step.error(e))?;
    }
    // A step turns rows into rows: no DDL, DML or `SET`.
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let stream = runtime
        .block_on(async {
            let frame = ctx.sql_with_options(step.sql, options).await?;
            frame.execute_stream().await
        })
        .map_err(|e| step.error(e))?;
    let schema = stream.schema();
    let rows = SqlRows {
        stream: Some(stream),
        runtime,
        at,
        read,
        reported: 0,
        task: step.task.to_string(),
        number: step.number,
        sql: step.sql.to_string(),
    };
    Ok((schema, Box::new(rows)))
}

/// A table of Arrow IPC files: one streamed partition per file.
fn artifact_table(
    name: &str,
    paths: Vec<PathBuf>,
    read: &Arc<AtomicU64>,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let mut schema: Option<SchemaRef> = None;
    for path in &paths {
        let file = std::fs::File::open(path).map_err(|e| EtlError::io(path, e))?;
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(crate::error::data_err(path))?;
        let this = reader.schema();
        match &schema {
            None => schema = Some(this),
            Some(first) if first.fields() != this.fields() => {
                return Err(EtlError::data(
                    path,
                    format!("a part of table `{name}` has other columns than its first part"),
                ))
            }
            Some(_) => {}
        }
    }
    let schema = schema.ok_or_else(|| {
        EtlError::Internal(format!("table `{name}` was given no artifact to read"))
    })?;
    let partitions: Vec<Arc<dyn PartitionStream>> = paths
        .into_iter()
        .map(|path| {
            Arc::new(ArtifactPart {
                schema: schema.clone(),
                path,
                read: read.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(schema, partitions)
        .map_err(|e| EtlError::Internal(format!("table `{name}`: {e}")))?;
    Ok(Arc::new(table))
}

/// One Arrow IPC file of a table, read from the start by every scan.
#[derive(Debug)]
struct ArtifactPart {
    schema: SchemaRef,
    path: PathBuf,
    /// Rows read by every scan of every table of the query, for progress.
    read: Arc<AtomicU64>,
}

impl PartitionStream for ArtifactPart {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let path = self.path.clone();
        let read = self.read.clone();
        let opened = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                arrow::ipc::reader::FileReader::try_new(std::io::BufReader::new(f), None)
                    .map_err(|e| e.to_string())
            });
        let batches: Box<dyn Iterator<Item = datafusion::error::Result<RecordBatch>> + Send> =
            match opened {
                Ok(reader) => Box::new(reader.map(move |b| {
                    let b = b.map_err(|e| {
                        DataFusionError::Execution(format!("{}: {e}", path.display()))
                    })?;
                    read.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    Ok(b)
                })),
                Err(e) => Box::new(std::iter::once(Err(DataFusionError::Execution(format!(
                    "{}: {e}",
                    path.display()
                ))))),
            };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures_util::stream::iter(batches),
        ))
    }
}

/// A query's result batches, pulled from the task's thread.
struct SqlRows<'a> {
    /// Declared before the runtime: dropped first, which stops the query's
    /// tasks while the runtime still runs.
    stream: Option<SendableRecordBatchStream>,
    runtime: tokio::runtime::Runtime,
    at: &'a Attempt<'a>,
    read: Arc<AtomicU64>,
    /// Of `read`, what is already in the attempt's progress.
    reported: u64,
    task: String,
    number: usize,
    sql: String,
}

impl SqlRows<'_> {
    fn report_progress(&mut self) {
        let now = self.read.load(Ordering::Relaxed);
        if now > self.reported {
            self.at
                .progress
                .fetch_add(now - self.reported, Ordering::Relaxed);
            self.reported = now;
        }
    }
}

impl Iterator for SqlRows<'_> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let stream = self.stream.as_mut()?;
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(TICK, stream.next()).await });
            self.report_progress();
            if let Err(e) = self.at.check_cancelled() {
                self.stream = None;
                return Some(Err(e));
            }
            match next {
                Err(_) => continue,
                Ok(None) => {
                    self.stream = None;
                    return None;
                }
                Ok(Some(Ok(batch))) => return Some(Ok(batch)),
                Ok(Some(Err(e))) => {
                    self.stream = None;
                    let step = SqlStep {
                        task: &self.task,
                        number: self.number,
                        sql: &self.sql,
                    };
                    return Some(Err(step.error(e)));
                }
            }
        }
    }
}

impl SqlStep<'_> {
    /// DataFusion's error, naming the task, the step and the query, with
    /// the line and column DataFusion gives. A query that does not parse
    /// or plan is a spec error; one that fails on the data, a data error.
    pub fn error(&self, e: DataFusionError) -> EtlError {
        let (message, at) = describe(&e);
        let at = at
            .map(|(line, column)| format!(" (at line {line}, column {column})"))
            .unwrap_or_default();
        let text = format!(
            "task `{}`, step {} (sql): {message}{at}; the query: {}",
            self.task, self.number, self.sql
        );
        let on_data = matches!(
            e.find_root(),
            DataFusionError::Execution(_)
                | DataFusionError::ArrowError(..)
                | DataFusionError::ExecutionJoin(_)
                | DataFusionError::ResourcesExhausted(_)
                | DataFusionError::IoError(_)
        );
        EtlError::Sql {
            message: text,
            on_data,
        }
    }
}

/// DataFusion's message without its backtrace or kind prefix, and the line
/// and column it points at, if it does.
fn describe(e: &DataFusionError) -> (String, Option<(u64, u64)>) {
    let at = e
        .iter()
        .find_map(|e| match e {
            DataFusionError::Diagnostic(d, _) => d.span,
            _ => None,
        })
        .map(|span| (span.start.line, span.start.column));
    let root = e.find_root();
    let message = match root {
        // The parser's own message holds its line and column.
        DataFusionError::SQL(parser, _) => parser
            .to_string()
            .trim_start_matches("sql parser error: ")
            .to_string(),
        // One line: the report and the log show it in a table row.
        other => other
            .message()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    (message, at)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use conveyor_schemas::{
        ArtifactRef, DataFormat, FileTarget, ReadOptions, SinkSpec, SourceSpec, Step, TableSource,
        TaskKind, TaskSpec,
    };

    use crate::attempt::Attempt;
    use crate::error::EtlError;
    use crate::store::FsStore;
    use crate::task::run_task;
    use crate::workspace::Workspace;

    struct Bench {
        dir: std::path::PathBuf,
        ws: Workspace,
        progress: AtomicU64,
    }

    impl Bench {
        fn new(name: &str) -> Bench {
            let dir =
                std::env::temp_dir().join(format!("conveyor-sql-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("out")).unwrap();
            let ws = Workspace {
                store: std::sync::Arc::new(FsStore::new(dir.join("artifacts"))),
                output_root: dir.join("out"),
                max_record_bytes: 64 << 20,
                sources: Default::default(),
                connectors: crate::testing::connectors(),
            };
            Bench {
                dir,
                ws,
                progress: AtomicU64::new(0),
            }
        }

        fn at<'a>(&'a self, task: &'a str, cancel: Option<&'a AtomicBool>) -> Attempt<'a> {
            Attempt {
                flow_run: "run",
                task,
                attempt: 1,
                delivery: 1,
                progress: &self.progress,
                before_commit: None,
                cancel,
            }
        }

        /// Extracts `csv` (written as a file) into an artifact.
        fn extract(&self, task: &str, csv: &str) -> ArtifactRef {
            let path = self.dir.join(format!("{task}.csv"));
            std::fs::write(&path, csv).unwrap();
            let spec = TaskSpec {
                kind: TaskKind::Extract,
                source: SourceSpec::File {
                    path: path.display().to_string(),
                    read: ReadOptions {
                        format: DataFormat::Csv,
                        schema: None,
                        header: true,
                        delimiter: ",".into(),
                        partition: None,
                    },
                },
                steps: Vec::new(),
                sink: SinkSpec::Artifact,
            };
            run_task(&self.ws, &self.at(task, None), &spec)
                .unwrap()
                .artifact
                .unwrap()
        }

        /// Runs `steps` over `source` into `out/{task}.csv`; returns the file.
        fn run(
            &self,
            task: &str,
            source: SourceSpec,
            steps: Vec<Step>,
        ) -> crate::error::Result<String> {
            self.run_with(task, source, steps, None)
        }

        fn run_with(
            &self,
            task: &str,
            source: SourceSpec,
            steps: Vec<Step>,
            cancel: Option<&AtomicBool>,
        ) -> crate::error::Result<String> {
            let spec = TaskSpec {
                kind: TaskKind::Transform,
                source,
                steps,
                sink: SinkSpec::File(FileTarget {
                    format: DataFormat::Csv,
                    path: format!("{task}.csv"),
                    header: true,
                }),
            };
            run_task(&self.ws, &self.at(task, cancel), &spec)?;
            Ok(std::fs::read_to_string(self.dir.join(format!("out/{task}.csv"))).unwrap())
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn sql(text: &str) -> Step {
        Step::Sql { sql: text.into() }
    }

    const ORDERS: &str = "order_id,customer_id,amount\n1,10,5\n2,11,7\n3,10,1\n4,12,100\n5,11,3\n";
    const CUSTOMERS: &str = "customer_id,region,code\n10,eu,07850\n11,us,00001\n12,eu,true\n";

    fn tables(b: &Bench) -> SourceSpec {
        SourceSpec::Tables {
            tables: vec![
                TableSource {
                    name: "orders".into(),
                    artifacts: vec![b.extract("orders", ORDERS)],
                },
                TableSource {
                    name: "customers".into(),
                    artifacts: vec![b.extract("customers", CUSTOMERS)],
                },
            ],
        }
    }

    #[test]
    fn a_join_and_a_group_by_over_named_tables() {
        let b = Bench::new("join");
        let out = b
            .run(
                "enrich",
                tables(&b),
                vec![sql("SELECT c.region, sum(o.amount) AS total, count(*) AS n
                     FROM orders o JOIN customers c USING (customer_id)
                     GROUP BY c.region ORDER BY c.region")],
            )
            .unwrap();
        assert_eq!(out, "region,total,n\neu,106,3\nus,10,2\n");
        // A text column no one touches keeps its exact text through a join.
        let out = b
            .run(
                "codes",
                tables(&b),
                vec![sql(
                    "SELECT o.order_id, c.code FROM orders o JOIN customers c
                     ON o.customer_id = c.customer_id ORDER BY o.order_id",
                )],
            )
            .unwrap();
        assert_eq!(
            out,
            "order_id,code\n1,07850\n2,00001\n3,07850\n4,true\n5,00001\n"
        );
    }

    #[test]
    fn a_table_of_several_parts_is_read_whole_and_steps_run_before_and_after_sql() {
        let b = Bench::new("steps");
        let parts = vec![
            b.extract("p0", "k,v,junk\na,1,x\nb,2,x\n"),
            b.extract("p1", "k,v,junk\na,3,x\n"),
            b.extract("p2", "k,v,junk\nc,4,x\nb,5,x\n"),
        ];
        let input = || SourceSpec::Tables {
            tables: vec![TableSource {
                name: "input".into(),
                artifacts: parts.clone(),
            }],
        };
        let steps = vec![
            Step::Drop(vec!["junk".into()]),
            Step::Filter(conveyor_schemas::FilterStep {
                column: "k".into(),
                op: conveyor_schemas::CompareOp::Ne,
                value: conveyor_schemas::Literal::String("c".into()),
            }),
            sql("SELECT k, sum(v) AS s FROM input GROUP BY k ORDER BY k"),
            Step::Rename([("s".to_string(), "sum".to_string())].into()),
            sql("SELECT k, sum * 10 AS tenfold FROM input WHERE sum > 3 ORDER BY k"),
            Step::Select(vec!["tenfold".into(), "k".into()]),
        ];
        let out = b.run("chain", input(), steps).unwrap();
        assert_eq!(out, "tenfold,k\n40,a\n70,b\n");
        // As the first step, the SQL reads the parts straight from the store.
        let out = b
            .run(
                "first",
                input(),
                vec![sql("SELECT count(*) AS n, sum(v) AS s FROM input")],
            )
            .unwrap();
        assert_eq!(out, "n,s\n5,15\n");
        // Without SQL, one table is read as one stream, in order.
        let out = b
            .run("plain", input(), vec![Step::Drop(vec!["junk".into()])])
            .unwrap();
        assert_eq!(out, "k,v\na,1\nb,2\na,3\nc,4\nb,5\n");
        // An artifact source (`input = "x"`, unpartitioned) is the table `input`.
        let out = b
            .run(
                "one",
                SourceSpec::Artifact(parts[2].clone()),
                vec![sql("SELECT upper(k) AS k FROM input ORDER BY v DESC")],
            )
            .unwrap();
        assert_eq!(out, "k\nB\nC\n");
    }

    #[test]
    fn errors_name_the_task_the_step_the_query_and_the_position() {
        let b = Bench::new("errors");
        let syntax = "SELECT region\nFROMM customers";
        let err = b.run("t", tables(&b), vec![sql(syntax)]).unwrap_err();
        assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Spec, "{err}");
        assert!(!err.retryable());
        let text = err.to_string();
        assert!(
            text.starts_with("task `t`, step 1 (sql): ")
                && text.contains("Line: 2, Column: 7")
                && text.ends_with(syntax),
            "{text}"
        );
        let err = b
            .run("t", tables(&b), vec![sql("SELECT nope FROM orders")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("(at line 1, column 8)"),
            "{err}"
        );
        let err = b
            .run("t", tables(&b), vec![sql("SELECT * FROM missing")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("step 1 (sql)"),
            "{err}"
        );
        // Two tables but the first step is not SQL.
        let err = b
            .run("t", tables(&b), vec![Step::Drop(vec!["code".into()])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("the first step must be SQL"), "{err}");
        // A statement that is not a query is refused, and changes nothing.
        let err = b
            .run("t", tables(&b), vec![sql("CREATE TABLE x AS SELECT 1")])
            .unwrap_err();
        assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Spec, "{err}");
        // A failure on the data is a data error, numbered as the third step.
        let err = b
            .run(
                "t",
                tables(&b),
                vec![
                    sql("SELECT code FROM customers"),
                    Step::Drop(vec![]),
                    sql("SELECT CAST(code AS BIGINT) AS n FROM input"),
                ],
            )
            .unwrap_err();
        assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Data, "{err}");
        assert!(err.to_string().contains("step 3 (sql)"), "{err}");
        assert!(
            !b.dir.join("out/t.csv").exists(),
            "no output after an error"
        );
    }

    #[test]
    fn a_cancelled_sql_step_stops_and_commits_nothing() {
        let b = Bench::new("cancel");
        let source = tables(&b);
        let cancel = AtomicBool::new(true);
        let err = b
            .run_with(
                "c",
                source,
                vec![sql("SELECT * FROM orders")],
                Some(&cancel),
            )
            .unwrap_err();
        assert!(matches!(err, EtlError::Cancelled), "{err}");
        assert!(!b.dir.join("out/c.csv").exists());
    }
}
