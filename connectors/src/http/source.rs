/*!
A URL: downloaded into the store's scratch directory, then read as a file
(removed once read).
*/

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use conveyor_schemas::redact::{redact_in, redact_url};
use conveyor_schemas::ReadOptions;

use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::pending::Pending;
use conveyor_etl::sources::{open_file, Batches, ReadContext, Source, SourceFile};
use conveyor_etl::store::ArtifactStore;

/// A URL, downloaded then read as a file of its format.
pub struct UrlSource {
    pub url: String,
    pub read: ReadOptions,
}

impl Source for UrlSource {
    fn open(self: Box<Self>, cx: &ReadContext) -> Result<Batches> {
        cx.policy.check_url(&self.url)?;
        let file = download(&self.url, cx.store, cx.tag, cx.cancel)?;
        open_file(&self.read, file, cx.max_record)
    }
}

/// Downloads `url` into a scratch file of the store, stopping with a
/// `Cancelled` error between chunks once `cancel` is raised.
fn download(
    url: &str,
    store: &dyn ArtifactStore,
    tag: &str,
    cancel: Option<&AtomicBool>,
) -> Result<SourceFile> {
    // The URL keeps its credentials for the request; every error shows it,
    // and whatever the HTTP library says about it, redacted.
    let fetch_err = |message: String, retryable: bool| EtlError::Fetch {
        url: redact_url(url),
        message: redact_in(&message, url),
        retryable,
    };
    let response = ureq::get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => fetch_err(
            format!("server answered HTTP {code}"),
            code >= 500 || code == 429,
        ),
        ureq::Error::BadUri(m) => fetch_err(format!("bad URL: {m}"), false),
        other => fetch_err(other.to_string(), true),
    })?;
    let scratch = store.scratch_dir()?.join("download");
    let mut pending = Pending::file(&scratch, tag)?;
    let mut file = pending.writer()?;
    let mut body = response.into_body().into_reader();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
            return Err(EtlError::Cancelled);
        }
        let n = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fetch_err(format!("download failed: {e}"), true)),
        };
        file.write_all(&chunk[..n])
            .map_err(|e| EtlError::io(pending.tmp_path(), e))?;
    }
    Ok(SourceFile {
        path: pending.tmp_path().to_path_buf(),
        display: PathBuf::from(redact_url(url)),
        download: Some(pending),
    })
}
