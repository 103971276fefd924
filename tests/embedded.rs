//! The embedded default: `conveyor run` with no broker, every role in one process.

use conveyor_schemas::{ErrorKind, FlowState, TaskState};

use crate::harness::{colors::*, processes::*, workdir::*};

#[test]
fn colors_flow_succeeds_and_drops_hex() {
    let dir = TestDir::new("embedded_colors");
    let flow = colors_flow(&dir, "colors", "");
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.expect("JSON report on stdout");
    assert_eq!(report.state, FlowState::Succeeded);
    assert_eq!(report.tasks.len(), 3);
    for t in &report.tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!((t.rows_in, t.rows_out), (Some(148), Some(148)), "{t:?}");
        assert_eq!(t.attempts, 1);
        assert_eq!(t.node.as_deref(), Some("local"));
    }
    let written = std::fs::read_to_string(dir.join("out/colors.csv")).unwrap();
    assert!(!written.lines().next().unwrap().contains("HEX"));
    assert_eq!(written, expected_colors_without_hex());
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}

#[test]
fn a_fused_flow_runs_as_one_task_and_writes_the_same_bytes() {
    let dir = TestDir::new("embedded_fused");
    // A task after the fused chain fails, so the run keeps its artifacts
    // (a succeeded run's are deleted after it ends) for the look below.
    let flow = colors_flow(&dir, "fused", "fuse = true");
    let text = std::fs::read_to_string(&flow).unwrap()
        + "[tasks.after]\nkind = \"extract\"\npath = \"no-such-file.csv\"\nafter = [\"load\"]\n";
    std::fs::write(&flow, text).unwrap();
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = report.expect("JSON report on stdout");
    assert_eq!(report.state, FlowState::Failed);
    // extract → transform → load read, transformed and wrote in one pass.
    assert_eq!(report.tasks.len(), 2, "{:?}", report.tasks);
    let t = report.tasks.iter().find(|t| t.name == "load").unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(
        (t.name.as_str(), t.kind),
        ("load", conveyor_schemas::TaskKind::Extract)
    );
    assert_eq!((t.rows_in, t.rows_out), (Some(148), Some(148)));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/colors.csv")).unwrap(),
        expected_colors_without_hex()
    );
    // No intermediate artifact was written; the run's directory holds only
    // the fused task's commit marker and lock (and the run's end marker).
    let run_dir = dir.join(".conveyor/artifacts").join(&report.flow_run);
    let mut names: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".finished")
        .collect();
    names.sort();
    assert_eq!(names, ["load.done.json", "load.lock"], "{run_dir:?}");
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}

