//! The PostgreSQL source and sink (issue 13), against the real server
//! (scripts/test.sh starts Debian's): each test has a database of its own.
//! Round trips of CSV files through a table, every type both ways, a load
//! worker SIGKILLed mid-COPY, replace and upsert run twice, hostile params
//! and names, and the errors of unsupported types and bad URLs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conveyor_schemas::{FlowState, RunReport, TaskState};

use crate::harness::{broker::*, configs::*, postgres::*, processes::*, workdir::*};

/// Runs a flow embedded and checks that it succeeded.
fn run_ok(dir: &TestDir, flow: &Path, args: &[&str]) -> RunReport {
    let (out, report) = run_flow(&dir.path, flow, args);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.expect("JSON report");
    assert_eq!(report.state, FlowState::Succeeded, "{report:?}");
    report
}

/// Runs a flow embedded that must fail; returns the report and stderr.
fn run_failing(dir: &TestDir, flow: &Path, args: &[&str]) -> (Option<RunReport>, String) {
    let (out, report) = run_flow(&dir.path, flow, args);
    assert!(!out.status.success(), "{}", describe(&out));
    (report, describe(&out))
}

/// A flow: a CSV file → a PostgreSQL table.
fn csv_to_pg(dir: &TestDir, name: &str, csv: &Path, pg: &str) -> PathBuf {
    dir.write(
        &format!("{name}.toml"),
        &format!(
            "[flow]\nname = \"{name}\"\n\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {pg}\n",
            csv.display()
        ),
    )
}

/// A flow: a PostgreSQL query → a CSV file under the output root.
fn pg_to_csv(dir: &TestDir, name: &str, pg: &str, out: &str, extra: &str) -> PathBuf {
    dir.write(
        &format!("{name}.toml"),
        &format!(
            "[flow]\nname = \"{name}\"\n{extra}\n[tasks.extract]\nkind = \"extract\"\npostgres = {pg}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npath = \"{out}\"\n"
        ),
    )
}

/// Zero-padded codes, empty strings against NULLs (`""` against nothing),
/// Unicode, quotes and newlines, numbers past float64's precision, extreme
/// integers and timestamps with zones.
const TRICKY: &str = "code,label,note,amount,big,at,flag,n\n\
007,\"\",plain,1.5,123456789012345678901234567890.123456789,2024-02-29T23:59:59.999999+05:30,true,9223372036854775807\n\
0042,,\"naïve 🚀 \"\"quoted\"\", comma\",-0.25,-0.000000000000000000000000000001,1999-12-31 23:59:59-08:00,false,-9223372036854775808\n\
0000,\"line one\nline two\",,0.1,99999999999999999999999999999999999999,,,0\n\
,Ωmega,\"\",,,1970-01-01T00:00:00Z,true,\n";

#[test]
fn colors_and_tricky_values_go_csv_to_postgres_to_csv_unchanged() {
    let db = TestDb::create("roundtrip");
    let dir = TestDir::new("pg_roundtrip");
    let tricky = dir.write("tricky.csv", TRICKY);
    let colors = repo_root().join("examples/data/colors.csv");
    // A password in the URL (trust auth ignores it) never shows.
    let url = db.url.replace("postgres@", "postgres:s3cret@");
    assert_ne!(url, db.url);
    for (name, csv) in [("colors", colors), ("tricky", tricky)] {
        let load = csv_to_pg(
            &dir,
            &format!("{name}_in"),
            &csv,
            &format!("{{ url = \"{url}\", table = \"public.{name}\", create = true }}"),
        );
        let report = run_ok(&dir, &load, &[]);
        let rows = std::fs::read_to_string(&csv).unwrap();
        let n = csv_records(&rows) as i64 - 1;
        assert_eq!(db.count(&format!("SELECT count(*) FROM {name}")), n);
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres:***@"), "{text}");
        let back = pg_to_csv(
            &dir,
            &format!("{name}_out"),
            &format!("{{ url = \"{url}\", query = \"SELECT * FROM public.{name}\" }}"),
            &format!("{name}.csv"),
            "",
        );
        run_ok(&dir, &back, &[]);
        // Byte for byte: `""` (an empty string) and an empty field (a null)
        // come back as they went in.
        assert_eq!(
            std::fs::read_to_string(dir.join(&format!("out/{name}.csv"))).unwrap(),
            rows,
            "{name} came back changed"
        );
    }
    // Empty string and NULL stayed apart in the table too.
    assert_eq!(
        db.count("SELECT count(*) FROM tricky WHERE label = ''"),
        1,
        "{:?}",
        db.rows_text("SELECT * FROM tricky")
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tricky WHERE label IS NULL"),
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM tricky WHERE note = ''"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM tricky WHERE note IS NULL"),
        1
    );
}

