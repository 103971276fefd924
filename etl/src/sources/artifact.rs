/*!
An Arrow IPC artifact in the store: the output of an upstream task; or
several, one after another (the parts of a partitioned upstream task, read
as one table).
*/

use std::fs::File;

use conveyor_schemas::ArtifactRef;

use crate::error::{self, EtlError, Result};
use crate::source::{Batches, ReadContext, Source};

pub struct ArtifactSource(pub ArtifactRef);

impl Source for ArtifactSource {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        let path = cx.store.open(&self.0.path)?;
        let file = File::open(&path).map_err(|e| EtlError::io(&path, e))?;
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(error::data_err(&path))?;
        let schema = reader.schema();
        let iter = reader.map(move |b| b.map_err(error::data_err(&path)));
        Ok(Batches {
            schema,
            iter: Box::new(iter),
        })
    }
}

/// Artifacts read one after another as one stream; they must have the same
/// columns.
pub struct ArtifactsSource {
    /// The table's name, for errors.
    pub name: String,
    pub artifacts: Vec<ArtifactRef>,
}

impl Source for ArtifactsSource {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        let mut opened = Vec::with_capacity(self.artifacts.len());
        for a in self.artifacts {
            let path = cx.store.open(&a.path)?;
            let batches = Box::new(ArtifactSource(a)).open(cx)?;
            if let Some((first, _)) = opened.first() {
                let first: &Batches = first;
                if first.schema.fields() != batches.schema.fields() {
                    return Err(EtlError::data(
                        &path,
                        format!(
                            "a part of table `{}` has other columns than its first part",
                            self.name
                        ),
                    ));
                }
            }
            opened.push((batches, path));
        }
        let schema = opened
            .first()
            .map(|(b, _)| b.schema.clone())
            .ok_or_else(|| {
                EtlError::Internal(format!("table `{}` was given no artifact", self.name))
            })?;
        let iter = opened.into_iter().flat_map(|(b, _)| b.iter);
        Ok(Batches {
            schema,
            iter: Box::new(iter),
        })
    }
}
