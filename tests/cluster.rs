//! Real `conveyor node` processes on a real RabbitMQ, one namespace per test.

use std::time::{Duration, Instant};

use conveyor_schemas::{ErrorKind, FlowState, TaskKind, TaskState};

use crate::harness::{broker::*, colors::*, configs::*, processes::*, workdir::*};

fn client_config(dir: &TestDir, ns: &str, extra: &str) -> std::path::PathBuf {
    dir.write(
        "client.toml",
        &node_config("client", ns, &[], &dir.join("client"), extra),
    )
}

#[test]
fn one_worker_node_runs_all_kinds_with_output_identical_to_embedded() {
    let dir = TestDir::new("cluster_all_kinds");
    let ns = namespace("allkinds");
    let storage = dir.join("shared");
    let cfg = dir.write(
        "w1.toml",
        &node_config("w1", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let _w1 = NodeProcess::start(&cfg, &dir.join("w1.log"), &[]);
    let flow = colors_flow(&dir, "colors", "");
    let client = client_config(&dir, &ns, "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    for t in &report.tasks {
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(t.node.as_deref(), Some("w1"), "{t:?}");
        assert_eq!(t.rows_out, Some(148));
    }
    let clustered = std::fs::read(storage.join("out/colors.csv")).unwrap();
    // The same flow embedded writes the same bytes.
    let embedded_dir = TestDir::new("cluster_all_kinds_embedded");
    let (out, _) = run_flow(&embedded_dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let embedded = std::fs::read(embedded_dir.join("out/colors.csv")).unwrap();
    assert_eq!(clustered, embedded);
    assert_eq!(
        String::from_utf8(clustered).unwrap(),
        expected_colors_without_hex()
    );
    for kind in TaskKind::ALL {
        assert_eq!(queue_depth(&names_of(&ns).task_queue(kind)), 0);
    }
    assert_eq!(queue_depth(&names_of(&ns).dead_letter_queue()), 0);
}

#[test]
fn extract_on_one_node_transform_and_load_on_another() {
    let dir = TestDir::new("cluster_split");
    let ns = namespace("split");
    // The two nodes share the artifact store (a shared disk in production).
    let storage = dir.join("shared");
    let a = dir.write(
        "a.toml",
        &node_config("node-a", &ns, &["extract"], &storage, ""),
    );
    let b = dir.write(
        "b.toml",
        &node_config("node-b", &ns, &["transform", "load"], &storage, ""),
    );
    let _a = NodeProcess::start(&a, &dir.join("a.log"), &[]);
    let _b = NodeProcess::start(&b, &dir.join("b.log"), &[]);
    let flow = colors_flow(&dir, "split", "");
    let client = client_config(&dir, &ns, "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    let node_of = |name: &str| {
        report
            .tasks
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .node
            .clone()
    };
    assert_eq!(node_of("extract").as_deref(), Some("node-a"));
    assert_eq!(node_of("transform").as_deref(), Some("node-b"));
    assert_eq!(node_of("load").as_deref(), Some("node-b"));
    let written = std::fs::read_to_string(storage.join("out/colors.csv")).unwrap();
    assert_eq!(written, expected_colors_without_hex());
}

#[test]
fn a_missing_transform_worker_fails_the_flow_within_the_wait_naming_transform() {
    let dir = TestDir::new("cluster_missing_kind");
    let ns = namespace("missing");
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "load"], &storage, ""),
    );
    let _w = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    let flow = colors_flow(&dir, "missing", "");
    let client = client_config(&dir, &ns, "[coordinator]\nworker_wait = \"2s\"\n");
    let started = Instant::now();
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Failed);
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.error.as_ref().unwrap().kind, ErrorKind::NoWorker);
    let error = report.error.unwrap();
    assert!(error.contains("`transform`"), "{error}");
    // Bounded by the wait, not hanging: generous slack for a loaded machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Nothing was published for the missing kind, so nothing is left to run later.
    assert_eq!(
        queue_depth(&names_of(&ns).task_queue(TaskKind::Transform)),
        0
    );
}

