/*!
Gathering the parts of a partitioned load into its output.

Each partition's load writes its part, in the format its sink's connector
asked for (see `conveyor_connectors::Parts`), into the artifact store. The
gather then puts them in place, with the sink's connector
([`crate::workspace::DataConnector::gather`]): a file or a directory of
parts under the output root, or a table in one transaction. It is fenced
by the task run's commit marker like any load, and removes the parts once
they are in place ([`crate::commit::gather_fenced`]).

The gather is a task like any other on the wire: a
[`conveyor_schemas::SourceSpec::Parts`] source and a connector's sink. It
is not run as source → steps → sink because it decodes nothing it need not.
*/

use conveyor_schemas::{ArtifactRef, DataFormat, SinkSpec, TaskOutput};

use crate::attempt::Attempt;
use crate::error::{EtlError, Result};
use crate::workspace::Workspace;

/// Puts `parts` (each a file of `format` in the store) in place as `sink`,
/// with the sink's connector.
pub fn run_gather(
    ws: &Workspace,
    at: &Attempt,
    format: DataFormat,
    parts: &[ArtifactRef],
    sink: &SinkSpec,
) -> Result<TaskOutput> {
    match sink {
        SinkSpec::Artifact | SinkSpec::Part { .. } => Err(EtlError::Spec(
            "a gather writes a file or a directory of parts under the output root, or a table"
                .into(),
        )),
        _ => ws.connectors.gather(ws, at, format, parts, sink),
    }
}
