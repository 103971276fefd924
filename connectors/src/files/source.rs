/*!
The files connector's sources, on the data plane's format readers:
- a file on the worker's file system: the whole file, or the partition its
  read options name (a byte range cut at record boundaries, or a run of
  Parquet row groups);
- a glob: the files it matches, read one after another in name order.
*/

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::policy::SourcePolicy;
use conveyor_etl::sources::{
    open_file, open_fixed, open_whole, Batches, ReadContext, Source, SourceFile,
};
use conveyor_schemas::ReadOptions;

/// A file on the worker's file system: the whole file, or the partition its
/// read options name.
pub struct FileSource {
    pub path: PathBuf,
    pub read: ReadOptions,
}

impl Source for FileSource {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        cx.policy.check_path(&self.path)?;
        open_file(&self.read, SourceFile::local(&self.path), cx.max_record)
    }
}

/// The files a glob matches on the worker's file system.
pub struct GlobSource {
    pub pattern: String,
    pub read: ReadOptions,
}

impl Source for GlobSource {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        // A file whose name holds `[`, `*` or `?` is read as that file.
        if Path::new(&self.pattern).exists() {
            cx.policy.check_path(Path::new(&self.pattern))?;
            let file = SourceFile::local(Path::new(&self.pattern));
            return open_file(&self.read, file, cx.max_record);
        }
        open_glob(&self.read, &self.pattern, cx.max_record, cx.policy)
    }
}

/// The files of a glob, sorted, are read one after another; partition `i` of
/// `n` reads a contiguous run of them, so parts keep the files' order. The
/// first file fixes the columns and their types; every other file must have
/// the same columns, and its values must fit those types.
fn open_glob(
    spec: &ReadOptions,
    pattern: &str,
    max_record: u64,
    policy: &SourcePolicy,
) -> Result<Batches> {
    let shown = Path::new(pattern);
    let entries =
        glob::glob(pattern).map_err(|e| EtlError::Spec(format!("bad glob `{pattern}`: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path =
            entry.map_err(|e| EtlError::io(e.path(), std::io::Error::other(e.to_string())))?;
        if path.is_file() {
            policy.check_path(&path)?;
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(EtlError::data(shown, "no file matches this glob"));
    }
    let head = open_whole(spec, &SourceFile::local(&files[0]), max_record)?.schema;
    let (index, count) = spec
        .partition
        .map(|p| (p.index as usize, p.count.max(1) as usize))
        .unwrap_or((0, 1));
    let mine: Vec<PathBuf> =
        files[index * files.len() / count..(index + 1) * files.len() / count].to_vec();
    let spec = spec.clone();
    let schema = head.clone();
    let mut current: Option<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> = None;
    let mut queue = mine.into_iter();
    let iter = std::iter::from_fn(move || loop {
        if let Some(it) = current.as_mut() {
            if let Some(next) = it.next() {
                return Some(next);
            }
        }
        let path = queue.next()?;
        match same_columns(&spec, &path, &schema, max_record)
            .and_then(|()| open_fixed(&spec, &SourceFile::local(&path), &schema, max_record, None))
        {
            Ok(b) => current = Some(b.iter),
            Err(e) => {
                queue = Vec::new().into_iter();
                return Some(Err(e));
            }
        }
    });
    Ok(Batches {
        schema: head,
        iter: Box::new(iter),
    })
}

/// Checks that a file of a glob has the columns of the first one.
fn same_columns(spec: &ReadOptions, path: &Path, head: &SchemaRef, max_record: u64) -> Result<()> {
    let own = open_whole(spec, &SourceFile::local(path), max_record)?.schema;
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(&own) != names(head) {
        return Err(EtlError::data(
            path,
            format!(
                "has columns {} but the first file of the glob has {}; every file must have the same columns",
                names(&own).join(", "),
                names(head).join(", ")
            ),
        ));
    }
    Ok(())
}
