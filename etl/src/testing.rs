/*!
Test helpers: a connector for local CSV files, so this crate's own tests
(SQL steps) can read and write files without the connectors crate above.
The real one is `conveyor-connectors`' files connector.
*/

use std::path::PathBuf;

use conveyor_schemas::{SinkSpec, SourceSpec};

use crate::attempt::Attempt;
use crate::error::Result;
use crate::sinks::format::FileFormat;
use crate::sinks::writer::{Destination, EncodingSink};
use crate::sinks::Sink;
use crate::sources::{open_file, Batches, ReadContext, Source, SourceFile};
use crate::workspace::Workspace;
use crate::workspace::{Connectors, DataConnector};

/// Local files, whole, and files under the output root.
pub struct LocalFiles;

/// The registry of the tests: local files only.
pub fn connectors() -> Connectors {
    Connectors::new(vec![&LocalFiles])
}

struct LocalFile(PathBuf, conveyor_schemas::ReadOptions);

impl Source for LocalFile {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        open_file(&self.1, SourceFile::local(&self.0), cx.max_record)
    }
}

impl DataConnector for LocalFiles {
    fn name(&self) -> &'static str {
        "file"
    }

    fn source(&self, spec: &SourceSpec) -> Option<Box<dyn Source>> {
        match spec {
            SourceSpec::File { path, read } => Some(Box::new(LocalFile(path.into(), read.clone()))),
            _ => None,
        }
    }

    fn sink<'a>(
        &self,
        spec: &'a SinkSpec,
        ws: &'a Workspace,
        at: &'a Attempt<'a>,
    ) -> Option<Result<Box<dyn Sink<'a> + 'a>>> {
        let SinkSpec::File(target) = spec else {
            return None;
        };
        let sink = Destination::output(ws, at, ws.output_root.join(&target.path)).map(|d| {
            Box::new(EncodingSink::new(at, FileFormat::of(target), d)) as Box<dyn Sink<'a> + 'a>
        });
        Some(sink)
    }
}
