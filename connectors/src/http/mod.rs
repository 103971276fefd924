/*!
HTTP: an extract downloads a URL into the store's scratch directory, then
reads it as a file of its format. URLs go through the node's
`allow_urls`; a secret in one is redacted from every error.

- [`options`]: `url` and the download's file options;
- [`spec`]: the wire spec it owns;
- `source` (feature `runtime`): the download.
*/

pub mod options;
#[cfg(feature = "runtime")]
pub mod source;
pub mod spec;

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::SourceSpec;

use crate::connector::Connector;

/// The HTTP connector: a source only.
pub struct Http;

impl Connector for Http {
    fn name(&self) -> &'static str {
        "url"
    }

    fn claims_source(&self, task: &Tbl) -> bool {
        task.has("url") && !task.has("path")
    }

    fn read_source(&self, task: &mut Tbl, base: &Path) -> Option<SourceSpec> {
        options::read_source(task, base)
    }

    #[cfg(feature = "runtime")]
    fn data(&self) -> &dyn conveyor_etl::workspace::DataConnector {
        self
    }
}

#[cfg(feature = "runtime")]
impl conveyor_etl::workspace::DataConnector for Http {
    fn name(&self) -> &'static str {
        "url"
    }

    fn source(&self, spec: &SourceSpec) -> Option<Box<dyn conveyor_etl::sources::Source>> {
        match spec {
            SourceSpec::Url { url, read } => Some(Box::new(source::UrlSource {
                url: url.clone(),
                read: read.clone(),
            })),
            _ => None,
        }
    }
}
