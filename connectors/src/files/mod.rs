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
pub mod spec;
#[cfg(test)]
mod tests;

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
    fn data(&self) -> &dyn conveyor_etl::connector::DataConnector {
        self
    }
}

#[cfg(feature = "runtime")]
impl conveyor_etl::connector::DataConnector for Files {
    fn name(&self) -> &'static str {
        "file"
    }
}
