/*!
Flow files: named tasks that form a DAG.

```toml
[flow]
name = "colors"

[tasks.extract]
kind = "extract"
path = "../examples/data/colors.csv"   # relative to this file, or `url = "https://..."`

[tasks.transform]
kind = "transform"
input = "extract"
steps = [{ drop = ["HEX"] }]

[tasks.load]
kind = "load"
input = "transform"
path = "colors.csv"                    # under the worker node's output root
```

A transform's steps are `drop`, `select`, `rename`, `filter`, `cast` and
`sql` (one query, its syntax checked here: [`crate::sql`]). With `inputs =
{ orders = "orders", customers = "customers" }` instead of `input`, a
transform reads several tasks' outputs as named tables, and its first step
must be SQL; with `input = "x"`, SQL steps read the rows so far as the
table `input`.

Phase one collects every problem with its key and line. The graph checks
([`crate::graph`]) run in the same pass, over every task that parsed, so one
`conveyor validate` shows every problem. A clean flow is then ordered, fused
([`crate::fuse`]) and split into partitions ([`crate::partition`]).
*/

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use conveyor_connectors::registry;
use conveyor_schemas::names::check_name;
use conveyor_schemas::{
    CastStep, ColumnType, CompareOp, FilterStep, Literal, SinkSpec, Step, TaskKind,
};
use toml_edit::Value;

use crate::diag::{parse_document, read_file, Diag, Found, Problems, Tbl};
use crate::graph::{self, RefSpans};
use crate::model::{FlowSource, FlowSpec, RetryPolicy, TableInput, TaskBody, TaskDef, TaskInput};
use crate::params::{Declared, ParamValues};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Keys that shape the DAG, name the flow or schedule it: params cannot set them.
const FLOW_SHAPE: &[&str] = &[
    "name",
    "fuse",
    "fail_fast",
    "schedule",
    "timezone",
    "catchup",
];
const TASK_SHAPE: &[&str] = &["kind", "input", "inputs", "after", "partitions", "parts"];

impl FlowSpec {
    pub fn load(path: &Path) -> Result<FlowSpec, Problems> {
        FlowSpec::load_with_source(path).map(|(flow, _)| flow)
    }

    /// Loads a flow and keeps its text, so that a coordinator can parse it
    /// again (after a restart, or on another node).
    pub fn load_with_source(path: &Path) -> Result<(FlowSpec, FlowSource), Problems> {
        FlowSpec::load_with_params(path, &BTreeMap::new())
    }

    /// Loads a flow with the values of its params for one run.
    pub fn load_with_params(
        path: &Path,
        params: &BTreeMap<String, String>,
    ) -> Result<(FlowSpec, FlowSource), Problems> {
        let (file, text) = read_file(path)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
        let flow = FlowSpec::parse_with_params(&file, &text, &base, params)?;
        let source = FlowSource {
            file,
            text,
            base: base.to_string_lossy().into_owned(),
            params: params.clone(),
        };
        Ok((flow, source))
    }

    /// Parses a run's flow as saved: its text, with its params.
    pub fn parse_source(source: &FlowSource) -> Result<FlowSpec, Problems> {
        FlowSpec::parse_with_params(
            &source.file,
            &source.text,
            Path::new(&source.base),
            &source.params,
        )
    }

    /// The params a flow declares, each with its default (none: required),
    /// without parsing the rest: for a list of flows and their params.
    pub fn declared_params(file: &str, text: &str) -> Result<Declared, Problems> {
        let doc = parse_document(file, text)?;
        let diag = Diag::new(text);
        let mut root = Tbl::new(&diag, "", doc.as_table(), None);
        let declared = read_params(&mut root, &BTreeMap::new(), false);
        root.skip_rest();
        root.finish();
        diag.finish(file)?;
        Ok(declared)
    }

    /// Parses a flow that is given no params (each takes its default);
    /// relative extract paths resolve against `base`.
    pub fn parse(file: &str, text: &str, base: &Path) -> Result<FlowSpec, Problems> {
        FlowSpec::parse_with_params(file, text, base, &BTreeMap::new())
    }

    /// Parses a flow with `given` values for its `[params]`; a param not
    /// given takes its default. Param problems (unknown, missing, a
    /// placeholder where it cannot be) come with the flow's other problems.
    pub fn parse_with_params(
        file: &str,
        text: &str,
        base: &Path,
        given: &BTreeMap<String, String>,
    ) -> Result<FlowSpec, Problems> {
        let doc = parse_document(file, text)?;
        let diag = Diag::new(text);
        let mut root = Tbl::new(&diag, "", doc.as_table(), None);

        let mut name = String::new();
        let mut worker_wait = None;
        let mut schedule = None;
        let mut fuse = false;
        let mut fail_fast = false;
        let mut defaults = RetryPolicy::default();
        let mut default_timeout = DEFAULT_TIMEOUT;
        let params = read_params(&mut root, given, true);
        match root.table("flow").map(|t| t.fixed(FLOW_SHAPE)) {
            Some(mut flow) => {
                name = flow.req_str("name").unwrap_or_default();
                if !name.is_empty() {
                    if let Err(e) = check_name("flow name", &name) {
                        flow.error("name", e.to_string());
                    }
                }
                worker_wait = flow.positive_duration("worker_wait");
                fuse = flow.bool("fuse").unwrap_or(false);
                fail_fast = flow.bool("fail_fast").unwrap_or(false);
                read_retry(&mut flow, &mut defaults);
                schedule = crate::schedule::read_schedule(&mut flow);
                if let Some(t) = flow.positive_duration("timeout") {
                    default_timeout = t;
                }
                flow.finish();
            }
            None if !root.has("flow") => {
                root.error("flow", "is required: a `[flow]` table with a `name`")
            }
            None => {}
        }

        let mut tasks = Vec::new();
        let mut declared = HashSet::new();
        let mut spans = HashMap::new();
        match root.table("tasks") {
            Some(mut table) => {
                let names = table.keys();
                if names.is_empty() {
                    table.error("tasks", "a flow needs at least one task");
                }
                for task_name in names {
                    declared.insert(task_name.clone());
                    let Some(mut t) = table.table(&task_name).map(|t| t.fixed(TASK_SHAPE)) else {
                        continue;
                    };
                    if let Err(e) = check_name("task name", &task_name) {
                        diag.report(&t.path.clone(), t.span(), e.to_string());
                    }
                    spans.insert(
                        task_name.clone(),
                        RefSpans {
                            table: t.span(),
                            input: t.key_span("input"),
                            after: t.key_span("after"),
                            inputs: inputs_spans(&t),
                        },
                    );
                    if let Some(def) =
                        read_task(&mut t, &task_name, base, &defaults, default_timeout)
                    {
                        tasks.push(def);
                    }
                    t.finish();
                }
                table.finish();
            }
            None if !root.has("tasks") => {
                root.error("tasks", "is required: one `[tasks.NAME]` table per task")
            }
            None => {}
        }
        root.finish();
        graph::check(&tasks, &declared, &spans, &diag);
        if diag.is_clean() {
            let ordered = graph::order(std::mem::take(&mut tasks));
            let fused = if fuse {
                crate::fuse::fuse_chains(ordered)
            } else {
                ordered
            };
            match crate::partition::expand_partitions(fused) {
                Ok(expanded) => tasks = expanded,
                Err((task, message)) => {
                    let span = spans.get(&task).and_then(|s| s.table.clone());
                    diag.report(&format!("tasks.{task}"), span, message);
                }
            }
        }
        diag.finish(file)?;
        Ok(FlowSpec {
            name,
            tasks,
            schedule,
            worker_wait,
            fail_fast,
            params,
        })
    }
}

