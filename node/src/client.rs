/*!
`conveyor runs|flows|trigger`: the CLI of a coordinator node's HTTP API.

The server comes from `--server` or `CONVEYOR_SERVER`, the token from
`CONVEYOR_API_TOKEN`. Output is a human table, or with `--json` the API's
own JSON bodies, for scripts. Exit codes: 0 ok, 1 a watched run ended other
than `Succeeded`, 2 bad usage or a 4xx answer, 70 server unreachable or a 5xx
answer; an error prints the server's message.
*/

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use conveyor_api::types::{RunCreated, RunList, RunRetried};
use conveyor_config::API_TOKEN_ENV;
use conveyor_schemas::{FlowState, RunReport};
use serde_json::Value;

use crate::display;

pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_BAD_REQUEST: u8 = 2;
pub const EXIT_SERVER: u8 = 70;

/// Where the API is, and how to print.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The coordinator node's API, e.g. `http://10.0.0.5:7070`. The token,
    /// if the API needs one, is read from CONVEYOR_API_TOKEN.
    #[arg(
        long,
        env = "CONVEYOR_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// Print the API's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum RunsCmd {
    /// Runs, newest first, a page at a time, with counts by state.
    List {
        /// Only this flow's runs.
        #[arg(long)]
        flow: Option<String>,
        /// Only runs in this state: Running, WaitingForWorker, Succeeded,
        /// Failed or Cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Created at or after: ms since the epoch or RFC 3339 in UTC.
        #[arg(long)]
        since: Option<String>,
        /// Created before: ms since the epoch or RFC 3339 in UTC.
        #[arg(long)]
        until: Option<String>,
        /// Runs per page (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Start after this cursor (printed under the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One run: its state, params, times, tasks and every attempt.
    Show { run: String },
    /// Follow a run until it ends; exit 0 if it succeeded, 1 if not.
    Watch { run: String },
    /// Cancel a run: queued tasks are not started, running ones abort.
    Cancel { run: String },
    /// Start a new run that re-runs the failed, cancelled and skipped tasks
    /// of a run and reuses the outputs of its succeeded ones.
    Retry { run: String },
    /// The log lines of one task of a run, from whichever worker ran it.
    Logs {
        run: String,
        task: String,
        /// Only this attempt (default: every attempt).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing lines as they come, until the task ends.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
pub enum FlowsCmd {
    /// The flows registered with `[coordinator] flows`: params, schedule,
    /// next fire time, last run.
    List,
}

/// Why a command failed, and its exit code.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_BAD_REQUEST,
            message: message.into(),
        }
    }

    fn server(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_SERVER,
            message: message.into(),
        }
    }
}

