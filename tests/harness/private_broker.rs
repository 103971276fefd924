//! A RabbitMQ node of a test's own, on spare ports with its own data
//! directory, for faults that must not touch the shared broker: a graceful
//! stop, a SIGKILL, a restart, a config of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::workdir::repo_root;

/// A RabbitMQ node of a test's own, on spare ports with its own data
/// directory, for faults that must not touch the shared broker.
pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
}

/// A TCP port nothing listens on right now (bound, then released).
pub fn spare_port() -> u16 {
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
