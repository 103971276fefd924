//! The dashboard (issue 12) over HTTP, without a browser: a real
//! coordinator node serving it beside the API, a worker node on RabbitMQ,
//! and a plain HTTP client that keeps the session cookie by hand. Pages
//! render with the elements the browser tests rely on; login sets the
//! cookie's flags; every POST needs the session's CSRF token; a `read`
//! session gets 403; the live streams send rows, new runs and a run's end.
//! (tests/dashboard.rs drives a real Chromium.)

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

const OPERATE: &str = "operate-token-0123456789";
const READ: &str = "read-token-0123456789abc";

struct Dash {
    _dir: TestDir,
    _ns: Namespace,
    base: String,
    _coord: NodeProcess,
    _worker: NodeProcess,
}

/// A response: status, `Location`, `Set-Cookie` and body.
struct Res {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    cache_control: Option<String>,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn read(res: ureq::http::Response<ureq::Body>) -> Res {
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (location, set_cookie, cache_control) = (
        header("location"),
        header("set-cookie"),
        header("cache-control"),
    );
    let status = res.status().as_u16();
    let body = res.into_body().read_to_string().unwrap_or_default();
    Res {
        status,
        location,
        set_cookie,
        cache_control,
        body,
    }
}

impl Dash {
    /// `tokens`: whether the API has tokens (a `read` one from the config,
    /// an `operate` one from CONVEYOR_API_TOKEN).
    fn start(test: &str, tokens: bool) -> Dash {
        let dir = TestDir::new(test);
        let ns = namespace(test);
        let input = dir.write("in.csv", "id,name\n1,ada\n2,grace\n");
        dir.write(
            "flows/daily.toml",
            &format!(
                "[flow]\nname = \"daily\"\n[params]\nday = {{ default = \"d1\" }}\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"daily-{{{{ params.day }}}}.csv\"\n",
                input.display()
            ),
        );
        let w_cfg = dir.write(
            "w.toml",
            &node_config("w", &ns, &["extract", "load"], &dir.join("w"), ""),
        );
        let worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
        let token_line = if tokens {
            "tokens = [{ token_env = \"TEST_READ_TOKEN\", role = \"read\" }]\n"
        } else {
            ""
        };
        let c_cfg = dir.write(
            "coord.toml",
            &node_config(
                "coord",
                &ns,
                &[],
                &dir.join("c"),
                &format!(
                    "[coordinator]\ndb = \"{}\"\nflows = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n{token_line}",
                    dir.join("c.db").display(),
                    dir.join("flows").display()
                ),
            ),
        );
        let mut env = vec![];
        if tokens {
            env = vec![("TEST_READ_TOKEN", READ), ("CONVEYOR_API_TOKEN", OPERATE)];
        }
        let coord = NodeProcess::start(&c_cfg, &dir.join("coord.log"), &env);
        let base = format!("http://{}", crate::api::api_addr(&coord));
        Dash {
            _dir: dir,
            _ns: ns,
            base,
            _coord: coord,
            _worker: worker,
        }
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Res {
        let mut req = agent().get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        read(req.call().expect("GET"))
    }

    fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Res {
        let mut req = agent().post(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        read(req.send_form(form.iter().copied()).expect("POST"))
    }

    /// The run's state through the API, once it ended.
    fn wait_ended(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = agent()
                .get(format!("{}/api/v1/runs/{id}", self.base))
                .header("Authorization", format!("Bearer {READ}"))
                .call()
                .unwrap();
            let body: Value =
                serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
            let state = body["report"]["state"].as_str().unwrap_or("").to_string();
            if ["Succeeded", "Failed", "Cancelled"].contains(&state.as_str()) {
                return state;
            }
            assert!(Instant::now() < deadline, "run {id} did not end: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `conveyor_session=ID` from a Set-Cookie value.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let key = "name=\"csrf\" value=\"";
    let i = page
        .find(key)
        .unwrap_or_else(|| panic!("no csrf field in {page}"))
        + key.len();
    page[i..i + page[i..].find('"').unwrap()].to_string()
}

/// Logs in with `token`: the session cookie.
fn login(dash: &Dash, token: &str) -> String {
    let form = dash.get("/login", None);
    assert_eq!(form.status, 200, "{}", form.body);
    let visitor = cookie_of(form.set_cookie.as_deref().expect("a visitor's cookie"));
    let csrf = csrf_of(&form.body);
    let res = dash.post(
        "/login",
        Some(&visitor),
        &[("csrf", &csrf), ("token", token)],
    );
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.location.as_deref(), Some("/runs"));
    let set = res.set_cookie.expect("the session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    let cookie = cookie_of(&set);
    assert_ne!(cookie, visitor, "a login gets a new session id");
    assert!(!set.contains(token), "the cookie holds the token: {set}");
    cookie
}

/// Reads an event stream until `until` returns true for the events so far,
/// or the stream ends; returns every (event, data) read.
fn events_until(
    base: &str,
    path: &str,
    cookie: &str,
    mut until: impl FnMut(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let res = agent()
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .call()
        .expect("GET stream");
    assert_eq!(res.status().as_u16(), 200);
    let reader = BufReader::new(res.into_body().into_reader());
    let (mut events, mut name, mut data) = (Vec::new(), String::new(), Vec::new());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push(d.to_string());
        } else if line.is_empty() && !name.is_empty() {
            events.push((std::mem::take(&mut name), data.join("\n")));
            data.clear();
            if until(&events) {
                break;
            }
        }
    }
    events
}

#[test]
fn dashboard_pages_render_for_a_session_and_every_post_is_guarded() {
    let dash = Dash::start("dash_pages", true);
    // No session: pages send to the login form; POSTs are refused.
    let res = dash.get("/runs", None);
    assert_eq!((res.status, res.location.as_deref()), (303, Some("/login")));
    let res = dash.get("/login", None);
    assert!(res.body.contains("<form id=\"login\""), "{}", res.body);
    assert!(res.body.contains("<label for=\"token\">"), "{}", res.body);
    let visitor = cookie_of(res.set_cookie.as_deref().unwrap());
    let res = dash.post("/login", Some(&visitor), &[("token", OPERATE)]);
    assert_eq!(res.status, 403, "a login without its CSRF token");
    let res = dash.post("/flows/daily/run", None, &[("param.day", "d9")]);
    assert_eq!(res.status, 403);
    let csrf = csrf_of(&dash.get("/login", Some(&visitor)).body);
    let res = dash.post(
        "/login",
        Some(&visitor),
        &[("csrf", &csrf), ("token", "wrong-token-0123456789")],
    );
    assert_eq!(res.status, 401, "{}", res.body);
    assert!(res.body.contains("class=\"form-error\""));

    let op = login(&dash, OPERATE);
    let flows = dash.get("/flows", Some(&op));
    assert_eq!(flows.status, 200, "{}", flows.body);
    assert!(flows.body.contains("<nav aria-label=\"Pages\">"));
    assert!(
        flows.body.contains("class=\"run-now\" data-flow=\"daily\"")
            && flows.body.contains("action=\"/flows/daily/run\""),
        "{}",
        flows.body
    );
    assert!(flows.body.contains("name=\"param.day\""), "{}", flows.body);
    assert!(
        flows.body.contains("<label for=\"p-daily-day\">"),
        "{}",
        flows.body
    );
    let csrf = csrf_of(&flows.body);
    // CSRF: missing, or another session's, is a 403 and starts nothing.
    let res = dash.post("/flows/daily/run", Some(&op), &[("param.day", "d2")]);
    assert_eq!(res.status, 403);
    let res = dash.post(
        "/flows/daily/run",
        Some(&op),
        &[("csrf", &"0".repeat(64)), ("param.day", "d2")],
    );
    assert_eq!(res.status, 403);
    // A param the flow does not declare: the form again, with the API's error.
    let res = dash.post(
        "/flows/daily/run",
        Some(&op),
        &[("csrf", &csrf), ("param.month", "1")],
    );
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body.contains("class=\"form-error\"") && res.body.contains("params.month"),
        "{}",
        res.body
    );
    // The live runs stream, opened before the run starts, sees it start.
    let stream = {
        let (base, op) = (dash.base.clone(), op.clone());
        std::thread::spawn(move || {
            // The run may start and end within one batch: then its `new`
            // row is already Succeeded.
            // The counts follow each batch of rows.
            events_until(&base, "/live/runs?new=1", &op, |ev| {
                ev.iter().any(|(n, d)| {
                    (n == "new" || n.starts_with("run-")) && d.contains("data-state=\"Succeeded\"")
                }) && ev.last().is_some_and(|(n, _)| n == "counts")
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let res = dash.post(
        "/flows/daily/run",
        Some(&op),
        &[("csrf", &csrf), ("param.day", "d2")],
    );
    assert_eq!(res.status, 303, "{}", res.body);
    let to = res.location.unwrap();
    let id = to.strip_prefix("/runs/").unwrap().to_string();
    assert!(id.starts_with("daily-"), "{id}");
    assert_eq!(dash.wait_ended(&id), "Succeeded");
    let events = stream.join().unwrap();
    let new = events
        .iter()
        .find(|(n, _)| n == "new")
        .expect("a `new` row");
    assert!(new.1.contains(&format!("data-run=\"{id}\"")), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(n, d)| (*n == format!("run-{id}") || n == "new")
                && d.contains(&format!("data-run=\"{id}\" data-state=\"Succeeded\""))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "counts" && d.contains("data-count-state=\"Succeeded\"")),
        "{events:?}"
    );

    // The runs page: the row, its state, its link, the counts and filters.
    let runs = dash.get("/runs?flow=daily", Some(&op));
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert!(runs.body.contains("<table id=\"runs\">"));
    assert!(
        runs.body.contains(&format!(
            "<tr class=\"run\" data-run=\"{id}\" data-state=\"Succeeded\""
        )),
        "{}",
        runs.body
    );
    assert!(runs.body.contains(&format!("href=\"/runs/{id}\"")));
    assert!(runs.body.contains("data-count-state=\"Succeeded\""));
    assert!(runs.body.contains("<form id=\"filters\""));
    let res = dash.get("/runs?state=Nope", Some(&op));
    assert_eq!(res.status, 400);
    assert!(res.body.contains("not a run state"), "{}", res.body);

    // The run page: state, tasks, graph, timeline, logs, Retry (it ended).
    let run = dash.get(&format!("/runs/{id}"), Some(&op));
    assert_eq!(run.status, 200, "{}", run.body);
    for needle in [
        "id=\"run-state\" data-state=\"Succeeded\"",
        "<table id=\"tasks\">",
        "<tr class=\"task\" data-task=\"e\" data-state=\"Succeeded\">",
        "<svg id=\"dag\"",
        "class=\"dag-node\" data-task=\"l\"",
        "<svg id=\"timeline\"",
        "class=\"attempt outcome-Succeeded\" data-task=\"e\" data-attempt=\"1\" data-node=\"w\"",
        "id=\"logs\"",
        "class=\"log-line",
        "<form id=\"retry-form\"",
        "<button id=\"retry\"",
    ] {
        assert!(run.body.contains(needle), "no {needle} in {}", run.body);
    }
    assert!(
        !run.body.contains("id=\"cancel-form\""),
        "a run that ended has no Cancel"
    );
    // Its stream: the run's part, then the end.
    let events = events_until(&dash.base, &format!("/live/runs/{id}?task=l"), &op, |_| {
        false
    });
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"), "{events:?}");
    assert_eq!(names.last(), Some(&"end"), "{events:?}");

    let overview = dash.get("/", Some(&op));
    assert_eq!(overview.status, 200, "{}", overview.body);
    for needle in [
        "<svg id=\"runs-per-hour\"",
        "<svg id=\"failure-rate\"",
        "<svg id=\"durations\"",
        "data-flow=\"daily\"",
    ] {
        assert!(
            overview.body.contains(needle),
            "no {needle} in {}",
            overview.body
        );
    }
    let nodes = dash.get("/nodes", Some(&op));
    assert!(nodes.body.contains("<table id=\"nodes\">"));
    assert!(
        nodes.body.contains("<tr class=\"node\" data-node=\"w\">"),
        "{}",
        nodes.body
    );
    let js = dash.get("/static/htmx.min.js", None);
    assert_eq!(js.status, 200);
    assert!(js.cache_control.unwrap().contains("max-age=31536000"));
    assert_eq!(dash.get("/static/LICENSE-htmx.txt", None).status, 200);

    // A read session: no buttons, and its POSTs are refused even with its
    // own CSRF token.
    let ro = login(&dash, READ);
    let run = dash.get(&format!("/runs/{id}"), Some(&ro));
    assert_eq!(run.status, 200);
    assert!(!run.body.contains("id=\"retry-form\"") && !run.body.contains("id=\"cancel\""));
    let flows = dash.get("/flows", Some(&ro));
    assert!(!flows.body.contains("class=\"run-now\""), "{}", flows.body);
    let ro_csrf = csrf_of(&flows.body); // the logout form's
    for path in [
        format!("/runs/{id}/retry"),
        format!("/runs/{id}/cancel"),
        "/flows/daily/run".to_string(),
    ] {
        let res = dash.post(&path, Some(&ro), &[("csrf", &ro_csrf)]);
        assert_eq!(res.status, 403, "{path}: {}", res.body);
    }
    // Retry, by the operate session: a new run, and the page goes there.
    let res = dash.post(&format!("/runs/{id}/retry"), Some(&op), &[("csrf", &csrf)]);
    assert_eq!(
        res.status, 409,
        "a succeeded run has nothing to retry: {}",
        res.body
    );
    // Logging out ends the session.
    let res = dash.post("/logout", Some(&ro), &[("csrf", &ro_csrf)]);
    assert_eq!((res.status, res.location.as_deref()), (303, Some("/login")));
    assert_eq!(dash.get("/runs", Some(&ro)).status, 303);
}

#[test]
fn without_tokens_pages_open_but_posts_still_need_the_csrf_token() {
    let dash = Dash::start("dash_open", false);
    let res = dash.get("/login", None);
    assert_eq!((res.status, res.location.as_deref()), (303, Some("/runs")));
    let flows = dash.get("/flows", None);
    assert_eq!(flows.status, 200, "{}", flows.body);
    let cookie = cookie_of(flows.set_cookie.as_deref().expect("a session cookie"));
    assert!(flows.set_cookie.unwrap().contains("HttpOnly"));
    let csrf = csrf_of(&flows.body);
    let res = dash.post("/flows/daily/run", Some(&cookie), &[("param.day", "x")]);
    assert_eq!(res.status, 403, "no CSRF token");
    let res = dash.post(
        "/flows/daily/run",
        None,
        &[("csrf", &csrf), ("param.day", "x")],
    );
    assert_eq!(res.status, 403, "a CSRF token without its session");
    let res = dash.post(
        "/flows/daily/run",
        Some(&cookie),
        &[("csrf", &csrf), ("param.day", "x")],
    );
    assert_eq!(res.status, 303, "{}", res.body);
    let id = res
        .location
        .unwrap()
        .trim_start_matches("/runs/")
        .to_string();
    assert_eq!(dash.wait_ended(&id), "Succeeded");
    let run = dash.get(&format!("/runs/{id}"), Some(&cookie));
    assert!(run.body.contains("<form id=\"retry-form\""), "{}", run.body);
}
