/*!
The coordinator's metrics: their names and help text, and the handle the
actor holds. The recorder itself is `conveyor_transport::metrics`.

| metric | type | labels | where |
|---|---|---|---|
| `conveyor_runs_total` | counter | flow, state | coordinator |
| `conveyor_runs_active` | gauge | | coordinator |
| `conveyor_schedule_lag_seconds` | gauge | | coordinator |
*/

use std::time::Duration;

use conveyor_schemas::FlowState;
use metrics::{Gauge, Unit};

/// Runs that ended, by flow and final state.
pub const RUNS: &str = "conveyor_runs_total";
pub const RUNS_ACTIVE: &str = "conveyor_runs_active";
/// How late the coordinator fired the latest schedule slot.
pub const SCHEDULE_LAG: &str = "conveyor_schedule_lag_seconds";

/// Gives the coordinator's metrics their help text and unit.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        RUNS,
        Unit::Count,
        "Flow runs this coordinator saw end, by flow and final state."
    );
    describe_gauge!(
        RUNS_ACTIVE,
        Unit::Count,
        "Flow runs this coordinator holds in flight now."
    );
    describe_gauge!(
        SCHEDULE_LAG,
        Unit::Seconds,
        "How late the coordinator fired the latest schedule slot, in seconds."
    );
}

/// Sets how late the latest schedule slot fired.
pub fn set_schedule_lag(lag: Duration) {
    metrics::gauge!(SCHEDULE_LAG).set(lag.as_secs_f64());
}

/// A coordinator's metrics.
pub struct CoordinatorMetrics {
    active: Gauge,
}

impl CoordinatorMetrics {
    /// Registers the coordinator's gauges at zero.
    pub fn new() -> CoordinatorMetrics {
        let active = metrics::gauge!(RUNS_ACTIVE);
        active.set(0.0);
        metrics::gauge!(SCHEDULE_LAG).set(0.0);
        CoordinatorMetrics { active }
    }

    /// The runs held in flight now.
    pub fn active(&self, runs: usize) {
        self.active.set(runs as f64);
    }

    /// Counts a run of `flow` that ended in `state`.
    pub fn run_ended(&self, flow: &str, state: FlowState) {
        metrics::counter!(RUNS, "flow" => flow.to_string(), "state" => state.as_str()).increment(1);
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        CoordinatorMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_transport::metrics::broker_reconnected;
    use conveyor_transport::metrics::testing::sample;

    fn rendered<T>(record: impl FnOnce() -> T) -> String {
        conveyor_transport::metrics::testing::rendered(describe, record)
    }

    #[test]
    fn coordinator_metrics_count_runs_by_flow_and_state() {
        let text = rendered(|| {
            let coord = CoordinatorMetrics::new();
            coord.active(3);
            coord.run_ended("daily", FlowState::Succeeded);
            coord.run_ended("daily", FlowState::Succeeded);
            coord.run_ended("daily", FlowState::Failed);
            coord.run_ended("hourly", FlowState::Cancelled);
            coord.active(0);
            set_schedule_lag(Duration::from_millis(1500));
            broker_reconnected();
        });
        let s =
            |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(
            s(r#"conveyor_runs_total{flow="daily",state="Succeeded"}"#),
            "2"
        );
        assert_eq!(
            s(r#"conveyor_runs_total{flow="daily",state="Failed"}"#),
            "1"
        );
        assert_eq!(
            s(r#"conveyor_runs_total{flow="hourly",state="Cancelled"}"#),
            "1"
        );
        assert_eq!(s("conveyor_runs_active"), "0");
        assert_eq!(s("conveyor_schedule_lag_seconds"), "1.5");
        assert_eq!(s("conveyor_broker_reconnects_total"), "1");
        assert!(text.contains("# TYPE conveyor_runs_active gauge"), "{text}");
        assert!(
            text.contains("# HELP conveyor_schedule_lag_seconds How late"),
            "{text}"
        );
    }
}
