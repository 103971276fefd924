/*!
[`IoTasks`]: the node's I/O runtime, with every task spawned on it tracked, so
that a graceful stop can wait for them (as mini-redis does).

Each spawned task holds a clone of one sender; [`AllDone`] holds its
receiver, which sees the channel close once the node and every task that
still held a clone are gone. Broker pumps end when the transport closes,
publishes when their confirm arrives, and workers when they drain.
*/

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Spawns on the I/O runtime and counts what runs there.
#[derive(Clone)]
pub struct IoTasks {
    handle: Handle,
    /// Held by every task and every clone; closed when all are gone.
    alive: mpsc::Sender<()>,
    running: Arc<AtomicUsize>,
}

/// Resolves once every [`IoTasks`] clone and every task it spawned is gone.
pub struct AllDone {
    closed: mpsc::Receiver<()>,
    running: Arc<AtomicUsize>,
}

/// Decrements the running count when a task ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoTasks {
    pub fn new(handle: Handle) -> (IoTasks, AllDone) {
        let (alive, closed) = mpsc::channel(1);
        let running = Arc::new(AtomicUsize::new(0));
        (
            IoTasks {
                handle,
                alive,
                running: running.clone(),
            },
            AllDone { closed, running },
        )
    }

    /// Spawns `future` on the I/O runtime, tracked.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let alive = self.alive.clone();
        self.running.fetch_add(1, Ordering::Relaxed);
        let running = Running(self.running.clone());
        self.handle.spawn(async move {
            let _alive = alive;
            let _running = running;
            future.await
        })
    }

    /// The runtime itself, for what must run there untracked (lapin).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl AllDone {
    /// Waits up to `within` for every task to end; returns how many still
    /// run (0: all ended).
    pub async fn wait(&mut self, within: Duration) -> usize {
        match tokio::time::timeout(within, self.closed.recv()).await {
            Ok(_) => 0,
            Err(_) => self.running.load(Ordering::Relaxed).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_waits_for_every_task_and_counts_stragglers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tasks, mut done) = IoTasks::new(rt.handle().clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = rx.await;
        });
        tasks.spawn(async {});
        drop(tasks);
        // One task still waits for `tx`.
        assert_eq!(rt.block_on(done.wait(Duration::from_millis(50))), 1);
        let _ = tx.send(());
        assert_eq!(rt.block_on(done.wait(Duration::from_secs(5))), 0);
    }
}
