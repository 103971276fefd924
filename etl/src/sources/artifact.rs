/*!
An Arrow IPC artifact in the store: the output of an upstream task.
*/

use std::fs::File;

use conveyor_schemas::ArtifactRef;

use super::{Batches, ReadContext, Source};
use crate::error::{self, EtlError, Result};

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