/// Reads `[params]`, checks the `given` values against it, and from then on
/// has the walk fill placeholders in. Returns what the flow declares.
fn read_params(root: &mut Tbl, given: &BTreeMap<String, String>, require: bool) -> Declared {
    let mut declared = Declared::new();
    let mut spans = HashMap::new();
    let diag = root.diag;
    let header = root.key_span("params");
    if let Some(mut table) = root.table("params") {
        for name in table.keys() {
            let found = table.get(&name);
            spans.insert(name.clone(), table.key_span(&name));
            if let Err(e) = check_name("param name", &name) {
                table.error(&name, e.to_string());
                continue;
            }
            let Some(decl) = found.as_ref().and_then(|f| f.item.as_table_like()) else {
                table.error(
                    &name,
                    "must be `{}` (a required param) or `{ default = \"VALUE\" }`",
                );
                continue;
            };
            let mut decl = Tbl::new(diag, table.key_path(&name), decl, table.key_span(&name));
            let default = decl.str("default");
            if let Some(d) = &default {
                if crate::params::has_placeholder(d) {
                    decl.error(
                        "default",
                        "is written as it is: it cannot use a placeholder",
                    );
                } else if let Err(why) = crate::params::check_value(d) {
                    decl.error("default", why);
                }
            }
            let bad_default = default.is_none() && decl.has("default");
            decl.finish();
            if !bad_default {
                declared.insert(name, default);
            }
        }
        table.finish();
    }
    let known = || {
        if declared.is_empty() {
            "the flow declares no params".to_string()
        } else {
            let list: Vec<&str> = declared.keys().map(String::as_str).collect();
            format!("the flow declares only {}", list.join(", "))
        }
    };
    for (name, value) in given {
        let key = format!("params.{name}");
        match spans.get(name) {
            None => diag.report(&key, header.clone(), format!("is given, but {}", known())),
            Some(span) => {
                if let Err(why) = crate::params::check_value(value) {
                    diag.report(&key, span.clone(), format!("the given value {why}"));
                }
            }
        }
    }
    for (name, default) in &declared {
        if require && default.is_none() && !given.contains_key(name) {
            diag.report(
                &format!("params.{name}"),
                spans.get(name).cloned().flatten(),
                format!(
                    "is required: give it with `--param {name}=VALUE` (or in the API's `params`)"
                ),
            );
        }
    }
    diag.set_params(ParamValues {
        declared: declared.clone(),
        given: given.clone(),
    });
    declared
}

fn read_retry(t: &mut Tbl, policy: &mut RetryPolicy) {
    if let Some(n) = t.uint("max_attempts", 1, 100) {
        policy.max_attempts = n as u32;
    }
    if let Some(d) = t.duration("backoff") {
        policy.backoff = d;
    }
    if let Some(d) = t.positive_duration("max_backoff") {
        policy.max_backoff = d;
    }
}

fn read_task(
    t: &mut Tbl,
    name: &str,
    base: &Path,
    defaults: &RetryPolicy,
    timeout: Duration,
) -> Option<TaskDef> {
    let kind_text = t.req_str("kind");
    let kind = match kind_text.as_deref().map(|k| (k, TaskKind::parse(k))) {
        Some((_, Some(kind))) => Some(kind),
        Some((k, None)) => {
            t.error(
                "kind",
                format!("unknown task kind `{k}`; expected extract, transform or load"),
            );
            None
        }
        None => None,
    };
    let mut retry = defaults.clone();
    read_retry(t, &mut retry);
    let timeout = t.positive_duration("timeout").unwrap_or(timeout);
    let mut after = t.str_list("after").unwrap_or_default();
    let mut input = t.str("input");
    let tables = read_inputs(t);
    let Some(kind) = kind else {
        t.skip_rest();
        return None;
    };
    if tables.is_some() {
        if kind != TaskKind::Transform {
            t.error(
                "inputs",
                format!("only a transform reads named tables; a {kind} cannot have `inputs`"),
            );
        } else if t.has("input") {
            t.error(
                "inputs",
                "give either `input = \"TASK\"` (the table `input`) or `inputs = { NAME = \"TASK\" }`, not both",
            );
        }
    }
    let body = match kind {
        TaskKind::Extract => {
            if input.is_some() {
                t.error(
                    "input",
                    "an extract reads a source, not another task's output",
                );
            }
            TaskBody {
                input: TaskInput::Source(registry::read_source(t, base)?),
                steps: Vec::new(),
                sink: SinkSpec::Artifact,
            }
        }
        TaskKind::Transform if t.has("inputs") => {
            let steps = read_steps(t);
            if let Some(steps) = &steps {
                if !matches!(steps.first(), Some(Step::Sql { .. })) {
                    t.error(
                        "steps",
                        "with `inputs`, the first step must be a SQL step that reads the named tables, e.g. [{ sql = \"SELECT * FROM orders\" }]",
                    );
                }
            } else if !t.has("steps") {
                t.error(
                    "steps",
                    "with `inputs`, the first step must be a SQL step that reads the named tables, e.g. [{ sql = \"SELECT * FROM orders\" }]",
                );
            }
            let tables = tables?;
            for table in &tables {
                for task in &table.tasks {
                    if !after.contains(task) {
                        after.push(task.clone());
                    }
                }
            }
            TaskBody {
                input: TaskInput::Tables(tables),
                steps: steps?,
                sink: SinkSpec::Artifact,
            }
        }
        TaskKind::Transform | TaskKind::Load => {
            if input.is_none() && after.len() == 1 {
                input = Some(after[0].clone());
            }
            // One written but unreadable was reported as it was read, and
            // `inputs` on a load was reported above.
            if input.is_none() && !t.has("input") && !t.has("inputs") {
                t.error(
                    "input",
                    format!(
                        "a {kind} needs `input = \"TASK\"` naming the task whose output it reads"
                    ),
                );
            }
            if kind == TaskKind::Transform {
                TaskBody {
                    input: TaskInput::Upstream,
                    steps: read_steps(t)?,
                    sink: SinkSpec::Artifact,
                }
            } else {
                // The connector that claims the table reads its options.
                TaskBody {
                    input: TaskInput::Upstream,
                    steps: Vec::new(),
                    sink: registry::read_sink(t)?,
                }
            }
        }
    };
    if let Some(i) = &input {
        if !after.contains(i) {
            after.insert(0, i.clone());
        }
    }
    Some(TaskDef {
        name: name.to_string(),
        kind,
        input,
        after,
        retry,
        timeout,
        body,
    })
}

