//! The HTTP API of a coordinator node (issue 11), against a real
//! `conveyor node` coordinator process and a worker node process on
//! RabbitMQ, with a real HTTP client: runs started, listed, read and
//! followed; tokens and roles; hostile bodies, ids and query values; the
//! checked-in OpenAPI document; and the `conveyor runs` CLI.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

const OPERATE: &str = "operate-token-0123456789";
const READ: &str = "read-token-0123456789abc";
/// `[secrets] allow` of the variables the tests' flows name.
const ALLOW_TEST_SECRETS: &str = "[secrets]\nallow = [\"CONVEYOR_TEST_*\"]\n";

/// A coordinator node serving the API (with a `read` token from the config
/// and an `operate` token from CONVEYOR_API_TOKEN), and a worker node.
struct Api {
    dir: TestDir,
    _ns: Namespace,
    base: String,
    coord: NodeProcess,
    _worker: NodeProcess,
}

impl Api {
    fn start(test: &str) -> Api {
        Api::start_with(test, &[])
    }

    /// With `worker_env` for the worker node (e.g. failpoints).
    fn start_with(test: &str, worker_env: &[(&str, &str)]) -> Api {
        Api::start_full(test, worker_env, "")
    }

    /// With `coordinator_extra` in the coordinator's `[coordinator]` table.
    fn start_full(test: &str, worker_env: &[(&str, &str)], coordinator_extra: &str) -> Api {
        Api::start_configured(test, worker_env, |w| w, coordinator_extra, "")
    }

