//! `conveyor` child processes: a node that tells when it is ready through
//! the systemd notify protocol and is killed when dropped, and `conveyor run`
//! with a deadline so that a hanging flow fails its test.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use conveyor_schemas::RunReport;

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

/// A `conveyor node` process, killed when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub log: PathBuf,
    /// The socket the node notifies (`NOTIFY_SOCKET`, as under systemd):
    /// `READY=1` once every role has started, `STOPPING=1` on a graceful stop.
    notify: UnixDatagram,
    notify_path: PathBuf,
}

/// How long a node may take to tell it is ready.
const READY_DEADLINE: Duration = Duration::from_secs(20);

impl NodeProcess {
    /// Starts a node and waits until it notifies `READY=1`: its workers
    /// consume and its coordinator, if any, runs.
    pub fn start(config: &Path, log: &Path, envs: &[(&str, &str)]) -> NodeProcess {
        let log_file = std::fs::File::create(log).unwrap();
        let notify_path = log.with_extension("notify");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", notify_path.display()));
        let mut cmd = Command::new(conveyor_bin());
        cmd.args(["node", "--config"])
            .arg(config)
            .env("CONVEYOR_LOG", "info")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("CONVEYOR_BROKER_URL")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn conveyor node");
        let mut node = NodeProcess {
            child,
            log: log.to_path_buf(),
            notify,
            notify_path,
        };
        node.wait_for_notify("READY=1", READY_DEADLINE);
        node
    }

    /// Waits until the node notifies `state` (e.g. `STOPPING=1`); panics with
    /// the node's log if it exits first or the deadline passes.
    pub fn wait_for_notify(&mut self, state: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "node never notified {state:?} within {within:?}:\n{}",
                    self.log_text()
                );
            }
            self.notify
                .set_read_timeout(Some(left.min(Duration::from_millis(100))))
                .unwrap();
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    // One datagram may carry several newline-separated states.
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == state)
                    {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket {}: {e}", self.notify_path.display()),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node exited ({status}) before it notified {state:?}:\n{}",
                    self.log_text()
                );
            }
        }
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
        let _ = std::fs::remove_file(&self.notify_path);
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
