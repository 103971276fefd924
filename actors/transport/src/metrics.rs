/*!
The process-wide Prometheus recorder, and the one metric every node has.

The code records through the `metrics` facade. A node that serves metrics
([`install`] at start: `[metrics] listen`, or a coordinator's API) installs
the Prometheus recorder of `metrics-exporter-prometheus`, and [`render`]
gives the text a scrape returns (the node binary's `scrape` listener serves
it). With no recorder installed, every handle is a no-op, so `conveyor run`
pays nothing.

Each role names and describes its own metrics
(`conveyor_worker::metrics`, `conveyor_coordinator::metrics`); the node
describes them right after [`install`].

| metric | type | labels | where |
|---|---|---|---|
| `conveyor_broker_reconnects_total` | counter | | every node |
*/

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const BROKER_RECONNECTS: &str = "conveyor_broker_reconnects_total";

/// Upper bounds of the buckets of every `*_duration_seconds` histogram, in
/// seconds: 10 ms to 1 h.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// How often the recorder drops what it no longer needs (histogram samples
/// between scrapes), so that a node nobody scrapes does not grow.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct InstallError(String);

static INSTALLED: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// The Prometheus recorder's settings: histogram buckets, and names as
/// written (counters already end in `_total`).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            &DURATION_BUCKETS,
        )
        .expect("the duration buckets are not empty")
}

/// Installs the Prometheus recorder for the whole process, describes the
/// metrics of this crate, and starts its upkeep. Call it before the node
/// starts its roles (and have each role describe its metrics): a handle
/// taken before is a no-op for good. Later calls return the same handle.
pub fn install() -> Result<&'static PrometheusHandle, InstallError> {
    INSTALLED
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| InstallError(e.to_string()))?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("conveyor-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .map_err(|e| InstallError(format!("cannot start its upkeep thread: {e}")))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The Prometheus text of every metric of this process, as a scrape of
/// `/metrics` returns it; `None` when no recorder was installed.
pub fn render() -> Option<String> {
    match INSTALLED.get() {
        Some(Ok(handle)) => Some(handle.render()),
        _ => None,
    }
}

/// Whether this process installed the recorder: what only metrics need
/// (a task's bytes) is skipped when not.
pub fn recording() -> bool {
    matches!(INSTALLED.get(), Some(Ok(_)))
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Describes the node-wide metrics, and registers them at zero so that they
/// are scraped before anything happens.
pub fn describe() {
    metrics::describe_counter!(
        BROKER_RECONNECTS,
        Unit::Count,
        "Times this node reconnected to the broker after losing its connection."
    );
    metrics::counter!(BROKER_RECONNECTS).increment(0);
}

/// Counts one reconnect to the broker.
pub fn broker_reconnected() {
    metrics::counter!(BROKER_RECONNECTS).increment(1);
}

/// What a role's metrics tests share: the text a recorder of its own
/// renders, and one series' sample in it. Not for production code.
#[doc(hidden)]
pub mod testing {
    use super::builder;

    /// The rendered text of what `record` does on a recorder of its own,
    /// with the node-wide metrics and `describe`'s described, while what
    /// `record` returns (an in-flight guard, say) is still held.
    pub fn rendered<T>(describe: impl FnOnce(), record: impl FnOnce() -> T) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        let held = metrics::with_local_recorder(&recorder, || {
            super::describe();
            describe();
            record()
        });
        let text = handle.render();
        drop(held);
        text
    }

    /// The value of `series` (name and labels, as rendered) in `text`.
    pub fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_reconnects_are_registered_at_zero_and_counted() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        assert!(handle
            .render()
            .contains("conveyor_broker_reconnects_total 0"));
        metrics::with_local_recorder(&recorder, broker_reconnected);
        let text = handle.render();
        assert!(
            text.contains("conveyor_broker_reconnects_total 1"),
            "{text}"
        );
        assert!(
            text.contains("# HELP conveyor_broker_reconnects_total Times this node"),
            "{text}"
        );
    }

    #[test]
    fn without_a_recorder_nothing_renders() {
        // This test binary never calls install().
        broker_reconnected();
        assert!(render().is_none());
        assert!(!recording());
    }
}