#[test]
fn the_shipped_example_flows_run_and_validate() {
    let dir = TestDir::new("embedded_examples");
    for flow in ["flows/colors.toml", "flows/colors_fanout.toml"] {
        let path = repo_root().join(flow);
        let (out, report) = run_flow(&dir.path, &path, &[]);
        assert!(out.status.success(), "{flow}: {}", describe(&out));
        assert_eq!(report.unwrap().state, FlowState::Succeeded);
    }
    // One extract feeding several loads, each with the right rows.
    let greys = std::fs::read_to_string(dir.join("out/fanout/greys.jsonl")).unwrap();
    assert_eq!(greys.lines().count(), 4, "{greys}");
    let parquet = std::fs::File::open(dir.join("out/fanout/colors.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 148);
    let validate = std::process::Command::new(conveyor_bin())
        .args(["validate", "config.toml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", describe(&validate));
}

#[test]
fn values_pass_through_unchanged() {
    // The seed's pandas rewrote 07850 as 7850 and true as True.
    let dir = TestDir::new("embedded_no_silent_changes");
    let input = "code,flag,amount,note,n\n07850,true,1.50,\"a, \"\"quoted\"\" value\",12\n+1,false,1e3,\"multi\nline\",-3\n-0,TRUE,0.10,naïve ☃,0\n,,,,\n";
    dir.write("in.csv", input);
    let flow = dir.write(
        "f.toml",
        "[flow]\nname = \"same\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = [{ rename = { note = \"note\" } }]\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"same.csv\"\n",
    );
    let (out, _) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let written = std::fs::read_to_string(dir.join("out/same.csv")).unwrap();
    assert_eq!(written, input);
}

#[test]
fn bad_inputs_fail_fast_with_one_clear_error_and_no_output() {
    let dir = TestDir::new("embedded_bad_inputs");
    dir.write("ragged.csv", "a,b\n1,2\n3\n");
    dir.write("bad_utf8.csv", "a,b\n1,2\n");
    std::fs::write(dir.join("bad_utf8.csv"), b"a,b\n1,\xff\xfe\n").unwrap();
    dir.write("header_only.csv", "a,b\n");
    dir.write("empty.csv", "");
    dir.write("ok.csv", "a,b\n1,2\n");
    dir.write("text.csv", "a,b\n1,x\n");
    let cases: &[(&str, &str, &str)] = &[
        ("missing.csv", "", "file not found"),
        ("ragged.csv", "", "line"),
        ("bad_utf8.csv", "", "UTF-8"),
        ("header_only.csv", "", "no data rows"),
        ("empty.csv", "", "is empty"),
        ("ok.csv", "steps = [{ drop = [\"zz\"] }]", "no column `zz`"),
        (
            "text.csv",
            "steps = [{ cast = { column = \"b\", to = \"int64\" } }]",
            "value `x` is not a valid int64",
        ),
    ];
    for (i, (file, steps, needle)) in cases.iter().enumerate() {
        let steps = if steps.is_empty() {
            "steps = []"
        } else {
            steps
        };
        let flow = dir.write(
            &format!("f{i}.toml"),
            &format!(
                "[flow]\nname = \"bad{i}\"\nmax_attempts = 3\n[tasks.e]\nkind = \"extract\"\npath = \"{file}\"\nformat = \"csv\"\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\n{steps}\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"out{i}.csv\"\n"
            ),
        );
        let (out, report) = run_flow(&dir.path, &flow, &[]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", describe(&out));
        let report = report.unwrap();
        assert_eq!(report.state, FlowState::Failed);
        let failed: Vec<_> = report
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .collect();
        assert_eq!(failed.len(), 1, "{report:?}");
        let error = failed[0].error.as_ref().unwrap();
        assert!(!error.retryable, "{file}: {error:?}");
        assert!(
            matches!(error.kind, ErrorKind::Data | ErrorKind::Spec),
            "{error:?}"
        );
        // Not retried: one attempt although three were allowed.
        assert_eq!(failed[0].attempts, 1, "{file}: {report:?}");
        let flow_error = report.error.unwrap();
        assert!(
            flow_error.contains(needle),
            "{file}: expected {needle:?} in {flow_error}"
        );
        assert!(
            flow_error.contains(&format!("task `{}`", failed[0].name)),
            "{flow_error}"
        );
        if steps.starts_with("steps = []") {
            assert!(
                flow_error.contains(file),
                "the error must name the file: {flow_error}"
            );
        }
        assert!(
            !dir.join(&format!("out/out{i}.csv")).exists(),
            "{file}: output was written"
        );
    }
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}

#[test]
fn bad_flow_files_exit_2_and_list_every_problem() {
    let dir = TestDir::new("embedded_bad_flow");
    let flow = dir.write(
        "bad.toml",
        "[flow]\nname = \"x\"\n[tasks.e]\nkind = \"teleport\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"/etc/passwd\"\nbogus = 1\n",
    );
    for args in [vec!["validate"], vec!["run"]] {
        let out = std::process::Command::new(conveyor_bin())
            .args(&args)
            .arg(&flow)
            .current_dir(&dir.path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "line 4: `tasks.e.kind`",
            "line 8: `tasks.l.path`",
            "line 9: `tasks.l.bogus`",
        ] {
            assert!(
                err.contains(needle),
                "{args:?}: missing {needle:?} in\n{err}"
            );
        }
    }
    assert!(!dir.join("out").exists());
}

#[test]
fn extract_reads_http_urls_parquet_and_json_lines() {
    let dir = TestDir::new("embedded_formats");
    // A one-shot HTTP server on a spare port serving the colors CSV.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::fs::read(repo_root().join("examples/data/colors.csv")).unwrap();
    let served = body.clone();
    let server = std::thread::spawn(move || {
        let body = served;
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body).unwrap();
    });
    // CSV over HTTP → Parquet; that Parquet → JSON lines; those JSON lines → CSV.
    let flow = dir.write(
        "formats.toml",
        &format!(
            r#"[flow]
name = "formats"
[tasks.web]
kind = "extract"
url = "http://127.0.0.1:{port}/colors.csv"
[tasks.to_parquet]
kind = "load"
input = "web"
path = "stage/colors.parquet"
[tasks.from_parquet]
kind = "extract"
after = ["to_parquet"]
path = "out/stage/colors.parquet"
[tasks.to_jsonl]
kind = "load"
input = "from_parquet"
path = "stage/colors.jsonl"
[tasks.from_jsonl]
kind = "extract"
after = ["to_jsonl"]
path = "out/stage/colors.jsonl"
[tasks.to_csv]
kind = "load"
input = "from_jsonl"
path = "colors.csv"
"#
        ),
    );
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    server.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert!(
        report.tasks.iter().all(|t| t.rows_out == Some(148)),
        "{report:?}"
    );
    let round_trip = std::fs::read_to_string(dir.join("out/colors.csv")).unwrap();
    assert!(
        round_trip.as_bytes() == body.as_slice(),
        "CSV → Parquet → JSON lines → CSV changed the data; it starts:\n{}",
        &round_trip[..200.min(round_trip.len())]
    );
}

#[test]
fn an_unreachable_url_is_retried_then_fails_naming_it() {
    let dir = TestDir::new("embedded_bad_url");
    // Bind then drop, so the port refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flow = dir.write(
        "f.toml",
        &format!(
            "[flow]\nname = \"url\"\nmax_attempts = 2\nbackoff = \"10ms\"\n[tasks.e]\nkind = \"extract\"\nurl = \"http://user:s3cret@127.0.0.1:{port}/x.csv\"\n"
        ),
    );
    let (out, report) = run_flow(&dir.path, &flow, &["--log", "info"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = report.unwrap();
    let e = &report.tasks[0];
    assert_eq!(e.attempts, 2, "a connection error is retryable: {e:?}");
    assert!(e.error.as_ref().unwrap().retryable);
    let error = report.error.clone().unwrap();
    assert!(
        error.contains(&format!("http://user:***@127.0.0.1:{port}/x.csv")),
        "{error}"
    );
    // The credentials show nowhere: not in the report, the errors or the log
    // (issue 10, item 5).
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!everything.contains("s3cret"), "{everything}");
}

#[test]
fn a_task_that_crashes_every_worker_is_dead_lettered_and_fails_its_flow() {
    let dir = TestDir::new("embedded_poison");
    let flow = colors_flow(&dir, "poison", "");
    let out = std::process::Command::new(conveyor_bin())
        .current_dir(&dir.path)
        .args(["run", "--json"])
        .arg(&flow)
        .env("CONVEYOR_FAILPOINTS", "panic@transform")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: conveyor_schemas::RunReport = serde_json::from_slice(&out.stdout).unwrap();
    let t = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(
        t.error.as_ref().unwrap().kind,
        ErrorKind::WorkerLost,
        "{t:?}"
    );
    // The in-process bus has the broker's default delivery limit of 5.
    assert_eq!(t.attempts, 5, "{t:?}");
    let error = report.error.unwrap();
    assert!(
        error.contains("task `transform`") && error.contains("dead-lettered"),
        "{error}"
    );
    assert!(!dir.join("out/colors.csv").exists());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Worker crashed on a task"), "{log}");
}

#[test]
fn a_burst_larger_than_the_actor_mailbox_is_processed() {
    // 40 ready extracts at once with concurrency 40: more deliveries than an
    // actix mailbox holds (16) reach the worker together.
    let dir = TestDir::new("embedded_burst");
    let csv = repo_root().join("examples/data/colors.csv");
    let mut flow = String::from("[flow]\nname = \"burst\"\n");
    for i in 0..40 {
        flow.push_str(&format!(
            "[tasks.e{i}]\nkind = \"extract\"\npath = \"{}\"\n[tasks.l{i}]\nkind = \"load\"\ninput = \"e{i}\"\npath = \"burst/{i}.csv\"\n",
            csv.display()
        ));
    }
    let flow = dir.write("burst.toml", &flow);
    let config = dir.write(
        "node.toml",
        &format!("[node]\nname = \"local\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"transform\", \"load\"]\ninput_roots = [\"{}\"]\n[workers.concurrency]\nextract = 40\nload = 40\n[storage]\nartifacts = \"a\"\noutput_root = \"out\"\n", repo_root().join("examples/data").display()),
    );
    let (out, report) = run_flow(&dir.path, &flow, &["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().tasks.len(), 80);
    let written = std::fs::read_dir(dir.join("out/burst")).unwrap().count();
    assert_eq!(written, 40);
}

/// A worker bounds one record (`[workers] max_record`), not the file: a file
/// many times the limit streams through, while a stray quote that would make
/// the reader swallow the rest of the file is a data error naming the file
/// and the line, not retried, with nothing written.
#[test]
fn a_record_past_max_record_fails_but_a_file_past_it_streams() {
    let dir = TestDir::new("embedded_max_record");
    let cfg = dir.write(
        "node.toml",
        "[node]\nname = \"local\"\n[coordinator]\n[workers]\nkinds = [\"extract\", \"transform\", \"load\"]\nmax_record = \"4KiB\"\ninput_roots = [\".\"]\n[storage]\nartifacts = \"artifacts\"\noutput_root = \"out\"\n",
    );
    let mut big = String::from("id,text\n");
    for i in 0..20_000 {
        big.push_str(&format!("{i},\"row, number {i}\"\n"));
    }
    assert!(big.len() > 100 * 4096);
    dir.write("big.csv", &big);
    let mut stray = String::from("id,text\n1,ok\n2,ok\n3,\"never closed\n");
    stray.push_str(&big);
    dir.write("stray.csv", &stray);
    let flow = |name: &str, file: &str| {
        dir.write(
            &format!("{name}.toml"),
            &format!(
                "[flow]\nname = \"{name}\"\nmax_attempts = 3\n[tasks.e]\nkind = \"extract\"\npath = \"{file}\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{name}.csv\"\n"
            ),
        )
    };
    let cfg_arg = cfg.to_str().unwrap();

    let (out, report) = run_flow(&dir.path, &flow("fits", "big.csv"), &["--config", cfg_arg]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().tasks[0].rows_out, Some(20_000));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/fits.csv")).unwrap(),
        big
    );

    let (out, report) = run_flow(
        &dir.path,
        &flow("stray", "stray.csv"),
        &["--config", cfg_arg],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = report.unwrap();
    let e = &report.tasks[0];
    assert_eq!((e.state, e.attempts), (TaskState::Failed, 1), "{e:?}");
    let error = e.error.as_ref().unwrap();
    assert!(
        !error.retryable && error.kind == ErrorKind::Data,
        "{error:?}"
    );
    for needle in [
        "stray.csv",
        "line 4",
        "max_record of 4096 bytes",
        "unclosed quote",
    ] {
        assert!(
            error.message.contains(needle),
            "{needle:?} not in {}",
            error.message
        );
    }
    assert!(!dir.join("out/stray.csv").exists());
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}

#[test]
fn a_log_filter_that_does_not_parse_exits_2_naming_it() {
    let colors = repo_root().join("flows/colors.toml");
    for (args, env) in [(vec!["--log", "foo=bar=baz"], None), (vec![], Some("["))] {
        let mut cmd = std::process::Command::new(conveyor_bin());
        cmd.args(&args).arg("validate").arg(&colors);
        match env {
            Some(filter) => cmd.env("CONVEYOR_LOG", filter),
            None => cmd.env_remove("CONVEYOR_LOG"),
        };
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let filter = env.unwrap_or("foo=bar=baz");
        assert!(
            err.contains(&format!("`{filter}` is not a log filter")),
            "{err}"
        );
    }
}

/// Live progress under a real pseudo-terminal of 80 columns (`script`),
/// read back through a terminal emulator: one line per task or partitioned
/// task, each cut to the width, with rows and rows/s; never a wrapped line
/// (issue 10, item 8). Without a terminal, nothing is drawn.
#[test]
fn live_progress_fits_an_80_column_terminal_one_line_per_task() {
    let dir = TestDir::new("embedded_pty_progress");
    let csv = repo_root().join("examples/data/colors.csv");
    let flow = dir.write(
        "wide.toml",
        &format!(
            "[flow]\nname = \"a_flow_with_a_rather_long_name_for_the_progress_line\"\n[tasks.extract_with_a_long_name]\nkind = \"extract\"\npath = \"{}\"\npartitions = 4\n[tasks.transform]\nkind = \"transform\"\ninput = \"extract_with_a_long_name\"\nsteps = [{{ drop = [\"HEX\"] }}]\n[tasks.load]\nkind = \"load\"\ninput = \"transform\"\npath = \"wide.csv\"\n",
            csv.display()
        ),
    );
    let command = format!(
        "stty cols 80 rows 30; exec {} run {}",
        conveyor_bin().display(),
        flow.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .current_dir(&dir.path)
        // Each transform partition takes a while, so progress is drawn.
        .env(
            "CONVEYOR_FAILPOINTS",
            "sleep=1200@transform@0,sleep=1200@transform@2",
        )
        .env_remove("CONVEYOR_LOG");
    let out = output_within(cmd, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));

    let size = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut term = vt100::Parser::new(size(30), size(80), 0);
    let mut screens_with_progress = 0;
    let mut saw_rates = false;
    // Look at the screen between redraws: each redraw starts by moving the
    // cursor up (ESC [ n A) to the first progress line.
    let bytes = &out.stdout;
    let mut redraws = vec![0];
    for i in 0..bytes.len().saturating_sub(3) {
        if bytes[i] == 0x1b && bytes[i + 1] == b'[' {
            let digits = bytes[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 && bytes.get(i + 2 + digits) == Some(&b'A') {
                redraws.push(i);
            }
        }
    }
    redraws.push(bytes.len());
    let summary = b"Flow a_flow";
    for chunk in redraws.windows(2).map(|w| &bytes[w[0]..w[1]]) {
        if chunk.windows(summary.len()).any(|w| w == summary) {
            break; // the progress is done; the summary table follows
        }
        term.process(chunk);
        let rows: Vec<String> = term.screen().rows(0, 80).collect();
        let drawn: Vec<&String> = rows.iter().filter(|r| !r.trim().is_empty()).collect();
        if drawn.is_empty() {
            continue;
        }
        screens_with_progress += 1;
        for row in &drawn {
            let mut chars = row.chars();
            let spinner = chars.next().unwrap_or(' ');
            let rest: String = chars.collect();
            let name = rest.split_whitespace().next().unwrap_or("");
            assert!(
                ('\u{2800}'..='\u{28ff}').contains(&spinner)
                    && ["extract_with_a_long_name", "transform", "load"].contains(&name),
                "a row that is not one task's line (a wrapped line?): {row:?}\n{rows:#?}"
            );
        }
        saw_rates |= drawn
            .iter()
            .any(|r| r.contains("rows ·") && r.contains("/s") && r.contains("parts"));
    }
    assert!(screens_with_progress > 5, "no live progress was drawn");
    assert!(saw_rates, "no line showed rows, rows/s and parts");

    // Not a terminal: no progress at all.
    let (out, _) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}') && !err.contains("rows ·"), "{err}");
}

/// Log lines carry what operators grep for, as plain fields (issue 10,
/// item 13): rows and duration on "Task succeeded", the state and the first
/// error on "Flow finished", and no Rust debug formatting.
#[test]
fn log_lines_carry_rows_durations_states_and_errors() {
    let dir = TestDir::new("embedded_log_lines");
    let flow = colors_flow(&dir, "colors", "");
    let (out, _) = run_flow(&dir.path, &flow, &["--log", "info"]);
    assert!(out.status.success(), "{}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let line = |needle: &str| -> String {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line:\n{log}"))
            .to_string()
    };
    let succeeded = line("Task succeeded");
    for field in ["rows_in=148", "rows_out=148", "duration_ms="] {
        assert!(succeeded.contains(field), "{succeeded}");
    }
    assert!(line("Flow finished").contains("state=Succeeded"), "{log}");
    for debug in ["Some(", "{Extract", "[\"", "TaskKind"] {
        assert!(
            !log.contains(debug),
            "debug formatting in the log: {debug}\n{log}"
        );
    }

    let broken = dir.write(
        "broken.toml",
        "[flow]\nname = \"broken\"\n[tasks.e]\nkind = \"extract\"\npath = \"no-such-file.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"o.csv\"\n",
    );
    let (out, _) = run_flow(&dir.path, &broken, &["--log", "info"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let finished = log
        .lines()
        .find(|l| l.contains("Flow finished"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        finished.contains("state=Failed") && finished.contains("no-such-file.csv"),
        "{finished}"
    );
}

/// One failed branch of a fan-out no longer kills the independent branches:
/// they run to completion and commit, and the flow ends Failed. With
/// `fail_fast = true` the first failure ends the run (issue 10, item 3).
#[test]
fn a_failed_branch_leaves_independent_branches_to_finish_unless_fail_fast() {
    let dir = TestDir::new("embedded_fanout_failure");
    let csv = repo_root().join("examples/data/colors.csv");
    let flow_text = |fail_fast: bool| {
        format!(
            "[flow]\nname = \"fan\"\nfail_fast = {fail_fast}\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n[tasks.broken]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"NO_SUCH_COLUMN\"] }}]\n[tasks.broken_load]\nkind = \"load\"\ninput = \"broken\"\npath = \"broken.csv\"\n[tasks.slow]\nkind = \"transform\"\ninput = \"extract\"\nsteps = [{{ drop = [\"HEX\"] }}]\n[tasks.good_load]\nkind = \"load\"\ninput = \"slow\"\npath = \"good.csv\"\n",
            csv.display()
        )
    };
    let state = |report: &conveyor_schemas::RunReport, name: &str| {
        report.tasks.iter().find(|t| t.name == name).unwrap().state
    };
    // The good branch is slower than the failure, so the failure comes first.
    let env = ("CONVEYOR_FAILPOINTS", "sleep=1000@slow");

    // Runs the fan-out, which exits 1 (failed) either way; its report.
    let run = |file: &str, fail_fast: bool| {
        let flow = dir.write(file, &flow_text(fail_fast));
        let mut cmd = std::process::Command::new(conveyor_bin());
        cmd.current_dir(&dir.path)
            .args(["run", "--json"])
            .arg(&flow)
            .env(env.0, env.1);
        let out = output_within(cmd, std::time::Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        serde_json::from_slice::<conveyor_schemas::RunReport>(&out.stdout).unwrap()
    };

    let report = run("fan.toml", false);
    assert_eq!(report.state, FlowState::Failed);
    assert_eq!(state(&report, "broken"), TaskState::Failed);
    assert_eq!(state(&report, "broken_load"), TaskState::Skipped);
    assert_eq!(
        state(&report, "good_load"),
        TaskState::Succeeded,
        "{report:?}"
    );
    assert!(dir.join("out/good.csv").exists());
    assert!(report.error.unwrap().contains("NO_SUCH_COLUMN"));

    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let report = run("fan_fast.toml", true);
    assert_eq!(
        state(&report, "good_load"),
        TaskState::Skipped,
        "{report:?}"
    );
    assert!(!dir.join("out/good.csv").exists());
}

/// A JSON-lines error names the file, its line in the whole file (blank
/// lines counted, partitions too) and the field: a data error, not retried,
/// with nothing written (issue 10, item 7).
#[test]
fn jsonl_errors_name_the_file_the_line_and_the_field() {
    let dir = TestDir::new("embedded_jsonl_error_lines");
    dir.write("syntax.jsonl", "{\"id\":1}\n\n{\"id\":}\n{\"id\":3}\n");
    let mut clash = String::new();
    for i in 1..=300 {
        if i == 250 {
            clash.push_str("{\"id\":250}\n");
        } else {
            clash.push_str(&format!("{{\"id\":\"s{i}\"}}\n"));
        }
    }
    dir.write("clash.jsonl", &clash);
    let cases = [
        ("syntax.jsonl", "", "line 3, column 7"),
        ("clash.jsonl", "partitions = 3\n", "line 250, field `id`"),
    ];
    for (i, (file, extra, needle)) in cases.iter().enumerate() {
        let flow = dir.write(
            &format!("f{i}.toml"),
            &format!(
                "[flow]\nname = \"jsonl{i}\"\nmax_attempts = 3\n[tasks.e]\nkind = \"extract\"\npath = \"{file}\"\n{extra}[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out{i}.jsonl\"\n"
            ),
        );
        let (out, report) = run_flow(&dir.path, &flow, &[]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", describe(&out));
        let report = report.unwrap();
        let failed: Vec<_> = report
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .collect();
        assert!(!failed.is_empty(), "{report:?}");
        for t in failed {
            let error = t.error.as_ref().unwrap();
            assert!(
                !error.retryable && error.kind == ErrorKind::Data && t.attempts == 1,
                "{file}: {t:?}"
            );
            for needle in [file, needle] {
                assert!(
                    error.message.contains(needle),
                    "{needle:?} not in {}",
                    error.message
                );
            }
        }
        assert!(!dir.join(&format!("out/out{i}.jsonl")).exists());
    }
}

/// CSV to JSON lines keeps every row's shape: a missing value (`1,,`) is an
/// explicit null, and a quoted empty field (`""`) is an empty string, which
/// makes its column text (issue 10, item 14).
#[test]
fn csv_empty_and_quoted_empty_values_keep_their_shape_in_jsonl() {
    let dir = TestDir::new("embedded_csv_empty_values_jsonl");
    dir.write("in.csv", "a,b,c,d\n1,\"\",\"\",\n2,3,4,5\n");
    let flow = dir.write(
        "f.toml",
        "[flow]\nname = \"empties\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out.jsonl\"\n",
    );
    let (out, _) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/out.jsonl")).unwrap(),
        "{\"a\":1,\"b\":\"\",\"c\":\"\",\"d\":null}\n{\"a\":2,\"b\":\"3\",\"c\":\"4\",\"d\":5}\n"
    );
}

/// A succeeded run's artifacts go after it ends (at the latest when its
/// node stops); a failed run's stay for a
/// retry, for `[storage] keep_failed`, and are swept at the next node start
/// after that (issue 10, item 4).
#[test]
fn artifacts_of_succeeded_runs_go_and_failed_runs_stay_for_keep_failed() {
    let dir = TestDir::new("embedded_artifact_cleanup");
    let artifacts = dir.join(".conveyor/artifacts");
    let runs = || -> Vec<String> {
        std::fs::read_dir(&artifacts)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    let good = colors_flow(&dir, "good", "");
    let (out, report) = run_flow(&dir.path, &good, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !runs().contains(&report.unwrap().flow_run),
        "a succeeded run's artifacts stayed: {:?}",
        runs()
    );
    let bad = colors_flow(&dir, "bad", "");
    let text = std::fs::read_to_string(&bad).unwrap()
        + "[tasks.after]\nkind = \"extract\"\npath = \"no-such-file.csv\"\nafter = [\"load\"]\n";
    std::fs::write(&bad, text).unwrap();
    let (out, report) = run_flow(&dir.path, &bad, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failed = report.unwrap().flow_run;
    assert!(
        artifacts.join(&failed).join("transform.arrow").exists(),
        "a failed run keeps its artifacts for a retry"
    );
    // Eight days later, the next node start sweeps it (keep_failed: 7 days).
    let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(artifacts.join(&failed).join(".finished"))
        .unwrap()
        .set_modified(week_ago)
        .unwrap();
    let (out, _) = run_flow(&dir.path, &good, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(runs().is_empty(), "{:?}", runs());
}
