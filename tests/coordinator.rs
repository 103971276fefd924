//! The durable coordinator node: flows submitted with `conveyor run --submit`,
//! and scenario (c), a coordinator SIGKILLed with tasks in flight, in both
//! ambiguous orderings of "state saved" and "task published".

use std::path::PathBuf;
use std::time::Duration;

use conveyor_schemas::{FlowState, TaskState};

use crate::util::*;

struct Cluster {
    dir: TestDir,
    ns: Namespace,
    storage: PathBuf,
    coord_cfg: PathBuf,
    client_cfg: PathBuf,
    _worker: NodeProcess,
}

/// One all-kinds worker node, and configs for a coordinator node (with its
/// database in the test directory) and for a client.
fn cluster(test: &str) -> Cluster {
    cluster_with(test, &["extract", "transform", "load"])
}

fn cluster_with(test: &str, kinds: &[&str]) -> Cluster {
    let dir = TestDir::new(test);
    let ns = namespace(test);
    let storage = dir.join("shared");
    let w_cfg = dir.write("w.toml", &node_config("w", &ns, kinds, &storage, ""));
    let worker = NodeProcess::start(
        &w_cfg,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=1500@extract")],
    );
    let db = dir.join("coord-state/coordinator.db");
    let coord_cfg = dir.write(
        "coord.toml",
        &node_config(
            "coord",
            &ns,
            &[],
            &storage,
            &format!(
                "[coordinator]\nworker_wait = \"30s\"\ndb = \"{}\"\n",
                db.display()
            ),
        ),
    );
    let client_cfg = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    Cluster {
        dir,
        ns,
        storage,
        coord_cfg,
        client_cfg,
        _worker: worker,
    }
}