/// Two all-kinds worker nodes share storage. node-a runs with `failpoint`
/// and is SIGKILLed as soon as `before_kill` returns; node-b then starts and
/// takes over. Checks that the flow succeeded once, with the transform ending
/// on node-b at its second delivery, and returns the report and what
/// `before_kill` returned.
fn worker_replaced_after_kill<T>(
    test: &str,
    failpoint: &str,
    before_kill: impl FnOnce(&NodeProcess, &std::path::Path) -> T,
) -> (conveyor_schemas::RunReport, T) {
    let dir = TestDir::new(test);
    let ns = namespace(test);
    let storage = dir.join("shared");
    let kinds = ["extract", "transform", "load"];
    let a_cfg = dir.write("a.toml", &node_config("node-a", &ns, &kinds, &storage, ""));
    let b_cfg = dir.write("b.toml", &node_config("node-b", &ns, &kinds, &storage, ""));
    let mut a = NodeProcess::start(
        &a_cfg,
        &dir.join("a.log"),
        &[("CONVEYOR_FAILPOINTS", failpoint)],
    );
    let flow = colors_flow(&dir, test, "");
    let client = client_config(&dir, &ns, "");
    let run = run_flow_in_background(&dir.path, &flow, &client);
    a.wait_for_line(&[".transform", "Task started"], Duration::from_secs(30));
    let seen = before_kill(&a, &storage);
    a.sigkill();
    let _b = NodeProcess::start(&b_cfg, &dir.join("b.log"), &[]);
    let (out, report) = run.join().unwrap();
    let report = succeeded_with_transform_twice_ending_on_b(&out, report);
    // Exactly once: the rows, no duplicates, no leftovers.
    assert_colors_promise(&amqp_url(), &ns, &storage);
    (report, seen)
}

/// The flow succeeded, and its transform took two attempts (a killed or
/// timed-out delivery counts), the second on node-b.
fn succeeded_with_transform_twice_ending_on_b(
    out: &std::process::Output,
    report: Option<conveyor_schemas::RunReport>,
) -> conveyor_schemas::RunReport {
    assert!(out.status.success(), "{}", describe(out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(t.node.as_deref(), Some("node-b"), "{t:?}");
    assert_eq!(t.attempts, 2, "{t:?}");
    report
}

#[test]
fn a_worker_killed_mid_task_is_replaced_and_the_flow_completes_once() {
    // node-a stalls inside the transform long enough to be killed there.
    let (report, ()) =
        worker_replaced_after_kill("kill_mid_task", "sleep=60000@transform", |_, _| {
            std::thread::sleep(Duration::from_millis(300));
        });
    let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
    assert_eq!(load.attempts, 1, "{load:?}");
}

#[test]
fn a_node_stops_gracefully_on_sigterm() {
    let dir = TestDir::new("cluster_sigterm");
    let ns = namespace("term");
    // Every role: a graceful stop of each is quiet (issue 10, item 13).
    let cfg = dir.write(
        "w.toml",
        &node_config(
            "w",
            &ns,
            &["extract"],
            &dir.join("s"),
            &format!("[coordinator]\ndb = \"{}\"\n", dir.join("c.db").display()),
        ),
    );
    let mut w = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    let status = w
        .sigterm_and_wait(Duration::from_secs(20))
        .expect("node did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", w.log_text());
    let log = w.log_text();
    assert!(
        log.contains("SIGTERM received") && log.contains("Node stopped"),
        "{log}"
    );
    assert!(
        !log.contains("connection lost") && !log.contains("still running"),
        "a graceful stop is not a lost connection:\n{log}"
    );
}

/// Under systemd (`Type=notify`) the manager learns from the node itself that
/// it is ready (`NodeProcess::start` waits for that) and that it is stopping.
#[test]
fn a_node_notifies_its_service_manager_that_it_stops() {
    let dir = TestDir::new("cluster_notify_stopping");
    let ns = namespace("notify");
    let cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "load"], &dir.join("s"), ""),
    );
    let mut w = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    w.sigterm_and_wait(Duration::from_secs(20))
        .expect("node did not exit after SIGTERM");
    w.wait_for_notify("STOPPING=1", Duration::from_secs(5));
}

