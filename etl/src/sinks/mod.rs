/*!
Sinks: where a task's rows go.

A [`Sink`] consumes a schema and a stream of batches into a
[`PendingOutput`]: written and durable, but not visible. Committing it puts
the output in place under the commit protocol (see [`crate::commit`]), so
that of all the attempts of one task run exactly one output wins.

# Layout
- this module: [`open`] (one arm per [`SinkSpec`] variant);
- [`sink`]: the [`Sink`] and [`PendingOutput`] traits;
- [`writer`]: the one writer of encoded files (write → sync → commit),
  generic over its [`writer::Encoder`];
- [`format`](mod@format): the file formats by name ([`encode`]), and as an encoder;
- [`csv`], [`jsonl`], [`parquet`]: the file formats' writers;
- [`artifact`]: Arrow IPC artifacts in the store, for downstream tasks;
- [`part`]: one part of a partitioned load (into the store, for the
  gather);

A file under the output root or a table is a connector's (in
`conveyor-connectors`): see [`crate::workspace`].
*/

pub mod artifact;
pub mod csv;
pub mod format;
pub mod jsonl;
pub mod parquet;
pub mod part;
pub mod writer;

use conveyor_schemas::SinkSpec;

use crate::attempt::Attempt;
use crate::error::Result;
use crate::workspace::Workspace;

pub use crate::sink::{BatchIter, PendingOutput, Sink};
pub use format::encode;

/// The sink a spec names, for one attempt.
pub fn open<'a>(
    spec: &'a SinkSpec,
    ws: &'a Workspace,
    at: &'a Attempt<'a>,
) -> Result<Box<dyn Sink<'a> + 'a>> {
    Ok(match spec {
        SinkSpec::Artifact => Box::new(artifact::sink(ws, at)?),
        SinkSpec::Part { target, .. } => Box::new(part::sink(ws, at, target)?),
        // A connector's sink.
        _ => return ws.connectors.sink(spec, ws, at),
    })
}
