/*!
Failpoints for fault-injection tests, set with the `CONVEYOR_FAILPOINTS`
environment variable of a node: a comma-separated list of `ACTION@TASK`, where
ACTION is one of:
- on a worker: `panic`, `abort`, `sleep=MS` (before the task runs),
  `sleep-after-commit=MS` (after its output is committed, before the result is
  published) or `pause-mid-copy=MS` (a load into PostgreSQL pauses after its
  first batch reached the server: the data plane reads this one itself, see
  `conveyor_connectors::postgres::sink`);
- on a coordinator: `pause-before-publish=MS` (the dispatch of the task is
  saved in the database, its message not yet published) or
  `pause-after-publish=MS` (the broker confirmed the message; that it did is
  not yet saved). Fault tests SIGKILL the coordinator during the pause.

They exist only in builds with the cargo feature `failpoints`, which the
test script turns on (`cargo build -p conveyor-node --features failpoints`).
A release binary has none: it logs a warning and ignores the variable.

Example: `CONVEYOR_FAILPOINTS="sleep=3000@transform,panic@load"`.
*/

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Failpoints {
    #[cfg(any(test, feature = "failpoints"))]
    points: Vec<(Action, String)>,
}

#[cfg(any(test, feature = "failpoints"))]
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Panic,
    Abort,
    Sleep(Duration),
    SleepAfterCommit(Duration),
    PauseBeforePublish(Duration),
    PauseAfterPublish(Duration),
    /// Acted on by the PostgreSQL sink, which reads the variable itself.
    PauseMidCopy,
}

/// Where a coordinator may pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishPoint {
    Before,
    After,
}

pub const ENV: &str = "CONVEYOR_FAILPOINTS";

impl Failpoints {
    pub fn from_env() -> Failpoints {
        match std::env::var(ENV) {
            Ok(spec) if !spec.trim().is_empty() => Failpoints::from_spec(&spec),
            _ => Failpoints::default(),
        }
    }

    /// The failpoints `spec` arms, in a build that has them; none otherwise.
    pub fn from_spec(spec: &str) -> Failpoints {
        #[cfg(feature = "failpoints")]
        {
            Failpoints::parse(spec)
        }
        #[cfg(not(feature = "failpoints"))]
        {
            tracing::warn!(
                failpoints = spec,
                "{ENV} is set, but this binary was built without failpoints (cargo feature `failpoints`); ignoring it"
            );
            Failpoints::default()
        }
    }

    /// Whether any failpoint is armed.
    pub fn is_armed(&self) -> bool {
        #[cfg(any(test, feature = "failpoints"))]
        {
            !self.points.is_empty()
        }
        #[cfg(not(any(test, feature = "failpoints")))]
        {
            false
        }
    }

    #[cfg(any(test, feature = "failpoints"))]
    fn parse(spec: &str) -> Failpoints {
        let mut points = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((action, task)) = item.split_once('@') else {
                tracing::warn!(failpoint = item, "Ignoring a malformed failpoint");
                continue;
            };
            let ms = |s: &str| s.parse::<u64>().ok().map(Duration::from_millis);
            let action = match action.split_once('=') {
                None if action == "panic" => Some(Action::Panic),
                None if action == "abort" => Some(Action::Abort),
                Some(("sleep", v)) => ms(v).map(Action::Sleep),
                Some(("sleep-after-commit", v)) => ms(v).map(Action::SleepAfterCommit),
                Some(("pause-before-publish", v)) => ms(v).map(Action::PauseBeforePublish),
                Some(("pause-after-publish", v)) => ms(v).map(Action::PauseAfterPublish),
                Some(("pause-mid-copy", v)) => ms(v).map(|_| Action::PauseMidCopy),
                _ => None,
            };
            match action {
                Some(a) => points.push((a, task.to_string())),
                None => tracing::warn!(failpoint = item, "Ignoring an unknown failpoint"),
            }
        }
        if !points.is_empty() {
            tracing::warn!(
                failpoints = spec,
                "Failpoints are armed; this node will misbehave on purpose"
            );
        }
        Failpoints { points }
    }

    #[cfg(feature = "failpoints")]
    fn fire(&self, task: &str, after_commit: bool) {
        for (action, t) in &self.points {
            if t != task {
                continue;
            }
            match (action, after_commit) {
                (Action::Panic, false) => panic!("failpoint: panic in task {task}"),
                (Action::Abort, false) => std::process::abort(),
                (Action::Sleep(d), false) | (Action::SleepAfterCommit(d), true) => {
                    std::thread::sleep(*d)
                }
                _ => {}
            }
        }
    }

    #[cfg(not(feature = "failpoints"))]
    pub fn publish_pause(&self, _point: PublishPoint, _task: &str) -> Option<Duration> {
        None
    }

    /// How long a coordinator should pause at `point` when publishing `task`.
    /// Logs the pause, so that a test can kill the process during it.
    #[cfg(feature = "failpoints")]
    pub fn publish_pause(&self, point: PublishPoint, task: &str) -> Option<Duration> {
        let d = self
            .points
            .iter()
            .find_map(|(action, t)| match (action, point) {
                (Action::PauseBeforePublish(d), PublishPoint::Before)
                | (Action::PauseAfterPublish(d), PublishPoint::After)
                    if t == task =>
                {
                    Some(*d)
                }
                _ => None,
            })?;
        tracing::warn!(
            task,
            ?point,
            pause_ms = d.as_millis() as u64,
            "Failpoint: pausing at publish"
        );
        Some(d)
    }

    pub fn before_task(&self, _task: &str) {
        #[cfg(feature = "failpoints")]
        self.fire(_task, false);
    }

    pub fn after_commit(&self, _task: &str) {
        #[cfg(feature = "failpoints")]
        self.fire(_task, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without the feature (a release binary) arms nothing, whatever
    /// the environment says.
    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_build_without_the_feature_arms_no_failpoint() {
        let f = Failpoints::from_spec("panic@t,abort@e,sleep=10@l");
        assert!(!f.is_armed());
        assert_eq!(f.publish_pause(PublishPoint::Before, "t"), None);
        f.before_task("t");
        f.after_commit("t");
    }

    #[test]
    fn parses_actions_and_ignores_junk() {
        let f = Failpoints::parse("panic@t, sleep=20@e ,bogus, sleep-after-commit=5@l");
        assert_eq!(f.points.len(), 3);
        assert_eq!(
            f.points[1],
            (Action::Sleep(Duration::from_millis(20)), "e".into())
        );
    }
}
