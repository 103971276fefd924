//! A deployment with its own vhost and a broker user per role: workers can
//! consume tasks and publish results but cannot publish tasks; a client
//! without permission is refused with a clear error; passwords never show.

use std::process::Command;

use conveyor_schemas::FlowState;

use crate::harness::{
    broker::*, colors::*, configs::*, private_broker::*, processes::*, workdir::*,
};

/// A vhost and users on the local broker, removed on drop.
struct Deployment {
    vhost: String,
    users: Vec<String>,
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl on PATH");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        describe(&out)
    );
}

impl Deployment {
    fn new(vhost: &str) -> Deployment {
        rabbitmqctl(&["add_vhost", vhost]);
        Deployment {
            vhost: vhost.to_string(),
            users: Vec::new(),
        }
    }

    fn user(&mut self, name: &str, password: &str, perms: Option<[&str; 3]>) -> String {
        rabbitmqctl(&["add_user", name, password]);
        self.users.push(name.to_string());
        if let Some([configure, write, read]) = perms {
            rabbitmqctl(&[
                "set_permissions",
                "-p",
                &self.vhost,
                name,
                configure,
                write,
                read,
            ]);
        }
        format!("amqp://{name}:{password}@127.0.0.1:5672/{}", self.vhost)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.vhost])
            .output();
        for u in &self.users {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_user", u])
                .output();
        }
    }
}

/// Publishes one message as `url` and returns the broker's answer.
fn try_publish(url: &str, exchange: &str, routing_key: &str) -> Result<(), String> {
    publish_at(url, exchange, routing_key, &[b"{}".to_vec()], false)
}

#[test]
fn per_role_users_in_their_own_vhost() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ns = "sec";
    let mut deployment = Deployment::new(&format!("conveyor-sec-{id}"));
    let worker_secret = format!("w-secret-{id}");
    let worker_url = deployment.user(
        &format!("sec-{id}-worker"),
        &worker_secret,
        Some([
            r"^(sec\.(tasks|events|replies|dlx|dead|tasks\.(extract|transform|load))|amq\.gen-.*)$",
            // Declaring a queue that dead-letters needs write on its DLX.
            r"^(sec\.(events|replies|dlx|dead|tasks\.(extract|transform|load))|amq\.gen-.*)$",
            // The events read right and amq.gen-* queue: the ends of runs.
            r"^(sec\.(tasks|events|dlx|tasks\.(extract|transform|load))|amq\.gen-.*)$",
        ]),
    );
    let coord_secret = format!("c-secret-{id}");
    let coord_url = deployment.user(
        &format!("sec-{id}-coord"),
        &coord_secret,
        Some([
            r"^(sec\..*|amq\.gen-.*)$",
            r"^(sec\..*|amq\.gen-.*)$",
            r"^(sec\..*|amq\.gen-.*)$",
        ]),
    );
    let nobody_secret = format!("n-secret-{id}");
    let nobody_url = deployment.user(&format!("sec-{id}-nobody"), &nobody_secret, None);

    let dir = TestDir::new("security_roles");
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config_at(
            &worker_url,
            "w",
            ns,
            &["extract", "transform", "load"],
            &storage,
            "",
        ),
    );
    let worker = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    let client = dir.write(
        "client.toml",
        &node_config_at(&coord_url, "client", ns, &[], &dir.join("c"), ""),
    );
    let flow = colors_flow(&dir, "secure", "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        worker.log_text()
    );
    assert_eq!(report.unwrap().state, FlowState::Succeeded);

    // The worker's user cannot publish tasks, not even through the default exchange.
    let refused = try_publish(&worker_url, "sec.tasks", "extract").unwrap_err();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("ACCESS-REFUSED"),
        "{refused}"
    );
    let refused = try_publish(&worker_url, "", "sec.tasks.extract").unwrap_err();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("ACCESS-REFUSED"),
        "{refused}"
    );
    assert!(try_publish(&coord_url, "sec.tasks", "nonexistent-kind").is_ok());

    // A user without permission on the vhost is refused, clearly, and its
    // password is not printed.
    let denied = dir.write(
        "denied.toml",
        &node_config_at(&nobody_url, "denied", ns, &[], &dir.join("d"), ""),
    );
    let (out, _) = run_flow(&dir.path, &flow, &["--config", denied.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to amqp://") && stderr.contains(":***@"),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("access")
            || stderr.contains("NOT_ALLOWED")
            || stderr.contains("NOT-ALLOWED"),
        "{stderr}"
    );

    // Secrets appear in no log, report or output.
    let mut everything = worker.log_text();
    everything.push_str(&describe(&out));
    for secret in [&worker_secret, &coord_secret, &nobody_secret] {
        assert!(!everything.contains(secret.as_str()), "a password leaked");
    }
}

