//! Test harness: a directory per test, real `conveyor` processes, and a
//! namespace per test on the shared RabbitMQ.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use conveyor_schemas::RunReport;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `conveyor` binary that `cargo test` built beside this test binary.
pub fn conveyor_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("conveyor");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p conveyor-node` (the test script does)",
        bin.display()
    );
    bin
}

pub fn amqp_url() -> String {
    std::env::var("CONVEYOR_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A fresh directory for one test, named after it.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path = repo_root().join("target/test-work").join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// A unique namespace so tests can share one broker; its queues and
/// exchanges are deleted when it drops, whether the test passed or not.
pub struct Namespace(String);

impl std::ops::Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespace(&self.0);
    }
}

pub fn namespace(test: &str) -> Namespace {
    Namespace(format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}

pub fn node_config(name: &str, ns: &str, kinds: &[&str], storage: &Path, extra: &str) -> String {
    node_config_at(&amqp_url(), name, ns, kinds, storage, extra)
}

/// A node config for the broker at `url`.
pub fn node_config_at(
    url: &str,
    name: &str,
    ns: &str,
    kinds: &[&str],
    storage: &Path,
    extra: &str,
) -> String {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
    let workers = if kinds.is_empty() {
        String::new()
    } else {
        format!("[workers]\nkinds = [{}]\n", kinds.join(", "))
    };
    format!(
        "[node]\nname = \"{name}\"\nheartbeat = \"200ms\"\n\n[broker]\nurl = \"{url}\"\nnamespace = \"{ns}\"\n\n{workers}\n[storage]\nartifacts = \"{}\"\noutput_root = \"{}\"\n{extra}",
        storage.join("artifacts").display(),
        storage.join("out").display()
    )
}

/// A `conveyor node` process, killed when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProcess {
    /// Starts a worker node and waits until it consumes.
    pub fn start(config: &Path, log: &Path, envs: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::start_until(config, log, envs, "Worker consuming")
    }

    /// Starts a coordinator node and waits until it runs.
    pub fn start_coordinator(config: &Path, log: &Path, envs: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::start_until(config, log, envs, "Node running")
    }

    /// Starts a node and waits until its log shows `ready`.
    pub fn start_until(
        config: &Path,
        log: &Path,
        envs: &[(&str, &str)],
        ready: &str,
    ) -> NodeProcess {
        let log_file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(conveyor_bin());
        cmd.args(["node", "--config"])
            .arg(config)
            .env("CONVEYOR_LOG", "info")
            .env_remove("CONVEYOR_BROKER_URL")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn conveyor node");
        let node = NodeProcess {
            child,
            log: log.to_path_buf(),
        };
        node.wait_for_log(ready, Duration::from_secs(20));
        node
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until one line of the node's log contains every one of `needles`.
    pub fn wait_for_line(&self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self
                .log_text()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "node log never showed a line with {needles:?}:\n{}",
            self.log_text()
        );
    }

    /// Waits until the node's log contains `needle`; panics with the log if not.
    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node log never showed {needle:?}:\n{}", self.log_text());
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn sigterm_and_wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `conveyor run FLOW --json [args]` in `cwd`.
pub fn run_flow(cwd: &Path, flow: &Path, args: &[&str]) -> (Output, Option<RunReport>) {
    let mut cmd = Command::new(conveyor_bin());
    cmd.current_dir(cwd)
        .arg("run")
        .arg(flow)
        .arg("--json")
        .args(args)
        .env_remove("CONVEYOR_BROKER_URL");
    let out = output_within(cmd, RUN_DEADLINE);
    let report = serde_json::from_slice::<RunReport>(&out.stdout).ok();
    (out, report)
}

/// No test flow may take this long: a flow that hangs fails its test
/// instead of stalling the suite.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// Like `Command::output`, but kills the child and panics past `deadline`.
pub fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn conveyor");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for conveyor") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("conveyor did not finish within {deadline:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir` whose name ends with `.tmp`.
pub fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(tmp_files(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            found.push(p);
        }
    }
    found
}

