/*!
The [`Source`] trait and what it opens into: [`Batches`], a schema plus an
iterator of record batches, so memory stays bounded by the batch size, not
the file size; and the [`ReadContext`] a source may use while it opens.
*/

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::store::ArtifactStore;

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

/// An open source: its columns, then its rows, streamed.
pub struct Batches {
    pub schema: SchemaRef,
    pub iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// What a source may use while it opens.
pub struct ReadContext<'a> {
    pub store: &'a dyn ArtifactStore,
    /// The attempt's tag, for scratch file names.
    pub tag: &'a str,
    /// Longest CSV record or JSON line a source may hold, in bytes, so that a
    /// stray quote cannot make a reader buffer the rest of the file.
    pub max_record: u64,
    /// What this node's sources may read and fetch.
    pub policy: &'a crate::policy::SourcePolicy,
    /// The attempt's cancel flag ([`crate::attempt::Attempt::cancel`]): a download
    /// checks it between chunks, so an abandoned attempt stops soon.
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Something a task reads rows from.
pub trait Source {
    /// Opens the source: its schema now, its batches as they are read.
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches>;
}