#[test]
fn typed_dates_timestamps_and_decimals_go_csv_to_postgres_to_csv_unchanged() {
    // The typed file of tests/types.rs, its columns declared: they travel as
    // date, timestamp, timestamptz and numeric(p,s), not as text.
    let db = TestDb::create("typed");
    let dir = TestDir::new("pg_typed");
    let csv = dir.write("typed.csv", crate::types::TYPED_CSV);
    let load = dir.write(
        "typed_in.toml",
        &format!(
            "[flow]\nname = \"typed_in\"\n\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n{}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {{ url = \"{}\", table = \"typed\", create = true }}\n",
            csv.display(),
            crate::types::SCHEMA,
            db.url
        ),
    );
    run_ok(&dir, &load, &[]);
    assert_eq!(
        db.strings(
            "SELECT string_agg(column_name || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns c JOIN pg_attribute a \
             ON a.attrelid = 'typed'::regclass AND a.attname = c.column_name \
             WHERE c.table_name = 'typed'"
        ),
        vec!["id bigint, day date, at timestamp without time zone, instant timestamp with time zone, amount numeric(30,10), price numeric(10,2)"]
    );
    // The server holds the very values (read here in UTC).
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', day, at, instant AT TIME ZONE 'UTC', amount, price) FROM typed WHERE id = 2"
        ),
        vec!["1969-12-31|1969-12-31 23:59:59.5|1969-07-20 20:17:40.000001|-0.0000000001|-0.05"]
    );
    let back = pg_to_csv(
        &dir,
        "typed_out",
        &format!(
            "{{ url = \"{}\", query = \"SELECT * FROM typed ORDER BY id\" }}",
            db.url
        ),
        "typed.csv",
        "",
    );
    run_ok(&dir, &back, &[]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/typed.csv")).unwrap(),
        crate::types::TYPED_CSV,
        "the typed file came back changed"
    );
}

