//! Operating runs (issue 11, the engine's part): a cancel that really stops a
//! worker's attempt, a retry that reuses what succeeded, and flow params end
//! to end. A coordinator node runs in this process (driven through its
//! `CoordinatorHandle`, the seam the HTTP API sits on) on the shared broker,
//! with a real `conveyor node` worker process.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_config::{Launch, NodeConfig};
use conveyor_coordinator::handle::{CoordinatorError, CoordinatorHandle};
use conveyor_flow::FlowSpec;
use conveyor_node::node::Node;
use conveyor_schemas::{FlowState, RunReport, TaskKind, TaskState};

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

/// A coordinator node (database in `db`, no workers) on the shared broker,
/// in this process: runs `body` with its handle, then stops it.
fn with_coordinator<T>(config: &Path, body: impl AsyncFnOnce(CoordinatorHandle) -> T) -> T {
    let cfg = NodeConfig::load(config).unwrap_or_else(|p| panic!("{p}"));
    with_node(&cfg, body)
}

/// A node of config `cfg` with a coordinator role, in this process: runs
/// `body` with its handle, then stops it.
fn with_node<T>(cfg: &NodeConfig, body: impl AsyncFnOnce(CoordinatorHandle) -> T) -> T {
    let roles = cfg.roles(Launch::Node).unwrap();
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let system = actix::System::new();
    let out = system.block_on(async {
        let node = Node::start(cfg, &roles, io.handle().clone())
            .await
            .unwrap_or_else(|e| panic!("coordinator node: {e}"));
        let handle = node.coordinator.clone().expect("a coordinator role");
        let out = body(handle).await;
        node.shutdown(Duration::from_secs(1)).await;
        out
    });
    io.shutdown_timeout(Duration::from_secs(2));
    out
}

fn coordinator_config(dir: &TestDir, ns: &str, storage: &Path) -> std::path::PathBuf {
    dir.write(
        "coord.toml",
        &node_config(
            "coord",
            ns,
            &[],
            storage,
            &format!(
                "[coordinator]\nworker_wait = \"30s\"\ndb = \"{}\"\n",
                dir.join("coord/coordinator.db").display()
            ),
        ),
    )
}

/// Waits, without blocking the actix thread, until a line of `node`'s log
/// has every one of `needles`. The coordinator must stay up meanwhile: the
/// run's end it announces is still on its way to the worker.
async fn log_line(node: &NodeProcess, needles: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    while !node
        .log_text()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
    {
        assert!(
            Instant::now() < deadline,
            "node log never showed a line with {needles:?}:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every task of `report` by name, with its state.
fn states(report: &RunReport) -> Vec<(String, TaskState)> {
    report
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.state))
        .collect()
}

/// An HTTP server that answers every request with a CSV that trickles a row
/// every 200 ms for 60 s: a source in the middle of a long read.
struct TricklingServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Connections whose client went away before the 60 s were up.
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TricklingServer {
    fn start() -> TricklingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, gone, halt) = (connections.clone(), dropped.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                conns.fetch_add(1, Ordering::Relaxed);
                let (halt, gone) = (halt.clone(), gone.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\nconnection: close\r\n\r\nn,name\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let until = Instant::now() + Duration::from_secs(60);
                    let mut i = 0;
                    while Instant::now() < until && !halt.load(Ordering::Relaxed) {
                        if stream
                            .write_all(format!("{i},row{i}\n").as_bytes())
                            .is_err()
                        {
                            gone.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        i += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                });
            }
        });
        TricklingServer {
            port,
            connections,
            dropped,
            stop,
        }
    }
}

