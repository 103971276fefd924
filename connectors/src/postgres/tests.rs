//! The PostgreSQL connector's options, read as the flow parser reads them.

use conveyor_schemas::{Partition, PgMode, PgTarget, SinkSpec, SourceSpec};

use crate::testing::{at, extract, load};

#[test]
fn an_extract_reads_a_query_in_key_ranges() {
    let (spec, found) = extract(
        "[task]\npostgres = { url = \"postgresql://u@h/db\", query = \"SELECT * FROM t\" }\npartition_by = \"id\"\npartitions = 4\n",
    );
    assert_eq!(found, at(&[]));
    assert_eq!(
        spec,
        Some(SourceSpec::Postgres {
            url: "postgresql://u@h/db".into(),
            query: "SELECT * FROM t".into(),
            partition_by: Some("id".into()),
            partition: Some(Partition { index: 0, count: 4 }),
        })
    );
}

#[test]
fn extract_mistakes_are_one_problem_each_with_key_and_line() {
    let (spec, found) = extract(
        "[task]\npath = \"x.csv\"\npartitions = 3\n[task.postgres]\nurl = \"mysql://h/db\"\n",
    );
    assert_eq!(spec, None);
    assert_eq!(
        found,
        at(&[
            ("task.path", 2),
            ("task.partitions", 3),
            ("task.postgres.query", 4),
            ("task.postgres.url", 5),
        ])
    );
}

#[test]
fn a_load_reads_a_table_and_its_mode() {
    let (spec, found) = load(
        "[task]\npostgres = { url = \"${env:PG}\", table = \"s.t\", mode = \"upsert\", key = [\"id\"], create = true }\n",
    );
    assert_eq!(found, at(&[]));
    assert_eq!(
        spec,
        Some(SinkSpec::Postgres(PgTarget {
            url: "${env:PG}".into(),
            table: "s.t".into(),
            mode: PgMode::Upsert,
            key: vec!["id".into()],
            create: true,
        }))
    );
}

#[test]
fn load_mistakes_are_one_problem_each_with_key_and_line() {
    let (_, found) = load(
        "[task]\nformat = \"csv\"\n[task.postgres]\nurl = \"postgresql://h/db\"\ntable = \"t\"\nmode = \"upsert\"\n",
    );
    assert_eq!(found, at(&[("task.format", 2), ("task.postgres.key", 3)]));
}

#[test]
fn a_partitioned_load_into_a_table_has_parquet_parts_in_one_file() {
    let (spec, _) = load("[task]\npostgres = { url = \"postgresql://h/db\", table = \"t\" }\n");
    let parts = crate::registry::parts(&spec.unwrap()).unwrap();
    assert_eq!(
        (parts.target.format, parts.dir),
        (conveyor_schemas::DataFormat::Parquet, false)
    );
}
