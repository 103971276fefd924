/*! Errors of the data plane, each with a retry hint the coordinator acts on. */

use std::path::{Path, PathBuf};

use conveyor_schemas::{ErrorKind, TaskError};

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    /// The data itself is bad; retrying cannot help.
    #[error("{}: {message}", file.display())]
    Data { file: PathBuf, message: String },
    /// The task's parameters are bad (hostile path, missing column, ...).
    #[error("{0}")]
    Spec(String),
    /// File system or network trouble that may pass.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A source URL could not be fetched.
    #[error("{url}: {message}")]
    Fetch {
        url: String,
        message: String,
        retryable: bool,
    },
    /// The commit gate found the run abandoned (its coordinator's reply
    /// queue is gone): the output is left as it was. Expected, not a bug.
    #[error("the coordinator's reply queue {reply_to} is gone (the run was abandoned); leaving the output as it was")]
    Abandoned { reply_to: String },
    /// The attempt's run ended (cancelled, or failed) while it ran: it
    /// stopped and committed nothing. Expected, not a failure of the task.
    #[error("the attempt's run ended while it ran (cancelled, or failed); it stopped and committed nothing")]
    Cancelled,
    /// A SQL step failed: it did not parse or plan (`on_data` false: a
    /// spec error), or it failed on the rows (a data error). The message
    /// names the task, the step and the query.
    #[error("{message}")]
    Sql { message: String, on_data: bool },
    #[error("{0}")]
    Internal(String),
}

impl EtlError {
    pub fn data(file: &Path, message: impl Into<String>) -> Self {
        EtlError::Data {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(file: &Path, source: std::io::Error) -> Self {
        // A missing or unreadable input is a data problem: retrying will not create it.
        match source.kind() {
            std::io::ErrorKind::NotFound => EtlError::data(file, "file not found"),
            std::io::ErrorKind::PermissionDenied => EtlError::data(file, "permission denied"),
            std::io::ErrorKind::InvalidData => EtlError::data(file, source.to_string()),
            _ => EtlError::Io {
                file: file.to_path_buf(),
                source,
            },
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            EtlError::Io { .. } => true,
            EtlError::Fetch { retryable, .. } => *retryable,
            EtlError::Data { .. }
            | EtlError::Spec(_)
            | EtlError::Sql { .. }
            | EtlError::Abandoned { .. }
            | EtlError::Cancelled
            | EtlError::Internal(_) => false,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            EtlError::Data { .. } => ErrorKind::Data,
            EtlError::Spec(_) => ErrorKind::Spec,
            EtlError::Sql { on_data: false, .. } => ErrorKind::Spec,
            EtlError::Sql { on_data: true, .. } => ErrorKind::Data,
            EtlError::Io { .. } | EtlError::Fetch { .. } => ErrorKind::Io,
            EtlError::Abandoned { .. } => ErrorKind::Abandoned,
            EtlError::Cancelled => ErrorKind::Cancelled,
            EtlError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn to_task_error(&self) -> TaskError {
        TaskError {
            kind: self.kind(),
            message: self.to_string(),
            retryable: self.retryable(),
        }
    }
}

pub type Result<T, E = EtlError> = std::result::Result<T, E>;

/// Maps an Arrow or Parquet error met while reading `file` to a data error.
pub(crate) fn data_err(file: &Path) -> impl Fn(arrow::error::ArrowError) -> EtlError + '_ {
    move |e| match e {
        arrow::error::ArrowError::IoError(_, io) => EtlError::io(file, io),
        other => EtlError::data(file, strip_arrow_prefix(&other.to_string())),
    }
}

pub(crate) fn parquet_err(file: &Path) -> impl Fn(parquet::errors::ParquetError) -> EtlError + '_ {
    move |e| EtlError::data(file, e.to_string())
}

fn strip_arrow_prefix(text: &str) -> String {
    for prefix in [
        "Csv error: ",
        "Parser error: ",
        "Json error: ",
        "Cast error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text.to_string()
}