impl Drop for TricklingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the stop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn cancel_stops_a_task_in_the_middle_of_a_60s_read_within_5s() {
    let dir = TestDir::new("engine_cancel");
    let ns = namespace("engine_cancel");
    let storage = dir.join("shared");
    let server = TricklingServer::start();
    let url = format!("http://127.0.0.1:{}/", server.port);
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, "").replace(
            "allow_urls = [\"*\"]\n",
            &format!("allow_urls = [\"{url}\"]\n"),
        ),
    );
    let mut worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    let flow_path = dir.write(
        "slow.toml",
        &format!("[flow]\nname = \"slow\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\nurl = \"{url}rows.csv\"\ntimeout = \"5m\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"slow.csv\"\n"),
    );
    let (flow, source) = FlowSpec::load_with_source(&flow_path).unwrap();
    let coord_cfg = coordinator_config(&dir, &ns, &storage);
    let connections = server.connections.clone();

    let (id, report, second, saved) =
        with_coordinator(&coord_cfg, async |handle: CoordinatorHandle| {
            let run = handle.submit(Arc::new(flow), source).await.unwrap();
            let id = run.flow_run.clone();
            // The extract runs and its download has begun.
            let mut progress = run.progress.clone();
            tokio::time::timeout(
                Duration::from_secs(20),
                progress.wait_for(|r| r.tasks[0].state == TaskState::Running),
            )
            .await
            .expect("the extract starts")
            .unwrap();
            while connections.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;

            let cancelled_at = Instant::now();
            handle.cancel(&id).await.expect("cancel a live run");
            let report = tokio::time::timeout(Duration::from_secs(5), run.done)
                .await
                .expect("the run ends within 5 s of the cancel")
                .unwrap();
            // The worker stopped the attempt, within 5 s of the cancel.
            let left = Duration::from_secs(5).saturating_sub(cancelled_at.elapsed());
            log_line(&worker, &["Aborted the attempt", &format!("{id}.e")], left).await;
            let second = handle.cancel(&id).await;
            // As saved in the database, once the coordinator let go of it.
            let saved = loop {
                let view = handle.get(&id).await.unwrap().unwrap();
                if !view.live {
                    break view;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            (id, report, second, saved)
        });

    assert_eq!(report.state, FlowState::Cancelled, "{report:?}");
    assert_eq!(
        states(&report),
        [
            ("e".to_string(), TaskState::Cancelled),
            ("l".to_string(), TaskState::Cancelled)
        ]
    );
    assert_eq!(saved.report.state, FlowState::Cancelled);
    assert!(
        matches!(&second, Err(CoordinatorError::Conflict(m)) if m.contains("already ended (Cancelled)")),
        "a second cancel is a conflict: {second:?}"
    );
    // The abandoned read stopped too, at its next chunk: it hung up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.dropped.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned download still reads ({} connections)",
            server.connections.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !worker.log_text().contains("Task failed"),
        "an aborted attempt is not a failure:\n{}",
        worker.log_text()
    );
    // Nothing was committed: no output, no marker, no temporary file.
    assert!(!storage.join("out/slow.csv").exists());
    assert!(!storage.join(format!("artifacts/{id}/e.done.json")).exists());
    assert!(tmp_files(&storage.join("out")).is_empty());
    // The delivery was acked, not just left unacked: with the worker gone,
    // nothing comes back to the queues.
    worker.sigkill();
    std::thread::sleep(Duration::from_millis(500));
    let names = names_of(&ns);
    for kind in [TaskKind::Extract, TaskKind::Transform, TaskKind::Load] {
        assert_eq!(queue_depth(&names.task_queue(kind)), 0, "{kind} queue");
    }
}

/// Waits until task `index` of the watched run is in `state`.
async fn task_reaches(
    progress: &mut tokio::sync::watch::Receiver<RunReport>,
    index: usize,
    state: TaskState,
) {
    tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|r| r.tasks[index].state == state),
    )
    .await
    .unwrap_or_else(|_| panic!("task {index} never reached {state:?}"))
    .unwrap();
}