#[test]
fn a_load_into_other_column_types_converts_but_never_changes_a_value() {
    let db = TestDb::create("convert");
    let dir = TestDir::new("pg_convert");
    db.exec("CREATE TABLE narrow (id int4, amount numeric(12,2), at timestamptz)");
    let schema = r#"schema = { id = "int64", amount = "decimal(12,3)", at = "timestamp" }"#;
    let flow = |name: &str, data: &str| {
        let csv = dir.write(&format!("{name}.csv"), data);
        dir.write(
            &format!("{name}.toml"),
            &format!(
                "[flow]\nname = \"{name}\"\nmax_attempts = 1\n\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\n{schema}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {{ url = \"{}\", table = \"narrow\" }}\n",
                csv.display(),
                db.url
            ),
        )
    };
    // int8 into int4, numeric(12,3) into numeric(12,2), timestamp into
    // timestamptz (read as UTC): every value is kept, so the load goes on.
    let ok = flow(
        "ok",
        "id,amount,at\n1,1.230,2026-01-05T10:30:00\n2,-0.500,\n",
    );
    run_ok(&dir, &ok, &[]);
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', id, amount, at AT TIME ZONE 'UTC') FROM narrow ORDER BY id"
        ),
        vec!["1|1.23|2026-01-05 10:30:00", "2|-0.50"]
    );
    // 1.235 would be stored as 1.24: nothing of the run is loaded.
    let rounding = flow("rounding", "id,amount,at\n3,4.000,\n4,1.235,\n");
    let (report, out) = run_failing(&dir, &rounding, &[]);
    let report = report.unwrap_or_else(|| panic!("{out}"));
    let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
    let err = &load.error.as_ref().expect("an error").message;
    for needle in [
        "column `amount`",
        "numeric(12,2)",
        "`1.235`",
        "`1.24`",
        "nothing was loaded",
    ] {
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM narrow"),
        2,
        "nothing more was loaded"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM conveyor_commits"),
        1,
        "only the first run's fence row"
    );

    // Type modifiers count too: a fraction of a second into a timestamp(0),
    // a trailing space beyond a varchar(3) or a char(3), a thousand into
    // numeric(4,-3) (PostgreSQL 15), each refused, with what it would have
    // become; a short value in a char(3) is padded, as char does.
    db.exec("CREATE TABLE mods (at timestamp(0), code varchar(3), k numeric(4,-3), p char(3))");
    let mods = |name: &str, data: &str| {
        let csv = dir.write(&format!("{name}.csv"), data);
        dir.write(
            &format!("{name}.toml"),
            &format!(
                "[flow]\nname = \"{name}\"\nmax_attempts = 1\n\n[tasks.extract]\nkind = \"extract\"\npath = \"{}\"\nschema = {{ at = \"timestamp\", code = \"string\", k = \"decimal(7,0)\", p = \"string\" }}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {{ url = \"{}\", table = \"mods\" }}\n",
                csv.display(),
                db.url
            ),
        )
    };
    run_ok(
        &dir,
        &mods("mods_ok", "at,code,k,p\n2026-01-05T10:30:00,ab,12000,ab\n"),
        &[],
    );
    for (name, row, needles) in [
        (
            "frac",
            "2026-01-05T10:30:00.5,ab,0,ab",
            &["column `at`", "timestamp(0)", "`2026-01-05 10:30:01`"][..],
        ),
        (
            "space",
            "2026-01-05T10:30:00,\"ab  \",0,ab",
            &["column `code`", "character varying(3)", "`ab  `", "`ab `"][..],
        ),
        (
            "thousand",
            "2026-01-05T10:30:00,ab,1234,ab",
            &["column `k`", "numeric(4,-3)", "`1234`", "`1000`"][..],
        ),
        (
            "pad",
            "2026-01-05T10:30:00,ab,0,\"ab  \"",
            &["column `p`", "character(3)", "`ab  `", "`ab `"][..],
        ),
    ] {
        let f = mods(name, &format!("at,code,k,p\n{row}\n"));
        let (report, out) = run_failing(&dir, &f, &[]);
        let report = report.unwrap_or_else(|| panic!("{out}"));
        let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
        let err = &load.error.as_ref().expect("an error").message;
        for needle in needles {
            assert!(err.contains(needle), "{name}: `{needle}` not in {err}");
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM mods"),
        1,
        "only the first row"
    );
}

/// CSV records (quote-aware), header included.
fn csv_records(text: &str) -> usize {
    let mut q = false;
    let mut n = 0;
    for b in text.bytes() {
        if b == b'"' {
            q = !q;
        } else if b == b'\n' && !q {
            n += 1;
        }
    }
    n
}