#[test]
fn a_poison_task_is_dead_lettered_without_hurting_other_flows() {
    let dir = TestDir::new("cluster_poison");
    let ns = namespace("poison");
    let storage = dir.join("shared");
    let extra = "";
    let w = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, extra),
    );
    let mut w = NodeProcess::start(
        &w,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "panic@poisoned")],
    );
    let client = client_config(&dir, &ns, "");
    let csv = repo_root().join("examples/data/colors.csv");
    let poison = dir.write(
        "poison.toml",
        &format!("[flow]\nname = \"poison\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.poisoned]\nkind = \"transform\"\ninput = \"e\"\nsteps = []\n", csv.display()),
    );
    let healthy = colors_flow(&dir, "healthy", "");
    let poison_run = run_flow_in_background(&dir.path, &poison, &client);
    let (out, report) = run_flow(&dir.path, &healthy, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "the healthy flow: {}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);

    let (out, report) = poison_run.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = report.unwrap();
    let t = report.tasks.iter().find(|t| t.name == "poisoned").unwrap();
    assert_eq!(
        t.error.as_ref().unwrap().kind,
        ErrorKind::WorkerLost,
        "{t:?}"
    );
    assert!(t.attempts >= 2, "{t:?}");
    assert!(report
        .error
        .unwrap()
        .contains("dead-lettered by the broker (delivery_limit)"));
    // Exactly the poison message sits in the dead-letter queue.
    assert_eq!(queue_depth(&names_of(&ns).dead_letter_queue()), 1);
    assert_eq!(
        queue_depth(&names_of(&ns).task_queue(TaskKind::Transform)),
        0
    );
    // The supervisor restarted the worker with backoff and the node lives on.
    assert!(w.child.try_wait().unwrap().is_none(), "{}", w.log_text());
    let restarts = w.log_text().matches("Worker stopped; restarting").count();
    assert!(
        (5..=7).contains(&restarts),
        "restarts: {restarts}\n{}",
        w.log_text()
    );
}

#[test]
fn hostile_task_messages_are_dead_lettered_and_the_worker_keeps_going() {
    let dir = TestDir::new("cluster_hostile_messages");
    let ns = namespace("hostile");
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let w = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    let valid: serde_json::Value = serde_json::json!({
        "schema_version": 2, "flow": "f", "flow_run": "fr", "task": "e", "task_run": "fr.e",
        "attempt": 1, "reply_to": names_of(&ns).reply_queue("nobody"),
        "spec": {"kind": "extract",
                 "source": {"type": "file", "path": "/nonexistent.csv", "format": "csv"},
                 "sink": {"type": "artifact"}}
    });
    let mut missing_field = valid.clone();
    missing_field.as_object_mut().unwrap().remove("task_run");
    let mut bad_version = valid.clone();
    bad_version["schema_version"] = 99.into();
    let mut unknown_kind = valid.clone();
    unknown_kind["spec"]["kind"] = "teleport".into();
    let mut unknown_source = valid.clone();
    unknown_source["spec"]["source"]["type"] = "teleport".into();
    let mut hostile_name = valid.clone();
    hostile_name["flow_run"] = "../../etc".into();
    let bodies: Vec<Vec<u8>> = vec![
        b"\xff\xfe not json".to_vec(),
        serde_json::to_vec(&missing_field).unwrap(),
        serde_json::to_vec(&bad_version).unwrap(),
        serde_json::to_vec(&unknown_kind).unwrap(),
        serde_json::to_vec(&unknown_source).unwrap(),
        serde_json::to_vec(&hostile_name).unwrap(),
        vec![b' '; 2 << 20],
    ];
    publish_raw(&names_of(&ns).tasks_exchange(), "extract", &bodies);
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue_depth(&names_of(&ns).dead_letter_queue()) < bodies.len() as u32
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        queue_depth(&names_of(&ns).dead_letter_queue()),
        bodies.len() as u32,
        "{}",
        w.log_text()
    );
    let log = w.log_text();
    assert_eq!(
        log.matches("to the dead-letter queue").count(),
        bodies.len(),
        "{log}"
    );
    // The consumer keeps going: a real flow still runs.
    let flow = colors_flow(&dir, "after_hostile", "");
    let client = client_config(&dir, &ns, "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert!(!storage.join("etc").exists() && !dir.path.join("etc").exists());
}

