/*!
Files on the worker: an extract reads a CSV, Parquet or JSON-lines file
(or the files a glob matches, in name order), whole or one partition of
it; a load writes one under the output root, or a directory of parts.

- [`options`]: `path`, `format`, `header`, `delimiter`, `schema`,
  `partitions` and `parts`;
- [`spec`]: the wire spec it owns;
- `source`, `sink` (feature `runtime`): the file and glob sources, and the
  file sink and its gather, on the data plane's format readers and writers.

It is the registry's fallback: it reads every extract or load table that
no other connector claims, so that a task with neither `path` nor `url`
hears what it is missing.
*/

pub mod options;
#[cfg(feature = "runtime")]
pub mod sink;
#[cfg(feature = "runtime")]
pub mod source;
pub mod spec;
#[cfg(test)]
mod tests;
#[cfg(all(test, feature = "runtime"))]
mod runtime_tests;

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::{SinkSpec, SourceSpec};

use crate::connector::{Connector, Parts};

/// The files connector.
pub struct Files;

impl Connector for Files {
    fn name(&self) -> &'static str {
        "file"
    }

    fn claims_source(&self, task: &Tbl) -> bool {
        task.has("path") || !task.has("url")
    }

    fn read_source(&self, task: &mut Tbl, base: &Path) -> Option<SourceSpec> {
        options::read_file_source(task, base)
    }

    fn claims_sink(&self, _task: &Tbl) -> bool {
        true
    }

    fn read_sink(&self, task: &mut Tbl) -> Option<SinkSpec> {
        options::read_sink(task)
    }

    fn parts(&self, sink: &SinkSpec) -> Option<Parts> {
        spec::target(sink).map(|(target, dir)| Parts {
            target: target.clone(),
            dir,
        })
    }

    #[cfg(feature = "runtime")]
    fn data(&self) -> &dyn conveyor_etl::workspace::DataConnector {
        self
    }
}

#[cfg(feature = "runtime")]
impl conveyor_etl::workspace::DataConnector for Files {
    fn name(&self) -> &'static str {
        "file"
    }

    fn source(&self, spec: &SourceSpec) -> Option<Box<dyn conveyor_etl::sources::Source>> {
        match spec {
            SourceSpec::File { path, read } => Some(Box::new(source::FileSource {
                path: path.into(),
                read: read.clone(),
            })),
            SourceSpec::Glob { pattern, read } => Some(Box::new(source::GlobSource {
                pattern: pattern.clone(),
                read: read.clone(),
            })),
            _ => None,
        }
    }

    fn sink<'a>(
        &self,
        spec: &'a SinkSpec,
        ws: &'a conveyor_etl::Workspace,
        at: &'a conveyor_etl::Attempt<'a>,
    ) -> Option<conveyor_etl::Result<Box<dyn conveyor_etl::sinks::Sink<'a> + 'a>>> {
        match spec {
            SinkSpec::File(target) => Some(
                sink::output(ws, at, target)
                    .map(|s| Box::new(s) as Box<dyn conveyor_etl::sinks::Sink<'a> + 'a>),
            ),
            SinkSpec::Dir(_) => Some(Err(conveyor_etl::EtlError::Spec(
                "a directory of parts is only written by a gather, from a parts source".into(),
            ))),
            _ => None,
        }
    }

    fn gather(
        &self,
        ws: &conveyor_etl::Workspace,
        at: &conveyor_etl::Attempt,
        format: conveyor_schemas::DataFormat,
        parts: &[conveyor_schemas::ArtifactRef],
        sink: &SinkSpec,
    ) -> Option<conveyor_etl::Result<conveyor_schemas::TaskOutput>> {
        let (target, dir) = spec::target(sink)?;
        Some(sink::gather_into(ws, at, format, parts, target, dir))
    }

    /// A whole file's size; a partition's or a glob's is unknown.
    fn bytes_in(&self, spec: &SourceSpec) -> Option<u64> {
        match spec {
            SourceSpec::File { path, read } if read.partition.is_none_or(|p| p.count <= 1) => {
                std::fs::metadata(path)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            }
            _ => None,
        }
    }
}