#[test]
fn a_queued_task_of_a_cancelled_run_is_acked_without_starting() {
    let dir = TestDir::new("engine_cancel_queued");
    let ns = namespace("engine_cancel_queued");
    let storage = dir.join("shared");
    let server = TricklingServer::start();
    let url = format!("http://127.0.0.1:{}/", server.port);
    // One extract at a time: the second run's extract waits in the queue.
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "load"], &storage, "").replace(
            "allow_urls = [\"*\"]\n",
            &format!("allow_urls = [\"{url}\"]\nconcurrency = {{ extract = 1 }}\n"),
        ),
    );
    let worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    dir.write("in.csv", "a\n1\n");
    let flow = |name: &str, source: &str| {
        let path = dir.write(
            &format!("{name}.toml"),
            &format!("[flow]\nname = \"{name}\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\n{source}\nformat = \"csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n"),
        );
        FlowSpec::load_with_source(&path).unwrap()
    };
    let (slow, slow_source) = flow("slow", &format!("url = \"{url}rows.csv\""));
    let (quick, quick_source) = flow("quick", "path = \"in.csv\"");
    let coord_cfg = coordinator_config(&dir, &ns, &storage);

    let (quick_id, quick_report) =
        with_coordinator(&coord_cfg, async |handle: CoordinatorHandle| {
            let a = handle.submit(Arc::new(slow), slow_source).await.unwrap();
            task_reaches(&mut a.progress.clone(), 0, TaskState::Running).await;
            let b = handle.submit(Arc::new(quick), quick_source).await.unwrap();
            task_reaches(&mut b.progress.clone(), 0, TaskState::Queued).await;
            // Published to the broker, where it waits: the worker's one
            // extract slot is busy.
            tokio::time::sleep(Duration::from_millis(500)).await;
            handle.cancel(&b.flow_run).await.unwrap();
            let quick_report = b.done.await.unwrap();
            // Frees the extract slot: the queued message is delivered now.
            handle.cancel(&a.flow_run).await.unwrap();
            a.done.await.unwrap();
            let quick_e = format!("{}.e", b.flow_run);
            log_line(
                &worker,
                &["Not starting a task of a run that ended", &quick_e],
                Duration::from_secs(10),
            )
            .await;
            (b.flow_run, quick_report)
        });
    assert_eq!(quick_report.state, FlowState::Cancelled);
    let log = worker.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("{quick_id}.e")) && l.contains("Task started")),
        "{log}"
    );
    assert!(!storage.join("out/quick.csv").exists());
    let names = names_of(&ns);
    assert_eq!(queue_depth(&names.task_queue(TaskKind::Extract)), 0);
    assert_eq!(queue_depth(&names.task_queue(TaskKind::Load)), 0);
}

/// The embedded default: every role in one process on the in-process bus,
/// which carries the run's end to the worker as the broker does.
#[test]
fn an_embedded_cancel_stops_the_in_process_worker_too() {
    let dir = TestDir::new("engine_cancel_embedded");
    let server = TricklingServer::start();
    let flow_path = dir.write(
        "slow.toml",
        &format!("[flow]\nname = \"slow\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\nurl = \"http://127.0.0.1:{}/rows.csv\"\nformat = \"csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"slow.csv\"\n", server.port),
    );
    let (flow, source) = FlowSpec::load_with_source(&flow_path).unwrap();
    let mut cfg = NodeConfig::embedded(&dir.path);
    if let Some(c) = cfg.coordinator.as_mut() {
        c.db = Some(dir.join("c.db"));
    }
    let connections = server.connections.clone();
    let report = with_node(&cfg, async |handle: CoordinatorHandle| {
        let run = handle.submit(Arc::new(flow), source).await.unwrap();
        task_reaches(&mut run.progress.clone(), 0, TaskState::Running).await;
        while connections.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.cancel(&run.flow_run).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), run.done)
            .await
            .expect("ends within 5 s")
            .unwrap()
    });
    assert_eq!(report.state, FlowState::Cancelled);
    // The in-process worker heard the end and dropped its download.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.dropped.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the embedded download still reads"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.join("out/slow.csv").exists());
}