#[test]
fn every_supported_type_goes_postgres_to_postgres_unchanged() {
    let db = TestDb::create("types");
    let dir = TestDir::new("pg_types");
    db.exec(
        "CREATE TABLE src (id int4, s int2, b int8, n numeric(38,10), m numeric(5,2), \
         f4 float4, f8 float8, ok bool, t text, v varchar(10), c char(5), d date, \
         ts timestamp, tz timestamptz, u uuid, j json, jb jsonb, by bytea);
         SET TIME ZONE 'Asia/Kolkata';
         INSERT INTO src VALUES
         (1, -32768, 9223372036854775807, 1234567890123456789012345678.0123456789, -999.99,
          1.5, 0.1, true, 'naïve ''q'' \\ \"', '', 'ab', '2024-02-29', '1999-12-31 23:59:59.999999',
          '2024-02-29 23:59:59.999999+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
          '{\"a\": [1, 2]}', '{\"b\": null, \"a\": 1}', '\\x00ff10'),
         (2, 32767, -9223372036854775808, -0.0000000001, 0, -0, -1e300, false, '', 'ünï', '',
          '0001-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00Z', '00000000-0000-0000-0000-000000000000',
          'null', '[]', '\\x'),
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let flow = dir.write(
        "copy.toml",
        &format!(
            "[flow]\nname = \"copy\"\n\n[tasks.extract]\nkind = \"extract\"\npostgres = {{ url = \"{0}\", query = \"SELECT * FROM src\" }}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {{ url = \"{0}\", table = \"dst\", create = true }}\n",
            db.url
        ),
    );
    let report = run_ok(&dir, &flow, &[]);
    let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
    assert_eq!(load.rows_out, Some(3), "{load:?}");
    // The copy holds the same values, shown the same way, except the types
    // that become text (json, uuid, char keep their text).
    let shown = |table: &str| {
        db.rows_text(&format!(
            "SELECT id, s, b, n, m, f4, f8, ok, t, v::text, rpad(c::text, 5), d, ts, tz, u::text, j::text, jb::text, by FROM {table} ORDER BY id"
        ))
    };
    assert_eq!(shown("dst"), shown("src"));
    // Into a table of wider types: an int8 column takes the int4 rows, a
    // float8 column the float4 ones. The server converts them on
    // assignment: the append goes through the staging table (a binary COPY
    // of an int4 straight into an int8 column would fail).
    db.exec(
        "CREATE TABLE back (LIKE src); \
         ALTER TABLE back ALTER id TYPE int8, ALTER f4 TYPE float8, ALTER u TYPE text, \
         ALTER j TYPE text, ALTER jb TYPE text",
    );
    let back = dir.write(
        "back.toml",
        &format!(
            "[flow]\nname = \"back\"\n\n[tasks.extract]\nkind = \"extract\"\npostgres = {{ url = \"{0}\", query = \"SELECT * FROM src\" }}\n\n[tasks.load]\nkind = \"load\"\ninput = \"extract\"\npostgres = {{ url = \"{0}\", table = \"back\" }}\n",
            db.url
        ),
    );
    run_ok(&dir, &back, &[]);
    assert_eq!(shown("back"), shown("src"));
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'conveyor_stage'"),
        0
    );
    let types = db.rows_text(
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns WHERE table_name = 'dst' ORDER BY ordinal_position",
    );
    assert!(
        types.contains(&"(n,numeric,38,10)".to_string()),
        "{types:?}"
    );
    assert!(types.contains(&"(m,numeric,5,2)".to_string()), "{types:?}");
    assert!(
        types.contains(&"(tz,\"timestamp with time zone\",,)".to_string()),
        "{types:?}"
    );
    assert!(types.contains(&"(by,bytea,,)".to_string()), "{types:?}");
    // And to CSV: the instant in UTC, the decimal with its scale.
    let out = pg_to_csv(
        &dir,
        "to_csv",
        &format!(
            "{{ url = \"{}\", query = \"SELECT id, n, tz, d, jb FROM src WHERE id = 1\" }}",
            db.url
        ),
        "one.csv",
        "",
    );
    run_ok(&dir, &out, &[]);
    let csv = std::fs::read_to_string(dir.join("out/one.csv")).unwrap();
    assert!(
        csv.contains("1234567890123456789012345678.0123456789"),
        "{csv}"
    );
    assert!(csv.contains("2024-02-29T18:29:59.999999"), "{csv}");
    assert!(csv.contains("2024-02-29"), "{csv}");
}