/// A task whose coordinator is gone (its reply queue no longer exists, so the
/// broker cannot route the task's start) is dropped before its load replaces
/// anything a user can see.
#[test]
fn a_task_of_a_vanished_coordinator_leaves_the_output_untouched() {
    let dir = TestDir::new("cluster_vanished_coordinator");
    let ns = namespace("vanished");
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let mut w = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    std::fs::create_dir_all(storage.join("out")).unwrap();
    let kept = storage.join("out/kept.csv");
    std::fs::write(&kept, "written by a later run\n").unwrap();
    let csv = repo_root().join("examples/data/colors.csv");
    let task = serde_json::json!({
        "schema_version": 2, "flow": "f", "flow_run": "gone-1", "task": "load",
        "task_run": "gone-1.load", "attempt": 1,
        "reply_to": names_of(&ns).reply_queue("nobody"),
        "spec": {"kind": "extract",
                 "source": {"type": "file", "path": csv.display().to_string(), "format": "csv"},
                 "steps": [{"drop": ["HEX"]}],
                 "sink": {"type": "file", "format": "csv", "path": "kept.csv"}}
    });
    publish_raw(
        &names_of(&ns).tasks_exchange(),
        "extract",
        &[serde_json::to_vec(&task).unwrap()],
    );
    w.wait_for_log(
        "reply queue is gone; dropped the task",
        Duration::from_secs(20),
    );
    // The commit gate, not a later step, stopped the load.
    let log = w.log_text();
    assert!(log.contains("leaving the output as it was"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "written by a later run\n",
        "{log}"
    );
    assert!(tmp_files(&storage).is_empty(), "{:?}", tmp_files(&storage));
    // The task was acked, not left unacked: with the worker gone, an unacked
    // task would be back in the ready count.
    w.sigkill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        queue_depth(&names_of(&ns).task_queue(TaskKind::Extract)),
        0,
        "{log}"
    );
    assert_eq!(queue_depth(&names_of(&ns).dead_letter_queue()), 0, "{log}");
}

/// Polls `probe` every 50 ms until it gives a value; panics after `within`.
fn wait_until<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_killed_after_commit_before_ack_leaves_one_output() {
    // node-a commits the transform's artifact, then stalls before reporting and acking.
    let (_, (committed, first_commit)) = worker_replaced_after_kill(
        "kill_after_commit",
        "sleep-after-commit=60000@transform",
        |_, storage| {
            let committed = wait_until("the transform's commit", Duration::from_secs(30), || {
                std::fs::read_dir(storage.join("artifacts"))
                    .ok()?
                    .flatten()
                    .find_map(|run| {
                        let p = run.path().join("transform.arrow");
                        p.exists().then_some(p)
                    })
            });
            let bytes = std::fs::read(&committed).unwrap();
            (committed, bytes)
        },
    );
    // The committed artifact was kept, not overwritten by the second attempt.
    // The run succeeded, so its artifacts are gone by now (issue 10, item
    // 4): node-b's commit says that it kept the first one, whose bytes the
    // load then read (the colors promise above).
    assert!(!first_commit.is_empty());
    let shared = committed.ancestors().nth(3).unwrap();
    let b_log = std::fs::read_to_string(shared.parent().unwrap().join("b.log")).unwrap();
    assert!(
        b_log.contains("Artifact already committed by another attempt; keeping the first"),
        "{b_log}"
    );
    println!("fault kill_after_commit: result=ok flows_checked=1 duplicates=0 losses=0");
}