#[test]
fn a_flow_submitted_to_a_coordinator_node_runs_there() {
    let c = cluster("submit_basic");
    let coord = NodeProcess::start_coordinator(&c.coord_cfg, &c.dir.join("coord.log"), &[]);
    let flow = colors_flow(&c.dir, "colors", "");
    let client = c.client_cfg.to_str().unwrap();
    let (out, report) = run_flow(&c.dir.path, &flow, &["--config", client, "--submit"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    assert!(report.tasks.iter().all(|t| t.state == TaskState::Succeeded));
    assert!(
        coord.log_text().contains(&report.flow_run),
        "the coordinator node did not hold the run:\n{}",
        coord.log_text()
    );
    assert_colors_promise(&amqp_url(), &c.ns, &c.storage);

    // --detach returns the run id at once; the coordinator finishes the run.
    std::fs::remove_file(c.storage.join("out/colors.csv")).unwrap();
    let flow2 = colors_flow(&c.dir, "colors2", "");
    let mut cmd = std::process::Command::new(conveyor_bin());
    cmd.current_dir(&c.dir.path)
        .args(["run", flow2.to_str().unwrap(), "--config", client])
        .args(["--submit", "--detach"]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(run_id.starts_with("colors2-"), "{run_id:?}");
    coord.wait_for_line(
        &["Flow finished", &run_id, "Succeeded"],
        Duration::from_secs(60),
    );
    assert_colors_promise(&amqp_url(), &c.ns, &c.storage);
}

#[test]
fn a_submission_no_coordinator_takes_fails_with_a_clear_error() {
    let c = cluster("submit_nobody");
    let flow = colors_flow(&c.dir, "colors", "");
    let client = c.client_cfg.to_str().unwrap();
    let (out, _) = run_flow(
        &c.dir.path,
        &flow,
        &["--config", client, "--submit", "--accept-timeout", "1s"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    assert!(
        err.contains("no coordinator accepted the flow within 1s") && err.contains(&*c.ns),
        "{err}"
    );
    // The expired submission must not run when a coordinator starts later.
    let coord = NodeProcess::start_coordinator(&c.coord_cfg, &c.dir.join("coord.log"), &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !coord.log_text().contains("Flow submitted"),
        "{}",
        coord.log_text()
    );
    assert!(!c.storage.join("out/colors.csv").exists());
}

#[test]
fn a_second_coordinator_on_the_same_database_is_refused() {
    let c = cluster("coord_db_lock");
    let _first = NodeProcess::start_coordinator(&c.coord_cfg, &c.dir.join("c1.log"), &[]);
    let mut cmd = std::process::Command::new(conveyor_bin());
    cmd.args(["node", "--config", c.coord_cfg.to_str().unwrap()])
        .env("CONVEYOR_LOG", "error");
    let out = output_within(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    assert!(
        err.contains("coordinator.db") && err.contains("in use by another coordinator"),
        "{err}"
    );
}

/// Scenario (c), first ordering: the coordinator saved the transform's
/// dispatch and is SIGKILLed before publishing it. The new coordinator
/// process publishes it from the database.
#[test]
fn coordinator_killed_after_saving_a_dispatch_before_publishing_it() {
    let test = "coord_kill_before_publish";
    let c = cluster(test);
    let mut coord = NodeProcess::start_coordinator(
        &c.coord_cfg,
        &c.dir.join("coord-1.log"),
        &[(
            "CONVEYOR_FAILPOINTS",
            "pause-before-publish=60000@transform",
        )],
    );
    let flow = colors_flow(&c.dir, test, "");
    let client = c.client_cfg.to_str().unwrap();
    let run = run_flow_args_in_background(&c.dir.path, &flow, &["--config", client, "--submit"]);
    coord.wait_for_line(
        &["pausing at publish", "transform"],
        Duration::from_secs(60),
    );
    coord.sigkill();
    let restarted = NodeProcess::start_coordinator(&c.coord_cfg, &c.dir.join("coord-2.log"), &[]);
    let report = finished_once(&c, run);
    let log = restarted.log_text();
    assert!(
        log.contains("Resuming a flow run saved before the restart")
            && log.contains("Publishing again an attempt saved as dispatched"),
        "{log}"
    );
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(t.attempts, 1, "{t:?}");
    println!("fault {test}: result=ok flows_checked=1 duplicates=0 losses=0");
}

/// Scenario (c), second ordering: the broker confirmed the transform's
/// message, and the coordinator is SIGKILLed before saving that it did. The
/// transform worker is stopped meanwhile, so nothing else records the
/// publish: the new coordinator process publishes the same attempt again,
/// and the worker answers the duplicate delivery from its commit marker.
#[test]
fn coordinator_killed_after_publishing_before_saving_that_it_did() {
    let test = "coord_kill_after_publish";
    let c = cluster_with(test, &["extract", "load"]);
    // A transform-only worker, taking one task at a time, whose slow
    // heartbeat keeps it live for 6 s while it is stopped.
    let t_cfg = node_config(
        "wt",
        &c.ns,
        &["transform"],
        &c.storage,
        "[workers.concurrency]\ntransform = 1\n",
    )
    .replace("heartbeat = \"200ms\"", "heartbeat = \"2s\"");
    let t_cfg = c.dir.write("wt.toml", &t_cfg);
    let transform_worker = NodeProcess::start(&t_cfg, &c.dir.join("wt.log"), &[]);
    let mut coord = NodeProcess::start_coordinator(
        &c.coord_cfg,
        &c.dir.join("coord-1.log"),
        &[("CONVEYOR_FAILPOINTS", "pause-after-publish=60000@transform")],
    );
    // Let the new coordinator hear one heartbeat of the transform worker.
    std::thread::sleep(Duration::from_millis(2500));
    let flow = colors_flow(&c.dir, test, "");
    let client = c.client_cfg.to_str().unwrap();
    let run = run_flow_args_in_background(&c.dir.path, &flow, &["--config", client, "--submit"]);
    // The extract sleeps 1.5 s on the other worker: stop the transform worker
    // before the transform is published.
    coord.wait_for_line(&["Dispatching task", ".extract"], Duration::from_secs(60));
    signal(&transform_worker, "-STOP");
    coord.wait_for_line(
        &["pausing at publish", "transform"],
        Duration::from_secs(60),
    );
    coord.sigkill();
    let restarted = NodeProcess::start_coordinator(&c.coord_cfg, &c.dir.join("coord-2.log"), &[]);
    restarted.wait_for_log(
        "Publishing again an attempt saved as dispatched",
        Duration::from_secs(30),
    );
    signal(&transform_worker, "-CONT");
    let report = finished_once(&c, run);
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(t.node.as_deref(), Some("wt"), "{t:?}");
    transform_worker.wait_for_log(
        "Duplicate delivery of a committed task",
        Duration::from_secs(30),
    );
    println!("fault {test}: result=ok flows_checked=1 duplicates=0 losses=0 duplicate_deliveries_fenced=1");
}

fn signal(node: &NodeProcess, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Waits for the client of a submitted flow, and checks the promise.
fn finished_once(
    c: &Cluster,
    run: std::thread::JoinHandle<(std::process::Output, Option<conveyor_schemas::RunReport>)>,
) -> conveyor_schemas::RunReport {
    let (out, report) = run.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded, "{report:?}");
    assert_colors_promise(&amqp_url(), &c.ns, &c.storage);
    report
}
