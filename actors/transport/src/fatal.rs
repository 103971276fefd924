/*! Why a node must exit: sent by the part that gave up, read by the binary. */

use conveyor_schemas::TaskKind;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Fatal {
    /// A worker kind keeps stopping: restarting it again would only loop.
    #[error("the {kind} worker stopped {restarts} times within {within_s}s; giving up")]
    WorkerRestarts {
        kind: TaskKind,
        restarts: usize,
        within_s: u64,
    },
    /// The coordinator cannot save its runs: nothing more may be acked.
    /// (The store's error, as text: the run store lives in the coordinator
    /// crate, above this one.)
    #[error("the coordinator cannot save its state: {0}")]
    Store(String),
}