#[test]
fn a_worker_stopped_with_sigstop_then_continued_finishes_its_task_once() {
    let dir = TestDir::new("cluster_sigstop");
    let ns = namespace("sigstop");
    let storage = dir.join("shared");
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let w = NodeProcess::start(
        &w_cfg,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=1000@transform")],
    );
    let flow = colors_flow(&dir, "sigstop", "");
    let client = client_config(&dir, &ns, "");
    let run = run_flow_in_background(&dir.path, &flow, &client);
    w.wait_for_line(&[".transform", "Task started"], Duration::from_secs(30));
    let pid = w.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    // Far past three heartbeat intervals (200 ms), well inside the AMQP heartbeat.
    std::thread::sleep(Duration::from_secs(3));
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let (out, report) = run.join().unwrap();
    assert!(out.status.success(), "{}\n{}", describe(&out), w.log_text());
    let report = report.unwrap();
    assert!(
        report.tasks.iter().all(|t| t.attempts == 1),
        "no redelivery expected: {report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(storage.join("out/colors.csv")).unwrap(),
        expected_colors_without_hex()
    );
    println!("fault sigstop_sigcont: result=ok flows_checked=1 duplicates=0 losses=0");
}

#[test]
fn a_task_the_broker_cannot_route_is_an_error_not_silence() {
    use conveyor_transport::amqp::AmqpTransport;
    let ns = namespace("unroutable");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let transport = AmqpTransport::connect(
            &amqp_url(),
            &ns,
            5,
            "test",
            tokio::runtime::Handle::current(),
        )
        .await
        .expect("connect");
        // Nothing is bound for the kind any more.
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_delete(
            names_of(&ns).task_queue(TaskKind::Load).into(),
            Default::default(),
        )
        .await
        .unwrap();
        let published = transport
            .publish_task(TaskKind::Load, "fr.t", "nobody", b"{}".to_vec())
            .await;
        transport.close().await;
        published
    });
    let err = result.expect_err("an unroutable publish must fail");
    assert!(
        matches!(err, conveyor_transport::TransportError::Unroutable(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("could not route"), "{err}");
}

/// Issue 3, timeouts: the transform's first attempt stalls on node-a (a
/// blocking 3.5 s step, longer than three of its 1 s AMQP heartbeats) past
/// its 1 s timeout; the coordinator dispatches attempt 2, which node-b runs.
/// Attempt 1's late result is ignored, node-a keeps its connection
/// throughout, and the output is written once.
#[test]
fn a_stalled_attempt_times_out_is_retried_elsewhere_and_its_late_result_is_ignored() {
    let dir = TestDir::new("cluster_timeout");
    let ns = namespace("timeout");
    let storage = dir.join("shared");
    let fast_heartbeat =
        |text: String| text.replace("[broker]\n", "[broker]\nheartbeat = \"1s\"\n");
    let x_cfg = dir.write(
        "x.toml",
        &node_config("node-x", &ns, &["extract", "load"], &storage, ""),
    );
    let a_cfg = dir.write(
        "a.toml",
        &fast_heartbeat(node_config(
            "node-a",
            &ns,
            &["transform"],
            &storage,
            "[workers.concurrency]\ntransform = 1\n",
        )),
    );
    let b_cfg = dir.write(
        "b.toml",
        &node_config("node-b", &ns, &["transform"], &storage, ""),
    );
    // The load waits, so that the client is still there for the late result.
    let _x = NodeProcess::start(
        &x_cfg,
        &dir.join("x.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=4000@load")],
    );
    let a = NodeProcess::start(
        &a_cfg,
        &dir.join("a.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=3500@transform")],
    );
    let csv = repo_root().join("examples/data/colors.csv");
    let flow = dir.write(
        "timeout.toml",
        &format!(
            "[flow]\nname = \"timeout\"\nmax_attempts = 3\nbackoff = \"100ms\"\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n[tasks.transform]\nkind = \"transform\"\ninput = \"extract\"\ntimeout = \"1s\"\nsteps = [{{ drop = [\"HEX\"] }}]\n[tasks.load]\nkind = \"load\"\ninput = \"transform\"\npath = \"colors.csv\"\n",
            csv.display()
        ),
    );
    let client = client_config(&dir, &ns, "");
    let run = run_flow_args_in_background(
        &dir.path,
        &flow,
        &["--config", client.to_str().unwrap(), "--log", "info"],
    );
    a.wait_for_line(&[".transform", "Task started"], Duration::from_secs(30));
    let _b = NodeProcess::start(&b_cfg, &dir.join("b.log"), &[]);
    let (out, report) = run.join().unwrap();
    succeeded_with_transform_twice_ending_on_b(&out, report);
    let client_log = String::from_utf8_lossy(&out.stderr);
    assert!(
        client_log
            .lines()
            .any(|l| l.contains("Dispatching task") && l.contains(".transform attempt=2")),
        "no second attempt after the timeout:\n{client_log}"
    );
    assert!(
        client_log.contains("Ignoring a stale update from a superseded attempt"),
        "attempt 1's late result was not seen and ignored:\n{client_log}"
    );
    let a_log = a.log_text();
    assert!(
        !a_log.contains("Reconnected") && !a_log.contains("connection lost"),
        "node-a lost its connection during the blocking step:\n{a_log}"
    );
    assert_colors_promise(&amqp_url(), &ns, &storage);
}