#[test]
fn an_unsupported_type_or_an_untyped_numeric_is_one_error_naming_the_column() {
    let db = TestDb::create("unsupported");
    let dir = TestDir::new("pg_unsupported");
    db.exec("CREATE TABLE shapes (id int, p point, amount numeric); INSERT INTO shapes VALUES (1, '(1,2)', 1.5)");
    for (name, query, needles) in [
        (
            "point",
            "SELECT id, p FROM shapes",
            &["column `p`", "`point`", "::text"][..],
        ),
        (
            "numeric",
            "SELECT id, amount FROM shapes",
            &[
                "column `amount`",
                "numeric without a precision",
                "numeric(38,6)",
            ][..],
        ),
        (
            "sum",
            "SELECT sum(amount) AS total FROM shapes",
            &["column `total`", "numeric without a precision"][..],
        ),
        (
            // PostgreSQL 15 allows a scale below 0 or above the precision.
            "scale",
            "SELECT 12000::numeric(2,-3) AS thousands FROM shapes",
            &[
                "column `thousands`",
                "numeric(2,-3)",
                "outside 0 to 2",
                "numeric(5,0)",
            ][..],
        ),
    ] {
        let flow = pg_to_csv(
            &dir,
            name,
            &format!("{{ url = \"{}\", query = \"{query}\" }}", db.url),
            "x.csv",
            "",
        );
        let (report, out) = run_failing(&dir, &flow, &[]);
        let report = report.unwrap_or_else(|| panic!("{out}"));
        let extract = report.tasks.iter().find(|t| t.name == "extract").unwrap();
        let err = extract.error.as_ref().expect("an error").message.clone();
        for n in needles {
            assert!(err.contains(n), "{name}: `{n}` not in {err}");
        }
        assert_eq!(
            extract.attempts, 1,
            "a spec error is not retried: {extract:?}"
        );
    }
    // A bad password or host: an error that shows no password, whether the
    // URL holds it as userinfo or as a parameter.
    for (name, url, shown) in [
        (
            "nohost",
            "postgresql://postgres:s3cret@127.0.0.1:1/nodb",
            "postgres:***@127.0.0.1:1",
        ),
        (
            "nohost_param",
            "postgresql://127.0.0.1:1/nodb?user=postgres&password=s3cret",
            "password=***",
        ),
    ] {
        let flow = pg_to_csv(
            &dir,
            name,
            &format!("{{ url = \"{url}\", query = \"SELECT 1\" }}"),
            "x.csv",
            "",
        );
        let text = std::fs::read_to_string(&flow).unwrap().replace(
            "kind = \"extract\"\n",
            "kind = \"extract\"\nmax_attempts = 1\n",
        );
        std::fs::write(&flow, text).unwrap();
        let (report, out) = run_failing(&dir, &flow, &[]);
        assert!(!out.contains("s3cret"), "{out}");
        let err = serde_json::to_string(&report.unwrap()).unwrap();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains(shown), "{err}");
    }
}