/// `inputs = { orders = "orders", customers = "customers" }`: table name →
/// upstream task. Each value names a task, so it shapes the DAG and takes
/// no params; each name is how SQL refers to the table, so it must be a
/// plain lowercase identifier (SQL folds unquoted names to lowercase).
fn read_inputs(t: &mut Tbl) -> Option<Vec<TableInput>> {
    let mut table = t.table("inputs")?;
    let names = table.keys();
    if names.is_empty() {
        table.error(
            "inputs",
            "names no table; write inputs = { orders = \"TASK\" }",
        );
    }
    // Entries that name a task are kept even next to a bad one, so that the
    // graph checks still report what they reference.
    let mut tables = Vec::new();
    for name in names {
        let found = table.get(&name);
        let task = found.as_ref().and_then(|f| f.item.as_str());
        let Some(task) = task else {
            table.error(
                &name,
                "must be a string: the task whose output is this table",
            );
            continue;
        };
        if crate::params::has_placeholder(task) {
            table.error(
                &name,
                "shapes the DAG, so it cannot use a `{{ params.NAME }}` placeholder: a param value never changes which tasks run or in what order",
            );
            continue;
        }
        if !is_table_name(&name) {
            table.error(
                &name,
                format!("`{name}` cannot be a table name: use lowercase letters, digits and `_`, not starting with a digit"),
            );
        }
        tables.push(TableInput {
            name,
            tasks: vec![task.to_string()],
        });
    }
    table.finish();
    Some(tables)
}

/// Where each entry of a task's `inputs` is written: (table, task, span).
fn inputs_spans(t: &Tbl) -> Vec<(String, String, Option<std::ops::Range<usize>>)> {
    let Some(found) = t.table.get("inputs") else {
        return Vec::new();
    };
    let Some(table) = found.as_table_like() else {
        return Vec::new();
    };
    table
        .iter()
        .filter_map(|(name, item)| {
            let task = item.as_str()?.to_string();
            let span = table
                .get_key_value(name)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            Some((name.to_string(), task, span))
        })
        .collect()
}

/// A SQL table name that needs no quotes and keeps its case.
fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn read_steps(t: &mut Tbl) -> Option<Vec<Step>> {
    let found = t.get("steps")?;
    let Some(array) = found.item.as_value().and_then(Value::as_array) else {
        t.diag.report(
            &found.path,
            found.span,
            "must be a list of steps, e.g. [{ drop = [\"HEX\"] }]",
        );
        return None;
    };
    let mut steps = Vec::new();
    let mut ok = true;
    for (i, value) in array.iter().enumerate() {
        let path = format!("{}[{i}]", found.path);
        let Some(table) = value.as_inline_table() else {
            t.diag.report(
                &path,
                value.span(),
                "a step is a table such as { drop = [\"HEX\"] }",
            );
            ok = false;
            continue;
        };
        let mut st = Tbl::new(t.diag, path.clone(), table, value.span());
        let keys = st.keys();
        if keys.len() != 1 {
            st.diag.report(
                &path,
                value.span(),
                "a step has exactly one of drop, select, rename, filter, cast, sql",
            );
            ok = false;
            continue;
        }
        match read_step(&mut st, &keys[0]) {
            Some(s) => steps.push(s),
            None => ok = false,
        }
        st.finish();
    }
    ok.then_some(steps)
}

fn read_step(st: &mut Tbl, key: &str) -> Option<Step> {
    match key {
        "drop" => st.str_list("drop").map(Step::Drop),
        "select" => st.str_list("select").map(Step::Select),
        "rename" => {
            let mut r = st.table("rename")?;
            let mut map = BTreeMap::new();
            for old in r.keys() {
                if let Some(new) = r.str(&old) {
                    map.insert(old, new);
                }
            }
            r.finish();
            Some(Step::Rename(map))
        }
        "filter" => {
            let mut f = st.table("filter")?;
            let column = f.req_str("column");
            let op = f.req_str("op").and_then(|op| {
                let parsed = CompareOp::parse(&op);
                if parsed.is_none() {
                    f.error(
                        "op",
                        format!("unknown operator `{op}`; expected eq, ne, lt, le, gt or ge"),
                    );
                }
                parsed
            });
            let value = match f.get("value") {
                Some(found) => literal(&f, "value", &found),
                None => {
                    f.error("value", "is required");
                    None
                }
            };
            f.finish();
            Some(Step::Filter(FilterStep {
                column: column?,
                op: op?,
                value: value?,
            }))
        }
        "cast" => {
            let mut c = st.table("cast")?;
            let column = c.req_str("column");
            let to = c.req_str("to").and_then(|to| match ColumnType::parse(&to) {
                Ok(parsed) => Some(parsed),
                Err(why) => {
                    c.error("to", format!("unknown type `{to}`; {why}"));
                    None
                }
            });
            c.finish();
            Some(Step::Cast(CastStep {
                column: column?,
                to: to?,
            }))
        }
        "sql" => {
            let found = st.get("sql")?;
            let Some(text) = found.item.as_str() else {
                st.error("sql", "must be a string: one SELECT query");
                return None;
            };
            let sql = st.diag.fill_sql(&found.path, found.span.clone(), text)?;
            if let Err(why) = crate::sql::check_query(&sql) {
                st.diag.report(&found.path, found.span, why);
                return None;
            }
            Some(Step::Sql { sql })
        }
        other => {
            st.get(other);
            st.error(
                other,
                "unknown step; expected drop, select, rename, filter, cast or sql",
            );
            None
        }
    }
}