/// A CSV whose quoted fields hold commas, doubled quotes and newlines, so
/// that a byte-range cut in the wrong place would show.
fn tricky_csv(rows: usize) -> String {
    let mut csv = String::from("id,code,note,city\n");
    for i in 0..rows {
        let note = match i % 3 {
            0 => format!("\"first line\nsecond, {i}\""),
            1 => "\"she said \"\"hi\"\"\"".to_string(),
            _ => format!("plain {i}"),
        };
        csv.push_str(&format!("{i},{:06},{note},Zürich\n", i * 13));
    }
    csv
}

#[test]
fn a_partitioned_file_is_processed_by_every_worker_and_gathered_into_the_embedded_bytes() {
    let dir = TestDir::new("cluster_partitions");
    let ns = namespace("parts");
    let storage = dir.join("shared");
    let one_each = "[workers.concurrency]\nextract = 1\ntransform = 1\nload = 1\n";
    let a = dir.write(
        "a.toml",
        &node_config(
            "node-a",
            &ns,
            &["extract", "transform", "load"],
            &storage,
            one_each,
        ),
    );
    let b = dir.write(
        "b.toml",
        &node_config(
            "node-b",
            &ns,
            &["extract", "transform", "load"],
            &storage,
            one_each,
        ),
    );
    let _a = NodeProcess::start(&a, &dir.join("a.log"), &[]);
    let _b = NodeProcess::start(&b, &dir.join("b.log"), &[]);
    let csv = tricky_csv(30_000);
    let input = dir.write("in.csv", &csv);
    let flow_text = |partitions: &str| {
        format!(
            "[flow]\nname = \"parts\"\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n{partitions}\n\
             [tasks.drop]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"city\"] }}]\n\
             [tasks.one]\nkind = \"load\"\ninput = \"drop\"\npath = \"one.csv\"\n\
             [tasks.dir]\nkind = \"load\"\ninput = \"drop\"\npath = \"dir\"\nformat = \"jsonl\"\nparts = true\n",
            input.display()
        )
    };
    let flow = dir.write("parts.toml", &flow_text("partitions = 4"));
    let client = client_config(&dir, &ns, "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    // Four partitions of each task, plus a gather per load.
    assert_eq!(report.tasks.len(), 4 * 4 + 2, "{:?}", report.tasks);
    let nodes: std::collections::BTreeSet<_> = report
        .tasks
        .iter()
        .filter(|t| t.name.starts_with("extract@"))
        .map(|t| t.node.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "both workers took partitions"
    );
    let rows: u64 = report
        .tasks
        .iter()
        .filter(|t| t.name.starts_with("extract@"))
        .map(|t| t.rows_out.unwrap())
        .sum();
    assert_eq!(rows, 30_000);
    let gathered = std::fs::read_to_string(storage.join("out/one.csv")).unwrap();
    let parts: Vec<String> = (0..4)
        .map(|i| {
            std::fs::read_to_string(storage.join(format!("out/dir/part-{i:05}.jsonl"))).unwrap()
        })
        .collect();
    assert_eq!(parts.concat().lines().count(), 30_000);

    // The same flow without partitions, embedded, writes the same bytes.
    let embedded = TestDir::new("cluster_partitions_embedded");
    let flow = embedded.write(
        "whole.toml",
        &flow_text("")
            .replace("parts = true\n", "")
            .replace("\"dir\"", "\"dir.jsonl\""),
    );
    let (out, _) = run_flow(&embedded.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        gathered,
        std::fs::read_to_string(embedded.join("out/one.csv")).unwrap()
    );
    assert_eq!(
        parts.concat(),
        std::fs::read_to_string(embedded.join("out/dir.jsonl")).unwrap()
    );
    assert!(
        gathered.contains("\"first line\nsecond, 0\""),
        "quoted newlines kept"
    );

    // Fused: each partition reads, drops and writes its part in one task.
    let fused = dir.write(
        "fused.toml",
        &format!(
            "[flow]\nname = \"fused\"\nfuse = true\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\npartitions = 4\n\
             [tasks.drop]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"city\"] }}]\n\
             [tasks.one]\nkind = \"load\"\ninput = \"drop\"\npath = \"fused.csv\"\n",
            input.display()
        ),
    );
    let (out, report) = run_flow(&dir.path, &fused, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    let names: Vec<&str> = report.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["one@0", "one@1", "one@2", "one@3", "one"]);
    let nodes: std::collections::BTreeSet<_> = report.tasks[..4]
        .iter()
        .map(|t| t.node.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "both workers took fused partitions: {nodes:?}"
    );
    assert_eq!(
        std::fs::read_to_string(storage.join("out/fused.csv")).unwrap(),
        gathered
    );
    for kind in TaskKind::ALL {
        assert_eq!(queue_depth(&names_of(&ns).task_queue(kind)), 0);
    }
    assert_eq!(queue_depth(&names_of(&ns).dead_letter_queue()), 0);
}

#[test]
fn a_new_client_dispatches_at_once_to_workers_that_started_before_it() {
    let dir = TestDir::new("cluster_warm_worker");
    let ns = namespace("warm");
    let storage = dir.join("shared");
    // A worker that announces itself only every 10 s: a client that waited
    // for its next heartbeat would sit idle for seconds.
    let cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, "")
            .replace("heartbeat = \"200ms\"", "heartbeat = \"10s\""),
    );
    let _w = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    // Let its first heartbeat pass unseen.
    std::thread::sleep(Duration::from_millis(500));
    let flow = colors_flow(&dir, "warm", "");
    let client = client_config(&dir, &ns, "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    // The broker's consumer counts stood in for the heartbeat not yet sent.
    assert!(
        report.elapsed_ms < 5_000,
        "the flow waited for the worker's heartbeat: {} ms",
        report.elapsed_ms
    );
}

