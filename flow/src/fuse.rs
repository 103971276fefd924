/*!
Fusing (`fuse = true`): single-reader chains folded into one task.
*/

use conveyor_schemas::{SinkSpec, TaskKind};

use crate::model::{TaskDef, TaskInput};

/// With `fuse = true`: an extract whose output only one transform or load
/// reads, and that nothing else waits for, absorbs that reader, and so on
/// down the chain: extract → transform → load becomes one task that reads,
/// transforms and writes in one pass, with no intermediate artifact and one
/// broker round trip instead of three. The fused task takes the name of the
/// last task it absorbed (so `after` on it still works), runs on extract
/// workers, keeps the extract's retry policy and the sum of the timeouts.
///
/// Every task is a source, steps and a sink, so absorbing a reader is
/// appending its steps and taking its sink. A reader with a SQL step is not
/// fused into a partitioned extract (each partition would query its share
/// alone), and a reader with `inputs` (several tables) never is.
pub(crate) fn fuse_chains(mut tasks: Vec<TaskDef>) -> Vec<TaskDef> {
    loop {
        let pair = tasks.iter().enumerate().find_map(|(i, e)| {
            // A task with a source of its own whose output is an artifact.
            if e.body.source().is_none() || e.body.sink != SinkSpec::Artifact {
                return None;
            }
            let mut readers = tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.after.contains(&e.name));
            let (j, reader) = readers.next()?;
            // A SQL step reads all of its input at once: it must see every
            // partition, so it is not fused into one.
            // (A file's share is in its read options, a query's beside it.)
            let partitioned = e.body.source().is_some_and(|s| s.partition().is_some());
            let only = readers.next().is_none()
                && reader.input.as_ref() == Some(&e.name)
                && reader.body.input == TaskInput::Upstream
                && !(partitioned && reader.body.has_sql());
            only.then_some((i, j))
        });
        let Some((i, j)) = pair else {
            return tasks;
        };
        let reader = tasks.remove(j);
        let extract = tasks.remove(i);
        let mut body = extract.body;
        body.steps.extend(reader.body.steps);
        body.sink = reader.body.sink;
        let mut after = extract.after;
        after.extend(reader.after.into_iter().filter(|a| a != &extract.name));
        // The reader came after the extract and after all it waits for, so
        // the fused task keeps the order where the reader was.
        tasks.insert(
            j - 1,
            TaskDef {
                name: reader.name,
                kind: TaskKind::Extract,
                input: None,
                after,
                retry: extract.retry,
                timeout: extract.timeout.saturating_add(reader.timeout),
                body,
            },
        );
    }
}