/// The colors CSV with its HEX column removed, as the load must write it.
pub fn expected_colors_without_hex() -> String {
    let input = std::fs::read_to_string(repo_root().join("examples/data/colors.csv")).unwrap();
    input
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ',');
            let name = parts.next().unwrap();
            let _hex = parts.next();
            format!("{name},{}\n", parts.next().unwrap())
        })
        .collect()
}

/// Runs `conveyor run FLOW --json --config CONFIG` on a thread of its own,
/// for tests that inject a fault while the flow runs.
pub fn run_flow_in_background(
    cwd: &Path,
    flow: &Path,
    config: &Path,
) -> std::thread::JoinHandle<(Output, Option<RunReport>)> {
    run_flow_args_in_background(cwd, flow, &["--config", config.to_str().unwrap()])
}

/// Runs `conveyor run FLOW --json ARGS` on a thread of its own.
pub fn run_flow_args_in_background(
    cwd: &Path,
    flow: &Path,
    args: &[&str],
) -> std::thread::JoinHandle<(Output, Option<RunReport>)> {
    let (cwd, flow) = (cwd.to_path_buf(), flow.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_flow(&cwd, &flow, &args)
    })
}

/// The promise for one colors flow on the broker at `url`: the output holds
/// exactly the expected rows, no temporary file is left under `storage`, the
/// task queues are drained and nothing was dead-lettered.
pub fn assert_colors_promise(url: &str, ns: &str, storage: &Path) {
    let written = std::fs::read_to_string(storage.join("out/colors.csv")).unwrap();
    assert_eq!(
        written,
        expected_colors_without_hex(),
        "rows lost or duplicated"
    );
    assert!(tmp_files(storage).is_empty(), "{:?}", tmp_files(storage));
    for kind in ["extract", "transform", "load"] {
        assert_eq!(
            queue_depth_at(url, &format!("{ns}.tasks.{kind}")),
            0,
            "{kind} queue not drained"
        );
    }
    assert_eq!(
        queue_depth_at(url, &format!("{ns}.dead")),
        0,
        "unexpected dead letters"
    );
}

/// A flow file for the colors ETL, with extract reading the repository's CSV.
pub fn colors_flow(dir: &TestDir, name: &str, extra_flow: &str) -> PathBuf {
    let csv = repo_root().join("examples/data/colors.csv");
    dir.write(
        &format!("{name}.toml"),
        &format!(
            "[flow]\nname = \"{name}\"\n{extra_flow}\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n\n[tasks.transform]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"HEX\"] }}]\n\n[tasks.load]\nkind = \"load\"\ninput = \"transform\"\npath = \"colors.csv\"\n",
            csv.display()
        ),
    )
}

/// Messages ready in a queue, via a passive declare on a fresh connection.
pub fn queue_depth(queue: &str) -> u32 {
    queue_depth_at(&amqp_url(), queue)
}

/// Messages ready in a queue of the broker at `url`.
pub fn queue_depth_at(url: &str, queue: &str) -> u32 {
    block_on(async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let n = q.message_count();
        let _ = conn.close(200, "bye".into()).await;
        n
    })
}