/// A node started while its broker is down keeps trying with backoff, and
/// comes up when the broker does (issue 10, item 9).
#[test]
fn a_node_started_before_its_broker_comes_up_when_the_broker_does() {
    use crate::harness::fault_proxy::FaultProxy;
    use crate::harness::private_broker::spare_port;

    let dir = TestDir::new("cluster_broker_late");
    let ns = namespace("broker_late");
    let storage = dir.join("shared");
    // Nothing listens on this port until the "broker" (a proxy to the
    // shared broker) starts there.
    let port = spare_port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let cfg = dir.write(
        "late.toml",
        &node_config_at(
            &url,
            "late",
            &ns,
            &["extract", "transform", "load"],
            &storage,
            "",
        ),
    );
    let log = dir.join("late.log");
    let node = std::thread::spawn(move || NodeProcess::start(&cfg, &log, &[]));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!node.is_finished(), "the node did not wait for its broker");
    let _broker = FaultProxy::start_on(port, shared_broker_port());
    let node = node
        .join()
        .expect("the node became ready once the broker was up");
    let text = node.log_text();
    assert!(
        text.contains("Broker unreachable at start; retrying"),
        "{text}"
    );
    assert!(
        !text.contains("guest:guest@"),
        "password in the log: {text}"
    );
    let flow = colors_flow(&dir, "colors", "");
    let client = client_config(&dir, &ns, "");
    let (out, _) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_colors_promise(&amqp_url(), &ns, &storage);
}