    /// With the worker's config passed through `worker_config`, and
    /// `api_extra` in the coordinator's `[api]` table.
    fn start_configured(
        test: &str,
        worker_env: &[(&str, &str)],
        worker_config: impl FnOnce(String) -> String,
        coordinator_extra: &str,
        api_extra: &str,
    ) -> Api {
        let dir = TestDir::new(test);
        let ns = namespace(test);
        let w_cfg = dir.write(
            "w.toml",
            &worker_config(node_config(
                "w",
                &ns,
                &["extract", "load"],
                &dir.join("w"),
                "",
            )),
        );
        let worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), worker_env);
        let c_cfg = dir.write(
            "coord.toml",
            &node_config(
                "coord",
                &ns,
                &[],
                &dir.join("c"),
                &format!(
                    "[coordinator]\ndb = \"{}\"\n{coordinator_extra}[api]\nlisten = \"127.0.0.1:0\"\nmax_body = \"64KiB\"\ntokens = [{{ token_env = \"TEST_READ_TOKEN\", role = \"read\" }}]\n{api_extra}",
                    dir.join("c.db").display()
                ),
            ),
        );
        let coord = NodeProcess::start(
            &c_cfg,
            &dir.join("coord.log"),
            &[("TEST_READ_TOKEN", READ), ("CONVEYOR_API_TOKEN", OPERATE)],
        );
        let base = format!("http://{}", api_addr(&coord));
        Api {
            dir,
            _ns: ns,
            base,
            coord,
            _worker: worker,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// `GET path` with `token`: the status and the body as JSON.
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = Self::agent().get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = req.call().expect("GET");
        let status = res.status().as_u16();
        let text = res.into_body().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST path` with a raw JSON body.
    fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut req = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = req.send(body).expect("POST");
        let status = res.status().as_u16();
        let text = res.into_body().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.post_raw(path, token, body.to_string().as_bytes())
    }

    /// Every run the API knows, by its counts.
    fn total_runs(&self) -> u64 {
        let (status, list) = self.get("/api/v1/runs", Some(READ));
        assert_eq!(status, 200, "{list}");
        list["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    }

    /// Follows `/runs/{id}/events` to its end: every event's name and
    /// report.
    fn events(&self, id: &str) -> Vec<(String, Value)> {
        let res = Self::agent()
            .get(format!("{}/api/v1/runs/{id}/events", self.base))
            .header("Authorization", format!("Bearer {READ}"))
            .call()
            .expect("GET events");
        assert_eq!(res.status().as_u16(), 200);
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let reader = BufReader::new(res.into_body().into_reader());
        let (mut events, mut name) = (Vec::new(), String::new());
        for line in reader.lines() {
            let line = line.expect("read events");
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                events.push((name.clone(), serde_json::from_str(d).expect("event data")));
            }
        }
        events
    }

    /// `conveyor ARGS` against this API, with the operate token.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(conveyor_bin());
        cmd.args(args)
            .env("CONVEYOR_SERVER", &self.base)
            .env("CONVEYOR_API_TOKEN", OPERATE);
        output_within(cmd, Duration::from_secs(60))
    }
}

/// The address a node's API listens on, from its log.
pub(crate) fn api_addr(node: &NodeProcess) -> String {
    node.wait_for_line(&["API listening"], Duration::from_secs(10));
    let log = node.log_text();
    let line = log.lines().find(|l| l.contains("API listening")).unwrap();
    let addr = line.split("addr=").nth(1).expect("addr= in the log line");
    addr.split_whitespace().next().unwrap().to_string()
}

fn flow_text(name: &str, input: &str) -> String {
    format!(
        "[flow]\nname = \"{name}\"\n[tasks.e]\nkind = \"extract\"\npath = \"{input}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n"
    )
}

#[test]
fn a_run_started_through_the_api_is_listed_read_and_followed_to_its_end() {
    // Each extract sleeps first, so the run is live while it is followed.
    let api = Api::start_with("api_run", &[("CONVEYOR_FAILPOINTS", "sleep=1500@e")]);
    // Relative paths of an ad-hoc flow resolve against the directory of the
    // coordinator's config file.
    api.dir.write("in.csv", "id,name\n1,ada\n2,grace\n");
    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("adhoc", "in.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("adhoc-"), "{id}");
    let (status, run) = api.get(&format!("/api/v1/runs/{id}"), Some(READ));
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (&run["live"], &run["report"]["state"]),
        (&json!(true), &json!("Running")),
        "{run}"
    );

    // Reports while it runs, then the final one.
    let events = api.events(&id);
    let (last, report) = events.last().expect("at least one event");
    assert_eq!(last, "end", "{events:?}");
    assert_eq!(report["state"], "Succeeded", "{report}");
    assert_eq!(report["flow_run"], id.as_str());
    let (running, rest) = events.split_at(events.len() - 1);
    assert!(!running.is_empty(), "no report before the end: {rest:?}");
    for (name, report) in running {
        assert_eq!(
            (name.as_str(), &report["state"]),
            ("report", &json!("Running")),
            "{events:?}"
        );
    }
    let out = api.dir.join("w/out/adhoc.csv");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "id,name\n1,ada\n2,grace\n"
    );

    // A finished run: one `end` event.
    let again = api.events(&id);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, "end");

    let (status, list) = api.get("/api/v1/runs?flow=adhoc", Some(READ));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["runs"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["runs"][0]["state"], "Succeeded");
    assert_eq!(list["counts"], json!({ "Succeeded": 1 }));
    assert_eq!(list["next_cursor"], Value::Null);

    let (status, run) = api.get(&format!("/api/v1/runs/{id}"), Some(READ));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["report"]["state"], "Succeeded");
    assert_eq!(run["report"]["tasks"].as_array().unwrap().len(), 2);
    assert!(run["created_ms"].as_u64().unwrap() > 0, "{run}");
    assert!(
        run["ended_ms"].as_u64() >= run["started_ms"].as_u64(),
        "{run}"
    );
    assert_eq!(run["retry_of"], Value::Null);
    assert_eq!(run["params"], json!({}));

    // The worker is listed once its heartbeat (every 200ms) reached the
    // coordinator.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let w = loop {
        let (status, nodes) = api.get("/api/v1/nodes", Some(READ));
        assert_eq!(status, 200, "{nodes}");
        let found = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "w")
            .cloned();
        match found {
            Some(w) => break w,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            None => panic!("worker w not listed within 5s: {nodes}"),
        }
    };
    assert!(w["kinds"].as_array().unwrap().contains(&json!("extract")));
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));

    let (status, health) = api.get("/api/v1/health", None);
    assert_eq!(status, 200);
    assert_eq!(
        health,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "node": "coord", "adhoc": true})
    );

    // The CLI: the list as JSON, a run shown, and watch's exit code.
    let out = api.cli(&["runs", "list", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["runs"][0]["id"], id.as_str());
    let out = api.cli(&["runs", "show", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&id) && shown.contains("Succeeded"),
        "{shown}"
    );
    let out = api.cli(&["runs", "watch", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // A run that fails: its extract reads a file that is not there.
    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("broken", "missing.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let failed = created["run_id"].as_str().unwrap();
    let out = api.cli(&["runs", "watch", failed]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Failed"),
        "{}",
        describe(&out)
    );
    let out = api.cli(&["runs", "list", "--state", "Failed"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(failed),
        "{}",
        describe(&out)
    );
    // A 4xx is exit 2 with the server's message.
    let out = api.cli(&["runs", "show", "nosuch-000000000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run `nosuch-000000000000`"),
        "{}",
        describe(&out)
    );

    // The served OpenAPI document is the one checked in.
    let (status, served) = api.get("/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/openapi.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert!(
        served == on_disk,
        "schemas/openapi.json is out of date; run `cargo run -p conveyor-node -- schemas --openapi > schemas/openapi.json`"
    );
}

#[test]
fn tokens_and_roles_are_enforced() {
    let api = Api::start("api_auth");
    let before = api.total_runs();
    let body = json!({ "flow_text": flow_text("auth", "in.csv") });

    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, err) = api.get("/api/v1/runs", token);
        assert_eq!(status, 401, "{token:?}: {err}");
        assert_eq!(err["error"], "unauthorized", "{err}");
        let (status, err) = api.post("/api/v1/runs", token, &body);
        assert_eq!(status, 401, "{token:?}: {err}");
    }
    // A read token reads, and may not start, cancel or retry.
    assert_eq!(api.get("/api/v1/runs", Some(READ)).0, 200);
    assert_eq!(api.get("/api/v1/nodes", Some(READ)).0, 200);
    let (status, err) = api.post("/api/v1/runs", Some(READ), &body);
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"], "forbidden");
    assert!(
        err["message"].as_str().unwrap().contains("operate"),
        "{err}"
    );
    for path in [
        "/api/v1/runs/auth-000000000000/cancel",
        "/api/v1/runs/auth-000000000000/retry",
        "/api/v1/flows/auth/runs",
    ] {
        let (status, err) = api.post(path, Some(READ), &json!({}));
        assert_eq!(status, 403, "{path}: {err}");
    }
    // The operate token also reads.
    assert_eq!(api.get("/api/v1/runs", Some(OPERATE)).0, 200);
    assert_eq!(api.total_runs(), before);
    // The CLI with no token: exit 2 and the server's message.
    let mut cmd = Command::new(conveyor_bin());
    cmd.args(["runs", "list"])
        .env("CONVEYOR_SERVER", &api.base)
        .env_remove("CONVEYOR_API_TOKEN");
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        describe(&out)
    );
    drop(api.coord);
}

#[test]
fn hostile_bodies_ids_and_queries_get_clear_4xx_and_change_nothing() {
    let api = Api::start("api_hostile");
    let before = api.total_runs();
    let post = |body: &[u8]| api.post_raw("/api/v1/runs", Some(OPERATE), body);

    // Larger than [api] max_body (64KiB).
    let big = json!({ "flow_text": "#".repeat(100_000) }).to_string();
    let (status, err) = post(big.as_bytes());
    assert_eq!(
        (status, err["error"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );
    assert!(err["message"].as_str().unwrap().contains("65536"), "{err}");

    for (body, needle) in [
        (&b"{not json"[..], "not the expected JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{\"flow_text\": 7}", "expected a string"),
        (
            b"{\"flow_text\": \"\", \"surprise\": 1}",
            "unknown field `surprise`",
        ),
        (
            b"{\"flow_text\": \"\", \"params\": {\"day\": 1}}",
            "expected a string",
        ),
    ] {
        let (status, err) = post(body);
        assert_eq!(status, 400, "{}: {err}", String::from_utf8_lossy(body));
        assert_eq!(err["error"], "bad_request");
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
    }

    // A flow with two problems: 422 with both, each with its key and line.
    let (status, err) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": "[flow]\nname = \"bad\"\n[tasks.e]\nkind = \"teleport\"\n[tasks.l]\nkind = \"load\"\ninput = \"nowhere\"\npath = \"x.csv\"\n" }),
    );
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"], "invalid");
    let problems = err["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "{err}");
    assert!(
        problems
            .iter()
            .any(|p| p["key"] == "tasks.e.kind" && p["line"] == 4),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("flow_text"),
        "{err}"
    );

    // Ids that are not run ids, and one that is but does not exist.
    let long = "a".repeat(300);
    for (path, status) in [
        ("/api/v1/runs/..%2F..%2Fetc%2Fpasswd".to_string(), 400),
        ("/api/v1/runs/..".to_string(), 400),
        (format!("/api/v1/runs/{long}"), 400),
        ("/api/v1/runs/%C3%A9t%C3%A9-1".to_string(), 400),
        ("/api/v1/runs/a%00b/events".to_string(), 400),
        ("/api/v1/runs/x%20y/tasks/e/logs".to_string(), 400),
        ("/api/v1/runs/nosuch-000000000000".to_string(), 404),
        ("/api/v1/runs/nosuch-000000000000/events".to_string(), 404),
        ("/api/v1/no/such/endpoint".to_string(), 404),
    ] {
        let (got, err) = api.get(&path, Some(READ));
        assert_eq!(got, status, "{path}: {err}");
        let message = err["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {err}"));
        assert!(
            message.len() < 400,
            "{path}: the message echoes too much: {message}"
        );
    }
    for path in [
        format!("/api/v1/runs/{long}/cancel"),
        "/api/v1/runs/%C3%A9/retry".to_string(),
        "/api/v1/flows/..%2Fx/runs".to_string(),
    ] {
        let (got, err) = api.post(&path, Some(OPERATE), &json!({}));
        assert_eq!(got, 400, "{path}: {err}");
    }

    for (query, needle) in [
        ("limit=abc", "`limit`"),
        ("limit=0", "`limit`"),
        ("limit=100000", "`limit`"),
        ("state=Exploded", "`state`"),
        ("since=yesterday", "`since`"),
        ("until=2026-13-45T00:00:00Z", "`until`"),
        ("since=20&until=10", "`since`"),
        ("cursor=garbage", "`cursor`"),
        ("cursor=1.%2F..%2Fx", "`cursor`"),
        ("flow=..%2Fx", "`flow`"),
        ("bogus=1", "`bogus`"),
        ("limit=1&limit=2", "`limit`"),
    ] {
        let (status, err) = api.get(&format!("/api/v1/runs?{query}"), Some(READ));
        assert_eq!(status, 400, "{query}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{query}: {err}"
        );
    }
    let (status, err) = api.get(
        "/api/v1/runs/x-000000000000/tasks/e/logs?follow=maybe",
        Some(READ),
    );
    assert_eq!(status, 400, "{err}");

    assert_eq!(api.total_runs(), before, "a refused request started a run");
}

/// Params the flow does not declare are refused (422) before a run starts.
#[test]
fn unknown_params_are_refused() {
    let api = Api::start("api_params");
    let before = api.total_runs();
    let (status, err) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("p", "in.csv"), "params": { "nosuch": "1" } }),
    );
    assert_eq!(status, 422, "{err}");
    assert!(err["message"].as_str().unwrap().contains("nosuch"), "{err}");
    assert_eq!(api.total_runs(), before);
}

#[test]
fn an_api_off_loopback_without_a_token_is_refused_at_start() {
    let dir = TestDir::new("api_exposed");
    let cfg: PathBuf = dir.write(
        "node.toml",
        "[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\"]\n[api]\nlisten = \"0.0.0.0:0\"\n[storage]\nartifacts = \"a\"\noutput_root = \"out\"\n",
    );
    let mut cmd = Command::new(conveyor_bin());
    cmd.args(["node", "--config"])
        .arg(&cfg)
        .env_remove("CONVEYOR_API_TOKEN")
        .env_remove("CONVEYOR_BROKER_URL");
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:0")
            && err.contains("not a loopback address")
            && err.contains("CONVEYOR_API_TOKEN"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

/// Issue 22, item 15: `conveyor validate` refuses the config that `conveyor
/// node` refuses at start, with the same message, and passes it once the
/// node would start.
#[test]
fn validate_refuses_what_the_node_refuses() {
    let dir = TestDir::new("api_validate_exposed");
    let cfg: PathBuf = dir.write(
        "node.toml",
        "[node]\nname = \"n\"\n[coordinator]\n[workers]\nkinds = [\"extract\"]\n[api]\nlisten = \"0.0.0.0:0\"\n[storage]\nartifacts = \"a\"\noutput_root = \"out\"\n",
    );
    let run = |command: &str, token: Option<&str>| {
        let mut cmd = Command::new(conveyor_bin());
        cmd.arg(command);
        if command == "node" {
            cmd.arg("--config");
        }
        cmd.arg(&cfg)
            .env_remove("CONVEYOR_API_TOKEN")
            .env_remove("CONVEYOR_BROKER_URL");
        if let Some(t) = token {
            cmd.env("CONVEYOR_API_TOKEN", t);
        }
        output_within(cmd, Duration::from_secs(30))
    };
    let node = run("node", None);
    let validate = run("validate", None);
    assert_eq!(node.status.code(), Some(2), "{}", describe(&node));
    assert_eq!(validate.status.code(), Some(2), "{}", describe(&validate));
    let (node_err, validate_err) = (
        String::from_utf8_lossy(&node.stderr),
        String::from_utf8_lossy(&validate.stderr),
    );
    let line = node_err
        .lines()
        .find(|l| l.contains("not a loopback address"))
        .unwrap_or_else(|| panic!("{node_err}"));
    assert!(
        validate_err.contains(line),
        "{validate_err}\nvs\n{node_err}"
    );
    assert!(!String::from_utf8_lossy(&validate.stdout).contains("ok:"));

    let ok = run("validate", Some(OPERATE));
    assert!(ok.status.success(), "{}", describe(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("is a valid node config"));
}

/// SIGTERM stops the node and its API together, even with a client
/// following a live run's events: the stream ends with an `error` event
/// saying the coordinator stopped, and the port closes.
#[test]
fn the_api_stops_with_its_node() {
    let mut api = Api::start_with("api_stop", &[("CONVEYOR_FAILPOINTS", "sleep=5000@e")]);
    api.dir.write("in.csv", "id\n1\n");
    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("slow", "in.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_string();
    let base = api.base.clone();
    let follower = std::thread::spawn(move || {
        let res = Api::agent()
            .get(format!("{base}/api/v1/runs/{id}/events"))
            .header("Authorization", format!("Bearer {READ}"))
            .call()
            .expect("GET events");
        // Read until the server closes the stream.
        std::io::read_to_string(res.into_body().into_reader()).unwrap_or_default()
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = api.coord.sigterm_and_wait(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        api.coord.log_text()
    );
    let stream = follower.join().unwrap();
    assert!(stream.starts_with("event: report\n"), "{stream}");
    assert!(
        stream.contains("event: error\ndata: {\"error\":\"unavailable\"")
            && stream.contains("the coordinator stopped while run slow-"),
        "{stream}"
    );
    let refused = Api::agent()
        .get(format!("{}/api/v1/health", api.base))
        .call();
    assert!(
        refused.is_err(),
        "the API still answers after its node stopped"
    );
}

/// Flows registered with `[coordinator] flows`: listed and triggered through
/// the API and the CLI, unknown params refused; `/metrics` on the API's
/// listener, for a token.
#[test]
fn registered_flows_are_listed_and_triggered_through_the_api_and_the_cli() {
    // The flows live apart from the nodes' directory, which starts afresh.
    let dir = TestDir::new("api_registered_flows");
    let input = dir.write("in.csv", "id\n1\n2\n3\n");
    dir.write(
        "flows/daily.toml",
        &format!(
            "[flow]\nname = \"daily\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"daily.csv\"\n",
            input.display()
        ),
    );
    let flows = dir.join("flows");
    let api = Api::start_full(
        "api_registered",
        &[],
        &format!("flows = \"{}\"\n", flows.display()),
    );
    let (status, listed) = api.get("/api/v1/flows", Some(READ));
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["flows"][0]["name"], "daily", "{listed}");
    assert_eq!(listed["flows"][0]["last_run"], Value::Null, "{listed}");

    let before = api.total_runs();
    let (status, err) = api.post(
        "/api/v1/flows/daily/runs",
        Some(OPERATE),
        &json!({ "params": { "nosuch": "1" } }),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("invalid")),
        "{err}"
    );
    assert!(err["message"].as_str().unwrap().contains("nosuch"), "{err}");
    let (status, err) = api.post("/api/v1/flows/nosuch/runs", Some(OPERATE), &json!({}));
    assert_eq!(status, 404, "{err}");
    assert_eq!(api.total_runs(), before, "a refused trigger started a run");

    let out = api.cli(&["flows", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daily"),
        "{}",
        describe(&out)
    );
    let out = api.cli(&["trigger", "daily", "--param", "nosuch=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "{}",
        describe(&out)
    );
    let out = api.cli(&["trigger", "daily", "--watch", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "Succeeded", "{report}");
    let id = report["flow_run"].as_str().unwrap();
    let (_, listed) = api.get("/api/v1/flows", Some(READ));
    assert_eq!(listed["flows"][0]["last_run"], id, "{listed}");

    // The coordinator's metrics on the API's listener, for a token.
    let res = Api::agent()
        .get(format!("{}/metrics", api.base))
        .call()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = Api::agent()
        .get(format!("{}/metrics", api.base))
        .header("Authorization", format!("Bearer {READ}"))
        .call()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.into_body().read_to_string().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("conveyor_runs_total{") && l.contains("daily")),
        "{text}"
    );
}

/// Cancel and retry through the API and the CLI: a cancelled run ends
/// `Cancelled` and a second cancel is a 409; a failed run retried after its
/// input appears succeeds as a new run linked to the old one.
#[test]
fn runs_are_cancelled_and_retried_through_the_api_and_the_cli() {
    let api = Api::start_with(
        "api_cancel_retry",
        &[("CONVEYOR_FAILPOINTS", "sleep=3000@e")],
    );
    api.dir.write("in.csv", "id\n1\n");
    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("slow", "in.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_string();
    let (status, body) = api.post(
        &format!("/api/v1/runs/{id}/cancel"),
        Some(OPERATE),
        &json!({}),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "run_id": id, "state": "Cancelled" }));
    let events = api.events(&id);
    assert_eq!(events.last().unwrap().1["state"], "Cancelled", "{events:?}");
    let (status, err) = api.post(
        &format!("/api/v1/runs/{id}/cancel"),
        Some(OPERATE),
        &json!({}),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (409, Some("conflict")),
        "{err}"
    );
    let out = api.cli(&["runs", "cancel", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = api.cli(&["runs", "watch", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // A run that fails for want of its input, retried once the input is there.
    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("late", "late.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let failed = created["run_id"].as_str().unwrap().to_string();
    assert_eq!(api.events(&failed).last().unwrap().1["state"], "Failed");
    api.dir.write("late.csv", "id\n7\n");
    let (status, retried) = api.post(
        &format!("/api/v1/runs/{failed}/retry"),
        Some(OPERATE),
        &json!({}),
    );
    assert_eq!(status, 201, "{retried}");
    assert_eq!(retried["retry_of"], failed.as_str());
    let new = retried["run_id"].as_str().unwrap().to_string();
    assert_eq!(api.events(&new).last().unwrap().1["state"], "Succeeded");
    let (_, run) = api.get(&format!("/api/v1/runs/{new}"), Some(READ));
    assert_eq!(run["retry_of"], failed.as_str(), "{run}");
    // The CLI retries too; the new run's id is on stdout.
    let out = api.cli(&["runs", "retry", &failed]);
    assert!(out.status.success(), "{}", describe(&out));
    let again = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = api.cli(&["runs", "watch", &again]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// The logs of `task` in run `id` as the API gives them, once a line
/// starting with `start` is there.
fn logs_with(api: &Api, id: &str, task: &str, start: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, logs) = api.get(&format!("/api/v1/runs/{id}/tasks/{task}/logs"), Some(READ));
        assert_eq!(status, 200, "{logs}");
        let has = logs.to_string().contains(&format!("\"message\":\"{start}"));
        if has {
            return logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{start}` line in the logs of {task}: {logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn secrets_are_read_by_the_worker_and_never_reported_logged_or_served() {
    let secret = "s3cr3t-9f8e7d6c";
    // Both nodes allow the test's variables: the coordinator at submit,
    // the worker when it reads them.
    let api = Api::start_configured(
        "api_secrets",
        &[("CONVEYOR_TEST_SECRET", secret)],
        |w| format!("{w}{ALLOW_TEST_SECRETS}"),
        ALLOW_TEST_SECRETS,
        "",
    );
    api.dir.write("in.csv", "id,name\n1,ada\n2,grace\n");
    let run = |flow: &str| {
        let (status, created) =
            api.post("/api/v1/runs", Some(OPERATE), &json!({ "flow_text": flow }));
        assert_eq!(status, 201, "{created}");
        let id = created["run_id"].as_str().unwrap().to_string();
        let (last, report) = api.events(&id).pop().expect("an end event");
        assert_eq!(last, "end");
        (id, report)
    };

    // The load's path names the secret: the worker writes where its value
    // says, and what comes back shows `***`.
    let (id, report) = run("[flow]\nname = \"sec\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${env:CONVEYOR_TEST_SECRET}/out.csv\"\n");
    assert_eq!(report["state"], "Succeeded", "{report}");
    assert_eq!(
        std::fs::read_to_string(api.dir.join(&format!("w/out/{secret}/out.csv"))).unwrap(),
        "id,name\n1,ada\n2,grace\n"
    );
    let (_, served) = api.get(&format!("/api/v1/runs/{id}"), Some(READ));
    let load = served["report"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "l")
        .unwrap()
        .clone();
    assert!(
        load["output"].as_str().unwrap().ends_with("/***/out.csv"),
        "{load}"
    );
    let logs = logs_with(&api, &id, "l", "Task succeeded");

    // A variable the worker node does not have: the task fails at once,
    // naming the variable and the task, and is not retried.
    let (missing, report) = run("[flow]\nname = \"nosec\"\nmax_attempts = 3\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${env:CONVEYOR_TEST_NOT_SET}/out.csv\"\n");
    assert_eq!(report["state"], "Failed", "{report}");
    let l = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "l")
        .unwrap();
    assert_eq!(l["attempts"], 1, "{l}");
    assert_eq!(
        (&l["error"]["kind"], &l["error"]["retryable"]),
        (&json!("spec"), &json!(false)),
        "{l}"
    );
    let message = l["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("task `l`")
            && message.contains("`CONVEYOR_TEST_NOT_SET`")
            && message.contains("not set on this worker node"),
        "{message}"
    );

    // A URL whose password is the secret, in an error: `***`.
    let (failed, report) = run("[flow]\nname = \"urlsec\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\nurl = \"http://reader:${env:CONVEYOR_TEST_SECRET}@127.0.0.1:9/in.csv\"\n");
    assert_eq!(report["state"], "Failed", "{report}");
    let e = &report["tasks"][0]["error"]["message"];
    assert!(
        e.as_str().unwrap().contains("reader:***@127.0.0.1:9"),
        "{e}"
    );
    let failed_logs = logs_with(&api, &failed, "e", "Task failed");

    // Nothing the API serves, the nodes log or the worker wrote about the
    // runs holds the value; the flow text keeps the reference.
    let (_, flow) = api.get(&format!("/api/v1/runs/{id}"), Some(READ));
    let mut served = vec![flow.to_string(), logs.to_string(), failed_logs.to_string()];
    for run in [&id, &missing, &failed] {
        served.push(
            api.get(&format!("/api/v1/runs/{run}"), Some(READ))
                .1
                .to_string(),
        );
    }
    served.push(api.get("/api/v1/runs", Some(READ)).1.to_string());
    served.push(api.coord.log_text());
    served.push(std::fs::read_to_string(api.dir.join("w.log")).unwrap());
    for text in &served {
        assert!(!text.contains(secret), "the secret shows in: {text}");
    }
    let cli = api.cli(&["runs", "show", &id, "--json"]);
    assert!(!String::from_utf8_lossy(&cli.stdout).contains(secret));
}

/// Issue 22, item 1: whoever holds an `operate` token cannot make a worker
/// read its environment or its files through `POST /api/v1/runs`. The
/// worker runs with the defaults of a node config: its `data` folder, no
/// URL, and only the variables of `[secrets] allow`.
#[test]
fn an_operate_token_cannot_make_a_worker_read_its_environment_or_files() {
    let secret = "s3cr3t-5a4b3c2d";
    let api = Api::start_configured(
        "api_confined",
        &[("CONVEYOR_TEST_SECRET", secret), ("CONVEYOR_OTHER", secret)],
        |w| {
            let open = format!(
                "input_roots = [\"{}\"]\nallow_urls = [\"*\"]\n",
                crate::harness::workdir::repo_root().display()
            );
            assert!(w.contains(&open), "{w}");
            format!("{}{ALLOW_TEST_SECRETS}", w.replace(&open, ""))
        },
        "[secrets]\nallow = [\"CONVEYOR_*\"]\n",
        "",
    );
    api.dir.write("data/in.csv", "id,name\n1,ada\n");
    let flow = |name: &str, source: &str| {
        format!("[flow]\nname = \"{name}\"\nmax_attempts = 1\n[tasks.e]\nkind = \"extract\"\n{source}\nformat = \"csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n")
    };
    let run = |text: &str| {
        let (status, created) =
            api.post("/api/v1/runs", Some(OPERATE), &json!({ "flow_text": text }));
        assert_eq!(status, 201, "{created}");
        let id = created["run_id"].as_str().unwrap().to_string();
        let (last, report) = api.events(&id).pop().expect("an end event");
        assert_eq!(last, "end");
        report
    };

    // A variable outside the coordinator's `[secrets] allow` is refused at
    // submit, each one named, and no run starts.
    let before = api.total_runs();
    let text = "[flow]\nname = \"envref\"\n[tasks.e]\nkind = \"extract\"\npath = \"data/in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${env:HOME}/${env:CONVEYOR_TEST_SECRET}${env:PATH}.csv\"\n";
    let (status, body) = api.post("/api/v1/runs", Some(OPERATE), &json!({ "flow_text": text }));
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`HOME`")
            && message.contains("`PATH`")
            && !message.contains("CONVEYOR_TEST_SECRET")
            && message.contains("[secrets] allow"),
        "{message}"
    );
    assert_eq!(api.total_runs(), before, "a refused flow started a run");

    // The worker checks its own list too: a variable the coordinator
    // allows (CONVEYOR_*) and the worker does not (CONVEYOR_TEST_* only)
    // is never read, set or not.
    let report = run("[flow]\nname = \"other\"\nmax_attempts = 3\n[tasks.e]\nkind = \"extract\"\npath = \"data/in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"${env:CONVEYOR_OTHER}/out.csv\"\n");
    assert_eq!(report["state"], "Failed", "{report}");
    let l = &report["tasks"][1];
    assert_eq!(
        (&l["attempts"], &l["error"]["retryable"]),
        (&json!(1), &json!(false)),
        "{l}"
    );
    let error = l["error"]["message"].as_str().unwrap();
    assert!(
        error.contains("`CONVEYOR_OTHER`") && error.contains("[secrets] allow"),
        "{error}"
    );
    assert!(!report.to_string().contains(secret), "{report}");

    // A URL, even to a listener that would answer, without allow_urls: the
    // task fails, naming the rule, and the listener hears nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let report = run(&flow(
        "exfil",
        &format!("url = \"http://127.0.0.1:{port}/?v=${{env:CONVEYOR_TEST_SECRET}}\""),
    ));
    assert_eq!(report["state"], "Failed", "{report}");
    let error = report["tasks"][0]["error"]["message"].as_str().unwrap();
    assert!(error.contains("allow_urls"), "{error}");
    assert!(!report.to_string().contains(secret), "{report}");
    assert!(
        listener.accept().is_err(),
        "the worker fetched a URL it was not allowed"
    );

    // A file outside the worker's data folder: refused, nothing copied.
    for (name, path) in [
        ("passwd", "/etc/passwd".to_string()),
        ("config", api.dir.join("w.toml").display().to_string()),
    ] {
        let report = run(&flow(name, &format!("path = \"{path}\"")));
        assert_eq!(report["state"], "Failed", "{name}: {report}");
        let error = report["tasks"][0]["error"]["message"].as_str().unwrap();
        assert!(error.contains("input_roots"), "{name}: {error}");
        assert!(!api.dir.join(&format!("w/out/{name}.csv")).exists());
    }

    // What the data folder holds is read as usual.
    let report = run(&flow("inside", "path = \"data/in.csv\""));
    assert_eq!(report["state"], "Succeeded", "{report}");
    assert_eq!(
        std::fs::read_to_string(api.dir.join("w/out/inside.csv")).unwrap(),
        "id,name\n1,ada\n"
    );
}

/// Issue 22, item 1: `[api] adhoc = false` refuses flow text (403,
/// `adhoc_disabled`), while registered flows still run.
#[test]
fn adhoc_false_refuses_flow_text_and_runs_registered_flows() {
    let dir_flows = crate::harness::workdir::repo_root().join("target/test-work/api_adhoc_flows");
    let _ = std::fs::remove_dir_all(&dir_flows);
    std::fs::create_dir_all(&dir_flows).unwrap();
    std::fs::write(
        dir_flows.join("reg.toml"),
        format!(
            "[flow]\nname = \"reg\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"reg.csv\"\n",
            crate::harness::workdir::repo_root()
                .join("examples/data/colors.csv")
                .display()
        ),
    )
    .unwrap();
    let api = Api::start_configured(
        "api_adhoc",
        &[],
        |w| w,
        &format!("flows = \"{}\"\n", dir_flows.display()),
        "adhoc = false\n",
    );
    let before = api.total_runs();
    let (status, body) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": "[flow]\nname = \"x\"\n[tasks.e]\nkind = \"extract\"\npath = \"/etc/passwd\"\n" }),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "adhoc_disabled", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("[api] adhoc = false") && message.contains("/flows/{flow}/runs"),
        "{message}"
    );
    assert_eq!(api.total_runs(), before);
    let (status, health) = api.get("/api/v1/health", None);
    assert_eq!((status, &health["adhoc"]), (200, &json!(false)), "{health}");

    let (status, created) = api.post("/api/v1/flows/reg/runs", Some(OPERATE), &json!({}));
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap();
    let (_, report) = api.events(id).pop().expect("an end event");
    assert_eq!(report["state"], "Succeeded", "{report}");

    // The CLI says so too, and the dashboard's Flows page.
    let out = api.cli(&["flows", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ad-hoc flow text is off"), "{text}");
    let page = dashboard_page(&api, OPERATE, "/flows");
    assert!(
        page.contains("id=\"adhoc-off\"") && page.contains("[api] adhoc = false"),
        "{page}"
    );
}

/// A dashboard page as a user logged in with `token` sees it: the login
/// page's cookie and CSRF token, the login form, then the page.
fn dashboard_page(api: &Api, token: &str, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let cookie_of = |res: &ureq::http::Response<ureq::Body>| {
        res.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .expect("a session cookie")
    };
    let mut res = agent
        .get(format!("{}/login", api.base))
        .call()
        .expect("GET /login");
    let visitor = cookie_of(&res);
    let html = res.body_mut().read_to_string().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();
    let res = agent
        .post(format!("{}/login", api.base))
        .header("Cookie", &visitor)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("csrf={csrf}&token={token}"))
        .expect("POST /login");
    assert_eq!(res.status().as_u16(), 303, "login refused");
    let session = cookie_of(&res);
    agent
        .get(format!("{}{path}", api.base))
        .header("Cookie", &session)
        .call()
        .expect("GET a page")
        .into_body()
        .read_to_string()
        .unwrap()
}

/// Issue 22, item 16: no leniency. An array is no run (400); a 405 says
/// `method_not_allowed` with an `Allow` header; every `{id}` endpoint
/// documents its 400; a log query for an attempt that does not exist is a
/// 404; and every endpoint words a missing run the same way.
#[test]
fn api_bodies_methods_attempts_and_missing_runs_are_strict_and_consistent() {
    let api = Api::start("api_strict");
    api.dir.write("in.csv", "id\n1\n");
    let before = api.total_runs();
    for body in [&b"[]"[..], b"  [ ]", b"null", b"7", b"\"flow\""] {
        let (status, err) = api.post_raw("/api/v1/runs", Some(OPERATE), body);
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("bad_request")),
            "{}: {err}",
            String::from_utf8_lossy(body)
        );
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{err}"
        );
    }
    assert_eq!(api.total_runs(), before, "a non-object body started a run");

    let agent = Api::agent();
    for (method, path, allow) in [
        ("DELETE", "/api/v1/runs", "GET, POST"),
        ("PUT", "/api/v1/runs/x-000000000000/cancel", "POST"),
        ("GET", "/api/v1/runs/x-000000000000/retry", "POST"),
        ("POST", "/api/v1/nodes", "GET"),
    ] {
        let url = format!("{}{path}", api.base);
        let auth = format!("Bearer {OPERATE}");
        let res = match method {
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send("{}"),
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            _ => agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send("{}"),
        }
        .expect("a response");
        assert_eq!(res.status().as_u16(), 405, "{method} {path}");
        let header = res
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
        let body: Value = serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
        assert_eq!(
            body["error"], "method_not_allowed",
            "{method} {path}: {body}"
        );
    }

    let (_, doc) = api.get("/api/v1/openapi.json", None);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.contains("{id}") {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"]["400"].is_object(),
                "{method} {path} documents no 400 for a malformed run id"
            );
        }
    }

    let (status, created) = api.post(
        "/api/v1/runs",
        Some(OPERATE),
        &json!({ "flow_text": flow_text("strict", "in.csv") }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_string();
    let (_, report) = api.events(&id).pop().expect("an end event");
    assert_eq!(report["state"], "Succeeded", "{report}");
    let (status, logs) = api.get(
        &format!("/api/v1/runs/{id}/tasks/e/logs?attempt=1"),
        Some(READ),
    );
    assert_eq!(status, 200, "{logs}");
    let (status, err) = api.get(
        &format!("/api/v1/runs/{id}/tasks/e/logs?attempt=9"),
        Some(READ),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("has no attempt 9 (it has 1)"),
        "{err}"
    );

    let missing = "nosuch-000000000000";
    let wording = format!("no run `{missing}`");
    for (method, path) in [
        ("GET", format!("/api/v1/runs/{missing}")),
        ("GET", format!("/api/v1/runs/{missing}/events")),
        ("GET", format!("/api/v1/runs/{missing}/tasks/e/logs")),
        ("POST", format!("/api/v1/runs/{missing}/cancel")),
        ("POST", format!("/api/v1/runs/{missing}/retry")),
    ] {
        let (status, err) = if method == "GET" {
            api.get(&path, Some(READ))
        } else {
            api.post(&path, Some(OPERATE), &json!({}))
        };
        assert_eq!(
            (status, err["error"].as_str()),
            (404, Some("not_found")),
            "{path}: {err}"
        );
        assert_eq!(err["message"], wording.as_str(), "{method} {path}");
    }
}
