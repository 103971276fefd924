/*!
A worker node's view of runs that ended: the cancel flags of the attempts it
runs, and the runs it heard end.

When the coordinator announces that a run ended without succeeding
(`RunFinished` on the events exchange: cancelled, or failed), the node
raises the flag of every attempt of that run it holds ([`RunCancels::run_ended`]).
An attempt sees its flag between batches (`conveyor_etl::Attempt::cancel`)
and before it commits; the worker stops waiting for it at once
([`CancelFlag::raised`]). A task message of a run the node knows ended is
acked without starting ([`RunCancels::has_ended`]). The set of ended runs is
bounded and its entries expire: a message older than that is rare, and its
late result is fenced by the coordinator anyway.
*/

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Most ended runs remembered at once.
const MAX_ENDED: usize = 10_000;
/// How long an ended run is remembered.
const ENDED_FOR: Duration = Duration::from_secs(3600);

/// One attempt's cancel flag: read by the blocking work, awaited by the worker.
#[derive(Default)]
pub struct CancelFlag {
    flag: AtomicBool,
    notify: Notify,
}

impl CancelFlag {
    /// The flag the blocking work checks between batches.
    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    pub fn is_raised(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the flag is raised.
    pub async fn raised(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Flags of the attempts running now, by flow run.
    running: HashMap<String, Vec<(u64, Arc<CancelFlag>)>>,
    next_id: u64,
    /// Runs heard to end, oldest first, with when.
    ended: VecDeque<(String, Instant)>,
    ended_set: HashMap<String, Instant>,
}

/// Shared by a node's workers and its housekeeping.
#[derive(Clone, Default)]
pub struct RunCancels {
    inner: Arc<Mutex<Inner>>,
}

/// Removes its attempt's flag when the attempt is settled.
pub struct Registered {
    cancels: RunCancels,
    flow_run: String,
    id: u64,
    pub flag: Arc<CancelFlag>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.cancels.lock();
        if let Some(flags) = inner.running.get_mut(&self.flow_run) {
            flags.retain(|(id, _)| *id != self.id);
            if flags.is_empty() {
                inner.running.remove(&self.flow_run);
            }
        }
    }
}

impl RunCancels {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A flag for an attempt of `flow_run`, raised at once if the run
    /// already ended.
    pub fn register(&self, flow_run: &str) -> Registered {
        let mut inner = self.lock();
        let flag = Arc::new(CancelFlag::default());
        if inner.ended_set.contains_key(flow_run) {
            flag.raise();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .running
            .entry(flow_run.to_string())
            .or_default()
            .push((id, flag.clone()));
        Registered {
            cancels: self.clone(),
            flow_run: flow_run.to_string(),
            id,
            flag,
        }
    }

    /// Whether the node heard `flow_run` end (within the memory's bounds).
    pub fn has_ended(&self, flow_run: &str) -> bool {
        self.lock().ended_set.contains_key(flow_run)
    }

    /// `flow_run` ended without succeeding: raises the flags of its running
    /// attempts and remembers it. Returns how many attempts it stopped.
    pub fn run_ended(&self, flow_run: &str) -> usize {
        self.run_ended_at(flow_run, Instant::now())
    }

    fn run_ended_at(&self, flow_run: &str, now: Instant) -> usize {
        let mut inner = self.lock();
        while let Some((run, at)) = inner.ended.front().cloned() {
            if inner.ended.len() < MAX_ENDED && now.duration_since(at) < ENDED_FOR {
                break;
            }
            inner.ended.pop_front();
            if inner.ended_set.get(&run) == Some(&at) {
                inner.ended_set.remove(&run);
            }
        }
        if inner.ended_set.insert(flow_run.to_string(), now).is_none() {
            inner.ended.push_back((flow_run.to_string(), now));
        }
        let flags = inner.running.get(flow_run).cloned().unwrap_or_default();
        for (_, flag) in &flags {
            flag.raise();
        }
        flags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_run_raises_its_attempts_flags_and_only_theirs() {
        let cancels = RunCancels::default();
        let a = cancels.register("r1");
        let b = cancels.register("r2");
        assert_eq!(cancels.run_ended("r1"), 1);
        assert!(a.flag.is_raised() && !b.flag.is_raised());
        assert!(cancels.has_ended("r1") && !cancels.has_ended("r2"));
        // An attempt of a run already ended starts raised.
        assert!(cancels.register("r1").flag.is_raised());
        drop(a);
        assert_eq!(cancels.run_ended("r1"), 0, "a settled attempt is gone");
    }

    #[test]
    fn ended_runs_are_bounded_and_expire() {
        let cancels = RunCancels::default();
        let t0 = Instant::now();
        for i in 0..MAX_ENDED + 5 {
            cancels.run_ended_at(&format!("r{i}"), t0);
        }
        assert!(!cancels.has_ended("r0"), "the oldest went");
        assert!(cancels.has_ended(&format!("r{}", MAX_ENDED + 4)));
        assert!(cancels.lock().ended.len() <= MAX_ENDED);
        cancels.run_ended_at("late", t0 + ENDED_FOR + Duration::from_secs(1));
        assert_eq!(cancels.lock().ended.len(), 1, "every older one expired");
    }

    #[tokio::test]
    async fn raised_wakes_a_waiter() {
        let cancels = RunCancels::default();
        let a = cancels.register("r1");
        let flag = a.flag.clone();
        let waiter = tokio::spawn(async move { flag.raised().await });
        tokio::task::yield_now().await;
        cancels.run_ended("r1");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