#[test]
fn retry_after_a_failed_load_reuses_the_extract_and_the_transform() {
    let dir = TestDir::new("engine_retry");
    let ns = namespace("engine_retry");
    let storage = dir.join("shared");
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    let input = dir.write("in.csv", "id,name,secret\n1,ada,x\n2,bob,y\n");
    // The load's target is a directory with a file in it: the load fails.
    dir.write("shared/out/result.csv/keep", "not a file\n");
    let flow_path = dir.write(
        "r.toml",
        "[flow]\nname = \"r\"\nmax_attempts = 1\n[params]\nout = {}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = [{ drop = [\"secret\"] }]\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"{{ params.out }}.csv\"\n",
    );
    // The retry runs with the old run's params: the load writes result.csv.
    let params = [("out".to_string(), "result".to_string())].into();
    let (flow, source) = FlowSpec::load_with_params(&flow_path, &params).unwrap();
    let coord_cfg = coordinator_config(&dir, &ns, &storage);
    let out_dir = storage.join("out/result.csv");

    let (old, failed, retry, retried, running) =
        with_coordinator(&coord_cfg, async |handle: CoordinatorHandle| {
            let run = handle.submit(Arc::new(flow), source).await.unwrap();
            let old = run.flow_run.clone();
            let failed = run.done.await.unwrap();
            // A run still in flight cannot be retried; ask while one is.
            std::fs::remove_file(&input).unwrap();
            std::fs::remove_dir_all(&out_dir).unwrap();
            let retry = handle.retry(&old).await.expect("retry a failed run");
            let running = handle.retry(&retry.flow_run).await.err();
            let retried = retry.done.await.unwrap();
            (old, failed, retry.flow_run, retried, running)
        });

    assert_eq!(failed.state, FlowState::Failed, "{failed:?}");
    assert_eq!(
        states(&failed),
        [
            ("e".to_string(), TaskState::Succeeded),
            ("t".to_string(), TaskState::Succeeded),
            ("l".to_string(), TaskState::Failed)
        ]
    );
    assert!(
        matches!(&running, Some(CoordinatorError::Conflict(m)) if m.contains("still running")),
        "{running:?}"
    );
    // The extract's source was gone before the retry: it was not run again.
    assert_eq!(retried.state, FlowState::Succeeded, "{retried:?}");
    assert_eq!(
        states(&retried),
        [
            ("e".to_string(), TaskState::Reused),
            ("t".to_string(), TaskState::Reused),
            ("l".to_string(), TaskState::Succeeded)
        ]
    );
    let t = &retried.tasks[1];
    assert_eq!((t.rows_out, t.attempts), (Some(2), 0), "{t:?}");
    assert_eq!(
        std::fs::read_to_string(storage.join("out/result.csv")).unwrap(),
        "id,name\n1,ada\n2,bob\n"
    );
    let log = worker.log_text();
    for reused in ["e", "t"] {
        assert!(
            !log.contains(&format!("{retry}.{reused}")),
            "task {reused} ran again:\n{log}"
        );
    }
    assert!(log.contains(&format!("{retry}.l")), "{log}");
    // The old run's artifacts stay (kept for [storage] keep_failed); the
    // retry read them from there.
    assert!(storage.join(format!("artifacts/{old}/t.arrow")).exists());
}

