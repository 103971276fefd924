//! The embedded default: `conveyor run` with no broker, every role in one process.

use conveyor_schemas::{ErrorKind, FlowState, TaskState};

use crate::util::*;

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