/// Runs openssl in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// A private CA, and a certificate it signed for localhost / 127.0.0.1.
fn private_ca(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Conveyor test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// TLS with a private CA: a private broker listens on amqps only; nodes that
/// trust the CA (`[broker] tls_ca`) run the colors flow through it, and a
/// client that does not trust it is refused with a certificate error.
#[test]
fn amqps_with_a_private_ca() {
    let _serial = crate::faults::ONE_BROKER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let test = "tls_private_ca";
    let certs = PrivateBroker::dir_for(test).join("certs");
    private_ca(&certs);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        "listeners.ssl.default = {tls_port}\nssl_options.cacertfile = {c}/ca.pem\nssl_options.certfile = {c}/server.pem\nssl_options.keyfile = {c}/server.key\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
        c = certs.display()
    );
    let _broker = PrivateBroker::start_with_conf(test, &conf);
    let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    let dir = TestDir::new(test);
    let ns = "tls";
    let storage = dir.join("shared");
    let ca = format!("tls_ca = \"{}\"\n", certs.join("ca.pem").display());
    let with_ca = |text: String| text.replace("[broker]\n", &format!("[broker]\n{ca}"));
    let kinds = ["extract", "transform", "load"];
    let w = dir.write(
        "w.toml",
        &with_ca(node_config_at(&url, "w", ns, &kinds, &storage, "")),
    );
    let _worker = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    let client = dir.write(
        "client.toml",
        &with_ca(node_config_at(&url, "client", ns, &[], &dir.join("c"), "")),
    );
    let flow = colors_flow(&dir, "colors", "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert_eq!(
        std::fs::read_to_string(storage.join("out/colors.csv")).unwrap(),
        expected_colors_without_hex()
    );

    // Without the CA the server certificate is not trusted.
    let untrusting = dir.write(
        "untrusting.toml",
        &node_config_at(&url, "client2", ns, &[], &dir.join("c2"), ""),
    );
    let (out, _) = run_flow(
        &dir.path,
        &flow,
        &["--config", untrusting.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    assert!(
        err.contains("cannot connect to amqps://guest:***@localhost")
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// `[workers] input_roots` and `allow_urls` confine what a flow's sources
/// may read and fetch; a refused source names the rule, and a node config
/// without them warns once at start (issue 10, item 10).
#[test]
fn sources_are_confined_to_input_roots_and_allowed_urls() {
    let dir = TestDir::new("security_input_roots");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        repo_root().join("examples/data/colors.csv"),
        data.join("colors.csv"),
    )
    .unwrap();
    let storage = format!(
        "[storage]\nartifacts = \"{}\"\noutput_root = \"{}\"\n",
        dir.join("artifacts").display(),
        dir.join("out").display()
    );
    let confined = dir.write(
        "confined.toml",
        &format!(
            "[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"load\"]\ninput_roots = [\"data\"]\nallow_urls = [\"https://data.example.org/\"]\n{storage}"
        ),
    );
    let flow = |name: &str, source: &str| {
        dir.write(
            &format!("{name}.toml"),
            &format!("[flow]\nname = \"{name}\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\n{source}\nformat = \"csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n"),
        )
    };
    let run = |flow: &std::path::Path, config: &std::path::Path| {
        run_flow(
            &dir.path,
            flow,
            &["--config", config.to_str().unwrap(), "--log", "info"],
        )
    };

    let inside = flow(
        "inside",
        &format!("path = \"{}\"", data.join("colors.csv").display()),
    );
    let (out, report) = run(&inside, &confined);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("sets no"), "{log}");

    for (name, source, rule) in [
        (
            "passwd",
            "path = \"/etc/passwd\"".to_string(),
            "input_roots",
        ),
        (
            "escape",
            format!("path = \"{}/../confined.toml\"", data.display()),
            "input_roots",
        ),
        (
            "metadata",
            "url = \"http://169.254.169.254/latest/meta-data.csv\"".to_string(),
            "allow_urls",
        ),
    ] {
        let (out, report) = run(&flow(name, &source), &confined);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", describe(&out));
        let report = report.unwrap();
        let error = report.error.unwrap();
        assert!(error.contains(rule), "{name}: {error}");
        assert!(!report.tasks[0].error.as_ref().unwrap().retryable);
        assert!(!dir.join(&format!("out/{name}.csv")).exists());
    }

    // A node config that sets neither rule reads only its `data` folder
    // and fetches no URL (issue 22), without a warning.
    let default = dir.write(
        "default.toml",
        &format!("[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"load\"]\n{storage}"),
    );
    let (out, report) = run(&inside, &default);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("opts out"));
    for (name, source, rule) in [
        (
            "dpasswd",
            "path = \"/etc/passwd\"".to_string(),
            "input_roots",
        ),
        (
            "dconfig",
            format!("path = \"{}\"", default.display()),
            "input_roots",
        ),
        (
            "durl",
            "url = \"https://data.example.org/x.csv\"".to_string(),
            "allow_urls is not set",
        ),
    ] {
        let (out, report) = run(&flow(name, &source), &default);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", describe(&out));
        let error = report.unwrap().error.unwrap();
        assert!(error.contains(rule), "{name}: {error}");
        assert!(!dir.join(&format!("out/{name}.csv")).exists());
    }

    // Opting out is explicit, and loud: one warning at start.
    let open = dir.write(
        "open.toml",
        &format!("[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"load\"]\ninput_roots = [\"/\"]\nallow_urls = [\"*\"]\n{storage}"),
    );
    let (out, _) = run(&inside, &open);
    assert!(out.status.success(), "{}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.matches("opts out of confining flows").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("input_roots = [") && log.contains("allow_urls = ["),
        "{log}"
    );
}

/// Issue 22, item 1: `conveyor run --config` refuses, before it submits, a
/// flow naming a variable outside the config's `[secrets] allow`, naming
/// it; a worker never reads one; `conveyor run` without a config (its
/// operator runs their own flow) reads its environment as before.
#[test]
fn env_references_are_read_only_from_the_allow_list() {
    let dir = TestDir::new("security_secrets_allow");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/in.csv"), "id\n1\n").unwrap();
    let config = |name: &str, secrets: &str| {
        dir.write(
            &format!("{name}.toml"),
            &format!(
                "[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"load\"]\n{secrets}[storage]\nartifacts = \"a\"\noutput_root = \"out\"\n"
            ),
        )
    };
    let none = config("none", "");
    let pg = config("pg", "[secrets]\nallow = [\"CONVEYOR_PG_*\"]\n");
    let flow = dir.write(
        "f.toml",
        "[flow]\nname = \"f\"\n[tasks.e]\nkind = \"extract\"\npath = \"data/in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${env:CONVEYOR_PG_DIR}/${env:HOME}.csv\"\n",
    );
    let run = |config: Option<&std::path::Path>| {
        let mut args = vec!["--json"];
        if let Some(c) = config {
            args.extend(["--config", c.to_str().unwrap()]);
        }
        let mut cmd = Command::new(conveyor_bin());
        cmd.current_dir(&dir.path)
            .arg("run")
            .arg(&flow)
            .args(&args)
            .env("CONVEYOR_PG_DIR", "pgdir")
            .env("HOME", "home-value");
        output_within(cmd, std::time::Duration::from_secs(60))
    };
    for (cfg, refused) in [(&none, "`CONVEYOR_PG_DIR`, `HOME`"), (&pg, "`HOME`")] {
        let out = run(Some(cfg));
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("environment variable {refused} (as"))
                && err.contains("[secrets] allow"),
            "{err}"
        );
        assert!(!dir.join("out").exists(), "a refused flow ran");
    }
    let allowed = config("all", "[secrets]\nallow = [\"CONVEYOR_PG_*\", \"HOME\"]\n");
    let out = run(Some(&allowed));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(dir.join("out/pgdir/home-value.csv").exists());
    let out = run(None);
    assert!(out.status.success(), "{}", describe(&out));
}
