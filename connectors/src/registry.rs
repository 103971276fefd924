/*!
The connector registry: what the flow parser, the partition planner and
(with the `runtime` feature) the worker ask, instead of matching on
connector names. It goes through [`crate::list::CONNECTORS`].
*/

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::{SinkSpec, SourceSpec};

use crate::connector::{Connector, Parts};
use crate::list::CONNECTORS;

/// The connector that claims an extract's task table.
fn source_connector(task: &Tbl) -> Option<&'static dyn Connector> {
    CONNECTORS.iter().copied().find(|c| c.claims_source(task))
}

/// The connector that claims a load's task table.
fn sink_connector(task: &Tbl) -> Option<&'static dyn Connector> {
    CONNECTORS.iter().copied().find(|c| c.claims_sink(task))
}

/// Reads an extract's source from its task table, with the connector that
/// claims it; every problem is reported at its key and line.
pub fn read_source(task: &mut Tbl, base: &Path) -> Option<SourceSpec> {
    let connector = source_connector(task)?;
    connector.read_source(task, base)
}

/// Reads a load's sink from its task table, with the connector that
/// claims it; every problem is reported at its key and line.
pub fn read_sink(task: &mut Tbl) -> Option<SinkSpec> {
    let connector = sink_connector(task)?;
    connector.read_sink(task)
}

/// How a load of a partitioned input into `sink` is split into parts and a
/// gather; `None` for a sink no connector gathers (an artifact, a part).
pub fn parts(sink: &SinkSpec) -> Option<Parts> {
    CONNECTORS.iter().find_map(|c| c.parts(sink))
}

/// The runtime registry: every connector's sources, sinks and gather, for
/// the worker's `Workspace`.
#[cfg(feature = "runtime")]
pub fn runtime() -> conveyor_etl::workspace::Connectors {
    conveyor_etl::workspace::Connectors::new(CONNECTORS.iter().map(|c| c.data()).collect())
}
