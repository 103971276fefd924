/*!
Conveyor's connectors: one folder each, registered in one line.

A connector is where rows come from or go to: files (CSV, Parquet and JSON
lines, a file or a glob), an HTTP URL, a PostgreSQL query or table. Its
folder holds all of it, the way vector's `src/sources/NAME/` does:
- `mod.rs`: the connector, implementing [`Connector`];
- `options.rs`: how its TOML options are read and checked, every problem
  with its key and line;
- `spec.rs`: its wire spec, the [`conveyor_schemas::SourceSpec`] and
  [`conveyor_schemas::SinkSpec`] variants it owns;
- `source.rs`, `sink.rs` (feature `runtime`): its data plane on
  `conveyor_etl`'s `Source` and `Sink` traits;
- its tests.

The flow parser and the partition planner ask [`registry`]; the worker's
task runner (its source and sink factories and the gather) asks the
runtime registry (`registry::runtime`, feature `runtime`), which the
worker puts in its `Workspace`. None of them names a connector.

Without the `runtime` feature this crate is options and specs only (no
arrow, parquet, DataFusion or PostgreSQL client), so the flow parser, and
the API and dashboard through it, stay free of the data plane.

See CONTRIBUTING.md at the repository's root for how to add one.
*/

pub mod connector;
pub mod registry;
#[cfg(test)]
mod testing;

pub use connector::{Connector, Parts, MAX_PARTITIONS};

/// Declares the connector modules and lists them in
/// [`list::CONNECTORS`], in the order the registry asks them: the first
/// that claims a task table reads it, so the fallback (files) comes last.
macro_rules! connectors {
    ($($module:ident :: $connector:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// The registered connectors, which [`registry`] asks.
        pub mod list {
            /// Every connector, in the order the registry asks them.
            pub static CONNECTORS: &[&dyn crate::connector::Connector] =
                &[$(&crate::$module::$connector),*];
        }
    };
}

// One line per connector.
connectors! {
    postgres::Postgres,
    http::Http,
    files::Files,
}
