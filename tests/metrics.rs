//! Prometheus metrics on every node, and webhook notifications: a real
//! coordinator node and a real worker node on RabbitMQ, each serving
//! `/metrics` on a spare port, scraped with a real HTTP client; and a real
//! HTTP server in the test as the webhook.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor_schemas::{FlowState, RunReport, TaskKind};

use crate::harness::{
    broker::*, colors::*, configs::*, private_broker::spare_port, processes::*, workdir::*,
};

/// One scrape, parsed: every sample by its series (`name{labels}` with the
/// labels sorted), and the HELP and TYPE of every family.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the Prometheus text format (0.0.4); panics on a line that is
    /// not a comment, a blank, or `name{labels} value`.
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                s.help.insert(name.into(), help.into());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE line {line:?}"
                );
                s.types.insert(name.into(), kind.into());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = parse_sample(line);
            assert!(
                s.samples.insert(series.clone(), value).is_none(),
                "series {series} twice"
            );
        }
        s
    }

    /// The value of `name` with exactly `labels`, if scraped.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&series_key(name, labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {}; scraped:\n{:#?}",
                series_key(name, labels),
                self.samples
            )
        })
    }

    /// Every family has help text and a type, and every sample a family.
    fn assert_well_formed(&self) {
        for series in self.samples.keys() {
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (self.types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(name);
            assert!(self.types.contains_key(family), "{series} has no TYPE");
            assert!(
                self.help.get(family).is_some_and(|h| !h.is_empty()),
                "{series} has no HELP"
            );
        }
    }
}

