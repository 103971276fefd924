//! The durable coordinator node: flows submitted with `conveyor run --submit`,
//! and scenario (c), a coordinator SIGKILLed with tasks in flight, in both
//! ambiguous orderings of "state saved" and "task published".

use std::path::{Path, PathBuf};
use std::time::Duration;

use conveyor_schemas::{FlowState, TaskState};

use crate::harness::{broker::*, colors::*, configs::*, processes::*, workdir::*};

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
    let coord_cfg =
        coordinator_config(&dir, &ns, &storage, &dir.join("coord-state/coordinator.db"));
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

/// A coordinator node's config: no workers, its database at `db`.
fn coordinator_config(dir: &TestDir, ns: &str, storage: &Path, db: &Path) -> PathBuf {
    dir.write(
        "coord.toml",
        &node_config(
            "coord",
            ns,
            &[],
            storage,
            &format!(
                "[coordinator]\nworker_wait = \"30s\"\ndb = \"{}\"\n",
                db.display()
            ),
        ),
    )
}

#[test]
fn a_flow_submitted_to_a_coordinator_node_runs_there() {
    let c = cluster("submit_basic");
    let coord = NodeProcess::start(&c.coord_cfg, &c.dir.join("coord.log"), &[]);
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
    let coord = NodeProcess::start(&c.coord_cfg, &c.dir.join("coord.log"), &[]);
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
    let _first = NodeProcess::start(&c.coord_cfg, &c.dir.join("c1.log"), &[]);
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
    let mut coord = NodeProcess::start(
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
    let restarted = NodeProcess::start(&c.coord_cfg, &c.dir.join("coord-2.log"), &[]);
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
    let mut coord = NodeProcess::start(
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
    let restarted = NodeProcess::start(&c.coord_cfg, &c.dir.join("coord-2.log"), &[]);
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

/// Scenario (k): 1,000 small flows submitted at once to a coordinator node,
/// across two worker nodes, while a random worker node is SIGKILLed (and
/// started again, as a service manager would) every 2 to 4 seconds, and
/// also each time another tenth of the flows has finished, so that a fast
/// run still sees several kills. Every flow must succeed with
/// exactly its rows, and every queue must drain.
#[test]
fn thousand_flows_finish_exactly_once_while_workers_are_killed() {
    use futures_util::StreamExt;
    use rand::Rng;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const FLOWS: usize = 1000;
    let test = "k_thousand_flows";
    let dir = TestDir::new(test);
    let ns = namespace(test);
    let storage = dir.join("shared");
    let kinds = ["extract", "transform", "load"];
    let cfgs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let name = format!("w{i}");
            dir.write(
                &format!("{name}.toml"),
                &node_config(&name, &ns, &kinds, &storage, ""),
            )
        })
        .collect();
    let mut workers: Vec<NodeProcess> = cfgs
        .iter()
        .enumerate()
        .map(|(i, cfg)| NodeProcess::start(cfg, &dir.join(&format!("w{i}-0.log")), &[]))
        .collect();
    let coord_cfg = coordinator_config(&dir, &ns, &storage, &dir.join("coordinator.db"));
    let _coord = NodeProcess::start(&coord_cfg, &dir.join("coord.log"), &[]);
    let csv = repo_root().join("examples/data/colors.csv");

    // The client: publishes every submission, then collects the final reports.
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let client = {
        let (url, ns, done) = (amqp_url(), ns.to_string(), done.clone());
        let progress = progress.clone();
        let base = dir.path.to_string_lossy().into_owned();
        std::thread::spawn(move || {
            block_on(async move {
                use lapin::options::*;
                let conn = lapin::Connection::connect(&url, Default::default())
                    .await
                    .unwrap();
                let ch = conn.create_channel().await.unwrap();
                let queue = names_of(&ns).reply_queue("k-client");
                ch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .unwrap();
                ch.queue_bind(
                    queue.as_str().into(),
                    names_of(&ns).replies_exchange().into(),
                    queue.as_str().into(),
                    Default::default(),
                    Default::default(),
                )
                .await
                .unwrap();
                ch.confirm_select(Default::default()).await.unwrap();
                let mut confirms = Vec::new();
                for i in 0..FLOWS {
                    let text = format!(
                        "[flow]\nname = \"k{i}\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = [{{ drop = [\"HEX\"] }}]\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"k/{i}.csv\"\n",
                        csv.display()
                    );
                    let sub = conveyor_schemas::FlowSubmission {
                        schema_version: conveyor_schemas::SCHEMA_VERSION,
                        request_id: format!("k-{i}"),
                        flow_file: format!("k{i}.toml"),
                        flow_text: text,
                        flow_base: base.clone(),
                        reply_to: queue.clone(),
                        client: "k-client".into(),
                        params: Default::default(),
                    };
                    let body = serde_json::to_vec(&sub).unwrap();
                    confirms.push(
                        ch.basic_publish(
                            names_of(&ns).submissions().into(),
                            "submit".into(),
                            BasicPublishOptions::default(),
                            &body,
                            lapin::BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .unwrap(),
                    );
                }
                for c in confirms {
                    assert!(c.await.unwrap().is_ack(), "submission not confirmed");
                }
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "k-client".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        Default::default(),
                    )
                    .await
                    .unwrap();
                let mut finished = std::collections::HashMap::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                while finished.len() < FLOWS {
                    let next = tokio::time::timeout_at(deadline, consumer.next()).await;
                    let Ok(Some(Ok(d))) = next else { break };
                    let ev: conveyor_schemas::FlowEvent = serde_json::from_slice(&d.data).unwrap();
                    match ev.event {
                        conveyor_schemas::FlowEventKind::Finished { report } => {
                            finished.insert(ev.request_id, report);
                            progress.store(finished.len(), Ordering::SeqCst);
                        }
                        conveyor_schemas::FlowEventKind::Rejected { error } => {
                            panic!("{} rejected: {error}", ev.request_id)
                        }
                        _ => {}
                    }
                }
                done.store(true, Ordering::SeqCst);
                let _ = ch
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
                let _ = conn.close(200, "bye".into()).await;
                finished
            })
        })
    };

    // The killer: a random worker node every 2 to 4 s, or as soon as another
    // tenth of the flows has finished, whichever comes first; the node is
    // started again at once. The tenths make the number of kills independent
    // of how fast this machine runs the flows.
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut next_tenth = FLOWS / 10;
    while !done.load(Ordering::SeqCst) && !client.is_finished() {
        let wait = Duration::from_millis(rng.random_range(2000..4000));
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until
            && !done.load(Ordering::SeqCst)
            && progress.load(Ordering::SeqCst) < next_tenth
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        let finished_now = progress.load(Ordering::SeqCst);
        while next_tenth <= finished_now {
            next_tenth += FLOWS / 10;
        }
        let victim = rng.random_range(0..workers.len());
        workers[victim].sigkill();
        kills += 1;
        workers[victim] = NodeProcess::start(
            &cfgs[victim],
            &dir.join(&format!("w{victim}-{kills}.log")),
            &[],
        );
    }
    let finished = client.join().expect("client thread");
    assert_eq!(finished.len(), FLOWS, "flows without a final report");
    assert!(
        kills >= 3,
        "only {kills} kills: the scenario did not exercise faults"
    );
    let expected = expected_colors_without_hex();
    let mut losses = 0;
    for (request, report) in &finished {
        assert_eq!(
            report.state,
            FlowState::Succeeded,
            "{request}: {:?}",
            report.error
        );
        let i = request.trim_start_matches("k-");
        let written =
            std::fs::read_to_string(storage.join(format!("out/k/{i}.csv"))).unwrap_or_default();
        if written != expected {
            losses += 1;
        }
    }
    assert_eq!(losses, 0, "outputs with rows lost or duplicated");
    let outputs = std::fs::read_dir(storage.join("out/k")).unwrap().count();
    assert_eq!(outputs, FLOWS, "unexpected files in the output directory");
    assert!(tmp_files(&storage).is_empty(), "{:?}", tmp_files(&storage));
    for q in names_of(&ns).fixed_queues() {
        assert_eq!(queue_depth(&q), 0, "{q} not drained");
    }
    println!(
        "fault {test}: result=ok flows_checked={FLOWS} worker_kills={kills} duplicates=0 losses=0"
    );
}

/// A submission delivered twice (a client retry, or a redelivery after a
/// coordinator crash) starts one run, not two.
#[test]
fn a_submission_delivered_twice_runs_once() {
    let c = cluster("submit_twice");
    let coord = NodeProcess::start(&c.coord_cfg, &c.dir.join("coord.log"), &[]);
    let csv = repo_root().join("examples/data/colors.csv");
    let sub = conveyor_schemas::FlowSubmission {
        schema_version: conveyor_schemas::SCHEMA_VERSION,
        request_id: "the-same-request".into(),
        flow_file: "twice.toml".into(),
        flow_text: format!(
            "[flow]\nname = \"twice\"\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n[tasks.transform]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"HEX\"] }}]\n[tasks.load]\nkind = \"load\"\ninput = \"transform\"\npath = \"colors.csv\"\n",
            csv.display()
        ),
        flow_base: c.dir.path.to_string_lossy().into_owned(),
        reply_to: names_of(&c.ns).reply_queue("nobody"),
        client: "test".into(),
        params: Default::default(),
    };
    let body = serde_json::to_vec(&sub).unwrap();
    publish_raw(
        &names_of(&c.ns).submissions(),
        "submit",
        &[body.clone(), body],
    );
    coord.wait_for_line(
        &["Flow finished", "twice-", "Succeeded"],
        Duration::from_secs(60),
    );
    coord.wait_for_log("Submission seen before", Duration::from_secs(10));
    let log = coord.log_text();
    assert_eq!(
        log.matches("Flow submitted by a client").count(),
        1,
        "{log}"
    );
    assert_colors_promise(&amqp_url(), &c.ns, &c.storage);
    assert_eq!(queue_depth(&names_of(&c.ns).submissions()), 0);
}

/// A `--submit` client sees every state within about one event window (1 s):
/// a change the coordinator held back inside a window is sent at its end,
/// not dropped (issue 10, item 1).
#[test]
fn a_submitting_client_sees_held_back_progress_within_a_window() {
    use futures_util::StreamExt;
    use lapin::options::*;

    let dir = TestDir::new("submit_progress");
    let ns = namespace("submit_progress");
    let storage = dir.join("shared");
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let _worker = NodeProcess::start(
        &w_cfg,
        &dir.join("w.log"),
        &[("CONVEYOR_FAILPOINTS", "sleep=4000@extract")],
    );
    let coord_cfg = coordinator_config(&dir, &ns, &storage, &dir.join("coordinator.db"));
    let _coord = NodeProcess::start(&coord_cfg, &dir.join("coord.log"), &[]);
    let csv = repo_root().join("examples/data/colors.csv");
    let names = names_of(&ns);
    let queue = names.reply_queue("progress-client");
    let sub = conveyor_schemas::FlowSubmission {
        schema_version: conveyor_schemas::SCHEMA_VERSION,
        request_id: "progress-1".into(),
        flow_file: "p.toml".into(),
        flow_text: format!(
            "[flow]\nname = \"p\"\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npath = \"p.csv\"\n",
            csv.display()
        ),
        flow_base: dir.path.to_string_lossy().into_owned(),
        reply_to: queue.clone(),
        client: "test".into(),
        params: Default::default(),
    };
    // (seconds since the submission, event) until the run finished.
    let events: Vec<(f64, conveyor_schemas::FlowEventKind)> = block_on(async {
        let conn = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.as_str().into(),
            names.replies_exchange().into(),
            queue.as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "progress-client".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        ch.basic_publish(
            names.submissions().into(),
            "submit".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&sub).unwrap(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
        let mut events = Vec::new();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_secs(60), consumer.next()).await
        {
            let ev: conveyor_schemas::FlowEvent = serde_json::from_slice(&d.data).unwrap();
            let done = matches!(ev.event, conveyor_schemas::FlowEventKind::Finished { .. });
            events.push((t0.elapsed().as_secs_f64(), ev.event));
            if done {
                break;
            }
        }
        let _ = conn.close(200, "bye".into()).await;
        events
    });
    let finished_at = match events.last() {
        Some((at, conveyor_schemas::FlowEventKind::Finished { report })) => {
            assert_eq!(report.state, FlowState::Succeeded, "{report:?}");
            *at
        }
        other => panic!("no finished event: {other:?}"),
    };
    // The extract runs 4 s. Its start arrives within the accepted event's
    // window, so it is held back; it must reach the client at the window's
    // end, while the extract still runs.
    let running = events.iter().find(|(_, ev)| match ev {
        conveyor_schemas::FlowEventKind::Progress { report } => report
            .tasks
            .iter()
            .any(|t| t.name == "extract" && t.state == TaskState::Running),
        _ => false,
    });
    let Some((at, _)) = running else {
        panic!("the client never saw the extract running: {events:?}");
    };
    assert!(
        *at < finished_at - 1.5,
        "extract Running shown at {at:.2}s, finished at {finished_at:.2}s: {events:?}"
    );
}

/// Issue 22, item 1: a coordinator node rejects a flow submitted over the
/// broker that names a variable outside its `[secrets] allow`, naming it;
/// nothing runs.
#[test]
fn a_submitted_flow_naming_a_variable_outside_the_allow_list_is_rejected() {
    let c = cluster("submit_secrets");
    let coord_cfg = c.dir.write(
        "coord-secrets.toml",
        &format!(
            "{}[secrets]\nallow = [\"CONVEYOR_PG_*\"]\n",
            std::fs::read_to_string(&c.coord_cfg).unwrap()
        ),
    );
    let coord = NodeProcess::start(&coord_cfg, &c.dir.join("coord.log"), &[]);
    let flow = c.dir.write(
        "envref.toml",
        &format!(
            "[flow]\nname = \"envref\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${{env:CONVEYOR_PG_DIR}}/${{env:HOME}}.csv\"\n",
            repo_root().join("examples/data/colors.csv").display()
        ),
    );
    let client = c.client_cfg.to_str().unwrap();
    let (out, report) = run_flow(&c.dir.path, &flow, &["--config", client, "--submit"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(report.is_none());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`HOME`")
            && !err.contains("`CONVEYOR_PG_DIR`")
            && err.contains("[secrets] allow"),
        "{err}"
    );
    let written = std::fs::read_dir(c.storage.join("out"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(written, 0, "a rejected flow ran");
    drop(coord);
}
