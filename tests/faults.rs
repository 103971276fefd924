//! Faults that need a broker of their own: restarts and dropped connections.
//! Each test starts a private RabbitMQ node on spare ports (never the shared
//! one), and they run one at a time so that two brokers do not starve a
//! two-core machine.

use std::sync::Mutex;
use std::time::Duration;

use conveyor_schemas::{FlowState, TaskState};

use crate::util::*;

static ONE_BROKER_AT_A_TIME: Mutex<()> = Mutex::new(());

enum Fault {
    GracefulRestart,
    KillAndRestart,
    CloseAllConnections,
}

/// Runs the colors flow across a worker node and a publisher while `fault`
/// hits the broker in the middle of the transform, then checks the promise:
/// the flow succeeds, the output holds exactly the expected rows, no temporary
/// file remains and the queues are drained.
fn flow_survives(test: &str, fault: Fault) {
    let _serial = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let broker = PrivateBroker::start(test);
    let url = broker.url();
    let dir = TestDir::new(test);
    let ns = "faults";
    let storage = dir.join("shared");
    let extra = "";
    let w = dir.write(
        "w.toml",
        &node_config_at(
            &url,
            "w",
            ns,
            &["extract", "transform", "load"],
            &storage,
            extra,
        ),
    );
    let worker = NodeProcess::start(
        &w,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=3000@transform")],
    );
    let client = dir.write(
        "client.toml",
        &node_config_at(
            &url,
            "client",
            ns,
            &[],
            &dir.join("client"),
            "[coordinator]\nworker_wait = \"60s\"\n",
        ),
    );
    let flow = colors_flow(&dir, test, "");
    let run = {
        let (cwd, flow, client) = (dir.path.clone(), flow.clone(), client.clone());
        std::thread::spawn(move || run_flow(&cwd, &flow, &["--config", client.to_str().unwrap()]))
    };
    worker.wait_for_line(&[".transform", "Task started"], Duration::from_secs(60));
    match fault {
        Fault::GracefulRestart => {
            broker.stop();
            broker.launch();
        }
        Fault::KillAndRestart => {
            broker.sigkill();
            broker.launch();
        }
        Fault::CloseAllConnections => broker.ctl(&["close_all_connections", "conveyor fault test"]),
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
    let written = std::fs::read_to_string(storage.join("out/colors.csv")).unwrap();
    assert_eq!(
        written,
        expected_colors_without_hex(),
        "rows lost or duplicated"
    );
    assert!(tmp_files(&storage).is_empty(), "{:?}", tmp_files(&storage));
    for kind in ["extract", "transform", "load"] {
        assert_eq!(
            queue_depth_at(&url, &format!("{ns}.tasks.{kind}")),
            0,
            "{kind} queue not drained"
        );
    }
    assert_eq!(queue_depth_at(&url, &format!("{ns}.dead")), 0);
    assert!(
        worker.log_text().contains("Reconnected to the broker"),
        "{}",
        worker.log_text()
    );
    let transform = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    println!(
        "fault {test}: result=ok flows_checked=1 duplicates=0 losses=0 transform_attempts={}",
        transform.attempts
    );
}

/// Runs the colors flow with the worker's link to the broker going through a
/// fault proxy, applies `fault` while the transform runs, and returns the
/// report after checking the promise.
fn flow_over_faulty_link(
    test: &str,
    fault: impl FnOnce(&FaultProxy),
) -> (conveyor_schemas::RunReport, String) {
    let _serial = ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let broker = PrivateBroker::start(test);
    let proxy = FaultProxy::start(broker.port);
    let via_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let dir = TestDir::new(test);
    let ns = "links";
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
        )
        .replace(
            "namespace = \"links\"",
            "namespace = \"links\"\nheartbeat = \"1s\"",
        ),
    );
    let worker = NodeProcess::start(
        &w,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=2000@transform")],
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
    let run = {
        let (cwd, flow, client) = (dir.path.clone(), flow.clone(), client.clone());
        std::thread::spawn(move || run_flow(&cwd, &flow, &["--config", client.to_str().unwrap()]))
    };
    worker.wait_for_line(&[".transform", "Task started"], Duration::from_secs(60));
    fault(&proxy);
    let (out, report) = run.join().unwrap();
    assert!(
        out.status.success(),
        "{}\nworker log:\n{}",
        describe(&out),
        worker.log_text()
    );
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    let written = std::fs::read_to_string(storage.join("out/colors.csv")).unwrap();
    assert_eq!(
        written,
        expected_colors_without_hex(),
        "rows lost or duplicated"
    );
    assert!(tmp_files(&storage).is_empty(), "{:?}", tmp_files(&storage));
    for kind in ["extract", "transform", "load"] {
        assert_eq!(
            queue_depth_at(&broker.url(), &format!("{ns}.tasks.{kind}")),
            0
        );
    }
    assert_eq!(queue_depth_at(&broker.url(), &format!("{ns}.dead")), 0);
    (report, worker.log_text())
}

#[test]
fn link_cut_without_reset_longer_than_two_heartbeats_then_healed() {
    let (report, log) = flow_over_faulty_link("link_cut", |proxy| {
        proxy.set(Link::Blackhole);
        std::thread::sleep(Duration::from_secs(5));
        proxy.set(Link::Pass);
    });
    // The cut outlasted two heartbeats: the worker noticed and reconnected.
    assert!(
        log.contains("no heartbeat received") && log.contains("Reconnected to the broker"),
        "{log}"
    );
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    println!(
        "fault link_cut: result=ok flows_checked=1 duplicates=0 losses=0 transform_attempts={}",
        t.attempts
    );
}

#[test]
fn short_latency_blip_causes_no_redelivery() {
    let (report, _) = flow_over_faulty_link("latency_blip", |proxy| {
        proxy.set(Link::Latency(Duration::from_millis(300)));
        std::thread::sleep(Duration::from_secs(2));
        proxy.set(Link::Pass);
    });
    assert!(
        report.tasks.iter().all(|t| t.attempts == 1),
        "a blip caused a redelivery: {report:?}"
    );
    println!("fault latency_blip: result=ok flows_checked=1 duplicates=0 losses=0");
}

#[test]
fn link_reset_mid_task() {
    let (report, log) = flow_over_faulty_link("link_reset", |proxy| proxy.reset_all());
    assert!(log.contains("Reconnected to the broker"), "{log}");
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    println!(
        "fault link_reset: result=ok flows_checked=1 duplicates=0 losses=0 transform_attempts={}",
        t.attempts
    );
}

#[test]
fn broker_graceful_restart_mid_flow() {
    flow_survives("broker_graceful_restart", Fault::GracefulRestart);
}

#[test]
#[ignore = "RabbitMQ 3.10.8: after a SIGKILL restart the idle `load` quorum queue never \
            elects a leader (broker log: 'leader not known'), so the broker nacks every \
            publish to it; see RELIABILITY.md. Run with --ignored."]
fn broker_sigkill_and_restart_mid_flow() {
    flow_survives("broker_sigkill_restart", Fault::KillAndRestart);
}

#[test]
fn broker_closes_all_connections_mid_flow() {
    flow_survives("broker_close_all_connections", Fault::CloseAllConnections);
}