fn literal(t: &Tbl, key: &str, found: &Found) -> Option<Literal> {
    let diag = t.diag;
    let value = match found.item.as_value() {
        Some(_) => Some(t.fill(key, found)?),
        None => None,
    };
    match value.as_deref() {
        Some(Value::Boolean(b)) => Some(Literal::Bool(*b.value())),
        Some(Value::Integer(i)) => Some(Literal::Int(*i.value())),
        Some(Value::Float(x)) => Some(Literal::Float(*x.value())),
        Some(Value::String(s)) => Some(Literal::String(s.value().clone())),
        _ => {
            diag.report(
                &found.path,
                found.span.clone(),
                "must be a string, number or boolean",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_schemas::{DataFormat, FileTarget, Partition, PgMode, SourceSpec};

    const COLORS: &str = r#"
[flow]
name = "colors"
max_attempts = 2

[tasks.load_csv]
kind = "load"
input = "transform"
path = "colors.csv"

[tasks.load_parquet]
kind = "load"
input = "extract"
path = "raw/colors.parquet"

[tasks.transform]
kind = "transform"
input = "extract"
timeout = "5s"
steps = [
  { drop = ["HEX"] },
  { rename = { RGB = "rgb" } },
  { filter = { column = "Name", op = "ne", value = "Black" } },
  { cast = { column = "n", to = "float64" } },
]

[tasks.extract]
kind = "extract"
path = "data/colors.csv"
schema = { Name = "string", HEX = "string", RGB = "string" }
"#;

    #[test]
    fn a_dag_parses_in_dependency_order() {
        let flow = FlowSpec::parse("f.toml", COLORS, Path::new("/flows")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names[0], "extract");
        assert!(
            names.iter().position(|n| *n == "transform")
                < names.iter().position(|n| *n == "load_csv")
        );
        let extract = flow.task("extract").unwrap();
        let Some(SourceSpec::File { path, read }) = extract.body.source() else {
            panic!("{extract:?}")
        };
        assert_eq!(path, "/flows/data/colors.csv");
        assert_eq!(read.schema.as_ref().unwrap().len(), 3);
        assert_eq!(extract.body.sink, SinkSpec::Artifact);
        let t = flow.task("transform").unwrap();
        assert_eq!(
            (t.retry.max_attempts, t.timeout),
            (2, Duration::from_secs(5))
        );
        assert_eq!(t.body.input, TaskInput::Upstream);
        assert_eq!(t.body.steps.len(), 4);
        let load = flow.task("load_parquet").unwrap();
        assert!(matches!(
            &load.body.sink,
            SinkSpec::File(FileTarget {
                format: DataFormat::Parquet,
                ..
            })
        ));
    }

    #[test]
    fn every_flow_error_is_reported_with_key_and_line() {
        let text = "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extrac\"\npath = \"x.csv\"\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = [{ dorp = [\"a\"] }]\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"../escape.csv\"\ncolour = 1\n";
        let err = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap_err();
        let got: Vec<(String, Option<usize>)> = err
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.line))
            .collect();
        assert_eq!(
            got,
            [
                ("tasks.e.kind".to_string(), Some(4)),
                ("tasks.t.steps[0].dorp".to_string(), Some(9)),
                ("tasks.l.path".to_string(), Some(13)),
                ("tasks.l.colour".to_string(), Some(14)),
            ],
            "{err}"
        );
    }

    #[test]
    fn dates_timestamps_and_decimals_are_types_and_a_bad_one_is_an_error_with_its_line() {
        let text = r#"[flow]
name = "f"
[tasks.e]
kind = "extract"
path = "x.csv"
schema = { d = "date", t = "timestamp", z = "timestamptz", m = "decimal(38,10)" }
[tasks.t]
kind = "transform"
input = "e"
steps = [{ cast = { column = "m", to = "decimal(12,2)" } }]
"#;
        let flow = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap();
        let Some(SourceSpec::File { read, .. }) = flow.task("e").unwrap().body.source() else {
            panic!()
        };
        let types: Vec<String> = read
            .schema
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.column_type.to_string())
            .collect();
        assert_eq!(
            types,
            ["date", "timestamp", "timestamptz", "decimal(38,10)"]
        );
        let bad = text
            .replace("decimal(38,10)", "decimal(40,2)")
            .replace("decimal(12,2)", "timestamp(UTC)");
        let err = FlowSpec::parse("f.toml", &bad, Path::new("/")).unwrap_err();
        assert_eq!(
            err.keys_and_lines(),
            [
                ("tasks.e.schema.m", Some(6)),
                ("tasks.t.steps[0].cast.to", Some(10)),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("precision 40 is out of range")
                && text.contains("unknown type `timestamp(UTC)`; expected string, int64, float64, boolean, date, timestamp, timestamptz or decimal(P,S)"),
            "{text}"
        );
    }

    #[test]
    fn zero_durations_that_would_expire_at_once_are_errors_with_key_and_line() {
        let text = "[flow]\nname = \"f\"\nworker_wait = \"0s\"\nmax_backoff = \"0ms\"\nbackoff = \"0s\"\n[tasks.e]\nkind = \"extract\"\npath = \"x.csv\"\ntimeout = \"0s\"\n";
        let err = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap_err();
        let got = err.keys_and_lines();
        // An immediate retry (`backoff = "0s"`) is a choice, not a mistake.
        assert_eq!(
            got,
            [
                ("flow.worker_wait", Some(3)),
                ("flow.max_backoff", Some(4)),
                ("tasks.e.timeout", Some(9)),
            ],
            "{err}"
        );
        assert!(err.to_string().contains("must be more than 0s"), "{err}");
    }

    #[test]
    fn cycles_and_unknown_inputs_are_errors() {
        let cycle = "[flow]\nname = \"f\"\n[tasks.a]\nkind = \"transform\"\ninput = \"b\"\nsteps = []\n[tasks.b]\nkind = \"transform\"\ninput = \"a\"\nsteps = []\n";
        let err = FlowSpec::parse("f.toml", cycle, Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
        let unknown = "[flow]\nname = \"f\"\n[tasks.a]\nkind = \"load\"\ninput = \"nope\"\npath = \"x.csv\"\n";
        let err = FlowSpec::parse("f.toml", unknown, Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }

    #[test]
    fn every_graph_problem_is_reported_in_one_pass_with_its_line() {
        // Two unknown references, a cycle of a and b, a load that waits for
        // the cycle without being in it, and a key error: all at once.
        let text = r#"[flow]
name = "f"
[tasks.e]
kind = "extract"
path = "x.csv"
bogus = 1
[tasks.a]
kind = "transform"
input = "b"
steps = []
[tasks.b]
kind = "transform"
input = "a"
after = ["nowhere"]
steps = []
[tasks.load]
kind = "load"
input = "a"
path = "o.csv"
[tasks.t]
kind = "transform"
input = "missing"
steps = []
"#;
        let err = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap_err();
        let got = err.keys_and_lines();
        assert_eq!(
            got,
            [
                ("tasks.e.bogus", Some(6)),
                ("tasks.a", Some(9)),
                ("tasks.b.after", Some(14)),
                ("tasks.t.input", Some(22)),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("`nowhere` is not a task"), "{text}");
        assert!(text.contains("`missing` is not a task"), "{text}");
        let cycle = &err.problems[1].message;
        assert!(cycle.contains("`a`, `b` form a cycle"), "{cycle}");
        assert!(
            !cycle.contains("load"),
            "only the tasks in the cycle: {cycle}"
        );
    }

    #[test]
    fn a_reference_to_a_task_that_did_not_parse_is_not_called_unknown() {
        let text = "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extrac\"\npath = \"x.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"o.csv\"\n";
        let err = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["tasks.e.kind"], "{err}");
    }

    #[test]
    fn a_partitioned_extract_splits_its_chain_and_gathers_each_load() {
        let text = r#"
[flow]
name = "big"
[tasks.e]
kind = "extract"
path = "data/*.csv"
partitions = 3
[tasks.t]
kind = "transform"
input = "e"
steps = [{ drop = ["x"] }]
[tasks.one]
kind = "load"
input = "t"
path = "one.csv"
[tasks.dir]
kind = "load"
input = "e"
path = "dir"
format = "parquet"
parts = true
[tasks.after_all]
kind = "load"
input = "e"
path = "last.csv"
after = ["one"]
"#;
        let flow = FlowSpec::parse("f.toml", text, Path::new("/flows")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        for name in [
            "e@0",
            "e@2",
            "t@1",
            "one@2",
            "one",
            "dir@0",
            "dir",
            "after_all@1",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert_eq!(names.len(), 3 + 3 + 4 + 4 + 4);
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("e@1") < pos("t@1") && pos("t@1") < pos("one@1") && pos("one@2") < pos("one"));
        let t1 = flow.task("t@1").unwrap();
        assert_eq!(t1.input.as_deref(), Some("e@1"));
        let e2 = flow.task("e@2").unwrap();
        assert_eq!(
            e2.body
                .source()
                .and_then(|s| s.read_options())
                .unwrap()
                .partition,
            Some(Partition { index: 2, count: 3 })
        );
        // One CSV file: only part 0 writes the header. A directory: every part does.
        let header = |n: &str| match &flow.task(n).unwrap().body.sink {
            SinkSpec::Part { index, target } => (target.header, *index),
            other => panic!("{other:?}"),
        };
        assert_eq!(header("one@0"), (true, 0));
        assert_eq!(header("one@1"), (false, 1));
        assert_eq!(header("dir@2"), (true, 2));
        let one = &flow.task("one").unwrap().body;
        match &one.input {
            TaskInput::Parts { tasks, .. } => assert_eq!(tasks, &["one@0", "one@1", "one@2"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(one.sink, SinkSpec::File(_)), "{one:?}");
        assert!(matches!(
            flow.task("dir").unwrap().body.sink,
            SinkSpec::Dir(_)
        ));
        assert_eq!(flow.task("one").unwrap().after, ["one@0", "one@1", "one@2"]);
        // `after` on a gathered load waits for the gather.
        assert_eq!(flow.task("after_all@0").unwrap().after, ["e@0", "one"]);
    }

    #[test]
    fn partition_mistakes_are_errors_naming_the_task() {
        let parts_alone = "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extract\"\npath = \"a.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"d\"\nformat = \"csv\"\nparts = true\n";
        let err = FlowSpec::parse("f.toml", parts_alone, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tasks.l") && err.contains("partitioned input"),
            "{err}"
        );
        let url = "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extract\"\nurl = \"https://x/a.csv\"\npartitions = 2\n";
        let err = FlowSpec::parse("f.toml", url, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partitions") && err.contains("download"),
            "{err}"
        );
        let zero = "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extract\"\npath = \"a.csv\"\npartitions = 0\n";
        let err = FlowSpec::parse("f.toml", zero, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partitions") && err.contains("1 to 1024"),
            "{err}"
        );
    }

    #[test]
    fn fuse_folds_single_reader_chains_into_one_extract() {
        let text = r#"
[flow]
name = "f"
fuse = true
[tasks.e]
kind = "extract"
path = "a.csv"
timeout = "1m"
[tasks.t]
kind = "transform"
input = "e"
timeout = "2m"
steps = [{ drop = ["x"] }]
[tasks.l]
kind = "load"
input = "t"
path = "o.parquet"
[tasks.e2]
kind = "extract"
path = "b.csv"
partitions = 2
[tasks.t2]
kind = "transform"
input = "e2"
steps = [{ drop = ["y"] }]
[tasks.a]
kind = "load"
input = "t2"
path = "a.csv"
[tasks.b]
kind = "load"
input = "t2"
path = "b.csv"
after = ["l"]
"#;
        let flow = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        // e → t → l is one task named l; e2 → t2 is one (t2 has two readers),
        // partitioned, and each load keeps its parts and gather.
        assert_eq!(names.len(), 1 + 2 + 3 + 3, "{names:?}");
        let l = flow.task("l").unwrap();
        assert_eq!(l.kind, TaskKind::Extract);
        assert_eq!(
            l.timeout,
            Duration::from_secs(60 + 120 + 3600),
            "the sum of the timeouts"
        );
        assert!(matches!(l.body.source(), Some(SourceSpec::File { .. })));
        assert_eq!(l.body.steps, vec![Step::Drop(vec!["x".into()])]);
        match &l.body.sink {
            SinkSpec::File(target) => assert_eq!(
                (target.format, target.path.as_str()),
                (DataFormat::Parquet, "o.parquet")
            ),
            other => panic!("{other:?}"),
        }
        let t2 = &flow.task("t2@1").unwrap().body;
        assert_eq!(
            t2.source()
                .and_then(|s| s.read_options())
                .unwrap()
                .partition,
            Some(Partition { index: 1, count: 2 })
        );
        assert_eq!(t2.steps.len(), 1);
        assert_eq!(t2.sink, SinkSpec::Artifact);
        assert_eq!(flow.task("a@1").unwrap().input.as_deref(), Some("t2@1"));
        assert_eq!(flow.task("b@0").unwrap().after, ["t2@0", "l"]);
        assert!(flow.task("e").is_none() && flow.task("t").is_none());
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_stay_text_for_the_worker_and_a_malformed_one_is_an_error_with_its_line() {
        let text = r#"[flow]
name = "s"
[tasks.e]
kind = "extract"
path = "${env:DATA_DIR}/in.csv"
[tasks.u]
kind = "extract"
url = "${env:SOURCE_URL}"
format = "csv"
[tasks.l]
kind = "load"
input = "e"
path = "out/${env:TENANT}.csv"
"#;
        let flow = FlowSpec::parse("s.toml", text, Path::new("/flows")).unwrap();
        match flow.task("e").unwrap().body.source() {
            // Not resolved against the flow's directory: the value says where.
            Some(SourceSpec::File { path, .. }) => assert_eq!(path, "${env:DATA_DIR}/in.csv"),
            other => panic!("{other:?}"),
        }
        match flow.task("u").unwrap().body.source() {
            Some(SourceSpec::Url { url, .. }) => assert_eq!(url, "${env:SOURCE_URL}"),
            other => panic!("{other:?}"),
        }
        match &flow.task("l").unwrap().body.sink {
            SinkSpec::File(target) => assert_eq!(target.path, "out/${env:TENANT}.csv"),
            other => panic!("{other:?}"),
        }
        let bad = text
            .replace("${env:TENANT}", "${env:TEN-ANT}")
            .replace("name = \"s\"", "name = \"${env:X}\"");
        let err = FlowSpec::parse("s.toml", &bad, Path::new("/flows")).unwrap_err();
        assert_eq!(
            err.keys_and_lines(),
            [("flow.name", Some(2)), ("tasks.l.path", Some(13))],
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("`${env:TEN-` is not a secret reference"),
            "{err}"
        );
        // Whoever starts a run cannot name a secret through a param.
        let with_param = "[flow]\nname = \"p\"\n[params]\nday = {}\n[tasks.e]\nkind = \"extract\"\npath = \"{{ params.day }}.csv\"\n";
        let err = FlowSpec::parse_with_params(
            "p.toml",
            with_param,
            Path::new("/"),
            &given(&[("day", "${env:HOME}")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot name a secret"), "{err}");
        // Nor through two params that make one between them, or one param
        // and the text beside it.
        let two = with_param
            .replace("day = {}", "day = {}\nkind = {}")
            .replace(
                "{{ params.day }}.csv",
                "{{ params.day }}{{ params.kind }}.csv",
            );
        for (text, values) in [
            (two.as_str(), vec![("day", "x$"), ("kind", "{env:HOME}")]),
            (
                &with_param.replace("\"{{", "\"$ {{").replace("$ {", "${"),
                vec![("day", "{env:HOME}")],
            ),
        ] {
            let err = FlowSpec::parse_with_params("p.toml", text, Path::new("/"), &given(&values))
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("would form a `${env:NAME}` secret reference"),
                "{err}"
            );
        }
    }

    const PARAMS: &str = r#"[flow]
name = "p"
timeout = "{{ params.timeout }}"
[params]
day = { default = "2026-01-01" }
region = {}
timeout = { default = "90s" }
[tasks.e]
kind = "extract"
url = "http://data.example/{{ params.region }}/{{ params.day }}.csv"
[tasks.t]
kind = "transform"
input = "e"
steps = [{ filter = { column = "{{ params.region }}_day", op = "eq", value = "{{ params.day }}" } }]
[tasks.l]
kind = "load"
input = "t"
path = "out/{{ params.region }}/{{ params.day }}.csv"
"#;

    #[test]
    fn params_fill_every_string_value_with_given_values_then_defaults() {
        let flow = FlowSpec::parse_with_params(
            "p.toml",
            PARAMS,
            Path::new("/"),
            &given(&[("region", "eu")]),
        )
        .unwrap();
        assert_eq!(
            flow.params,
            [
                ("day".to_string(), Some("2026-01-01".to_string())),
                ("region".to_string(), None),
                ("timeout".to_string(), Some("90s".to_string())),
            ]
            .into_iter()
            .collect()
        );
        match flow.task("e").unwrap().body.source() {
            Some(SourceSpec::Url { url, .. }) => {
                assert_eq!(url, "http://data.example/eu/2026-01-01.csv")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(flow.task("e").unwrap().timeout, Duration::from_secs(90));
        assert_eq!(
            flow.task("t").unwrap().body.steps,
            [Step::Filter(FilterStep {
                column: "eu_day".into(),
                op: CompareOp::Eq,
                value: Literal::String("2026-01-01".into()),
            })]
        );
        match &flow.task("l").unwrap().body.sink {
            SinkSpec::File(target) => assert_eq!(target.path, "out/eu/2026-01-01.csv"),
            other => panic!("{other:?}"),
        }
        // A given value wins over the default; the saved source parses the same.
        let source = FlowSource {
            file: "p.toml".into(),
            text: PARAMS.into(),
            base: "/".into(),
            params: given(&[("region", "us"), ("day", "2026-11-30")]),
        };
        let again = FlowSpec::parse_source(&source).unwrap();
        match &again.task("l").unwrap().body.sink {
            SinkSpec::File(target) => assert_eq!(target.path, "out/us/2026-11-30.csv"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            FlowSpec::declared_params("p.toml", PARAMS).unwrap(),
            flow.params,
            "declared params are read without values"
        );
        // The same flow without its required param: one problem, at its declaration.
        let err = FlowSpec::parse("p.toml", PARAMS, Path::new("/")).unwrap_err();
        let got = err.keys_and_lines();
        assert_eq!(got, [("params.region", Some(6))], "{err}");
        assert!(err.to_string().contains("--param region=VALUE"), "{err}");
    }

    #[test]
    fn every_param_problem_is_reported_with_its_line_in_one_pass() {
        let text = r#"[flow]
name = "{{ params.name }}"
[params]
day = {}
"bad name" = {}
mode = "fast"
name = { default = "x" }
[tasks.e]
kind = "extract"
path = "in/{{ params.dya }}.csv"
partitions = "{{ params.n }}"
[tasks.t]
kind = "transform"
input = "e"
steps = [{ drop = ["{{ day }}"] }]
[tasks.k]
kind = "{{ params.kind }}"
[tasks.l]
kind = "load"
input = "{{ params.day }}"
after = ["t", "{{ params.day }}"]
path = "o.csv"
bogus = 1
"#;
        let err = FlowSpec::parse_with_params(
            "p.toml",
            text,
            Path::new("/"),
            &given(&[("day", "1"), ("colour", "red")]),
        )
        .unwrap_err();
        let got = err.keys_and_lines();
        assert_eq!(
            got,
            [
                ("flow.name", Some(2)),
                ("params.colour", Some(3)),
                ("params.bad name", Some(5)),
                ("params.mode", Some(6)),
                ("tasks.e.path", Some(10)),
                ("tasks.e.partitions", Some(11)),
                ("tasks.t.steps[0].drop", Some(15)),
                ("tasks.k.kind", Some(17)),
                ("tasks.l.input", Some(20)),
                ("tasks.l.after", Some(21)),
                ("tasks.l.bogus", Some(23)),
            ],
            "{err}"
        );
        let message = |key: &str| {
            err.problems
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.clone())
                .unwrap()
        };
        for shape in [
            "flow.name",
            "tasks.e.partitions",
            "tasks.k.kind",
            "tasks.l.input",
            "tasks.l.after",
        ] {
            assert!(message(shape).contains("shapes the DAG"), "{shape}: {err}");
        }
        assert!(
            message("params.colour").contains("the flow declares only day, name"),
            "{err}"
        );
        assert!(
            message("tasks.e.path")
                .contains("`{{ params.dya }}` names a param the flow does not declare"),
            "{err}"
        );
        assert!(
            message("tasks.t.steps[0].drop").contains("write `{{ params.NAME }}`"),
            "{err}"
        );
        assert!(message("params.mode").contains("{ default = "), "{err}");
    }

    #[test]
    fn a_hostile_param_value_meets_the_same_checks_as_the_file() {
        let text = "[flow]\nname = \"p\"\n[params]\ndir = {}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{{ params.dir }}/out.csv\"\n";
        let parse = |dir: &str| {
            FlowSpec::parse_with_params("p.toml", text, Path::new("/"), &given(&[("dir", dir)]))
        };
        assert!(parse("2026/11").is_ok());
        for hostile in ["../../etc", "/etc"] {
            let err = parse(hostile).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert_eq!(
                (err.problems[0].key.as_str(), err.problems[0].line),
                ("tasks.l.path", Some(11)),
                "{err}"
            );
        }
        let err = parse("a\nb").unwrap_err();
        assert_eq!(
            (err.problems[0].key.as_str(), err.problems[0].line),
            ("params.dir", Some(4)),
            "{err}"
        );
        assert!(err.to_string().contains("control character"), "{err}");
    }

    const SQL_FLOW: &str = r#"[flow]
name = "sql"
[params]
region = { default = "eu" }
[tasks.orders]
kind = "extract"
path = "orders.csv"
partitions = 4
[tasks.customers]
kind = "extract"
path = "customers.csv"
[tasks.enrich]
kind = "transform"
inputs = { orders = "orders", customers = "customers" }
steps = [
  { sql = "SELECT c.region, sum(o.amount) AS total FROM orders o JOIN customers c USING (customer_id) WHERE c.region <> {{ params.region }} GROUP BY c.region" },
  { rename = { total = "sum" } },
]
[tasks.clean]
kind = "transform"
input = "orders"
steps = [{ drop = ["note"] }, { sql = "SELECT * FROM input WHERE amount > 0" }]
[tasks.load]
kind = "load"
input = "enrich"
path = "out.csv"
"#;

    #[test]
    fn inputs_name_tables_and_a_sql_task_reads_every_partition_unsplit() {
        let flow = FlowSpec::parse_with_params(
            "f.toml",
            SQL_FLOW,
            Path::new("/flows"),
            &given(&[("region", "it's")]),
        )
        .unwrap();
        let enrich = flow.task("enrich").unwrap();
        let orders: Vec<String> = (0..4).map(|i| format!("orders@{i}")).collect();
        assert_eq!(
            enrich.body.input,
            TaskInput::Tables(vec![
                TableInput {
                    name: "orders".into(),
                    tasks: orders.clone(),
                },
                TableInput {
                    name: "customers".into(),
                    tasks: vec!["customers".into()],
                },
            ])
        );
        for o in &orders {
            assert!(enrich.after.contains(o), "{:?}", enrich.after);
        }
        // The param became one quoted literal.
        let Step::Sql { sql } = &enrich.body.steps[0] else {
            panic!("{:?}", enrich.body.steps)
        };
        assert!(sql.contains("c.region <> 'it''s' GROUP BY"), "{sql}");
        // `input = "orders"` with a SQL step: one task, the table `input`
        // made of the four partitions; not split, not partitioned downstream.
        let clean = flow.task("clean").unwrap();
        assert_eq!(
            clean.body.input,
            TaskInput::Tables(vec![TableInput {
                name: "input".into(),
                tasks: orders,
            }])
        );
        assert!(flow.task("clean@0").is_none() && flow.task("enrich@0").is_none());
        assert_eq!(flow.task("load").unwrap().input.as_deref(), Some("enrich"));
        assert!(flow.task("load@0").is_none());
        // Unpartitioned: `input` stays the upstream task's artifact.
        let plain = SQL_FLOW.replace("partitions = 4\n", "");
        let flow = FlowSpec::parse("f.toml", &plain, Path::new("/flows")).unwrap();
        let clean = flow.task("clean").unwrap();
        assert_eq!(
            (clean.body.input.clone(), clean.input.as_deref()),
            (TaskInput::Upstream, Some("orders"))
        );
    }

    #[test]
    fn a_sql_step_is_not_fused_into_a_partitioned_extract() {
        let text = r#"[flow]
name = "f"
fuse = true
[tasks.e]
kind = "extract"
path = "x.csv"
partitions = 4
[tasks.t]
kind = "transform"
input = "e"
steps = [{ drop = ["a"] }]
[tasks.s]
kind = "transform"
input = "t"
steps = [{ sql = "SELECT count(*) AS n FROM input" }]
[tasks.l]
kind = "load"
input = "s"
path = "o.csv"
"#;
        // The extract absorbs the batch step, partition by partition; the
        // SQL task is not fused into it and reads all four parts.
        let flow = FlowSpec::parse("f.toml", text, Path::new("/flows")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t@0", "t@1", "t@2", "t@3", "s", "l"]);
        let parts: Vec<String> = (0..4).map(|i| format!("t@{i}")).collect();
        assert_eq!(
            flow.task("s").unwrap().body.input,
            TaskInput::Tables(vec![TableInput {
                name: "input".into(),
                tasks: parts,
            }])
        );
        // Unpartitioned, the whole chain is one pass, the SQL over its rows.
        let plain = text.replace("partitions = 4\n", "");
        let flow = FlowSpec::parse("f.toml", &plain, Path::new("/flows")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["l"]);
        let l = flow.task("l").unwrap();
        assert!(l.body.source().is_some() && l.body.has_sql(), "{l:?}");
    }

    #[test]
    fn a_sql_step_is_not_fused_into_a_partitioned_postgres_extract() {
        let text = r#"[flow]
name = "f"
fuse = true
[tasks.e]
kind = "extract"
postgres = { url = "postgresql://u@db/x", query = "SELECT id FROM t" }
partition_by = "id"
partitions = 4
[tasks.s]
kind = "transform"
input = "e"
steps = [{ sql = "SELECT count(*) AS n FROM input" }]
[tasks.l]
kind = "load"
input = "s"
path = "o.csv"
"#;
        // A count per key range would be four partial counts: the SQL task
        // reads all four parts instead.
        let flow = FlowSpec::parse("f.toml", text, Path::new("/flows")).unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["e@0", "e@1", "e@2", "e@3", "s", "l"]);
        let s = flow.task("s").unwrap();
        assert!(s.body.source().is_none() && s.body.has_sql(), "{s:?}");
    }

    #[test]
    fn bad_inputs_and_sql_steps_are_reported_with_their_lines_in_one_pass() {
        let text = r#"[flow]
name = "f"
[tasks.e]
kind = "extract"
path = "x.csv"
[tasks.l]
kind = "load"
input = "e"
path = "o.csv"
[tasks.a]
kind = "transform"
inputs = { orders = "nope", Bad = "e", loaded = "l" }
steps = [{ sql = "SELECT 1" }]
[tasks.b]
kind = "transform"
inputs = { x = "e" }
steps = [{ drop = ["c"] }, { sql = "SELECT * FROM x" }]
[tasks.c]
kind = "transform"
input = "e"
steps = [{ sql = "SELECT a\nFROMM input" }, { sql = "DELETE FROM input" }]
[tasks.d]
kind = "load"
inputs = { x = "e" }
path = "d.csv"
[tasks.g]
kind = "transform"
inputs = { x = "{{ params.t }}" }
steps = [{ sql = "SELECT * FROM x WHERE a = '{{ params.t }}'" }]
[params]
t = { default = "e" }
"#;
        let err = FlowSpec::parse("f.toml", text, Path::new("/")).unwrap_err();
        assert_eq!(
            err.keys_and_lines(),
            [
                ("tasks.a.inputs.Bad", Some(12)),
                ("tasks.a.inputs.orders", Some(12)),
                ("tasks.a.inputs.loaded", Some(12)),
                ("tasks.b.steps", Some(17)),
                ("tasks.c.steps[0].sql", Some(21)),
                ("tasks.c.steps[1].sql", Some(21)),
                ("tasks.d.inputs", Some(24)),
                ("tasks.g.inputs.x", Some(28)),
                ("tasks.g.steps[0].sql", Some(29)),
            ],
            "{err}"
        );
        let text = err.to_string();
        for needle in [
            "`nope` is not a task",
            "reads `l`, but a load has no output",
            "`Bad` cannot be a table name",
            "the first step must be a SQL step",
            "Line: 2, Column: 7",
            "must be a query",
            "only a transform reads named tables",
            "cannot use a `{{ params.NAME }}` placeholder",
            "inside a quoted string",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn postgres_extracts_and_loads_parse_with_sql_literal_params() {
        let text = r#"
[flow]
name = "pg"
[params]
day = {}
[tasks.e]
kind = "extract"
postgres = { url = "${env:PG_URL}", query = "SELECT * FROM orders WHERE day = {{ params.day }}" }
partition_by = "id"
partitions = 3
[tasks.l]
kind = "load"
input = "e"
postgres = { url = "postgresql://u@db/x", table = "public.orders", mode = "upsert", key = ["id"], create = true }
"#;
        let flow = FlowSpec::parse_with_params(
            "pg.toml",
            text,
            Path::new("/"),
            &given(&[("day", "x'; DROP TABLE orders; --")]),
        )
        .unwrap();
        let e0 = flow.task("e@0").unwrap();
        match e0.body.source() {
            Some(SourceSpec::Postgres {
                url,
                query,
                partition_by,
                partition,
            }) => {
                assert_eq!(url, "${env:PG_URL}");
                assert_eq!(
                    query,
                    "SELECT * FROM orders WHERE day = 'x''; DROP TABLE orders; --'"
                );
                assert_eq!(partition_by.as_deref(), Some("id"));
                assert_eq!(*partition, Some(Partition { index: 0, count: 3 }));
            }
            other => panic!("{other:?}"),
        }
        // Each partition writes a Parquet part; the gather loads them all.
        assert!(matches!(
            flow.task("l@2").unwrap().body.sink,
            SinkSpec::Part { index: 2, ref target } if target.format == DataFormat::Parquet
        ));
        let gather = flow.task("l").unwrap();
        match &gather.body.sink {
            SinkSpec::Postgres(t) => {
                assert_eq!(
                    (t.table.as_str(), t.mode, t.key.clone(), t.create),
                    (
                        "public.orders",
                        PgMode::Upsert,
                        vec!["id".to_string()],
                        true
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(gather.body.input, TaskInput::Parts { .. }));
    }

    #[test]
    fn postgres_mistakes_are_one_error_each_with_key_and_line() {
        let text = r#"
[flow]
name = "pg"
[tasks.e]
kind = "extract"
postgres = { url = "mysql://x", query = "SELECT '{{ params.x }}'", color = 1 }
partitions = 2
[tasks.l]
kind = "load"
input = "e"
postgres = { url = "postgresql://u@db/x", table = "x; DROP TABLE y", mode = "merge" }
[tasks.m]
kind = "load"
input = "e"
postgres = { url = "postgresql://u@db/x", table = "\"a\".\"b\"", mode = "upsert" }
[tasks.n]
kind = "load"
input = "e"
path = "x.csv"
postgres = { url = "postgresql://u@db/x", table = "t", key = ["id"] }
[tasks.o]
kind = "load"
input = "e"
postgres = { url = "postgresql://u@db/{{ params.x }}", table = "t" }
[params]
x = { default = "d" }
"#;
        let err = FlowSpec::parse("pg.toml", text, Path::new("/")).unwrap_err();
        let got = err.keys_and_lines();
        for want in [
            ("tasks.e.postgres.url", Some(6)),
            ("tasks.e.postgres.query", Some(6)),
            ("tasks.e.postgres.color", Some(6)),
            ("tasks.e.partitions", Some(7)),
            ("tasks.l.postgres.table", Some(11)),
            ("tasks.l.postgres.mode", Some(11)),
            ("tasks.m.postgres.table", Some(15)),
            ("tasks.m.postgres.key", Some(15)),
            ("tasks.n.path", Some(19)),
            ("tasks.n.postgres.key", Some(20)),
            ("tasks.o.postgres.url", Some(24)),
        ] {
            assert!(got.contains(&want), "{want:?} missing: {err}");
        }
        assert_eq!(got.len(), 11, "{err}");
        let text = err.to_string();
        for needle in [
            "must be a PostgreSQL URL",
            "inside a quoted string",
            "partition_by",
            "must be `table` or `schema.table`",
            "unknown mode `merge`",
            "needs `key = [",
            "only mode = \"upsert\" takes a key",
            "a value could add connection options",
        ] {
            assert!(text.contains(needle), "`{needle}` not in {text}");
        }
    }
}
