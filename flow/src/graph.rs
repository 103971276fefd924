/*!
Graph checks and ordering: every unknown reference, self-reference, read of a
load and cycle is reported in one pass, each with its key and line.
*/

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use conveyor_schemas::TaskKind;

use crate::diag::Diag;
use crate::model::{TaskDef, TaskInput};

/// Where a task's references were written, so that graph problems point at them.
#[derive(Clone, Debug, Default)]
pub(crate) struct RefSpans {
    pub table: Option<Range<usize>>,
    pub input: Option<Range<usize>>,
    pub after: Option<Range<usize>>,
    /// Each `inputs` entry: its table, the task it names, and where it is written.
    pub inputs: Vec<(String, String, Option<Range<usize>>)>,
}

/// Reports every graph problem of `tasks` (the tasks that parsed, in file
/// order). `declared` holds every task name of the file, including those
/// that did not parse, so that a reference to a broken task is not also
/// called unknown.
pub(crate) fn check(
    tasks: &[TaskDef],
    declared: &HashSet<String>,
    spans: &HashMap<String, RefSpans>,
    diag: &Diag,
) {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let empty = RefSpans::default();
    for t in tasks {
        let at = spans.get(&t.name).unwrap_or(&empty);
        // A dependency named by `input` is reported at `input`, one named
        // by `inputs` at its entry there, the rest at `after`.
        let entry = |dep: &str| at.inputs.iter().find(|(_, task, _)| task == dep);
        let key_of = |dep: &str| {
            if t.input.as_deref() == Some(dep) && at.input.is_some() {
                ("input".to_string(), at.input.clone())
            } else if let Some((table, _, span)) = entry(dep) {
                (
                    format!("inputs.{table}"),
                    span.clone().or_else(|| at.table.clone()),
                )
            } else {
                (
                    "after".to_string(),
                    at.after.clone().or_else(|| at.table.clone()),
                )
            }
        };
        for dep in &t.after {
            let (key, span) = key_of(dep);
            let key = format!("tasks.{}.{key}", t.name);
            if dep == &t.name {
                diag.report(&key, span, "a task cannot depend on itself");
            } else if !declared.contains(dep) {
                diag.report(&key, span, format!("`{dep}` is not a task of this flow"));
            }
        }
        let read = t.input.iter().chain(match &t.body.input {
            TaskInput::Tables(tables) => tables.iter().flat_map(|x| x.tasks.iter()).collect(),
            _ => Vec::new(),
        });
        for input in read {
            if let Some(&i) = index.get(input.as_str()) {
                if tasks[i].kind == TaskKind::Load {
                    let (key, span) = key_of(input);
                    diag.report(
                        &format!("tasks.{}.{key}", t.name),
                        span,
                        format!("reads `{input}`, but a load has no output to read"),
                    );
                }
            }
        }
    }
    for cycle in cycles(tasks, &index) {
        let first = &tasks[cycle[0]];
        let at = spans.get(&first.name).unwrap_or(&empty);
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| format!("`{}`", tasks[i].name))
            .collect();
        diag.report(
            &format!("tasks.{}", first.name),
            at.input
                .clone()
                .or_else(|| at.after.clone())
                .or_else(|| at.table.clone()),
            format!(
                "the tasks {} form a cycle: each waits for another",
                names.join(", ")
            ),
        );
    }
}

/// The strongly connected components with more than one task (Tarjan's
/// algorithm), each as task indices in file order. Tasks that merely wait
/// for a cycle are not part of it.
fn cycles(tasks: &[TaskDef], index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
    struct Walk {
        edges: Vec<Vec<usize>>,
        order: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    impl Walk {
        fn visit(&mut self, v: usize) {
            self.order[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for k in 0..self.edges[v].len() {
                let w = self.edges[v][k];
                match self.order[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(ow) if self.on_stack[w] => self.low[v] = self.low[v].min(ow),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.order[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort_unstable();
                    self.found.push(component);
                }
            }
        }
    }
    let n = tasks.len();
    let edges = tasks
        .iter()
        .map(|t| {
            t.after
                .iter()
                .filter(|d| *d != &t.name)
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut walk = Walk {
        edges,
        order: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if walk.order[v].is_none() {
            walk.visit(v);
        }
    }
    walk.found.sort();
    walk.found
}

/// Sorts tasks so that every task comes after its dependencies, keeping file
/// order among tasks that are ready together. [`check`] must have passed.
pub(crate) fn order(tasks: Vec<TaskDef>) -> Vec<TaskDef> {
    let mut done: HashSet<String> = HashSet::new();
    let mut remaining: Vec<Option<TaskDef>> = tasks.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(remaining.len());
    loop {
        let ready: Vec<usize> = remaining
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let t = t.as_ref()?;
                t.after.iter().all(|d| done.contains(d)).then_some(i)
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for &i in &ready {
            if let Some(t) = remaining[i].take() {
                done.insert(t.name.clone());
                out.push(t);
            }
        }
    }
    debug_assert!(remaining.iter().all(Option::is_none), "checked for cycles");
    out
}