/// `name{a="x",b="y"} 1.5` → (`name{a="x",b="y"}` with sorted labels, 1.5).
fn parse_sample(line: &str) -> (String, f64) {
    let (name, labels, value) = match line.find('{') {
        None => {
            let (name, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `name value`: {line:?}"));
            (name, Vec::new(), value)
        }
        Some(open) => {
            let mut labels = Vec::new();
            let mut rest = &line[open + 1..];
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (label, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("not `label=\"value\"` in {line:?}"));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars
                        .next()
                        .unwrap_or_else(|| panic!("unclosed label value in {line:?}"));
                    match c {
                        '\\' => {
                            let (_, escaped) = chars.next().expect("an escaped character");
                            value.push(if escaped == 'n' { '\n' } else { escaped });
                        }
                        '"' => break i,
                        c => value.push(c),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            (&line[..open], labels, rest)
        }
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    (series_key(name, &labels), parse_value(value, line))
}

fn parse_value(text: &str, line: &str) -> f64 {
    match text.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
    }
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The labels of `conveyor_tasks_total`.
fn tasks<'a>(kind: &'a str, outcome: &'a str) -> [(&'static str, &'a str); 2] {
    [("kind", kind), ("outcome", outcome)]
}

/// GETs `/metrics` on `port` with a real HTTP client.
fn scrape(port: u16) -> Scrape {
    let mut response = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("scrape of port {port}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    let parsed = Scrape::parse(&text);
    parsed.assert_well_formed();
    parsed
}

/// Scrapes until `check` holds (counters reach their values shortly after
/// the run's end is reported), then returns the scrape; panics with the
/// last one after 10 s.
fn scrape_until(port: u16, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(port);
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A worker node (every kind) and a coordinator node, each with `[metrics]
/// listen` on a spare port; the coordinator's config gets `coord_extra`.
struct Nodes {
    dir: TestDir,
    _ns: Namespace,
    client_cfg: PathBuf,
    worker_port: u16,
    coord_port: u16,
    _worker: NodeProcess,
    coord: NodeProcess,
}

fn nodes(test: &str, coord_extra: &str) -> Nodes {
    let dir = TestDir::new(test);
    let ns = namespace(test);
    let storage = dir.join("shared");
    let (worker_port, coord_port) = (spare_port(), spare_port());
    let w_cfg = dir.write(
        "w.toml",
        &node_config(
            "w",
            &ns,
            &["extract", "transform", "load"],
            &storage,
            &format!("[metrics]\nlisten = \"127.0.0.1:{worker_port}\"\n"),
        ),
    );
    let worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    let coord_cfg = dir.write(
        "coord.toml",
        &node_config(
            "coord",
            &ns,
            &[],
            &storage,
            &format!(
                "[metrics]\nlisten = \"127.0.0.1:{coord_port}\"\n[coordinator]\nworker_wait = \"30s\"\ndb = \"{}\"\n{coord_extra}",
                dir.join("coordinator.db").display()
            ),
        ),
    );
    let coord = NodeProcess::start(&coord_cfg, &dir.join("coord.log"), &[]);
    let client_cfg = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    Nodes {
        dir,
        _ns: ns,
        client_cfg,
        worker_port,
        coord_port,
        _worker: worker,
        coord,
    }
}

/// A flow whose extract reads a file that does not exist: it fails at once
/// (a data error is not retried), and its other tasks are skipped.
fn broken_flow(dir: &TestDir) -> PathBuf {
    dir.write(
        "broken.toml",
        "[flow]\nname = \"broken\"\n[tasks.extract]\nkind = \"extract\"\npath = \"/nonexistent/conveyor/missing.csv\"\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npath = \"never.csv\"\n",
    )
}

/// Runs `flow` on the coordinator node (`--submit`) and returns its report.
fn submit(n: &Nodes, flow: &Path) -> RunReport {
    let (out, report) = run_flow(
        &n.dir.path,
        flow,
        &["--config", n.client_cfg.to_str().unwrap(), "--submit"],
    );
    report.unwrap_or_else(|| panic!("no report: {}", describe(&out)))
}

#[test]
fn metrics_on_both_nodes_match_the_runs() {
    let n = nodes("metrics_match", "");
    // Scraped before any run: the node-wide series are there, at zero.
    let before = scrape(n.worker_port);
    for kind in TaskKind::ALL {
        let k = kind.as_str();
        for outcome in ["succeeded", "failed", "cancelled", "duplicate"] {
            assert_eq!(
                before.value("conveyor_tasks_total", &[("kind", k), ("outcome", outcome)]),
                0.0
            );
        }
    }
    let colors = colors_flow(&n.dir, "colors", "");
    let broken = broken_flow(&n.dir);
    let (ok_runs, failed_runs) = (3, 2);
    let mut reports = Vec::new();
    for flow in [&colors, &broken, &colors, &broken, &colors] {
        reports.push(submit(&n, flow));
    }
    let count = |flow: &str, state: FlowState| {
        reports
            .iter()
            .filter(|r| r.flow == flow && r.state == state)
            .count() as f64
    };
    assert_eq!(count("colors", FlowState::Succeeded), ok_runs as f64);
    assert_eq!(count("broken", FlowState::Failed), failed_runs as f64);
    // The rows each kind read and wrote, as the run reports say.
    let rows = |kind: TaskKind, out: bool| -> f64 {
        reports
            .iter()
            .flat_map(|r| &r.tasks)
            .filter(|t| t.kind == kind)
            .filter_map(|t| if out { t.rows_out } else { t.rows_in })
            .sum::<u64>() as f64
    };

    let w = scrape_until(n.worker_port, |s| {
        s.get("conveyor_tasks_total", &tasks("load", "succeeded")) == Some(ok_runs as f64)
            && s.get("conveyor_tasks_total", &tasks("extract", "failed"))
                == Some(failed_runs as f64)
    });
    for (kind, succeeded, failed) in [
        ("extract", ok_runs, failed_runs),
        ("transform", ok_runs, 0),
        ("load", ok_runs, 0),
    ] {
        assert_eq!(
            w.value("conveyor_tasks_total", &tasks(kind, "succeeded")),
            succeeded as f64,
            "{kind} succeeded"
        );
        assert_eq!(
            w.value("conveyor_tasks_total", &tasks(kind, "failed")),
            failed as f64,
            "{kind} failed"
        );
        for outcome in ["cancelled", "duplicate"] {
            assert_eq!(w.value("conveyor_tasks_total", &tasks(kind, outcome)), 0.0);
        }
        let by_kind = [("kind", kind)];
        assert_eq!(
            w.value("conveyor_task_duration_seconds_count", &by_kind),
            (succeeded + failed) as f64,
            "{kind}: one duration per attempt"
        );
        assert_eq!(
            w.value(
                "conveyor_task_duration_seconds_bucket",
                &[("kind", kind), ("le", "+Inf")]
            ),
            (succeeded + failed) as f64
        );
        assert_eq!(w.value("conveyor_tasks_in_flight", &by_kind), 0.0);
        let k = TaskKind::parse(kind).unwrap();
        assert_eq!(
            w.value("conveyor_task_rows_in_total", &by_kind),
            rows(k, false),
            "{kind} rows in"
        );
        assert_eq!(
            w.value("conveyor_task_rows_out_total", &by_kind),
            rows(k, true),
            "{kind} rows out"
        );
        assert!(w.value("conveyor_task_bytes_out_total", &by_kind) > 0.0);
    }
    assert!(rows(TaskKind::Extract, false) > 0.0);
    // The extract reads the repository's CSV: its bytes, once per success.
    let csv_bytes = std::fs::metadata(repo_root().join("examples/data/colors.csv"))
        .unwrap()
        .len();
    assert_eq!(
        w.value("conveyor_task_bytes_in_total", &[("kind", "extract")]),
        (ok_runs as u64 * csv_bytes) as f64
    );
    // The load wrote colors.csv three times over: its size, three times.
    let out_bytes = std::fs::metadata(n.dir.join("shared/out/colors.csv"))
        .unwrap()
        .len();
    assert_eq!(
        w.value("conveyor_task_bytes_out_total", &[("kind", "load")]),
        (ok_runs as u64 * out_bytes) as f64
    );
    assert_eq!(w.value("conveyor_broker_reconnects_total", &[]), 0.0);
    assert_eq!(w.types["conveyor_task_duration_seconds"], "histogram");
    assert_eq!(w.types["conveyor_tasks_total"], "counter");
    assert_eq!(w.types["conveyor_tasks_in_flight"], "gauge");
    // A worker node coordinates nothing.
    assert!(w.get("conveyor_runs_active", &[]).is_none());

    let c = scrape_until(n.coord_port, |s| {
        s.get(
            "conveyor_runs_total",
            &[("flow", "broken"), ("state", "Failed")],
        ) == Some(failed_runs as f64)
            && s.get("conveyor_runs_active", &[]) == Some(0.0)
    });
    assert_eq!(
        c.value(
            "conveyor_runs_total",
            &[("flow", "colors"), ("state", "Succeeded")]
        ),
        ok_runs as f64
    );
    assert_eq!(
        c.value(
            "conveyor_runs_total",
            &[("flow", "broken"), ("state", "Failed")]
        ),
        failed_runs as f64
    );
    assert!(c
        .get(
            "conveyor_runs_total",
            &[("flow", "colors"), ("state", "Failed")]
        )
        .is_none());
    assert_eq!(c.value("conveyor_runs_active", &[]), 0.0);
    assert_eq!(c.value("conveyor_schedule_lag_seconds", &[]), 0.0);
    assert_eq!(c.value("conveyor_broker_reconnects_total", &[]), 0.0);
    assert_eq!(c.types["conveyor_runs_total"], "counter");
    // A coordinator node without workers runs no task.
    assert!(!c
        .samples
        .keys()
        .any(|k| k.starts_with("conveyor_tasks_total")));

    // Only /metrics is served.
    match ureq::get(&format!("http://127.0.0.1:{}/", n.worker_port)).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
}

/// One request the webhook received.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A real HTTP server in the test: answers each request with the next
/// status of `statuses` (then 200), or never answers when `silent`.
struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    fn start(statuses: Vec<u16>, silent: bool) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(request);
                if silent {
                    // Keep the connection open, and say nothing.
                    held.push(stream);
                    continue;
                }
                let status = statuses.next().unwrap_or(200);
                let reason = if status == 200 { "OK" } else { "Oops" };
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Webhook { port, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived; panics after `within`.
    fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the webhook got {} requests, not {n}, within {within:?}",
            self.received().len()
        );
    }
}

/// Reads one request: its head, and a body of its Content-Length.
fn read_request(stream: &mut TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        head,
        body: data[head_end..].to_vec(),
    })
}

