/*!
Partition expansion: one task per partition, and a gather per load.
*/

use std::collections::HashMap;

use conveyor_connectors::registry;
use conveyor_schemas::{FileTarget, Partition, SinkSpec, TaskKind};

use crate::model::{partition_name, TableInput, TaskBody, TaskDef, TaskInput};

/// Splits every task downstream of a partitioned extract into one task per
/// partition: extract `e` with `partitions = N` becomes `e@0` .. `e@N-1`, a
/// transform of it becomes `t@0` .. `t@N-1` (partition `i` reads `e@i`), and
/// a load becomes its parts `l@i` plus a gather `l` that puts them in place.
/// A task with a SQL step is not split: it reads every partition of its
/// inputs as one table (a join or an aggregate must see all the rows), so
/// its tables list the partitions, and its output is one artifact.
/// `tasks` is in dependency order, and so is the result.
pub(crate) fn expand_partitions(tasks: Vec<TaskDef>) -> Result<Vec<TaskDef>, (String, String)> {
    // Partitioned task → its partition count.
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::with_capacity(tasks.len());
    for def in tasks {
        // `after = ["e"]` on a partitioned `e` waits for all of its partitions.
        let expand = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .flat_map(|a| match counts.get(a) {
                    Some(&n) => (0..n).map(|i| partition_name(a, i)).collect(),
                    None => vec![a.clone()],
                })
                .collect()
        };
        let n = match def.body.source() {
            Some(source) => source.partition().map(|p| p.count),
            None => def.input.as_ref().and_then(|i| counts.get(i).copied()),
        };
        if def.body.has_sql() && def.body.source().is_none() {
            out.push(gathered_for_sql(def, &counts, expand));
            continue;
        }
        let Some(n) = n else {
            if registry::parts(&def.body.sink).is_some_and(|p| p.dir) {
                return Err((
                    def.name,
                    "`parts = true` needs a partitioned input: an extract with `partitions`".into(),
                ));
            }
            out.push(TaskDef {
                after: expand(&def.after),
                ..def
            });
            continue;
        };
        let others: Vec<String> = expand(
            &def.after
                .iter()
                .filter(|a| Some(*a) != def.input.as_ref())
                .cloned()
                .collect::<Vec<_>>(),
        );
        // A load writes parts, and a gather puts them in place: the sink's
        // connector says in which format (a load into PostgreSQL, say, has
        // Parquet parts, lossless for every type it loads).
        let gathered = registry::parts(&def.body.sink);
        let gathered: Option<(&FileTarget, bool)> = gathered.as_ref().map(|p| (&p.target, p.dir));
        let mut part_names = Vec::with_capacity(n as usize);
        for i in 0..n {
            let input = def.input.as_ref().map(|x| partition_name(x, i));
            let mut body = def.body.clone();
            if let TaskInput::Source(source) = &mut body.input {
                source.set_partition(Partition { index: i, count: n });
            }
            if let Some((target, dir)) = gathered {
                body.sink = SinkSpec::Part {
                    index: i,
                    target: FileTarget {
                        // One file: only the first part carries the CSV header.
                        header: target.header && (dir || i == 0),
                        ..target.clone()
                    },
                };
            }
            let name = partition_name(&def.name, i);
            part_names.push(name.clone());
            out.push(TaskDef {
                name,
                kind: def.kind,
                after: input
                    .iter()
                    .cloned()
                    .chain(others.iter().cloned())
                    .collect(),
                input,
                retry: def.retry.clone(),
                timeout: def.timeout,
                body,
            });
        }
        match gathered {
            Some((target, _)) => out.push(TaskDef {
                name: def.name,
                kind: TaskKind::Load,
                input: None,
                after: part_names.clone(),
                retry: def.retry,
                timeout: def.timeout,
                body: TaskBody {
                    input: TaskInput::Parts {
                        format: target.format,
                        tasks: part_names,
                    },
                    steps: Vec::new(),
                    sink: def.body.sink,
                },
            }),
            None => {
                counts.insert(def.name, n);
            }
        }
    }
    Ok(out)
}

/// A task with a SQL step over upstream tasks: not split, it reads each
/// table from all the partitions of its task (`input = "x"` over a
/// partitioned `x` becomes the table `input`).
fn gathered_for_sql(
    def: TaskDef,
    counts: &HashMap<String, u32>,
    expand: impl Fn(&[String]) -> Vec<String>,
) -> TaskDef {
    let parts_of = |task: &str| match counts.get(task) {
        Some(&n) => (0..n).map(|i| partition_name(task, i)).collect(),
        None => vec![task.to_string()],
    };
    let mut body = def.body;
    body.input = match body.input {
        TaskInput::Tables(tables) => TaskInput::Tables(
            tables
                .into_iter()
                .map(|t| TableInput {
                    tasks: t.tasks.iter().flat_map(|x| parts_of(x)).collect(),
                    name: t.name,
                })
                .collect(),
        ),
        TaskInput::Upstream => match &def.input {
            Some(x) if counts.contains_key(x) => TaskInput::Tables(vec![TableInput {
                name: "input".into(),
                tasks: parts_of(x),
            }]),
            _ => TaskInput::Upstream,
        },
        other => other,
    };
    let partitioned_input = matches!(&def.input, Some(x) if counts.contains_key(x));
    TaskDef {
        after: expand(&def.after),
        // The partitions are its tables now; there is no one task to read.
        input: if partitioned_input { None } else { def.input },
        body,
        ..def
    }
}