#[test]
fn replace_and_upsert_run_twice_change_nothing_the_second_time() {
    let db = TestDb::create("modes");
    let dir = TestDir::new("pg_modes");
    let csv = dir.write("in.csv", "id,name,score\n1,a,10\n2,b,20\n3,c,30\n");
    db.exec(
        "CREATE TABLE r (id int8, name text, score int8, extra text DEFAULT 'd');
         INSERT INTO r VALUES (99, 'old', 0, 'x');
         CREATE TABLE u (id int8 PRIMARY KEY, name text, score int8);
         INSERT INTO u VALUES (1, 'stale', 0), (50, 'other', 5);
         CREATE TABLE nokey (id int8, name text, score int8);
         INSERT INTO nokey VALUES (7, 'kept', 7);",
    );
    let replace = csv_to_pg(
        &dir,
        "replace",
        &csv,
        &format!(
            "{{ url = \"{}\", table = \"r\", mode = \"replace\" }}",
            db.url
        ),
    );
    let expected = vec!["(1,a,10,d)", "(2,b,20,d)", "(3,c,30,d)"];
    for _ in 0..2 {
        run_ok(&dir, &replace, &[]);
        assert_eq!(db.rows_text("SELECT * FROM r ORDER BY id"), expected);
    }
    let upsert = csv_to_pg(
        &dir,
        "upsert",
        &csv,
        &format!(
            "{{ url = \"{}\", table = \"public.u\", mode = \"upsert\", key = [\"id\"] }}",
            db.url
        ),
    );
    run_ok(&dir, &upsert, &[]);
    let after_first = db.rows_text("SELECT id, name, score, xmin::text FROM u ORDER BY id");
    assert_eq!(
        db.rows_text("SELECT * FROM u ORDER BY id"),
        vec!["(1,a,10)", "(2,b,20)", "(3,c,30)", "(50,other,5)"]
    );
    run_ok(&dir, &upsert, &[]);
    // Not a row rewritten: each keeps the transaction that wrote it.
    assert_eq!(
        db.rows_text("SELECT id, name, score, xmin::text FROM u ORDER BY id"),
        after_first
    );
    // Two runs, two fence rows, each with its row count.
    assert_eq!(
        db.count("SELECT count(*) FROM conveyor_commits WHERE rows = 3"),
        4
    );
    // Upsert into a table with no unique key on `id`: one clear error, and
    // the table as it was.
    let bad = csv_to_pg(
        &dir,
        "nokey",
        &csv,
        &format!(
            "{{ url = \"{}\", table = \"nokey\", mode = \"upsert\", key = [\"id\"] }}",
            db.url
        ),
    );
    let (report, out) = run_failing(&dir, &bad, &[]);
    let report = report.unwrap_or_else(|| panic!("{out}"));
    let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
    let err = &load.error.as_ref().unwrap().message;
    assert!(
        err.contains("primary key or unique index on exactly (id)"),
        "{err}"
    );
    assert_eq!(db.rows_text("SELECT * FROM nokey"), vec!["(7,kept,7)"]);
    // create = true with upsert makes the key the primary key.
    let made = csv_to_pg(
        &dir,
        "made",
        &csv,
        &format!(
            "{{ url = \"{}\", table = \"made\", mode = \"upsert\", key = [\"id\"], create = true }}",
            db.url
        ),
    );
    run_ok(&dir, &made, &[]);
    run_ok(&dir, &made, &[]);
    assert_eq!(db.count("SELECT count(*) FROM made"), 3);
}