#[test]
fn a_webhook_gets_the_final_report_once_after_a_failed_delivery() {
    let hook = Webhook::start(vec![500], false);
    let n = nodes(
        "notify_retry",
        &format!(
            "notify = {{ url = \"http://hook:s3cret@127.0.0.1:{}/conveyor\", states = [\"Failed\"], timeout = \"5s\" }}\n",
            hook.port
        ),
    );
    let ok = submit(&n, &colors_flow(&n.dir, "colors", ""));
    assert_eq!(ok.state, FlowState::Succeeded);
    let failed = submit(&n, &broken_flow(&n.dir));
    assert_eq!(failed.state, FlowState::Failed);
    // The first delivery gets 500, the second is taken.
    let got = hook.wait_for(2, Duration::from_secs(20));
    n.coord.wait_for_line(
        &["Run notification delivered", &failed.flow_run, "attempt=2"],
        Duration::from_secs(10),
    );
    // Nothing more comes: not the succeeded run, not a third delivery.
    std::thread::sleep(Duration::from_secs(2));
    let got_all = hook.received();
    assert_eq!(got_all.len(), 2, "{got_all:#?}");
    for r in &got {
        assert!(
            r.head.starts_with("POST /conveyor HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        let header = |name: &str| {
            r.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        // The URL's userinfo goes as basic authentication: hook:s3cret.
        assert_eq!(
            header("authorization").as_deref(),
            Some("Basic aG9vazpzM2NyZXQ=")
        );
        let report: RunReport = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(report.flow_run, failed.flow_run);
        assert_eq!(report.state, FlowState::Failed);
        assert_eq!(report, failed, "the report is the --json shape");
    }
    let log = n.coord.log_text();
    assert!(!log.contains("s3cret"), "the password leaked:\n{log}");
    assert!(log.contains("hook:***@127.0.0.1"), "{log}");
}

#[test]
fn a_webhook_that_never_answers_is_logged_and_the_coordinator_keeps_working() {
    let hook = Webhook::start(Vec::new(), true);
    let n = nodes(
        "notify_silent",
        &format!(
            "notify = {{ url = \"http://hook:s3cret@127.0.0.1:{}/conveyor\", states = [\"Succeeded\", \"Failed\"], timeout = \"2s\", attempts = 2 }}\n",
            hook.port
        ),
    );
    let first = submit(&n, &colors_flow(&n.dir, "colors", ""));
    assert_eq!(first.state, FlowState::Succeeded);
    // While the first notification waits on the silent webhook, the
    // coordinator takes and finishes another run.
    let second = submit(&n, &broken_flow(&n.dir));
    assert_eq!(second.state, FlowState::Failed);
    for run in [&first.flow_run, &second.flow_run] {
        n.coord.wait_for_line(
            &[
                "Run notification not delivered; giving up",
                run,
                "hook:***@127.0.0.1",
                "attempts=2",
            ],
            Duration::from_secs(30),
        );
    }
    // Two tries for each run, and the node still runs flows after that.
    assert_eq!(hook.received().len(), 4, "{:#?}", hook.received());
    let third = submit(&n, &colors_flow(&n.dir, "colors", ""));
    assert_eq!(third.state, FlowState::Succeeded);
    let log = n.coord.log_text();
    assert!(!log.contains("s3cret"), "the password leaked:\n{log}");
}

#[test]
fn a_broker_reconnect_is_counted() {
    use crate::harness::fault_proxy::FaultProxy;

    let dir = TestDir::new("metrics_reconnect");
    let ns = namespace("metrics_reconnect");
    let proxy = FaultProxy::start(shared_broker_port());
    let port = spare_port();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let cfg = dir.write(
        "w.toml",
        &node_config_at(
            &url,
            "w",
            &ns,
            &["load"],
            &dir.join("s"),
            &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ),
    );
    let node = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    assert_eq!(
        scrape(port).value("conveyor_broker_reconnects_total", &[]),
        0.0
    );
    proxy.reset_all();
    node.wait_for_log("Reconnected to the broker", Duration::from_secs(30));
    let s = scrape_until(port, |s| {
        s.get("conveyor_broker_reconnects_total", &[]) == Some(1.0)
    });
    assert_eq!(s.value("conveyor_broker_reconnects_total", &[]), 1.0);
}

#[test]
fn a_taken_metrics_port_stops_the_node_at_start_naming_it() {
    let dir = TestDir::new("metrics_port_taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let cfg = dir.write(
        "w.toml",
        &node_config(
            "w",
            "metrics_port_taken",
            &["load"],
            &dir.join("s"),
            &format!("[metrics]\nlisten = \"{listen}\"\n"),
        ),
    );
    let mut cmd = std::process::Command::new(conveyor_bin());
    cmd.args(["node", "--config"]).arg(&cfg);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {}: [metrics] listen `{listen}`: cannot listen: Address already in use",
            cfg.display()
        )),
        "{stderr}"
    );
}
