/*!
Partition expansion: one task per partition, and a gather per load.
*/

use std::collections::HashMap;

use conveyor_schemas::{ExtractSpec, FusedLoad, Partition, TaskKind};

use crate::model::{partition_name, TaskBody, TaskDef};

/// Splits every task downstream of a partitioned extract into one task per
/// partition: extract `e` with `partitions = N` becomes `e@0` .. `e@N-1`, a
/// transform of it becomes `t@0` .. `t@N-1` (partition `i` reads `e@i`), and
/// a load becomes its parts `l@i` plus a gather `l` that puts them in place.
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
        let n = match &def.body {
            TaskBody::Extract(e) => e.partition.map(|p| p.count),
            _ => def.input.as_ref().and_then(|i| counts.get(i).copied()),
        };
        let fused_parts =
            matches!(&def.body, TaskBody::Extract(e) if e.load.as_ref().is_some_and(|l| l.parts));
        let Some(n) = n else {
            if fused_parts || matches!(def.body, TaskBody::Load { parts: true, .. }) {
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
        let mut part_names = Vec::with_capacity(n as usize);
        for i in 0..n {
            let input = def.input.as_ref().map(|x| partition_name(x, i));
            let body = match &def.body {
                TaskBody::Extract(e) => TaskBody::Extract(ExtractSpec {
                    partition: Some(Partition { index: i, count: n }),
                    load: e.load.as_ref().map(|l| FusedLoad {
                        header: l.header && (l.parts || i == 0),
                        part: Some(i),
                        ..l.clone()
                    }),
                    ..e.clone()
                }),
                TaskBody::Transform { steps } => TaskBody::Transform {
                    steps: steps.clone(),
                },
                TaskBody::Load {
                    format,
                    path,
                    header,
                    parts,
                    ..
                } => TaskBody::Load {
                    format: *format,
                    path: path.clone(),
                    // One file: only the first part carries the CSV header.
                    header: *header && (*parts || i == 0),
                    parts: *parts,
                    part: Some(i),
                },
                TaskBody::Gather { .. } => unreachable!("gathers are made here"),
            };
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
        match def.body {
            TaskBody::Load {
                format,
                path,
                parts,
                ..
            } => out.push(TaskDef {
                name: def.name,
                kind: TaskKind::Load,
                input: None,
                after: part_names.clone(),
                retry: def.retry,
                timeout: def.timeout,
                body: TaskBody::Gather {
                    format,
                    path,
                    parts,
                    inputs: part_names,
                },
            }),
            TaskBody::Extract(ExtractSpec {
                load: Some(load), ..
            }) => out.push(TaskDef {
                name: def.name,
                kind: TaskKind::Load,
                input: None,
                after: part_names.clone(),
                retry: def.retry,
                timeout: def.timeout,
                body: TaskBody::Gather {
                    format: load.format,
                    path: load.path,
                    parts: load.parts,
                    inputs: part_names,
                },
            }),
            _ => {
                counts.insert(def.name, n);
            }
        }
    }
    Ok(out)
}
