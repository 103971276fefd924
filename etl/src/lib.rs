/*!
The Conveyor data plane: pure Arrow, no actors, no broker.

# Layout
- [`source`] and [`sink`]: the [`source::Source`] and [`sink::Sink`]
  traits, leaves that every reader, writer and connector builds on.
- [`sources`]: the engine's own sources
  (artifacts, named tables) and the file formats' readers (CSV, JSON
  lines, Parquet, whole or one partition), read batch by batch.
- [`sinks`]: the one writer of encoded files
  ([`sinks::writer`], generic over its encoder), the engine's own sinks
  (Arrow IPC artifacts, parts) and the file formats' writers.
- [`transform`]: the batch steps; [`sql`]: SQL steps on DataFusion;
  [`typing`]: lossless inference and conversion of text columns;
  [`canonical`]: the one text of each date, timestamp and decimal value,
  which is all that reads into those types.
- [`gather`]: putting the parts of a partitioned load in place, with the
  sink's connector.
- [`commit`]: the commit protocol: pending outputs, put-if-absent and
  fenced commits, commit markers, sweeps of killed attempts' leftovers.
- [`store`]: the [`ArtifactStore`] trait (objects put if absent, commit
  markers, task-run locks, the cleanup of finished runs) and [`FsStore`],
  the store as a directory.
- [`partition`], [`guard`], [`quoted_empty`]: byte-range partitions of
  text files, the record-size guard under their parsers, and the scan that
  tells a CSV's quoted empty fields (`""`) from its missing values.
- [`paths`]: confinement of hostile paths; [`policy`]: what sources may
  read and fetch (`[workers] input_roots` and `allow_urls`).
- [`error`]: [`EtlError`], with its retry hint.
- [`workspace`]: the [`Workspace`] a worker reads and writes, with the
  registry of the connectors it runs ([`workspace::Connectors`]) and their
  data plane ([`workspace::DataConnector`]); the connectors themselves
  (files, HTTP, PostgreSQL) live above, in `conveyor-connectors`, and reach
  this crate only through that trait.
- [`attempt`]: the [`Attempt`] a worker runs, which every writer takes.
- [`pending`]: files and directories written under a temporary name and
  moved into place; the store and the commit protocol build on it.
- [`task`]: [`run_task`] runs one attempt of any task (a source, steps
  and a sink; or a gather) to a committed output. It is blocking: callers
  run it off their event loop.

Modules import from their siblings, never from this root: it only names
the modules and re-exports what outside users need.
*/

pub mod attempt;
pub mod canonical;
pub mod commit;
pub mod error;
pub mod gather;
pub mod guard;
pub mod partition;
pub mod paths;
pub mod pending;
pub mod policy;
pub mod quoted_empty;
pub mod sink;
pub mod sinks;
pub mod source;
pub mod sources;
pub mod sql;
pub mod store;
pub mod task;
#[cfg(test)]
mod testing;
pub mod transform;
pub mod typing;
pub mod workspace;

pub use attempt::Attempt;
pub use error::{EtlError, Result};
pub use store::{ArtifactStore, FsStore};
pub use task::run_task;
pub use workspace::Workspace;