/// `--connect-timeout` bounds that wait: exit 70 naming the broker.
#[test]
fn connect_timeout_bounds_the_wait_for_a_broker_that_never_comes() {
    use crate::harness::private_broker::spare_port;

    let dir = TestDir::new("cluster_broker_never");
    let port = spare_port();
    let url = format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f");
    let cfg = dir.write(
        "never.toml",
        &node_config_at(&url, "never", "never", &["load"], &dir.join("s"), ""),
    );
    let started = Instant::now();
    let mut cmd = std::process::Command::new(conveyor_bin());
    cmd.args(["node", "--connect-timeout", "2s", "--config"])
        .arg(&cfg)
        .env_remove("CONVEYOR_BROKER_URL");
    let out = output_within(cmd, Duration::from_secs(30));
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    assert!(
        err.contains("gave up after 2s") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(
        took >= Duration::from_millis(1500),
        "gave up after {took:?}"
    );
}

/// SIGTERM with a task running: the node stops within its grace period, the
/// unfinished task goes back to the queue, and a worker of that kind started
/// within `worker_wait` takes it, so the flow succeeds (issue 10, item 2).
#[test]
fn sigterm_returns_a_running_task_to_the_queue_and_a_restarted_worker_finishes_it() {
    let dir = TestDir::new("cluster_sigterm_running");
    let ns = namespace("term_running");
    let storage = dir.join("shared");
    let cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    // The transform would block for a minute on this node.
    let mut slow = NodeProcess::start(
        &cfg,
        &dir.join("slow.log"),
        &[
            ("CONVEYOR_FAILPOINTS", "sleep=60000@transform"),
            ("CONVEYOR_GRACE", "1s"),
        ],
    );
    let flow = colors_flow(&dir, "colors", "worker_wait = \"60s\"");
    let client = client_config(&dir, &ns, "");
    let run = run_flow_in_background(&dir.path, &flow, &client);
    slow.wait_for_line(&["Task started", "transform"], Duration::from_secs(30));
    let stopped = Instant::now();
    let status = slow
        .sigterm_and_wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the node outlived its grace period:\n{}", slow.log_text()));
    assert!(status.success(), "{status:?}\n{}", slow.log_text());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopped.elapsed()
    );
    // A worker of that kind comes back within worker_wait and takes the task.
    let fresh = dir.write(
        "w2.toml",
        &node_config("w2", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let _fresh = NodeProcess::start(&fresh, &dir.join("fresh.log"), &[]);
    let (out, report) = run.join().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        slow.log_text()
    );
    let report = report.unwrap();
    let transform = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(transform.state, TaskState::Succeeded);
    assert_eq!(transform.node.as_deref(), Some("w2"));
    assert_colors_promise(&amqp_url(), &ns, &storage);
}
