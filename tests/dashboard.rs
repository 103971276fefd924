//! The dashboard (issue 12) in a real headless Chromium, driven through
//! chromedriver, against a real coordinator node (API with a `read` and an
//! `operate` token, registered flows) and a real worker node on RabbitMQ.
//!
//! Each test screenshots the pages it visits into `target/screenshots/`
//! at 1280×800 and 390×844, for a person to look at. The tests take turns
//! ([`one_at_a_time`]): each runs two nodes and a browser.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::browser::{one_at_a_time, Browser};
use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

const OPERATE: &str = "operate-token-dashboard-0123";
const READ: &str = "read-token-dashboard-456789";

/// The issue's bound for a cancelled run to show as such.
const CANCEL_SHOWN_WITHIN: Duration = Duration::from_secs(5);

/// A coordinator node with the API and dashboard, flows registered from
/// `flows/`, and a worker node; with the browser that looks at them.
struct Dash {
    browser: Browser,
    dir: TestDir,
    base: String,
    _coord: NodeProcess,
    _worker: NodeProcess,
    _ns: Namespace,
    _turn: MutexGuard<'static, ()>,
}

impl Dash {
    /// `flows`: (file name, text) of the registered flows, `@DIR@` in a
    /// text standing for the test's directory; `worker_env` for the worker
    /// node (failpoints).
    fn start(test: &str, flows: &[(&str, &str)], worker_env: &[(&str, &str)]) -> Dash {
        let turn = one_at_a_time();
        let dir = TestDir::new(test);
        let ns = namespace(test);
        dir.write("in.csv", "id,name\n1,ada\n2,grace\n3,edsger\n");
        for (name, text) in flows {
            let text = text.replace("@DIR@", &dir.path.display().to_string());
            dir.write(&format!("flows/{name}"), &text);
        }
        std::fs::create_dir_all(dir.join("flows")).unwrap();
        let w_cfg = dir.write(
            "w.toml",
            &node_config("w", &ns, &["extract", "load"], &dir.join("w"), ""),
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
                    "[coordinator]\ndb = \"{}\"\nflows = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ token_env = \"TEST_READ_TOKEN\", role = \"read\" }}]\n",
                    dir.join("c.db").display(),
                    dir.join("flows").display()
                ),
            ),
        );
        let coord = NodeProcess::start(
            &c_cfg,
            &dir.join("coord.log"),
            &[("TEST_READ_TOKEN", READ), ("CONVEYOR_API_TOKEN", OPERATE)],
        );
        let base = format!("http://{}", api_addr(&coord));
        let browser = Browser::start(&dir.path, &base);
        Dash {
            browser,
            dir,
            base,
            _coord: coord,
            _worker: worker,
            _ns: ns,
            _turn: turn,
        }
    }

    /// Logs the browser in with `token` through the login form; it lands
    /// on the runs page.
    fn login(&self, token: &str) {
        let b = &self.browser;
        b.goto("/login");
        b.wait_for("form#login input[name=token]");
        b.fill("form#login input[name=token]", token);
        b.click("form#login button[type=submit]");
        b.poll(
            "land on /runs after the login",
            Duration::from_secs(60),
            |b| {
                let path = b.path();
                if path == "/runs" && b.count("table#runs") == 1 {
                    Ok(())
                } else {
                    Err(path)
                }
            },
        );
    }

    /// `POST /api/v1/runs` of an ad-hoc flow with the operate token: the
    /// new run's id.
    fn start_run(&self, flow_text: &str) -> String {
        let res = agent()
            .post(format!("{}/api/v1/runs", self.base))
            .header("Authorization", format!("Bearer {OPERATE}"))
            .header("Content-Type", "application/json")
            .send(json!({ "flow_text": flow_text }).to_string().as_bytes())
            .expect("POST /api/v1/runs");
        let status = res.status().as_u16();
        let body: Value = serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
        assert_eq!(status, 201, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }

    /// `GET /api/v1/PATH` with the read token.
    fn api(&self, path: &str) -> Value {
        let res = agent()
            .get(format!("{}/api/v1{path}", self.base))
            .header("Authorization", format!("Bearer {READ}"))
            .call()
            .expect("GET");
        assert_eq!(res.status().as_u16(), 200, "GET /api/v1{path}");
        serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap()
    }

    fn total_runs(&self) -> u64 {
        self.api("/runs")["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    }

    /// A form POST of `fields` to `path`, as a forger would send it: with
    /// `cookie` (if any) and no browser. The status, redirects not followed.
    fn forge(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> u16 {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let mut req = agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let res = req.send(body.join("&").as_bytes()).expect("POST");
        res.status().as_u16()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The address a node's API listens on, from its log.
fn api_addr(node: &NodeProcess) -> String {
    node.wait_for_line(&["API listening"], Duration::from_secs(10));
    let log = node.log_text();
    let line = log.lines().find(|l| l.contains("API listening")).unwrap();
    let addr = line.split("addr=").nth(1).expect("addr= in the log line");
    addr.split_whitespace().next().unwrap().to_string()
}

/// A flow that extracts `input` and loads it into `{out}.csv`.
fn flow_text(name: &str, input: &str, out: &str) -> String {
    format!(
        "[flow]\nname = \"{name}\"\n[tasks.e]\nkind = \"extract\"\npath = \"{input}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{out}.csv\"\n"
    )
}

/// An HTTP server that answers every request 503 (a retryable failure):
/// its port.
fn unavailable_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// Records, in the page, every `data-state` each run's row shows on the
/// runs page, in order, from when the row appears
/// (`window.__states[run id]`).
const WATCH_ROWS: &str = r#"
window.__states = {};
const look = () => {
  for (const row of document.querySelectorAll('tr.run[data-run]')) {
    const seen = (window.__states[row.getAttribute('data-run')] ||= []);
    const s = row.getAttribute('data-state');
    if (seen[seen.length - 1] !== s) seen.push(s);
  }
};
new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
look();
return true;
"#;

/// 1. Run now from the Flows page: the run appears on an open Runs page and
///    goes Running → Succeeded there, without a reload. A bad param value
///    re-renders the form with its error and starts nothing. Screenshots of
///    the login, flows, runs, run, nodes and overview pages.
#[test]
fn dashboard_run_now_shows_the_run_live_on_the_runs_page() {
    let flow = "[flow]\nname = \"daily\"\n[params]\nname = {}\n[tasks.e]\nkind = \"extract\"\npath = \"@DIR@/in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{{ params.name }}.csv\"\n";
    // The extract sleeps, so that the run is Running for a while.
    let d = Dash::start(
        "dash_run_now",
        &[("daily.toml", flow)],
        &[("CONVEYOR_FAILPOINTS", "sleep=4000@e")],
    );
    let b = &d.browser;

    // No session: every page sends the browser to the login form.
    b.goto("/runs");
    b.wait_for("form#login input[name=token]");
    assert_eq!(b.path(), "/login");
    assert!(
        b.exec(
            "const i = document.querySelector('form#login input[name=token]'); return !!(i.labels && i.labels.length) || !!i.getAttribute('aria-label')",
            vec![]
        ) == json!(true),
        "the token field has no label"
    );
    b.screenshot("login");
    d.login(OPERATE);

    // The runs page, open in a tab of its own, before the run exists.
    b.goto("/runs");
    b.wait_for("table#runs");
    assert_eq!(b.count("tr.run"), 0, "a fresh coordinator has no runs");
    b.exec("window.__marker = 1; return true", vec![]);
    b.exec(WATCH_ROWS, vec![]);
    let runs_tab = b.new_tab();

    // The Flows page: a bad value first (a load path out of the output
    // root), which starts nothing.
    let before = d.total_runs();
    b.goto("/flows");
    let form = "form.run-now[data-flow=\"daily\"]";
    b.wait_for(form);
    assert_eq!(
        b.attribute(form, "action").as_deref(),
        Some("/flows/daily/run")
    );
    let field = format!("{form} input[name=\"param.name\"]");
    assert_eq!(
        b.exec(
            "const i = document.querySelector(arguments[0]); return i.labels ? i.labels.length : 0",
            vec![json!(field)]
        ),
        json!(1),
        "the param field has no label"
    );
    b.screenshot("flows");
    b.fill(&field, "../../etc/x");
    b.click(&format!("{form} button[type=submit]"));
    b.wait_for(".form-error");
    let err = b.text(".form-error").unwrap();
    assert!(err.contains("name") || err.contains(".."), "{err}");
    assert_eq!(d.total_runs(), before, "a refused Run now started a run");

    // Then a good one: the browser lands on the new run's page.
    b.wait_for(&field);
    b.fill(&field, "people");
    b.click(&format!("{form} button[type=submit]"));
    let id = b.poll(
        "land on the new run's page",
        Duration::from_secs(60),
        |b| match b.path().strip_prefix("/runs/") {
            Some(id) if id.starts_with("daily-") && b.count("#run-state") == 1 => {
                Ok(id.to_string())
            }
            _ => Err(b.path()),
        },
    );
    b.close_tab();
    b.switch_to(runs_tab);

    // Back on the runs page: the run is there, live, then Succeeded.
    let row = format!("tr.run[data-run=\"{id}\"]");
    b.wait_for_attribute(&row, "data-state", "Succeeded");
    assert_eq!(
        b.exec("return window.__marker", vec![]),
        json!(1),
        "the runs page was reloaded"
    );
    assert_eq!(b.path(), "/runs");
    // Every state the row showed, from when it appeared.
    let seen: Vec<String> = serde_json::from_value(b.exec(
        "return window.__states[arguments[0]] || []",
        vec![json!(id)],
    ))
    .unwrap();
    let running = seen.iter().position(|s| s == "Running");
    assert!(
        running.is_some() && seen.last().map(String::as_str) == Some("Succeeded"),
        "the row's states: {seen:?}"
    );
    assert_eq!(
        b.text(&format!("{row} td.state"))
            .map(|t| t.trim().to_string()),
        Some("Succeeded".to_string())
    );
    assert_eq!(
        b.attribute(
            "#counts [data-count-state=\"Succeeded\"]",
            "data-count-state"
        )
        .as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        std::fs::read_to_string(d.dir.join("w/out/people.csv")).unwrap(),
        "id,name\n1,ada\n2,grace\n3,edsger\n",
        "the run's output, named by the form's param"
    );
    b.screenshot("runs");

    b.click(&format!("{row} a[href=\"/runs/{id}\"]"));
    b.wait_for_attribute("#run-state", "data-state", "Succeeded");
    b.wait_for("svg#dag g.dag-node[data-task=\"e\"]");
    b.wait_for("svg#timeline rect.attempt[data-task=\"l\"]");
    assert_eq!(
        b.attribute("svg#timeline rect.attempt[data-task=\"e\"]", "data-node")
            .as_deref(),
        Some("w")
    );
    // Cancel only while live; retry once ended.
    assert_eq!(b.count("button#cancel"), 0);
    assert_eq!(b.count("form#retry-form button#retry"), 1);
    b.screenshot("run");

    b.goto("/nodes");
    b.wait_for("table#nodes tr.node[data-node=\"w\"]");
    b.screenshot("nodes");
    b.goto("/");
    b.wait_for("main");
    assert_eq!(b.count("nav a[href=\"/runs\"]"), 1);
    b.screenshot("overview");
}

/// 2. A run whose extract fails twice (HTTP 503, retryable, two attempts):
///    its page shows the error in full, the task's log lines, and two
///    attempts of the task on the timeline.
#[test]
fn dashboard_failed_run_shows_its_error_logs_and_both_attempts() {
    let d = Dash::start("dash_failed", &[], &[]);
    let port = unavailable_server();
    let id = d.start_run(&format!(
        "[flow]\nname = \"flaky\"\nmax_attempts = 2\nbackoff = \"100ms\"\n[tasks.e]\nkind = \"extract\"\nurl = \"http://127.0.0.1:{port}/people.csv\"\nformat = \"csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"people.csv\"\n"
    ));
    d.login(OPERATE);
    let b = &d.browser;
    b.goto(&format!("/runs/{id}"));
    b.wait_for_attribute("#run-state", "data-state", "Failed");
    let task = "table#tasks tr.task[data-task=\"e\"]";
    b.wait_for_attribute(task, "data-state", "Failed");
    let error = b.text(&format!("{task} .error")).unwrap_or_default();
    let expected = format!("http://127.0.0.1:{port}/people.csv: server answered HTTP 503");
    assert!(error.contains(&expected), "error cell: {error:?}");

    // Two attempts of `e` on its node, and the failure in its log lines.
    b.poll(
        "two attempts of e on the timeline",
        Duration::from_secs(60),
        |b| match b.count("svg#timeline rect.attempt[data-task=\"e\"]") {
            2 => Ok(()),
            n => Err(format!("{n} attempts")),
        },
    );
    let attempts = b.exec(
        "return [...document.querySelectorAll('svg#timeline rect.attempt[data-task=\"e\"]')].map(r => [r.getAttribute('data-attempt'), r.getAttribute('data-node')])",
        vec![],
    );
    assert_eq!(attempts, json!([["1", "w"], ["2", "w"]]));
    b.poll(
        "the failure in e's log lines",
        Duration::from_secs(60),
        |b| {
            let lines = b.exec(
                "return [...document.querySelectorAll('#logs .log-line')].map(l => l.textContent)",
                vec![],
            );
            let lines: Vec<String> = serde_json::from_value(lines).unwrap_or_default();
            let failed = lines
                .iter()
                .filter(|l| l.contains("Task failed") && l.contains("HTTP 503"))
                .count();
            if lines.iter().any(|l| l.contains("Task started")) && failed >= 1 {
                Ok(())
            } else {
                Err(format!("{lines:?}"))
            }
        },
    );
    // The load never ran: it has no attempt.
    assert_eq!(b.count("svg#timeline rect.attempt[data-task=\"l\"]"), 0);
    assert_eq!(b.count("form#retry-form button#retry"), 1);
    b.screenshot("run-failed");
}

/// 3. Cancel a long run from its page: it shows Cancelled within 5 s.
#[test]
fn dashboard_cancel_from_the_run_page_shows_cancelled_within_5s() {
    // The extract sleeps a minute: the run is live until cancelled.
    let d = Dash::start(
        "dash_cancel",
        &[],
        &[("CONVEYOR_FAILPOINTS", "sleep=60000@e")],
    );
    let input = d.dir.join("in.csv");
    let id = d.start_run(&flow_text("long", &input.display().to_string(), "long"));
    d.login(OPERATE);
    let b = &d.browser;
    b.goto(&format!("/runs/{id}"));
    b.wait_for_attribute("#run-state", "data-state", "Running");
    b.wait_for("form#cancel-form button#cancel");
    assert!(
        b.attribute("form#cancel-form input[name=csrf]", "value")
            .is_some_and(|v| !v.is_empty()),
        "the cancel form carries no CSRF token"
    );
    assert_eq!(b.count("button#retry"), 0, "retry shown on a live run");
    b.screenshot("run-live");
    let clicked = Instant::now();
    b.click("form#cancel-form button#cancel");
    b.wait_for_attribute_within("#run-state", "data-state", "Cancelled", CANCEL_SHOWN_WITHIN);
    println!(
        "dashboard: Cancelled shown {} ms after the click",
        clicked.elapsed().as_millis()
    );
    assert_eq!(
        d.api(&format!("/runs/{id}"))["report"]["state"],
        "Cancelled"
    );
    assert_eq!(b.path(), format!("/runs/{id}"));
    b.goto(&format!("/runs/{id}"));
    b.wait_for_attribute("#run-state", "data-state", "Cancelled");
    assert_eq!(b.count("button#cancel"), 0, "cancel shown on an ended run");
    assert_eq!(b.count("form#retry-form button#retry"), 1);
    b.screenshot("run-cancelled");
}

/// 4. A `read` session sees no Cancel, Retry or Run-now buttons, and its
///    POSTs get 403 even with its valid CSRF token; so do POSTs with no or
///    a wrong CSRF token. The operate session's own POST, with its token,
///    goes through (so the 403s are for the CSRF token and the role).
#[test]
fn dashboard_read_session_sees_no_buttons_and_forged_posts_get_403() {
    let d = Dash::start(
        "dash_read",
        &[("daily.toml", &flow_text("daily", "@DIR@/in.csv", "daily"))],
        &[("CONVEYOR_FAILPOINTS", "sleep=60000@e")],
    );
    let input = d.dir.join("in.csv");
    let id = d.start_run(&flow_text("long", &input.display().to_string(), "long"));
    let b = &d.browser;
    let cancel = format!("/runs/{id}/cancel");

    // The read session: no buttons.
    d.login(READ);
    b.goto(&format!("/runs/{id}"));
    b.wait_for_attribute("#run-state", "data-state", "Running");
    b.wait_for("table#tasks tr.task[data-task=\"e\"]");
    for css in [
        "#cancel-form",
        "button#cancel",
        "#retry-form",
        "button#retry",
    ] {
        assert_eq!(b.count(css), 0, "a read session sees {css}");
    }
    b.goto("/flows");
    b.wait_for("main");
    assert_eq!(b.count("form.run-now"), 0, "a read session sees Run now");
    let read_cookie = b.cookie_header();
    assert!(read_cookie.contains("conveyor_session="), "{read_cookie}");
    // Its own CSRF token, valid for its session (the logout form's).
    let read_csrf = b
        .exec(
            "const i = document.querySelector('input[name=csrf]'); const m = document.querySelector('meta[name=csrf-token]'); return i ? i.value : (m ? m.content : null)",
            vec![],
        )
        .as_str()
        .map(str::to_string)
        .expect("a read session's page carries its CSRF token (logout form or meta)");

    // The operate session, in the same browser: its cookie and token.
    d.login(OPERATE);
    let operate_cookie = b.cookie_header();
    assert_ne!(operate_cookie, read_cookie);
    b.goto(&format!("/runs/{id}"));
    b.wait_for("form#cancel-form input[name=csrf]");
    let operate_csrf = b
        .attribute("form#cancel-form input[name=csrf]", "value")
        .unwrap();
    assert_ne!(operate_csrf, read_csrf);

    let runs_before = d.total_runs();
    for (what, cookie, csrf) in [
        ("no session, no CSRF", None, None),
        ("no session, a real CSRF", None, Some(operate_csrf.as_str())),
        (
            "read session, its own CSRF",
            Some(&read_cookie),
            Some(read_csrf.as_str()),
        ),
        ("operate session, no CSRF", Some(&operate_cookie), None),
        (
            "operate session, a wrong CSRF",
            Some(&operate_cookie),
            Some("0123456789abcdef"),
        ),
        (
            "operate session, an empty CSRF",
            Some(&operate_cookie),
            Some(""),
        ),
        (
            "operate session, another session's CSRF",
            Some(&operate_cookie),
            Some(read_csrf.as_str()),
        ),
    ] {
        let fields: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
        for path in [
            cancel.as_str(),
            &format!("/runs/{id}/retry"),
            "/flows/daily/run",
        ] {
            let status = d.forge(path, cookie.map(String::as_str), &fields);
            assert_eq!(status, 403, "{what}: POST {path}");
        }
    }
    assert_eq!(d.api(&format!("/runs/{id}"))["report"]["state"], "Running");
    assert_eq!(d.total_runs(), runs_before, "a forged POST started a run");

    // The operate session's own token goes through: 303 to the run page.
    let status = d.forge(&cancel, Some(&operate_cookie), &[("csrf", &operate_csrf)]);
    assert_eq!(status, 303);
    assert_eq!(
        d.api(&format!("/runs/{id}"))["report"]["state"],
        "Cancelled"
    );
}
