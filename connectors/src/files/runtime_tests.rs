//! Files end to end through the task runner: extracts, loads, partitions
//! and their gathers, fenced commits, cancels and commit gates.

use conveyor_etl::error::{EtlError, Result};
use conveyor_etl::store::{self, FsStore};
use conveyor_etl::{run_task, Attempt, Workspace};
use conveyor_schemas::{SourceSpec, TaskSpec};
use conveyor_schemas::{
    ArtifactRef, DataFormat, FileTarget, Partition, ReadOptions, SinkSpec, TaskKind,
};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn read_options(part: Option<(u32, u32)>) -> ReadOptions {
    ReadOptions {
        format: DataFormat::Csv,
        schema: None,
        header: true,
        delimiter: ",".into(),
        partition: part.map(|(index, count)| Partition { index, count }),
    }
}

/// An extract of a CSV file or glob into an artifact.
fn extract_spec(path: &std::path::Path, part: Option<(u32, u32)>) -> TaskSpec {
    let path = path.display().to_string();
    let read = read_options(part);
    TaskSpec {
        kind: TaskKind::Extract,
        source: if conveyor_schemas::names::is_glob(&path) {
            SourceSpec::Glob {
                pattern: path,
                read,
            }
        } else {
            SourceSpec::File { path, read }
        },
        steps: Vec::new(),
        sink: SinkSpec::Artifact,
    }
}

/// A load of an artifact into a file, or (with `part`) into a part.
fn load_spec(
    input: ArtifactRef,
    format: DataFormat,
    path: &str,
    header: bool,
    part: Option<u32>,
) -> TaskSpec {
    let target = FileTarget {
        format,
        path: path.into(),
        header,
    };
    TaskSpec {
        kind: TaskKind::Load,
        source: SourceSpec::Artifact(input),
        steps: Vec::new(),
        sink: match part {
            Some(index) => SinkSpec::Part { index, target },
            None => SinkSpec::File(target),
        },
    }
}

/// A gather of parts into a file, or (with `dir`) a directory of parts.
fn gather_spec(parts: Vec<ArtifactRef>, format: DataFormat, path: &str, dir: bool) -> TaskSpec {
    let target = FileTarget {
        format,
        path: path.into(),
        header: true,
    };
    TaskSpec {
        kind: TaskKind::Load,
        source: SourceSpec::Parts { format, parts },
        steps: Vec::new(),
        sink: if dir {
            SinkSpec::Dir(target)
        } else {
            SinkSpec::File(target)
        },
    }
}

