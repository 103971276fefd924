//! The files and HTTP connectors' options, read as the flow parser reads
//! them.

use conveyor_schemas::{DataFormat, FileTarget, SinkSpec, SourceSpec};

use crate::testing::{at, extract, load};

#[test]
fn a_path_is_a_file_or_a_glob_against_the_flows_directory_and_a_url_is_a_download() {
    let (spec, found) = extract("[task]\npath = \"data/in.csv\"\nheader = false\n");
    assert_eq!(found, at(&[]));
    let Some(SourceSpec::File { path, read }) = spec else {
        panic!("{spec:?}")
    };
    assert_eq!(
        (path.as_str(), read.format, read.header),
        ("/flows/data/in.csv", DataFormat::Csv, false)
    );
    let (spec, _) = extract("[task]\npath = \"data/*.parquet\"\npartitions = 2\n");
    assert!(
        matches!(&spec, Some(SourceSpec::Glob { pattern, read }) if pattern == "/flows/data/*.parquet" && read.partition.is_some_and(|p| p.count == 2)),
        "{spec:?}"
    );
    let (spec, found) = extract("[task]\nurl = \"https://h/x.jsonl\"\n");
    assert_eq!(found, at(&[]));
    assert!(
        matches!(&spec, Some(SourceSpec::Url { url, read }) if url == "https://h/x.jsonl" && read.format == DataFormat::Jsonl),
        "{spec:?}"
    );
}

#[test]
fn extract_mistakes_are_one_problem_each_with_key_and_line() {
    // Both `path` and `url`: one problem, not one per connector.
    let (_, found) = extract("[task]\npath = \"a.csv\"\nurl = \"https://h/a.csv\"\n");
    assert_eq!(found, at(&[("task.url", 3)]));
    let (_, found) = extract("[task]\nheader = true\n");
    assert_eq!(found, at(&[("task.path", 1)]));
    let (_, found) = extract(
        "[task]\nurl = \"ftp://h/a.csv\"\npartitions = 2\ndelimiter = \";;\"\npartition_by = \"id\"\ncolour = 1\n",
    );
    assert_eq!(
        found,
        at(&[
            ("task.url", 2),
            ("task.partitions", 3),
            ("task.delimiter", 4),
            // Why it does not apply, then that no reader took it (as the
            // flow parser always said).
            ("task.partition_by", 5),
            ("task.partition_by", 5),
            ("task.colour", 6),
        ])
    );
}

#[test]
fn a_load_writes_a_file_or_a_directory_of_parts_in_its_format() {
    let (spec, found) = load("[task]\npath = \"out/o.parquet\"\n");
    assert_eq!(found, at(&[]));
    let target = FileTarget {
        format: DataFormat::Parquet,
        path: "out/o.parquet".into(),
        header: true,
    };
    assert_eq!(spec, Some(SinkSpec::File(target.clone())));
    let parts = crate::registry::parts(&spec.unwrap()).unwrap();
    assert_eq!((parts.target, parts.dir), (target.clone(), false));
    let (spec, _) = load("[task]\npath = \"out/o.parquet\"\nparts = true\n");
    assert_eq!(spec, Some(SinkSpec::Dir(target)));
    let (_, found) = load("[task]\npath = \"../o.txt\"\n");
    // The format is not told from the name: reported at the table.
    assert_eq!(found, at(&[("task.format", 1), ("task.path", 2)]));
}
