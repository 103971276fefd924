/*!
The TOML walk that flow files, node configs and connector options share:
every problem with its key and line, in one pass, and `{{ params.NAME }}`
placeholders filled in as values are read.

It sits below the flow parser and the connectors' options
(`conveyor-connectors`), so that a connector reads its own TOML table the
way the parser reads the rest of the task, without the parser knowing the
connector. `conveyor-flow` re-exports both modules.

# Layout
- [`diag`]: [`diag::Tbl`], a table being read, and [`diag::Diag`], the
  problems found, reported as [`diag::Problems`].
- [`params`]: `[params]` values and the one substitution function, with
  the caller's escaping rule.
*/

pub mod diag;
pub mod params;
