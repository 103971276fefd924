/*!
Where a task runs: the [`Workspace`] a worker reads and writes (its store,
output root, source policy) and the connectors it runs, [`Connectors`].

A connector's data plane (its sources, its sinks and the gather into its
sink) is behind [`DataConnector`]. The connectors live above this crate (in
`conveyor-connectors`, feature `runtime`); the worker puts their registry in
its `Workspace`. The engine's own specs (artifacts, parts, named tables) are
read and written without asking it.

The workspace and the connectors refer to each other (a connector's sink
writes in a workspace that holds the connectors), so they live in one
module, above the [`crate::sink`] and [`crate::source`] traits and below
every module that reads or writes.
*/

use conveyor_schemas::{ArtifactRef, DataFormat, SinkSpec, SourceSpec, TaskOutput};

use std::path::PathBuf;

use crate::attempt::Attempt;
use crate::error::{EtlError, Result};
use crate::policy::SourcePolicy;
use crate::sink::Sink;
use crate::source::Source;
use crate::store::ArtifactStore;

/// Where a worker reads and writes.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// Where artifacts, parts and commit markers live.
    pub store: std::sync::Arc<dyn ArtifactStore>,
    /// Loads write under this directory and nowhere else.
    pub output_root: PathBuf,
    /// Longest CSV record or JSON line a source may hold, in bytes.
    pub max_record_bytes: u64,
    /// What sources may read and fetch.
    pub sources: SourcePolicy,
    /// The connectors this worker runs: the sources, sinks and gathers of
    /// every spec that is not the engine's own (artifacts, parts, tables).
    pub connectors: Connectors,
}

/// A connector's data plane. Each method answers `None` for a spec that is
/// not this connector's.
pub trait DataConnector: Send + Sync {
    /// Its name, as in the connector registry.
    fn name(&self) -> &'static str;

    /// The source `spec` names.
    fn source(&self, _spec: &SourceSpec) -> Option<Box<dyn Source>> {
        None
    }

    /// The sink `spec` names, for one attempt.
    fn sink<'a>(
        &self,
        _spec: &'a SinkSpec,
        _ws: &'a Workspace,
        _at: &'a Attempt<'a>,
    ) -> Option<Result<Box<dyn Sink<'a> + 'a>>> {
        None
    }

    /// Puts the parts of a partitioned load (each a file of `format` in
    /// the store) in place in `sink`, fenced like any commit.
    fn gather(
        &self,
        _ws: &Workspace,
        _at: &Attempt,
        _format: DataFormat,
        _parts: &[ArtifactRef],
        _sink: &SinkSpec,
    ) -> Option<Result<TaskOutput>> {
        None
    }

    /// The bytes `spec` reads, where a file's size says it.
    fn bytes_in(&self, _spec: &SourceSpec) -> Option<u64> {
        None
    }
}

/// The connectors a worker runs, asked in order.
#[derive(Clone, Default)]
pub struct Connectors(Vec<&'static dyn DataConnector>);

impl Connectors {
    pub fn new(connectors: Vec<&'static dyn DataConnector>) -> Connectors {
        Connectors(connectors)
    }

    /// The source of a connector's spec.
    pub fn source(&self, spec: &SourceSpec) -> Result<Box<dyn Source>> {
        self.0
            .iter()
            .find_map(|c| c.source(spec))
            .ok_or_else(|| unknown("source", spec_type(spec)))
    }

    /// The sink of a connector's spec, for one attempt.
    pub fn sink<'a>(
        &self,
        spec: &'a SinkSpec,
        ws: &'a Workspace,
        at: &'a Attempt<'a>,
    ) -> Result<Box<dyn Sink<'a> + 'a>> {
        self.0
            .iter()
            .find_map(|c| c.sink(spec, ws, at))
            .unwrap_or_else(|| Err(unknown("sink", spec_type(spec))))
    }

    /// The gather of parts into a connector's sink.
    pub fn gather(
        &self,
        ws: &Workspace,
        at: &Attempt,
        format: DataFormat,
        parts: &[ArtifactRef],
        sink: &SinkSpec,
    ) -> Result<TaskOutput> {
        self.0
            .iter()
            .find_map(|c| c.gather(ws, at, format, parts, sink))
            .unwrap_or_else(|| Err(unknown("gather into a sink", spec_type(sink))))
    }

    /// The bytes a connector's source reads, where a file's size says it.
    pub fn bytes_in(&self, spec: &SourceSpec) -> Option<u64> {
        self.0.iter().find_map(|c| c.bytes_in(spec))
    }
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| c.name()))
            .finish()
    }
}

/// A spec's wire `type`, for errors.
fn spec_type(spec: &impl serde::Serialize) -> String {
    serde_json::to_value(spec)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// No connector of this worker runs a spec: a worker built without it.
fn unknown(what: &str, kind: String) -> EtlError {
    EtlError::Spec(format!(
        "this worker has no connector for a {what} of type `{kind}`"
    ))
}
