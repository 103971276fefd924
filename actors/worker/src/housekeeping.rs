/*!
A worker node's artifact housekeeping: what happens to a run's artifacts on
this node once the run ends, and the sweep of expired runs.
*/

use std::sync::Arc;
use std::time::Duration;

use conveyor_etl::store::ArtifactStore;
use conveyor_schemas::RunFinished;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cancel::RunCancels;

/// How often a worker node sweeps its store for expired runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// A succeeded run's artifacts are deleted once the node has heard of no
/// succeeded run ending for this long (a burst of runs is over)...
const DELETE_WHEN_QUIET: Duration = Duration::from_secs(1);
/// ...or once the oldest deletion has waited this long, on a node that
/// never goes quiet.
const DELETE_WITHIN: Duration = Duration::from_secs(30);

/// A worker node's artifact housekeeping: a run that ended is cleaned up
/// (a succeeded one's artifacts deleted, a failed or cancelled one's kept
/// for a retry, and its attempts on this node stopped), and expired runs
/// are swept at start and hourly. File work runs on the blocking pool.
///
/// A failed run is marked, and its attempts stopped, at once. Succeeded
/// runs are deleted in batches, after a burst of runs or within
/// [`DELETE_WITHIN`], and on shutdown: deleting files while new ones are
/// created costs every create on some filesystems (ext4 without a journal
/// skips the inodes freed in the last minute), and nothing waits on a
/// deletion. A node killed before its batch leaves those runs to the sweep.
pub async fn housekeeping(
    store: Arc<dyn ArtifactStore>,
    cancels: RunCancels,
    mut runs_finished: Option<mpsc::Receiver<RunFinished>>,
    keep_failed: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let sweep = |store: Arc<dyn ArtifactStore>| async move {
        match tokio::task::spawn_blocking(move || store.sweep_runs(keep_failed)).await {
            Ok(Ok(gone)) if !gone.is_empty() => {
                info!(runs = gone.len(), keep_failed = %humantime::format_duration(keep_failed), "Removed the artifacts of expired runs")
            }
            Ok(Err(e)) => warn!(error = %e, "Cannot sweep the artifact store"),
            _ => {}
        }
    };
    let delete = |store: Arc<dyn ArtifactStore>, runs: Vec<String>| async move {
        let done = tokio::task::spawn_blocking(move || {
            runs.into_iter()
                .map(|run| {
                    let result = store.run_finished(&run, true);
                    (run, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        for (run, result) in done.unwrap_or_default() {
            match result {
                Ok(()) => info!(flow_run = %run, "Removed the artifacts of a succeeded run"),
                Err(e) => {
                    warn!(flow_run = %run, error = %e, "Cannot clean up a finished run's artifacts")
                }
            }
        }
    };
    sweep(store.clone()).await;
    let mut hourly =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    // Succeeded runs waiting for deletion, and when the batch is due.
    let mut succeeded: Vec<String> = Vec::new();
    let mut due = tokio::time::Instant::now();
    let mut oldest = tokio::time::Instant::now();
    loop {
        let next_run = async {
            match runs_finished.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopping.changed() => break,
            _ = tokio::time::sleep_until(due), if !succeeded.is_empty() => {
                delete(store.clone(), std::mem::take(&mut succeeded)).await;
            }
            ev = next_run => {
                // The transport closed: the node is stopping.
                let Some(ev) = ev else { break };
                if ev.state == conveyor_schemas::FlowState::Succeeded {
                    let now = tokio::time::Instant::now();
                    if succeeded.is_empty() {
                        oldest = now;
                    }
                    succeeded.push(ev.flow_run);
                    due = (now + DELETE_WHEN_QUIET).min(oldest + DELETE_WITHIN);
                    continue;
                }
                // Before the file work: the attempts stop at once.
                let stopped = cancels.run_ended(&ev.flow_run);
                if stopped > 0 {
                    info!(flow_run = %ev.flow_run, state = %ev.state, attempts = stopped, "Run ended; stopping its attempts on this node");
                }
                let (s, run) = (store.clone(), ev.flow_run.clone());
                match tokio::task::spawn_blocking(move || s.run_finished(&run, false)).await {
                    Ok(Ok(())) => info!(flow_run = %ev.flow_run, keep_failed = %humantime::format_duration(keep_failed), "Keeping the artifacts of a run that did not succeed, for a retry"),
                    Ok(Err(e)) => warn!(flow_run = %ev.flow_run, error = %e, "Cannot clean up a finished run's artifacts"),
                    Err(_) => {}
                }
            }
            _ = hourly.tick() => sweep(store.clone()).await,
        }
    }
    // Stopping: the ends already heard of, and not yet handled, count too.
    if let Some(rx) = runs_finished.as_mut() {
        while let Ok(ev) = rx.try_recv() {
            if ev.state == conveyor_schemas::FlowState::Succeeded {
                succeeded.push(ev.flow_run);
            }
        }
    }
    delete(store, succeeded).await;
}
