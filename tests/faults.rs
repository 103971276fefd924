//! Faults that need a broker of their own: restarts, dropped connections and
//! bad links. Each test starts a private RabbitMQ node on spare ports (never
//! the shared one), and they run one at a time so that two brokers do not
//! starve a two-core machine.

use std::sync::Mutex;
use std::time::Duration;

use conveyor_schemas::{FlowState, RunReport, TaskState};

use crate::harness::{
    colors::*, configs::*, fault_proxy::*, private_broker::*, processes::*, workdir::*,
};

pub(crate) static ONE_BROKER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What strikes while the transform runs.
enum Fault {
    BrokerGracefulRestart,
    BrokerKillAndRestart,
    BrokerClosesAllConnections,
    /// The worker's link goes silent, without a reset, for this long.
    LinkCut(Duration),
    LinkReset,
    /// Every chunk on the worker's link is delayed, for a while.
    LatencyBlip {
        delay: Duration,
        during: Duration,
    },
}

/// Runs the colors flow with a worker node (reaching the broker through a
/// fault proxy, AMQP heartbeat 1 s) and a publisher, applies `fault` while
/// the transform runs, and checks the promise: the flow succeeds with the
/// exact output, no temporary file and drained queues. Returns the report and
/// the worker's log.
fn colors_flow_under(test: &str, fault: Fault) -> (RunReport, String) {
    let _serial = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let broker = PrivateBroker::start(test);
    let proxy = FaultProxy::start(broker.port);
    let via_proxy = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=1",
        proxy.port
    );
    let dir = TestDir::new(test);
    let ns = "faults";
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config_at(
            &via_proxy,
            "w",
            ns,
            &["extract", "transform", "load"],
            &storage,
            "",
        ),
    );
    // The transform must still be running when the fault lands. A broker
    // stop or restart goes through `rabbitmqctl`, whose Erlang VM alone can
    // take seconds to start on a loaded two-core machine, so those faults get
    // a longer transform than the proxy faults, which strike at once.
    let transform_ms = match fault {
        Fault::BrokerGracefulRestart
        | Fault::BrokerKillAndRestart
        | Fault::BrokerClosesAllConnections => 10_000,
        _ => 2_000,
    };
    let failpoints = format!("sleep={transform_ms}@transform");
    let worker = NodeProcess::start(
        &w,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", failpoints.as_str())],
    );
    let client = dir.write(
        "client.toml",
        &node_config_at(
            &broker.url(),
            "client",
            ns,
            &[],
            &dir.join("client"),
            "[coordinator]\nworker_wait = \"60s\"\n",
        ),
    );
    let flow = colors_flow(&dir, test, "");
    let run = run_flow_in_background(&dir.path, &flow, &client);
    worker.wait_for_line(&[".transform", "Task started"], Duration::from_secs(60));
    match fault {
        Fault::BrokerGracefulRestart => {
            broker.stop();
            broker.launch();
        }
        Fault::BrokerKillAndRestart => {
            broker.sigkill();
            broker.launch();
        }
        Fault::BrokerClosesAllConnections => {
            broker.ctl(&["close_all_connections", "conveyor fault test"])
        }
        Fault::LinkCut(length) => {
            proxy.set(Link::Blackhole);
            std::thread::sleep(length);
            proxy.set(Link::Pass);
        }
        Fault::LinkReset => proxy.reset_all(),
        Fault::LatencyBlip { delay, during } => {
            proxy.set(Link::Latency(delay));
            std::thread::sleep(during);
            proxy.set(Link::Pass);
        }
    }
    let (out, report) = run.join().unwrap();
    assert!(
        out.status.success(),
        "{}\nworker log:\n{}",
        describe(&out),
        worker.log_text()
    );
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    assert!(
        report
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded && t.rows_out == Some(148)),
        "{report:?}"
    );
    assert_colors_promise(&broker.url(), ns, &storage);
    let transform = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    println!(
        "fault {test}: result=ok flows_checked=1 duplicates=0 losses=0 transform_attempts={}",
        transform.attempts
    );
    (report, worker.log_text())
}

fn assert_reconnected(log: &str) {
    assert!(
        log.contains("Reconnected to the broker"),
        "the fault never reached the worker:\n{log}"
    );
}

#[test]
fn broker_graceful_restart_mid_flow() {
    let (_, log) = colors_flow_under("broker_graceful_restart", Fault::BrokerGracefulRestart);
    assert_reconnected(&log);
}

#[test]
#[ignore = "RabbitMQ 3.10.8: after a SIGKILL restart the idle `load` quorum queue never \
            elects a leader (broker log: 'leader not known'), so the broker nacks every \
            publish to it; see RELIABILITY.md. Run with --ignored."]
fn broker_sigkill_and_restart_mid_flow() {
    let (_, log) = colors_flow_under("broker_sigkill_restart", Fault::BrokerKillAndRestart);
    assert_reconnected(&log);
}

#[test]
fn broker_closes_all_connections_mid_flow() {
    let (_, log) = colors_flow_under(
        "broker_close_all_connections",
        Fault::BrokerClosesAllConnections,
    );
    assert_reconnected(&log);
}

#[test]
fn link_cut_without_reset_longer_than_two_heartbeats_then_healed() {
    let (_, log) = colors_flow_under("link_cut", Fault::LinkCut(Duration::from_secs(5)));
    // The cut outlasted two heartbeats: the worker noticed and reconnected.
    assert!(log.contains("no heartbeat received"), "{log}");
    assert_reconnected(&log);
}

#[test]
fn link_reset_mid_task() {
    let (_, log) = colors_flow_under("link_reset", Fault::LinkReset);
    assert_reconnected(&log);
}

#[test]
fn short_latency_blip_causes_no_redelivery() {
    let blip = Fault::LatencyBlip {
        delay: Duration::from_millis(300),
        during: Duration::from_secs(2),
    };
    let (report, log) = colors_flow_under("latency_blip", blip);
    assert!(
        report.tasks.iter().all(|t| t.attempts == 1),
        "a blip caused a redelivery: {report:?}"
    );
    assert!(
        !log.contains("Reconnected"),
        "a blip dropped the connection:\n{log}"
    );
}