#[test]
fn hostile_params_and_table_names_are_quoted_or_refused_never_executed() {
    let db = TestDb::create("hostile");
    let dir = TestDir::new("pg_hostile");
    let evil = "'; DROP TABLE victim; --";
    db.exec(&format!(
        "CREATE TABLE victim (x int); INSERT INTO victim VALUES (1);
         CREATE TABLE src (name text); INSERT INTO src VALUES ('a'), ('{}');",
        evil.replace('\'', "''")
    ));
    // A param is one SQL literal: it matches the row holding that text.
    let flow = pg_to_csv(
        &dir,
        "param",
        &format!(
            "{{ url = \"{}\", query = \"SELECT name FROM src WHERE name = {{{{ params.name }}}}\" }}",
            db.url
        ),
        "p.csv",
        "[params]\nname = {}\n",
    );
    let param = format!("name={evil}");
    run_ok(&dir, &flow, &["--param", &param]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/p.csv")).unwrap(),
        format!("name\n{evil}\n")
    );
    let backslash = "name=\\'; DROP TABLE victim; --";
    run_ok(&dir, &flow, &["--param", backslash]);
    assert_eq!(db.count("SELECT count(*) FROM victim"), 1);
    // A placeholder inside quotes is refused before anything runs.
    let quoted = pg_to_csv(
        &dir,
        "quoted",
        &format!(
            "{{ url = \"{}\", query = \"SELECT name FROM src WHERE name = '{{{{ params.name }}}}'\" }}",
            db.url
        ),
        "q.csv",
        "[params]\nname = {}\n",
    );
    let (_, out) = run_failing(&dir, &quoted, &["--param", &param]);
    assert!(out.contains("inside a quoted string"), "{out}");
    // Hostile table names are refused by the parser, a param in one too.
    let csv = dir.write("in.csv", "x\n2\n");
    for table in [
        "x; DROP TABLE victim",
        "\\\"a\\\".\\\"b\\\"",
        "victim --",
        "{{ params.t }}",
    ] {
        let flow = csv_to_pg(
            &dir,
            "table",
            &csv,
            &format!("{{ url = \"{}\", table = \"{table}\" }}", db.url),
        );
        let text = std::fs::read_to_string(&flow).unwrap();
        std::fs::write(&flow, format!("[params]\nt = {{}}\n{text}")).unwrap();
        let (_, out) = run_failing(&dir, &flow, &["--param", "t=victim; DROP TABLE victim"]);
        assert!(
            out.contains("must be `table` or `schema.table`"),
            "{table}: {out}"
        );
    }
    // A hostile column name is quoted: it becomes a column, nothing more.
    let csv = dir.write("cols.csv", "\"a\"\"; DROP TABLE victim; --\"\n1\n");
    let flow = csv_to_pg(
        &dir,
        "cols",
        &csv,
        &format!(
            "{{ url = \"{}\", table = \"cols\", create = true }}",
            db.url
        ),
    );
    run_ok(&dir, &flow, &[]);
    assert_eq!(
        db.strings("SELECT column_name FROM information_schema.columns WHERE table_name = 'cols'"),
        vec!["a\"; DROP TABLE victim; --"]
    );
    assert_eq!(db.count("SELECT count(*) FROM victim"), 1);
}

/// Polls `probe` every 100 ms until it holds; panics after `within`.
fn wait_until(what: &str, within: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_load_worker_killed_mid_copy_leaves_the_table_unchanged_and_its_redelivery_loads_each_row_once()
{
    // `append` copies straight into the table; `upsert` (as `replace`)
    // copies into a staging table first.
    killed_mid_copy("append", "");
    killed_mid_copy("upsert", ", mode = \"upsert\", key = [\"id\"]");
}

fn killed_mid_copy(mode: &str, sink_extra: &str) {
    let db = TestDb::create(&format!("kill_{mode}"));
    let dir = TestDir::new(&format!("pg_kill_{mode}"));
    let ns = namespace(&format!("pgkill{mode}"));
    let storage = dir.join("shared");
    db.exec(
        "CREATE TABLE big (id int8 PRIMARY KEY, name text); INSERT INTO big VALUES (-1, 'before')",
    );
    let mut csv = String::from("id,name\n");
    let n = 50_000;
    for i in 0..n {
        csv.push_str(&format!("{i},row {i}\n"));
    }
    let csv = dir.write("big.csv", &csv);
    let flow = csv_to_pg(
        &dir,
        "kill",
        &csv,
        &format!("{{ url = \"{}\", table = \"big\"{sink_extra} }}", db.url),
    );
    let kinds = ["extract", "transform", "load"];
    let a_cfg = dir.write("a.toml", &node_config("node-a", &ns, &kinds, &storage, ""));
    let b_cfg = dir.write("b.toml", &node_config("node-b", &ns, &kinds, &storage, ""));
    let client = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    let mut a = NodeProcess::start(
        &a_cfg,
        &dir.join("a.log"),
        &[("CONVEYOR_FAILPOINTS", "pause-mid-copy=60000@load")],
    );
    let run = run_flow_in_background(&dir.path, &flow, &client);
    a.wait_for_log("Failpoint: pausing mid-COPY", Duration::from_secs(60));
    // The attempt's COPY is under way, in its open transaction, which no
    // one else sees yet (nor its fence row).
    let into = match mode {
        "append" => "big",
        _ => "conveyor_stage",
    };
    let copying = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'conveyor' AND state = 'active' \
         AND query LIKE 'COPY %{into}%'"
    );
    let staging = "SELECT count(*) FROM pg_class WHERE relname = 'conveyor_stage'";
    assert_eq!(db.rows_text("SELECT * FROM big"), vec!["(-1,before)"]);
    assert_eq!(db.count("SELECT count(*) FROM conveyor_commits"), 0);
    // (The staging table is created in that transaction too, so no other
    // session sees it in pg_class; the COPY's own text names it.)
    assert_eq!(
        db.count(&copying),
        1,
        "{mode}: the attempt's COPY into {into} is in progress"
    );
    a.sigkill();
    // The server rolls the killed session's transaction back.
    wait_until(
        "the killed session's COPY rolled back",
        Duration::from_secs(30),
        || db.count(&copying) == 0,
    );
    assert_eq!(
        db.count("SELECT count(*) FROM big"),
        1,
        "{mode}: the target is unchanged"
    );
    let _b = NodeProcess::start(&b_cfg, &dir.join("b.log"), &[]);
    let (out, report) = run.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    let load = report.tasks.iter().find(|t| t.name == "load").unwrap();
    assert_eq!(load.state, TaskState::Succeeded);
    assert_eq!(load.node.as_deref(), Some("node-b"), "{load:?}");
    assert_eq!(load.rows_out, Some(n), "{load:?}");
    assert_eq!(db.count("SELECT count(*) FROM big"), n as i64 + 1);
    assert_eq!(db.count("SELECT count(DISTINCT id) FROM big"), n as i64 + 1);
    assert_eq!(
        db.strings("SELECT rows FROM conveyor_commits"),
        vec![n.to_string()],
        "{mode}: one fence row, with the rows loaded"
    );
    assert_eq!(db.count(staging), 0, "{mode}: no staging table left");
    println!("fault pg_kill_mid_copy_{mode}: result=ok rows={n} duplicates=0 losses=0");
}