#[test]
fn a_second_load_attempt_of_a_committed_task_run_does_not_replace_the_file() {
    let dir = std::env::temp_dir().join(format!("conveyor-load-fence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.csv"), "a,b\n1,x\n2,y\n").unwrap();
    let ws = Workspace {
        store: std::sync::Arc::new(FsStore::new(dir.join("artifacts"))),
        output_root: dir.join("out"),
        max_record_bytes: 64 << 20,
        sources: Default::default(),
        connectors: crate::registry::runtime(),
    };
    std::fs::create_dir_all(&ws.output_root).unwrap();
    let progress = AtomicU64::new(0);
    let at = |task, attempt| Attempt {
        flow_run: "run-1",
        task,
        attempt,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: None,
    };
    let extracted =
        run_task(&ws, &at("e", 1), &extract_spec(&dir.join("in.csv"), None)).unwrap();
    let load = load_spec(
        extracted.artifact.unwrap(),
        DataFormat::Csv,
        "o.csv",
        true,
        None,
    );
    run_task(&ws, &at("l", 1), &load).unwrap();
    let first = std::fs::metadata(dir.join("out/o.csv")).unwrap().ino();
    // Left by an attempt killed after linking its marker, before removing
    // the temporary name.
    let leftover = dir.join("artifacts/run-1/.l.done.json.a1-99999.tmp");
    std::fs::write(&leftover, b"{}").unwrap();
    // A late attempt of the same task run: fenced, the file is not replaced.
    let late = run_task(&ws, &at("l", 2), &load).unwrap();
    assert_eq!(late.rows_out, 2);
    assert_eq!(
        std::fs::metadata(dir.join("out/o.csv")).unwrap().ino(),
        first
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/o.csv")).unwrap(),
        "a,b\n1,x\n2,y\n"
    );
    assert!(ws.store.marker("run-1", "l").unwrap().is_some());
    assert!(
        !leftover.exists(),
        "the killed attempt's marker was not swept"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn workspace(name: &str) -> (std::path::PathBuf, Workspace) {
    let dir = std::env::temp_dir().join(format!("conveyor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let ws = Workspace {
        store: std::sync::Arc::new(FsStore::new(dir.join("artifacts"))),
        output_root: dir.join("out"),
        max_record_bytes: 64 << 20,
        sources: Default::default(),
        connectors: crate::registry::runtime(),
    };
    (dir, ws)
}

/// Runs extract → load over `count` partitions and gathers them, the
/// way a partitioned flow does. Returns the gathered output's path.
fn partitioned_run(
    ws: &Workspace,
    run: &str,
    source: &std::path::Path,
    count: u32,
    out_format: DataFormat,
    path: &str,
    parts: bool,
) -> Result<std::path::PathBuf> {
    let progress = AtomicU64::new(0);
    let at = |task: &'static str, _i: u32| Attempt {
        flow_run: run,
        task,
        attempt: 1,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: None,
    };
    let names_e = ["e@0", "e@1", "e@2", "e@3", "e@4", "e@5", "e@6"];
    let names_l = ["l@0", "l@1", "l@2", "l@3", "l@4", "l@5", "l@6"];
    let mut inputs = Vec::new();
    for i in 0..count {
        let e = run_task(
            ws,
            &at(names_e[i as usize], i),
            &extract_spec(source, Some((i, count))),
        )?;
        let l = run_task(
            ws,
            &at(names_l[i as usize], i),
            &load_spec(
                e.artifact.unwrap(),
                out_format,
                path,
                parts || i == 0,
                Some(i),
            ),
        )?;
        inputs.push(l.artifact.unwrap());
    }
    let out = run_task(
        ws,
        &at("l", 0),
        &gather_spec(inputs, out_format, path, parts),
    )?;
    Ok(std::path::PathBuf::from(out.location))
}

#[test]
fn a_file_load_over_a_parts_directory_is_a_spec_error_and_the_directory_stays() {
    let (dir, ws) = workspace("file-over-dir");
    std::fs::write(dir.join("in.csv"), "a,b\n1,x\n2,y\n3,z\n").unwrap();
    let src = dir.join("in.csv");
    // Parts into a directory, then the same path as one file: refused,
    // not retried, and the parts stay.
    let parts = partitioned_run(&ws, "p", &src, 2, DataFormat::Csv, "o.csv", true).unwrap();
    assert!(parts.join("part-00001.csv").exists());
    let err = partitioned_run(&ws, "f", &src, 2, DataFormat::Csv, "o.csv", false).unwrap_err();
    assert!(matches!(err, EtlError::Spec(_)), "{err:?}");
    assert!(!err.retryable());
    assert!(err.to_string().contains("`o.csv` is a directory"), "{err}");
    assert!(parts.join("part-00001.csv").exists());
    // An unpartitioned load says the same.
    let progress = AtomicU64::new(0);
    let at = Attempt {
        flow_run: "u",
        task: "l",
        attempt: 1,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: None,
    };
    let e = run_task(
        &ws,
        &Attempt {
            task: "e",
            ..at.clone()
        },
        &extract_spec(&src, None),
    )
    .unwrap();
    let load = load_spec(e.artifact.unwrap(), DataFormat::Csv, "o.csv", true, None);
    let err = run_task(&ws, &at, &load).unwrap_err();
    assert!(err.to_string().contains("`o.csv` is a directory"), "{err}");
    // A directory of parts may replace a file, though.
    std::fs::remove_dir_all(&parts).unwrap();
    run_task(&ws, &at, &load).unwrap();
    assert!(parts.is_file());
    let again = partitioned_run(&ws, "p2", &src, 2, DataFormat::Csv, "o.csv", true).unwrap();
    assert!(again.join("part-00000.csv").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gather_that_loses_the_fence_still_removes_the_parts() {
    let (dir, ws) = workspace("lost-fence");
    std::fs::write(dir.join("in.csv"), "a,b\n1,x\n2,y\n3,z\n").unwrap();
    let src = dir.join("in.csv");
    let out =
        partitioned_run(&ws, "lost", &src, 2, DataFormat::Csv, "lost.csv", false).unwrap();
    let before = std::fs::read(&out).unwrap();
    let rels: Vec<String> = ["l@0", "l@1"]
        .iter()
        .map(|t| store::part_key("lost", t, "csv").unwrap())
        .collect();
    let parts: Vec<_> = rels.iter().map(|r| ws.store.open(r).unwrap()).collect();
    assert!(
        parts.iter().all(|p| !p.exists()),
        "the winner removes its parts"
    );
    // As if the winner had died after its commit, before removing them.
    for p in &parts {
        std::fs::write(p, "stale\n").unwrap();
    }
    let progress = AtomicU64::new(0);
    let late = Attempt {
        flow_run: "lost",
        task: "l",
        attempt: 2,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: None,
    };
    let spec = gather_spec(
        rels.iter()
            .map(|r| ArtifactRef {
                path: r.clone(),
                rows: 1,
            })
            .collect(),
        DataFormat::Csv,
        "lost.csv",
        false,
    );
    run_task(&ws, &late, &spec).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), before, "the fence held");
    assert!(
        parts.iter().all(|p| !p.exists()),
        "the loser removed the parts"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cancelled_attempt_stops_with_kind_cancelled_and_commits_nothing() {
    let (dir, ws) = workspace("cancelled");
    std::fs::write(dir.join("in.csv"), "a\n1\n2\n").unwrap();
    let progress = AtomicU64::new(0);
    let cancel = AtomicBool::new(false);
    let at = Attempt {
        flow_run: "c",
        task: "e",
        attempt: 1,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: Some(&cancel),
    };
    let e = run_task(&ws, &at, &extract_spec(&dir.join("in.csv"), None)).unwrap();
    cancel.store(true, Ordering::Release);
    let again = Attempt {
        task: "e2",
        ..at.clone()
    };
    let err = run_task(&ws, &again, &extract_spec(&dir.join("in.csv"), None)).unwrap_err();
    assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Cancelled, "{err}");
    assert!(!err.retryable());
    let load = load_spec(e.artifact.unwrap(), DataFormat::Csv, "o.csv", true, None);
    let l = Attempt {
        task: "l",
        ..at.clone()
    };
    let err = run_task(&ws, &l, &load).unwrap_err();
    assert_eq!(err.kind(), conveyor_schemas::ErrorKind::Cancelled, "{err}");
    assert!(!dir.join("out/o.csv").exists(), "nothing committed");
    assert!(ws.store.marker("c", "l").unwrap().is_none());
    assert!(ws.store.marker("c", "e2").unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_commit_gate_keeps_the_output_as_it_was_and_leaves_no_temporary_file() {
    let (dir, ws) = workspace("gate");
    std::fs::write(dir.join("in.csv"), "a\n1\n").unwrap();
    std::fs::write(dir.join("out/o.csv"), "before\n").unwrap();
    let progress = AtomicU64::new(0);
    let closed = || Err(EtlError::Internal("coordinator gone".into()));
    let at = Attempt {
        flow_run: "g",
        task: "l",
        attempt: 1,
        delivery: 1,
        progress: &progress,
        before_commit: None,
        cancel: None,
    };
    let e = run_task(
        &ws,
        &Attempt {
            task: "e",
            ..at.clone()
        },
        &extract_spec(&dir.join("in.csv"), None),
    )
    .unwrap();
    let load = load_spec(e.artifact.unwrap(), DataFormat::Csv, "o.csv", true, None);
    let gated = Attempt {
        before_commit: Some(&closed),
        ..at.clone()
    };
    let err = run_task(&ws, &gated, &load).unwrap_err();
    assert!(err.to_string().contains("coordinator gone"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("out/o.csv")).unwrap(),
        "before\n"
    );
    assert!(ws.store.marker("g", "l").unwrap().is_none());
    let names: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // The same load with the gate open replaces it.
    run_task(&ws, &at, &load).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("out/o.csv")).unwrap(),
        "a\n1\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn partitions_of_a_csv_with_quoted_newlines_gather_to_the_whole_files_bytes() {
    let (dir, ws) = workspace("partitions");
    let mut csv = String::from("id,code,note,flag\n");
    for i in 0..5000 {
        let note = match i % 3 {
            0 => format!("\"line one\nline two, {i}\""),
            1 => "\"said \"\"hi\"\"\"".to_string(),
            _ => format!("naïve {i}"),
        };
        csv.push_str(&format!("{i},{:05},{note},{}\n", i * 7, i % 2 == 0));
    }
    std::fs::write(dir.join("in.csv"), &csv).unwrap();
    let src = dir.join("in.csv");
    let whole =
        partitioned_run(&ws, "whole", &src, 1, DataFormat::Csv, "whole.csv", false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&whole).unwrap(),
        csv,
        "one partition round-trips"
    );
    for count in [2u32, 3, 7] {
        let run = format!("csv{count}");
        let out = partitioned_run(
            &ws,
            &run,
            &src,
            count,
            DataFormat::Csv,
            &format!("p{count}.csv"),
            false,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            csv,
            "{count} partitions"
        );
        // The parts left the store once gathered.
        assert!(!dir.join(format!("artifacts/{run}/l@0.csv")).exists());
    }
    // Parquet in one file (row groups copied) and as a directory of parts:
    // both read back as the same rows with the same types.
    let single = partitioned_run(
        &ws,
        "pq1",
        &src,
        1,
        DataFormat::Parquet,
        "one.parquet",
        false,
    )
    .unwrap();
    let joined = partitioned_run(
        &ws,
        "pq3",
        &src,
        3,
        DataFormat::Parquet,
        "three.parquet",
        false,
    )
    .unwrap();
    let dir_out =
        partitioned_run(&ws, "pqd", &src, 3, DataFormat::Parquet, "parts", true).unwrap();
    let read = |p: &std::path::Path| -> Vec<arrow::array::RecordBatch> {
        let f = std::fs::File::open(p).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    };
    let concat = |batches: Vec<arrow::array::RecordBatch>| {
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    };
    let expected = concat(read(&single));
    assert_eq!(expected.num_rows(), 5000);
    assert_eq!(concat(read(&joined)), expected);
    let mut from_parts = Vec::new();
    for i in 0..3 {
        from_parts.extend(read(&dir_out.join(format!("part-{i:05}.parquet"))));
    }
    assert_eq!(concat(from_parts), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partition_with_a_value_that_does_not_fit_names_where_it_starts_and_a_glob_reads_files_in_order(
) {
    let (dir, ws) = workspace("partition-errors");
    let mut csv = String::from("n,s\n");
    for i in 0..20000 {
        csv.push_str(&format!("{i},x{i}\n"));
    }
    // Typed int64 from the first rows; this value far into the file is not.
    csv.push_str("007,late\n");
    std::fs::write(dir.join("in.csv"), &csv).unwrap();
    let err = partitioned_run(
        &ws,
        "bad",
        &dir.join("in.csv"),
        2,
        DataFormat::Csv,
        "bad.csv",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("of partition 1 (from byte") && err.contains("`007`"),
        "{err}"
    );
    assert!(
        !dir.join("out/bad.csv").exists(),
        "no output after a failed partition"
    );

    std::fs::create_dir_all(dir.join("many")).unwrap();
    let mut all = String::from("a,b\n");
    for f in 0..5 {
        let mut body = String::from("a,b\n");
        for r in 0..3 {
            body.push_str(&format!("{f}{r},\"f{f}\nr{r}\"\n"));
        }
        all.push_str(&body["a,b\n".len()..]);
        std::fs::write(dir.join(format!("many/part{f}.csv")), body).unwrap();
    }
    let pattern = dir.join("many/*.csv");
    for count in [1u32, 2, 7] {
        let out = partitioned_run(
            &ws,
            &format!("glob{count}"),
            &pattern,
            count,
            DataFormat::Csv,
            &format!("g{count}.csv"),
            false,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            all,
            "{count} partitions of a glob"
        );
    }
    std::fs::write(dir.join("many/part9.csv"), "a,c\n1,2\n").unwrap();
    let err = partitioned_run(
        &ws,
        "globbad",
        &pattern,
        1,
        DataFormat::Csv,
        "gb.csv",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("part9.csv") && err.contains("same columns"),
        "{err}"
    );
    let err = partitioned_run(
        &ws,
        "none",
        &dir.join("nothing/*.csv"),
        1,
        DataFormat::Csv,
        "n.csv",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no file matches"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

