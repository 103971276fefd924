/*!
Conveyor flows, parsed and checked without running anything.

This crate is pure: no arrow, lapin, actix or SQLite, so `conveyor validate`,
the HTTP API and the dashboard can parse flows cheaply
(`cargo tree -p conveyor-flow` shows it).

# Layout
- [`model`]: what a parsed flow is: [`FlowSpec`], [`TaskDef`], [`TaskBody`]
  (the wire's source, steps and sink, with [`TaskInput`] for inputs that
  exist only at dispatch), [`RetryPolicy`], and the [`FlowSource`] a run
  keeps to parse it again.
- [`params`]: `[params]` and `{{ params.NAME }}`: the one substitution
  function, with the caller's escaping rule (from `conveyor-diag`).
- [`parse`]: flow files: every problem with its key and line, in one pass.
- [`graph`]: graph checks (unknown references, cycles) and task ordering.
- [`fuse`]: `fuse = true`: single-reader chains folded into one task.
- [`schedule`]: `[flow] schedule`, `timezone` and `catchup`: cron slots in
  a time zone.
- [`partition`]: `partitions = N`: one task per partition, and gathers
  (a task with a SQL step is not split: it reads every partition).
- [`sql`]: SQL steps' syntax, checked at parse time with `sqlparser`.
- [`diag`]: the TOML walk that collects problems ([`Problems`]), from
  `conveyor-diag`, which the connectors' options use too.
- Sources and sinks are connectors (`conveyor-connectors`): the parser
  asks its registry to read an extract's source and a load's sink, and the
  partition planner asks how a load is split.
- [`names`]: the rules for names and relative paths (from the wire contract,
  so that workers apply the same ones).
*/

pub(crate) mod fuse;
pub(crate) mod graph;
pub mod model;
pub mod parse;
pub(crate) mod partition;
pub mod schedule;
pub mod sql;

pub use conveyor_diag::{diag, params};
pub use conveyor_schemas::names;

pub use diag::{Problem, Problems};
pub use model::{
    partition_name, FlowSource, FlowSpec, RetryPolicy, TableInput, TaskBody, TaskDef, TaskInput,
    MAX_PARTITIONS,
};
pub use schedule::{Catchup, Schedule};
