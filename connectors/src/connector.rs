/*!
The [`Connector`] trait: what the flow parser and the partition planner ask
a connector, without its data plane. A connector reads and checks its
options from a task's TOML table (every problem with its key and line),
turns them into its wire spec, and says how a partitioned load into its
sink is split. With the `runtime` feature it also hands the worker its
sources and sinks ([`Connector::data`]).
*/

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::{FileTarget, SinkSpec, SourceSpec};

/// Most partitions one task may be split into.
pub const MAX_PARTITIONS: u32 = 1024;

/// One kind of place rows come from or go to: a folder of this crate,
/// listed once in the registry ([`crate::list::CONNECTORS`]).
pub trait Connector: Sync {
    /// Its name: the wire `type` of its specs, and the name in docs.
    fn name(&self) -> &'static str;

    /// Whether an extract's task table is this connector's to read (for
    /// example, it has a `postgres` table). The registry asks connectors
    /// in order; the first that claims a table reads it.
    fn claims_source(&self, _task: &Tbl) -> bool {
        false
    }

    /// Reads and checks an extract's options from its task table,
    /// reporting every problem at its key and line. `base`: the flow
    /// file's directory, which relative paths resolve against. `None`
    /// after a problem.
    fn read_source(&self, _task: &mut Tbl, _base: &Path) -> Option<SourceSpec> {
        None
    }

    /// Whether a load's task table is this connector's to read.
    fn claims_sink(&self, _task: &Tbl) -> bool {
        false
    }

    /// Reads and checks a load's options from its task table, reporting
    /// every problem at its key and line. `None` after a problem.
    fn read_sink(&self, _task: &mut Tbl) -> Option<SinkSpec> {
        None
    }

    /// How a load of a partitioned input into `sink` is split, if `sink`
    /// is this connector's: each partition writes a part in the returned
    /// format into the store, and a gather puts the parts in place.
    fn parts(&self, _sink: &SinkSpec) -> Option<Parts> {
        None
    }

    /// The worker's side of this connector: its sources, sinks and gather.
    #[cfg(feature = "runtime")]
    fn data(&self) -> &dyn conveyor_etl::workspace::DataConnector;
}

/// The parts of a partitioned load (see [`Connector::parts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Parts {
    /// The format (and path, for the checks) each part is written in.
    pub target: FileTarget,
    /// Whether the gather makes a directory of parts, which only a
    /// partitioned input has.
    pub dir: bool,
}