#[test]
fn params_reach_the_tasks_through_run_and_submit() {
    let dir = TestDir::new("engine_params");
    let flow = repo_root().join("flows/colors_pick.toml");
    // Embedded: every role in the `conveyor run` process.
    let (out, report) = run_flow(&dir.path, &flow, &["--param", "name=coral"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/picked/coral.csv")).unwrap(),
        "Name,HEX,RGB\ncoral,#FF7F50,\"(255,127,80)\"\n"
    );
    // A missing or unknown param, or a hostile value, is a bad flow: exit 2,
    // nothing written.
    for (args, says) in [
        (vec![], "`params.name`: is required"),
        (
            vec!["--param", "name=coral", "--param", "colour=red"],
            "`params.colour`: is given, but the flow declares only dir, name",
        ),
        (
            vec!["--param", "name=coral", "--param", "dir=../../etc"],
            "must not contain `..`",
        ),
        (vec!["--param", "name"], "is not NAME=VALUE"),
    ] {
        let (out, _) = run_flow(&dir.path, &flow, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (out, _) = {
        let mut cmd = std::process::Command::new(conveyor_bin());
        cmd.args(["validate"])
            .arg(&flow)
            .args(["--param", "name=coral"]);
        (output_within(cmd, Duration::from_secs(30)), ())
    };
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("params: dir (default \"picked\"), name (required)"));

    // Submitted to a coordinator node: the params travel with the flow.
    let ns = namespace("engine_params");
    let storage = dir.join("shared");
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let _worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    let coord_cfg = coordinator_config(&dir, &ns, &storage);
    let _coord = NodeProcess::start(&coord_cfg, &dir.join("coord.log"), &[]);
    let client = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    let (out, report) = run_flow(
        &dir.path,
        &flow,
        &[
            "--config",
            client.to_str().unwrap(),
            "--submit",
            "--param",
            "name=tomato",
            "--param",
            "dir=sub",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert_eq!(
        std::fs::read_to_string(storage.join("out/sub/tomato.csv")).unwrap(),
        "Name,HEX,RGB\ntomato,#FF6347,\"(255,99,71)\"\n"
    );
}

/// A worker node that was not up when a run was cancelled never heard of
/// it: when it starts one of its queued tasks, the coordinator says again
/// that the run ended, and the worker stops the attempt.
#[test]
fn a_worker_that_missed_the_cancel_hears_it_again_when_it_starts_the_task() {
    let dir = TestDir::new("engine_cancel_missed");
    let ns = namespace("engine_cancel_missed");
    let storage = dir.join("shared");
    let server = TricklingServer::start();
    let url = format!("http://127.0.0.1:{}/", server.port);
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "load"], &storage, "").replace(
            "allow_urls = [\"*\"]\n",
            &format!("allow_urls = [\"{url}\"]\nconcurrency = {{ extract = 1 }}\n"),
        ),
    );
    let mut first = NodeProcess::start(&w_cfg, &dir.join("w1.log"), &[]);
    let flow = |name: &str| {
        let path = dir.write(
            &format!("{name}.toml"),
            &format!("[flow]\nname = \"{name}\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\nurl = \"{url}{name}.csv\"\ntimeout = \"5m\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n"),
        );
        FlowSpec::load_with_source(&path).unwrap()
    };
    let (busy, busy_source) = flow("busy");
    let (missed, missed_source) = flow("missed");
    let coord_cfg = coordinator_config(&dir, &ns, &storage);

    let (missed_id, second) = with_coordinator(&coord_cfg, async |handle: CoordinatorHandle| {
        let a = handle.submit(Arc::new(busy), busy_source).await.unwrap();
        task_reaches(&mut a.progress.clone(), 0, TaskState::Running).await;
        let b = handle
            .submit(Arc::new(missed), missed_source)
            .await
            .unwrap();
        task_reaches(&mut b.progress.clone(), 0, TaskState::Queued).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        handle.cancel(&b.flow_run).await.unwrap();
        b.done.await.unwrap();
        // The only node that heard it goes; one that did not comes.
        first.sigkill();
        let second = NodeProcess::start(&w_cfg, &dir.join("w2.log"), &[]);
        handle.cancel(&a.flow_run).await.unwrap();
        a.done.await.unwrap();
        let missed_e = format!("{}.e", b.flow_run);
        log_line(
            &second,
            &["Aborted the attempt", &missed_e],
            Duration::from_secs(15),
        )
        .await;
        (b.flow_run, second)
    });
    let log = second.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("{missed_id}.e")) && l.contains("Task started")),
        "the new node started the task, not having heard of the cancel:\n{log}"
    );
    assert!(!storage.join("out/missed.csv").exists());
}