/// Prints a failure and returns its exit code.
pub fn finish(result: Result<u8, Failure>) -> u8 {
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message.trim_end());
            f.code
        }
    }
}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(server: &str) -> Result<Client, Failure> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "--server (or CONVEYOR_SERVER) `{server}` must start with http:// or https://"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(Client {
            base,
            token: std::env::var(API_TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> Failure {
        Failure::server(format!("cannot reach the API at {}: {e}", self.base))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let url = self.url(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let res = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                let text = body.map(Value::to_string).unwrap_or_else(|| "{}".into());
                req.send(text.as_bytes())
            }
        };
        let res = res.map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        if status < 400 {
            return Ok(res);
        }
        let text = res.into_body().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        let message = format!("{method} {path}: {status}: {message}");
        Err(if status < 500 {
            Failure::usage(message)
        } else {
            Failure::server(message)
        })
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let res = self.send(method, path, body)?;
        let text = res
            .into_body()
            .read_to_string()
            .map_err(|e| Failure::server(format!("{method} {path}: reading the answer: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| Failure::server(format!("{method} {path}: the answer is not JSON: {e}")))
    }

    /// Reads Server-Sent Events, calling `on` with each event's name and
    /// data until it returns false or the stream ends.
    fn events(&self, path: &str, mut on: impl FnMut(&str, &str) -> bool) -> Result<(), Failure> {
        let res = self.send("GET", path, None)?;
        let reader = std::io::BufReader::new(res.into_body().into_reader());
        let (mut name, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let line =
                line.map_err(|e| Failure::server(format!("GET {path}: the stream broke: {e}")))?;
            if line.is_empty() {
                if !data.is_empty() && !on(&name, &data) {
                    return Ok(());
                }
                name.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        Ok(())
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(v)
        .map_err(|e| Failure::server(format!("{what}: unexpected answer: {e}")))
}

/// Prints JSON; a closed stdout (`| head`) is not an error.
fn print_json(v: &Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment from the command line: the server checks it; this only
/// keeps it one segment.
fn seg(v: &str) -> String {
    enc(v)
}

fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "-".into(),
    }
}

fn took(start: Option<u64>, end: Option<u64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => {
            let ms = e.saturating_sub(s);
            // Milliseconds under a second; tenths of a second above.
            let shown = if ms < 1000 { ms } else { ms / 100 * 100 };
            humantime::format_duration(Duration::from_millis(shown)).to_string()
        }
        _ => "-".into(),
    }
}

/// Columns padded to their widest cell.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        first.chars().take(max).collect::<String>() + "…"
    } else {
        first.to_string()
    }
}

pub fn runs(cmd: RunsCmd, server: &ServerArgs) -> u8 {
    finish(run_cmd(cmd, server))
}

fn run_cmd(cmd: RunsCmd, s: &ServerArgs) -> Result<u8, Failure> {
    let client = Client::new(&s.server)?;
    match cmd {
        RunsCmd::List {
            flow,
            state,
            since,
            until,
            limit,
            cursor,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("flow", flow),
                ("state", state),
                ("since", since),
                ("until", until),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let v = client.json("GET", &format!("/runs?{}", q.join("&")), None)?;
            if s.json {
                print_json(&v);
                return Ok(EXIT_OK);
            }
            let list: RunList = decode(v, "GET /runs")?;
            let rows: Vec<Vec<String>> = list
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.flow.clone(),
                        r.state.clone(),
                        time(Some(r.created_ms)),
                        took(r.started_ms, r.ended_ms),
                        r.error
                            .as_deref()
                            .map(|e| one_line(e, 60))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no runs");
            } else {
                print!(
                    "{}",
                    table(&["RUN", "FLOW", "STATE", "CREATED", "TOOK", "ERROR"], &rows)
                );
            }
            let counts: Vec<String> = list
                .counts
                .iter()
                .map(|(state, n)| format!("{state} {n}"))
                .collect();
            if !counts.is_empty() {
                println!("\nin all: {}", counts.join(", "));
            }
            if let Some(next) = list.next_cursor {
                println!("more: --cursor {next}");
            }
            Ok(EXIT_OK)
        }
        RunsCmd::Show { run } => {
            let v = client.json("GET", &format!("/runs/{}", seg(&run)), None)?;
            if s.json {
                print_json(&v);
                return Ok(EXIT_OK);
            }
            show(&v)?;
            Ok(EXIT_OK)
        }
        RunsCmd::Watch { run } => watch(&client, &run, s.json),
        RunsCmd::Cancel { run } => {
            let v = client.json("POST", &format!("/runs/{}/cancel", seg(&run)), None)?;
            if s.json {
                print_json(&v);
            } else {
                println!("cancelling run {run}");
            }
            Ok(EXIT_OK)
        }
        RunsCmd::Retry { run } => {
            let v = client.json("POST", &format!("/runs/{}/retry", seg(&run)), None)?;
            if s.json {
                print_json(&v);
            } else {
                let r: RunRetried = decode(v, "retry")?;
                println!("{}", r.run_id);
                eprintln!("run {} retries {}", r.run_id, r.retry_of);
            }
            Ok(EXIT_OK)
        }
        RunsCmd::Logs {
            run,
            task,
            attempt,
            follow,
        } => {
            let mut q = Vec::new();
            if let Some(a) = attempt {
                q.push(format!("attempt={a}"));
            }
            if follow {
                q.push("follow=true".into());
            }
            let path = format!(
                "/runs/{}/tasks/{}/logs?{}",
                seg(&run),
                seg(&task),
                q.join("&")
            );
            if follow {
                let mut failed = None;
                client.events(&path, |name, data| match name {
                    "line" => {
                        if s.json {
                            println!("{data}");
                        } else if let Ok(l) = serde_json::from_str::<Value>(data) {
                            print_line(&l);
                        }
                        true
                    }
                    "error" => {
                        failed = Some(data.to_string());
                        false
                    }
                    _ => false,
                })?;
                if let Some(e) = failed {
                    return Err(Failure::server(format!("GET {path}: {e}")));
                }
                return Ok(EXIT_OK);
            }
            let v = client.json("GET", &path, None)?;
            if s.json {
                print_json(&v);
                return Ok(EXIT_OK);
            }
            for l in v["lines"].as_array().into_iter().flatten() {
                print_line(l);
            }
            Ok(EXIT_OK)
        }
    }
}

fn print_line(l: &Value) {
    let ts = l["ts_ms"].as_u64();
    println!(
        "{} {:<5} {} #{} {}",
        time(ts),
        l["level"].as_str().unwrap_or_default(),
        l["node"].as_str().unwrap_or_default(),
        l["attempt"].as_u64().unwrap_or_default(),
        l["message"].as_str().unwrap_or_default()
    );
}

fn show(v: &Value) -> Result<(), Failure> {
    let report: RunReport = decode(v["report"].clone(), "the run's report")?;
    println!("run      {}", report.flow_run);
    println!("flow     {}", report.flow);
    println!("state    {}", report.state);
    println!("created  {}", time(v["created_ms"].as_u64()));
    println!("started  {}", time(v["started_ms"].as_u64()));
    println!("ended    {}", time(v["ended_ms"].as_u64()));
    if let Some(r) = v["retry_of"].as_str() {
        println!("retries  {r}");
    }
    let params: BTreeMap<String, String> =
        serde_json::from_value(v["params"].clone()).unwrap_or_default();
    for (k, val) in &params {
        println!("param    {k} = {val}");
    }
    println!();
    print!("{}", display::summary(&report));
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .map(|a| {
                let n = |k: &str| a[k].as_u64().map(|n| n.to_string()).unwrap_or("-".into());
                vec![
                    a["task"].as_str().unwrap_or_default().to_string(),
                    n("attempt"),
                    a["node"].as_str().unwrap_or("-").to_string(),
                    a["outcome"].as_str().unwrap_or_default().to_string(),
                    time(a["started_ms"].as_u64()),
                    took(a["started_ms"].as_u64(), a["ended_ms"].as_u64()),
                    n("rows_in"),
                    n("rows_out"),
                    a["error"]["message"]
                        .as_str()
                        .map(|e| one_line(e, 60))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        println!("\nattempts:");
        print!(
            "{}",
            table(
                &[
                    "TASK", "#", "NODE", "OUTCOME", "STARTED", "TOOK", "ROWS IN", "ROWS OUT",
                    "ERROR"
                ],
                &rows
            )
        );
    }
    Ok(())
}

/// Follows a run's events to its end: live progress on a terminal, then
/// the summary (or with `--json`, the final report).
fn watch(client: &Client, run: &str, json: bool) -> Result<u8, Failure> {
    let live = std::io::stderr().is_terminal() && !json;
    let (tx, rx) = tokio::sync::watch::channel::<Option<RunReport>>(None);
    let (report_tx, report_rx) = tokio::sync::watch::channel(RunReport {
        flow: String::new(),
        flow_run: run.to_string(),
        state: FlowState::Running,
        elapsed_ms: 0,
        error: None,
        tasks: Vec::new(),
    });
    let progress = live.then(|| display::spawn_progress(report_rx));
    let path = format!("/runs/{}/events", seg(run));
    let mut stopped = None;
    let result = client.events(&path, |name, data| {
        if name == "error" {
            stopped = Some(
                serde_json::from_str::<Value>(data)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| data.to_string()),
            );
            return false;
        }
        let Ok(report) = serde_json::from_str::<RunReport>(data) else {
            return true;
        };
        report_tx.send_replace(report.clone());
        let end = name == "end";
        tx.send_replace(Some(report));
        !end
    });
    if let Some(p) = progress {
        p.finish();
    }
    result?;
    if let Some(message) = stopped {
        return Err(Failure::server(format!("GET {path}: {message}")));
    }
    let last = rx.borrow().clone();
    let Some(report) = last else {
        return Err(Failure::server(format!(
            "GET {path}: the stream ended without a report"
        )));
    };
    if !report.state.is_terminal() {
        return Err(Failure::server(format!(
            "GET {path}: the stream ended while the run was {}",
            report.state
        )));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", display::summary(&report));
    }
    Ok(if report.state == FlowState::Succeeded {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    })
}

pub fn flows(cmd: FlowsCmd, s: &ServerArgs) -> u8 {
    finish((|| {
        let client = Client::new(&s.server)?;
        match cmd {
            FlowsCmd::List => {
                let v = client.json("GET", "/flows", None)?;
                if s.json {
                    print_json(&v);
                    return Ok(EXIT_OK);
                }
                let rows: Vec<Vec<String>> = v["flows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        let params = f["params"]
                            .as_object()
                            .map(|p| {
                                p.iter()
                                    .map(|(k, d)| match d.as_str() {
                                        Some(d) => format!("{k}={d}"),
                                        None => format!("{k} (required)"),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default();
                        vec![
                            f["name"].as_str().unwrap_or_default().to_string(),
                            f["schedule"].as_str().unwrap_or("-").to_string(),
                            time(f["next_fire_ms"].as_u64()),
                            f["last_run"].as_str().unwrap_or("-").to_string(),
                            params,
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no registered flows");
                } else {
                    print!(
                        "{}",
                        table(
                            &["FLOW", "SCHEDULE", "NEXT FIRE", "LAST RUN", "PARAMS"],
                            &rows
                        )
                    );
                }
                let health = client.json("GET", "/health", None)?;
                if health["adhoc"] == Value::Bool(false) {
                    println!("ad-hoc flow text is off on this coordinator ([api] adhoc = false): only registered flows run through the API");
                }
                Ok(EXIT_OK)
            }
        }
    })())
}

/// `k=v`, for `--param`.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` must be NAME=VALUE")),
    }
}

pub fn trigger(flow: &str, params: Vec<(String, String)>, watch_it: bool, s: &ServerArgs) -> u8 {
    finish((|| {
        let client = Client::new(&s.server)?;
        let mut map = BTreeMap::new();
        for (k, v) in params {
            if map.insert(k.clone(), v).is_some() {
                return Err(Failure::usage(format!("--param {k} is given twice")));
            }
        }
        let body = serde_json::json!({ "params": map });
        let v = client.json("POST", &format!("/flows/{}/runs", seg(flow)), Some(&body))?;
        let created: RunCreated = decode(v.clone(), "trigger")?;
        if watch_it {
            eprintln!("run {}", created.run_id);
            return watch(&client, &created.run_id, s.json);
        }
        if s.json {
            print_json(&v);
        } else {
            println!("{}", created.run_id);
        }
        Ok(EXIT_OK)
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_milliseconds_under_a_second_and_tenths_above() {
        assert_eq!(took(Some(1_000), Some(1_030)), "30ms");
        assert_eq!(took(Some(0), Some(2_345)), "2s 300ms");
        assert_eq!(took(Some(5), None), "-");
    }
}