/// Deletes a test namespace's queues and exchanges from the shared broker.
pub fn delete_namespace(ns: &str) {
    block_on(async {
        let Ok(conn) =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        let Ok(ch) = conn.create_channel().await else {
            return;
        };
        for kind in ["extract", "transform", "load"] {
            let _ = ch
                .queue_delete(format!("{ns}.tasks.{kind}").into(), Default::default())
                .await;
        }
        for q in ["dead", "submissions", "replies.coord"] {
            let _ = ch
                .queue_delete(format!("{ns}.{q}").into(), Default::default())
                .await;
        }
        for ex in ["tasks", "events", "dlx", "replies", "submissions"] {
            let _ = ch
                .exchange_delete(format!("{ns}.{ex}").into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Publishes `bodies` to an exchange of the broker at `url` as any client
/// would, each confirmed: Ok when the broker took them all, else its answer.
pub fn publish_at(
    url: &str,
    exchange: &str,
    routing_key: &str,
    bodies: &[Vec<u8>],
    mandatory: bool,
) -> Result<(), String> {
    block_on(async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(Default::default())
            .await
            .map_err(|e| e.to_string())?;
        for body in bodies {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    lapin::options::BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    body,
                    lapin::BasicProperties::default(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            if !matches!(confirm, lapin::Confirmation::Ack(None)) {
                return Err(format!("{confirm:?}"));
            }
        }
        let _ = conn.close(200, "bye".into()).await;
        Ok(())
    })
}

/// Publishes raw bodies to the shared broker, as a hostile client would.
pub fn publish_raw(exchange: &str, routing_key: &str, bodies: &[Vec<u8>]) {
    publish_at(&amqp_url(), exchange, routing_key, bodies, true).expect("publish to RabbitMQ");
}

/// A RabbitMQ node of a test's own, on spare ports with its own data
/// directory, for faults that must not touch the shared broker.
pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

impl PrivateBroker {
    pub fn start(test: &str) -> PrivateBroker {
        PrivateBroker::start_with_conf(test, "")
    }

    /// The broker's directory, for files its config refers to.
    pub fn dir_for(test: &str) -> PathBuf {
        repo_root().join("target/test-brokers").join(test)
    }

    /// Starts a private broker with `conf` appended to its rabbitmq.conf.
    pub fn start_with_conf(test: &str, conf: &str) -> PrivateBroker {
        let dir = PrivateBroker::dir_for(test);
        std::fs::create_dir_all(&dir).unwrap();
        for old in ["mnesia", "log", "pid"] {
            let _ = std::fs::remove_dir_all(dir.join(old));
            let _ = std::fs::remove_file(dir.join(old));
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("loopback_users = none\n{conf}"),
        )
        .unwrap();
        let broker = PrivateBroker {
            node: format!("conveyor-{test}-{}@localhost", std::process::id()),
            port: spare_port(),
            dist_port: spare_port(),
            dir,
        };
        broker.launch();
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(Path::new(RABBIT_BIN).join(program));
        cmd.current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Starts the node (again, after a stop) and waits until it serves AMQP.
    pub fn launch(&self) {
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "rabbitmq-server -detached failed for {}",
            self.node
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private broker {} never opened port {}; see {}",
                self.node,
                self.port,
                self.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let ok = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "--timeout", "60", "await_startup"])
            .status()
            .unwrap();
        assert!(ok.success(), "private broker {} did not start", self.node);
    }

    pub fn ctl(&self, args: &[&str]) {
        let status = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "rabbitmqctl {args:?} failed");
    }

    /// `rabbitmqctl stop`: a graceful broker shutdown.
    pub fn stop(&self) {
        self.ctl(&["stop"]);
    }

    /// SIGKILL the broker's Erlang VM.
    pub fn sigkill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        // Keep the broker's logs of a failed test for the post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What the fault proxy does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    Pass,
    /// Every chunk waits this long before it is forwarded.
    Latency(Duration),
    /// Nothing passes and nothing is reset: bytes wait until the link heals,
    /// like a cable pulled and plugged back in.
    Blackhole,
}

/// A TCP proxy in front of the broker that can delay, cut or reset links.
pub struct FaultProxy {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<Link>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Link::Pass));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                if let Ok(mut all) = c.lock() {
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let m = m.clone();
                    std::thread::spawn(move || pump(from, to, m));
                }
            }
        });
        FaultProxy { port, mode, conns }
    }

    pub fn set(&self, link: Link) {
        *self.mode.lock().unwrap() = link;
    }

    /// Resets every link now.
    pub fn reset_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    mode: std::sync::Arc<std::sync::Mutex<Link>>,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let link = *mode.lock().unwrap();
            match link {
                Link::Pass => break,
                Link::Latency(d) => {
                    std::thread::sleep(d);
                    break;
                }
                Link::Blackhole => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Runs a future to completion on a runtime of its own, for the broker
/// helpers that tests call from plain (non-async) code.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the test helpers")
        .block_on(future)
}