#[test]
fn a_partitioned_extract_reads_key_ranges_and_its_load_commits_once_in_the_gather() {
    let db = TestDb::create("partitions");
    let dir = TestDir::new("pg_partitions");
    db.exec(
        "CREATE TABLE src (id int8, name text);
         INSERT INTO src SELECT i, 'row ' || i FROM generate_series(-500, 9499) AS i;
         INSERT INTO src VALUES (NULL, 'no key'), (NULL, 'no key either');",
    );
    let flow = dir.write(
        "parts.toml",
        &format!(
            "[flow]\nname = \"parts\"\n\n[tasks.e]\nkind = \"extract\"\npostgres = {{ url = \"{0}\", query = \"SELECT id, name FROM src\" }}\npartition_by = \"id\"\npartitions = 3\n\n[tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = [{{ rename = {{ name = \"label\" }} }}]\n\n[tasks.l]\nkind = \"load\"\ninput = \"t\"\npostgres = {{ url = \"{0}\", table = \"dst\", create = true }}\n",
            db.url
        ),
    );
    let report = run_ok(&dir, &flow, &[]);
    // Three key ranges, each a share of the rows; the NULL keys in the first.
    let mut shares = Vec::new();
    for i in 0..3 {
        let e = report
            .tasks
            .iter()
            .find(|t| t.name == format!("e@{i}"))
            .unwrap_or_else(|| panic!("e@{i} in {report:?}"));
        shares.push(e.rows_out.unwrap());
    }
    assert_eq!(shares.iter().sum::<u64>(), 10_002, "{shares:?}");
    assert!(shares.iter().all(|&n| n > 3000), "{shares:?}");
    assert_eq!(
        db.rows_text("SELECT id, name FROM src ORDER BY id, name"),
        db.rows_text("SELECT id, label FROM dst ORDER BY id, label")
    );
    // The gather committed every part in one transaction: one fence row.
    assert_eq!(
        db.strings("SELECT task_run || ' ' || rows FROM conveyor_commits"),
        vec![format!("{}.l 10002", report.flow_run)]
    );
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}
