/*!
PostgreSQL: an extract reads a query's rows (in key ranges when
partitioned), a load writes a table (append, replace or upsert), both
through binary COPY. A load's commit is one transaction that also inserts
the task run's fence row, so a duplicate attempt commits nothing.

- [`options`]: the `postgres = { ... }` table of an extract or a load;
- [`spec`]: the wire spec it owns;
- `session`, `source`, `sink` (feature `runtime`): sessions and the COPY
  format, the query's rows as Arrow batches, the table's load and gather.
*/

pub mod options;
#[cfg(feature = "runtime")]
pub mod session;
#[cfg(feature = "runtime")]
pub mod sink;
#[cfg(feature = "runtime")]
pub mod source;
pub mod spec;
#[cfg(test)]
mod tests;

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::{SinkSpec, SourceSpec};

use crate::connector::{Connector, Parts};

/// The PostgreSQL connector.
pub struct Postgres;

impl Connector for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn claims_source(&self, task: &Tbl) -> bool {
        task.has("postgres")
    }

    fn read_source(&self, task: &mut Tbl, _base: &Path) -> Option<SourceSpec> {
        options::read_source(task)
    }

    fn claims_sink(&self, task: &Tbl) -> bool {
        task.has("postgres")
    }

    fn read_sink(&self, task: &mut Tbl) -> Option<SinkSpec> {
        options::read_sink(task)
    }

    fn parts(&self, sink: &SinkSpec) -> Option<Parts> {
        spec::target(sink).map(|_| Parts {
            target: spec::parts_target(),
            dir: false,
        })
    }

    #[cfg(feature = "runtime")]
    fn data(&self) -> &dyn conveyor_etl::workspace::DataConnector {
        self
    }
}

#[cfg(feature = "runtime")]
impl conveyor_etl::workspace::DataConnector for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn source(&self, spec: &SourceSpec) -> Option<Box<dyn conveyor_etl::sources::Source>> {
        match spec {
            SourceSpec::Postgres {
                url,
                query,
                partition_by,
                partition,
            } => Some(Box::new(source::PgSource {
                url: url.clone(),
                query: query.clone(),
                partition_by: partition_by.clone(),
                partition: *partition,
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
        let target = spec::target(spec)?;
        Some(
            sink::PgSink::new(ws, at, target)
                .map(|s| Box::new(s) as Box<dyn conveyor_etl::sinks::Sink<'a> + 'a>),
        )
    }

    fn gather(
        &self,
        ws: &conveyor_etl::Workspace,
        at: &conveyor_etl::Attempt,
        _format: conveyor_schemas::DataFormat,
        parts: &[conveyor_schemas::ArtifactRef],
        sink: &SinkSpec,
    ) -> Option<conveyor_etl::Result<conveyor_schemas::TaskOutput>> {
        let target = spec::target(sink)?;
        Some(sink::gather(ws, at, parts, target))
    }
}
