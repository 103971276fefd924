//! Task logs and attempt history (issue 11): a real coordinator node and a
//! real worker node on RabbitMQ. The worker ships each attempt's log lines
//! to the coordinator, which keeps them in its database with the attempts,
//! so they are read while the attempt runs, and after the worker process is
//! gone.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_coordinator::handle::{LogPage, LogQuery};
use conveyor_coordinator::runstore::{RunQuery, RunReader};
use conveyor_schemas::{ErrorKind, FlowState};

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

const CSV: &str = "id,name\n1,ada\n2,grace\n3,edsger\n";

/// An HTTP server that answers its first request with 503 (a retryable
/// failure) and every later one with [`CSV`]. Returns its port and how many
/// requests it has seen.
fn flaky_csv_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
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
            let response = if count.fetch_add(1, Ordering::SeqCst) == 0 {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CSV}",
                    CSV.len()
                )
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (port, seen)
}

/// Reads a task's logs from the database until `done` holds, or panics
/// with the last page after `within`.
fn logs_until(
    db: &Path,
    query: &LogQuery,
    within: Duration,
    done: impl Fn(&LogPage) -> bool,
) -> LogPage {
    let reader = RunReader::open(db).unwrap();
    let deadline = Instant::now() + within;
    loop {
        let page = reader.task_logs(query, false).unwrap();
        if done(&page) {
            return page;
        }
        if Instant::now() > deadline {
            panic!("the logs of {query:?} never got there: {page:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn logs_and_attempts_are_read_while_a_task_runs_and_after_its_worker_exited() {
    let dir = TestDir::new("logs_after_worker");
    let ns = namespace("logs_after_worker");
    let storage = dir.join("shared");
    let db = dir.join("coord/coordinator.db");
    let coord_cfg = dir.write(
        "coord.toml",
        &node_config(
            "coord",
            &ns,
            &[],
            &storage,
            &format!(
                "[coordinator]\ndb = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
                db.display()
            ),
        ),
    );
    let worker_cfg = dir.write(
        "w.toml",
        &node_config("logs-worker", &ns, &["extract", "load"], &storage, ""),
    );
    let client_cfg = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    let coord = NodeProcess::start(&coord_cfg, &dir.join("coord.log"), &[]);
    // The worker prints only errors: what it ships does not depend on that.
    // Its load takes 2.5 s, so that its lines are seen while it runs.
    let mut worker = NodeProcess::start(
        &worker_cfg,
        &dir.join("w.log"),
        &[
            ("CONVEYOR_LOG", "error"),
            ("CONVEYOR_FAILPOINTS", "sleep=2500@l"),
        ],
    );
    let (port, requests) = flaky_csv_server();
    let flow = dir.write(
        "flaky.toml",
        &format!(
            "[flow]\nname = \"flaky\"\nmax_attempts = 3\nbackoff = \"100ms\"\n[tasks.e]\nkind = \"extract\"\nurl = \"http://127.0.0.1:{port}/people.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"people.csv\"\n"
        ),
    );
    let client = client_cfg.to_str().unwrap();
    let running = run_flow_args_in_background(&dir.path, &flow, &["--config", client, "--submit"]);

    // While the load runs, its first lines are already with the coordinator.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (run, live) = loop {
        let reader = RunReader::open(&db).ok();
        let run = reader
            .as_ref()
            .and_then(|r| r.list(&RunQuery::default()).ok())
            .and_then(|page| page.runs.first().map(|r| r.id.clone()));
        if let (Some(reader), Some(run)) = (reader, run) {
            let query = LogQuery {
                run: run.clone(),
                task: "l".into(),
                ..LogQuery::default()
            };
            if let Ok(page) = reader.task_logs(&query, true) {
                if page
                    .lines
                    .iter()
                    .any(|l| l.message.starts_with("Task started"))
                {
                    break (run, page.live);
                }
            }
        }
        assert!(Instant::now() < deadline, "no line of the running load");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !running.is_finished(),
        "the flow ended before its load's lines were seen"
    );
    assert!(live, "a running attempt's log is live");
    let reader = RunReader::open(&db).unwrap();
    let load = reader.attempts(&run, true).unwrap();
    assert!(
        load.iter().any(|a| a.task == "l" && a.outcome == "Running"),
        "{load:#?}"
    );

    let (out, report) = running.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_eq!(report.flow_run, run);

    // The worker goes away: what it logged stays with the coordinator.
    let status = worker.sigterm_and_wait(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{}", worker.log_text());

    let query = |task: &str, attempt: Option<u32>| LogQuery {
        run: run.clone(),
        task: task.into(),
        attempt,
        after: None,
        limit: 0,
    };
    let has = |page: &LogPage, attempt: u32, start: &str| {
        page.lines
            .iter()
            .any(|l| l.attempt == attempt && l.message.starts_with(start))
    };
    let extract = logs_until(&db, &query("e", None), Duration::from_secs(10), |p| {
        has(p, 2, "Task succeeded")
    });
    // Attempt 1: started, then failed with the server's answer.
    assert!(has(&extract, 1, "Task started"), "{extract:#?}");
    let failed = extract
        .lines
        .iter()
        .find(|l| l.attempt == 1 && l.message.starts_with("Task failed"))
        .unwrap_or_else(|| panic!("no failure line in attempt 1: {extract:#?}"));
    assert_eq!(failed.level, "WARN");
    assert!(
        failed.message.contains("HTTP 503") && failed.message.contains("retryable=true"),
        "{failed:?}"
    );
    assert!(has(&extract, 2, "Task started"), "{extract:#?}");
    assert!(
        extract.lines.iter().all(|l| l.node == "logs-worker"),
        "{extract:#?}"
    );
    assert!(
        extract.lines.windows(2).all(|w| w[0].seq < w[1].seq),
        "{extract:#?}"
    );
    // One attempt alone, and a follower's read after the last line seen.
    let first = reader.task_logs(&query("e", Some(1)), false).unwrap();
    assert!(
        !first.lines.is_empty() && first.lines.iter().all(|l| l.attempt == 1),
        "{first:#?}"
    );
    let last_of_first = first.lines.last().unwrap().seq;
    let rest = reader
        .task_logs(
            &LogQuery {
                after: Some(last_of_first),
                ..query("e", None)
            },
            false,
        )
        .unwrap();
    assert!(
        rest.lines
            .iter()
            .all(|l| l.seq > last_of_first && l.attempt == 2),
        "{rest:#?}"
    );
    // Every attempt of the run, in start order.
    let attempts = reader.attempts(&run, false).unwrap();
    let seen: Vec<(&str, u32, &str)> = attempts
        .iter()
        .map(|a| (a.task.as_str(), a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("e", 1, "Failed"),
            ("e", 2, "Succeeded"),
            ("l", 1, "Succeeded")
        ],
        "{attempts:#?}"
    );
    let error = attempts[0].error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Io, "{error:?}");
    assert!(
        error.retryable && error.message.contains("HTTP 503"),
        "{error:?}"
    );
    for a in &attempts {
        assert_eq!(a.node.as_deref(), Some("logs-worker"), "{a:?}");
        let (start, end) = (a.started_ms.unwrap(), a.ended_ms.unwrap());
        assert!(start <= end, "{a:?}");
    }
    assert!(
        attempts[0].ended_ms <= attempts[1].started_ms,
        "{attempts:#?}"
    );
    let load = &attempts[2];
    assert_eq!((load.rows_in, load.rows_out), (Some(3), Some(3)));
    let written = std::fs::metadata(storage.join("out/people.csv"))
        .unwrap()
        .len();
    assert_eq!(load.bytes_out, Some(written), "{load:?}");
    assert!(load.bytes_in.is_some_and(|b| b > 0), "{load:?}");

    // The same, through the HTTP API (open on loopback without a token).
    let base = format!("http://{}/api/v1/runs/{run}", api_addr(&coord));
    let (status, page) = http_get(&format!("{base}/tasks/e/logs"));
    assert_eq!(status, 200, "{page}");
    let lines = page["lines"].as_array().unwrap();
    assert_eq!(lines.len(), extract.lines.len(), "{page}");
    assert_eq!(page["live"], false, "{page}");
    assert_eq!(lines[1]["level"], "WARN", "{page}");
    let (_, first_only) = http_get(&format!("{base}/tasks/e/logs?attempt=1"));
    let first_only = first_only["lines"].as_array().unwrap();
    assert!(
        !first_only.is_empty() && first_only.iter().all(|l| l["attempt"] == 1),
        "{first_only:?}"
    );
    // Followed: every line, then the end, since no more can come.
    let events = http_events(&format!("{base}/tasks/e/logs?follow=true"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "line").count(),
        lines.len(),
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    let (status, detail) = http_get(&base);
    assert_eq!(status, 200, "{detail}");
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{detail}");
    assert_eq!(attempts[0]["outcome"], "Failed", "{detail}");
    assert_eq!(attempts[0]["error"]["kind"], "io", "{detail}");
    let (status, missing) = http_get(&format!("{base}/tasks/nosuchtask/logs"));
    assert_eq!(status, 404, "{missing}");
}

/// The address a node's API listens on, from its log.
fn api_addr(node: &NodeProcess) -> String {
    node.wait_for_line(&["API listening"], Duration::from_secs(10));
    let log = node.log_text();
    let line = log.lines().find(|l| l.contains("API listening")).unwrap();
    let addr = line.split("addr=").nth(1).expect("addr= in the log line");
    addr.split_whitespace().next().unwrap().to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `GET url`: the status and the body as JSON.
fn http_get(url: &str) -> (u16, serde_json::Value) {
    let res = agent().get(url).call().expect("GET");
    let status = res.status().as_u16();
    let text = res.into_body().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Server-Sent Events from `url` until the stream closes: (event, data).
fn http_events(url: &str) -> Vec<(String, serde_json::Value)> {
    use std::io::BufRead;
    let res = agent().get(url).call().expect("GET events");
    assert_eq!(res.status().as_u16(), 200);
    let reader = std::io::BufReader::new(res.into_body().into_reader());
    let (mut events, mut name) = (Vec::new(), String::new());
    for line in reader.lines() {
        let line = line.expect("read events");
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap_or_default()));
        }
    }
    events
}
