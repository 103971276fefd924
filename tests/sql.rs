//! SQL steps (issue 13) on real nodes: a join and an aggregate over two
//! extracts give the same rows whether the extracts are partitioned or
//! not, and `input = "x"` names the table `input`.

use conveyor_schemas::{ErrorKind, FlowState, TaskState};

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

/// Orders and customers as CSV: `n` orders over 50 customers in 4 regions,
/// with codes that must keep their leading zeros.
fn write_inputs(dir: &TestDir, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut customers = String::from("customer_id,region,code\n");
    for c in 0..50 {
        let region = ["eu", "us", "apac", "latam"][c % 4];
        customers.push_str(&format!("{c},{region},{:05}\n", c * 7));
    }
    let mut orders = String::from("order_id,customer_id,amount,note\n");
    for i in 0..n {
        // A quoted newline: partitions must still cut at record boundaries.
        let note = if i % 5 == 0 {
            "\"two\nlines\"".to_string()
        } else {
            format!("n{i}")
        };
        orders.push_str(&format!("{i},{},{},{note}\n", (i * 31) % 53, i % 97));
    }
    (
        dir.write("orders.csv", &orders),
        dir.write("customers.csv", &customers),
    )
}

fn join_flow(orders: &std::path::Path, customers: &std::path::Path, partitions: &str) -> String {
    format!(
        r#"[flow]
name = "regions"
[params]
skip = {{ default = "latam" }}
[tasks.orders]
kind = "extract"
path = "{}"
{partitions}
[tasks.customers]
kind = "extract"
path = "{}"
{partitions}
[tasks.enrich]
kind = "transform"
inputs = {{ orders = "orders", customers = "customers" }}
steps = [
  {{ sql = """
SELECT c.region, count(*) AS orders, sum(o.amount) AS total, min(c.code) AS first_code
FROM orders o JOIN customers c USING (customer_id)
WHERE c.region <> {{{{ params.skip }}}}
GROUP BY c.region
ORDER BY c.region""" }},
  {{ rename = {{ total = "amount" }} }},
]
[tasks.load]
kind = "load"
input = "enrich"
path = "regions.csv"
"#,
        orders.display(),
        customers.display()
    )
}

/// What the query must give, computed here from the same rows.
fn expected_regions(n: usize) -> String {
    let mut by_region: std::collections::BTreeMap<&str, (u64, u64, String)> = Default::default();
    for i in 0..n {
        let c = (i * 31) % 53;
        if c >= 50 {
            continue; // no such customer: the inner join drops the order
        }
        let region = ["eu", "us", "apac", "latam"][c % 4];
        if region == "latam" {
            continue;
        }
        let e = by_region
            .entry(region)
            .or_insert((0, 0, "99999".to_string()));
        e.0 += 1;
        e.1 += (i % 97) as u64;
        e.2 = e.2.clone().min(format!("{:05}", c * 7));
    }
    let mut out = String::from("region,orders,amount,first_code\n");
    for (region, (count, total, code)) in by_region {
        out.push_str(&format!("{region},{count},{total},{code}\n"));
    }
    out
}

#[test]
fn a_join_and_aggregate_over_partitioned_extracts_gives_the_unpartitioned_rows() {
    let dir = TestDir::new("sql_partitioned_join");
    let ns = namespace("sqljoin");
    let storage = dir.join("shared");
    let cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "transform", "load"], &storage, ""),
    );
    let _w = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    let n = 40_000;
    let (orders, customers) = write_inputs(&dir, n);
    let client = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );

    // Partitioned, on a worker node through the broker.
    let flow = dir.write(
        "parts.toml",
        &join_flow(&orders, &customers, "partitions = 4"),
    );
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    assert_eq!(report.state, FlowState::Succeeded);
    let names: Vec<&str> = report.tasks.iter().map(|t| t.name.as_str()).collect();
    for name in ["orders@3", "customers@3", "enrich", "load"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(
        !names.contains(&"enrich@0"),
        "a SQL task is not split: {names:?}"
    );
    let enrich = report.tasks.iter().find(|t| t.name == "enrich").unwrap();
    assert_eq!(
        enrich.rows_in,
        Some(n as u64 + 50),
        "it read every partition"
    );
    let partitioned = std::fs::read_to_string(storage.join("out/regions.csv")).unwrap();

    // Unpartitioned, embedded.
    let whole = TestDir::new("sql_whole_join");
    let flow = whole.write("whole.toml", &join_flow(&orders, &customers, ""));
    let (out, report) = run_flow(&whole.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().tasks.len(), 4);
    let unpartitioned = std::fs::read_to_string(whole.join("out/regions.csv")).unwrap();

    assert_eq!(partitioned, unpartitioned);
    assert_eq!(partitioned, expected_regions(n));

    // Fused, the partitioned extracts still feed one SQL task.
    let fused = dir.write(
        "fused.toml",
        &join_flow(&orders, &customers, "partitions = 3")
            .replace("name = \"regions\"", "name = \"regions\"\nfuse = true")
            .replace("regions.csv", "fused.csv"),
    );
    let (out, _) = run_flow(&dir.path, &fused, &["--config", client.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(storage.join("out/fused.csv")).unwrap(),
        unpartitioned
    );
}

#[test]
fn input_names_the_table_input_and_sql_errors_name_the_task_query_and_position() {
    let dir = TestDir::new("sql_input_table");
    let (orders, _) = write_inputs(&dir, 100);
    let flow = |steps: &str| {
        dir.write(
            "input.toml",
            &format!(
                "[flow]\nname = \"input\"\n[tasks.e]\nkind = \"extract\"\npath = \"{}\"\n\
                 [tasks.t]\nkind = \"transform\"\ninput = \"e\"\nsteps = {steps}\n\
                 [tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"top.csv\"\n",
                orders.display()
            ),
        )
    };
    // A step before and after the SQL.
    let ok = flow(
        r#"[{ drop = ["note"] }, { sql = "SELECT customer_id, max(amount) AS top FROM input WHERE customer_id < 3 GROUP BY customer_id ORDER BY customer_id" }, { filter = { column = "top", op = "gt", value = 0 } }]"#,
    );
    let (out, report) = run_flow(&dir.path, &ok, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    let mut expected = String::from("customer_id,top\n");
    for c in 0..3 {
        let top = (0..100usize)
            .filter(|i| (i * 31) % 53 == c)
            .map(|i| i % 97)
            .max()
            .unwrap();
        expected.push_str(&format!("{c},{top}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("out/top.csv")).unwrap(),
        expected
    );
    // The rows before the SQL step went through a scratch file, since gone.
    let scratch = dir.join(".conveyor/artifacts/.scratch");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap_or_else(|e| panic!("{}: {e}", scratch.display()))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");

    // An unknown column fails at run time, naming the task, the query and where.
    let bad = flow(r#"[{ sql = "SELECT nope FROM input" }]"#);
    let (out, report) = run_flow(&dir.path, &bad, &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let report = report.unwrap();
    let t = report.tasks.iter().find(|t| t.name == "t").unwrap();
    assert_eq!(t.state, TaskState::Failed);
    let error = t.error.as_ref().unwrap();
    assert_eq!((error.kind, error.retryable), (ErrorKind::Spec, false));
    assert!(
        error.message.contains("task `t`, step 1 (sql)")
            && error.message.contains("nope")
            && error.message.contains("line 1, column 8")
            && error.message.ends_with("SELECT nope FROM input"),
        "{}",
        error.message
    );

    // A syntax error is found by `conveyor validate`, with the flow's line.
    let syntax = flow(r#"[{ sql = "SELECT * FROMM input" }]"#);
    let out = output_within(
        {
            let mut cmd = std::process::Command::new(conveyor_bin());
            cmd.arg("validate").arg(&syntax);
            cmd
        },
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("line 9: `tasks.t.steps[0].sql`") && text.contains("Line: 1, Column: 10"),
        "{text}"
    );
}

#[test]
fn a_param_in_a_sql_step_is_a_value_and_never_a_table_column_or_alias() {
    let dir = TestDir::new("sql_params");
    let (orders, customers) = write_inputs(&dir, 100);
    let flow = |name: &str, sql: &str| {
        dir.write(
            &format!("{name}.toml"),
            &format!(
                "[flow]\nname = \"{name}\"\n[params]\np = {{}}\n\
                 [tasks.o]\nkind = \"extract\"\npath = \"{}\"\n\
                 [tasks.c]\nkind = \"extract\"\npath = \"{}\"\n\
                 [tasks.t]\nkind = \"transform\"\ninputs = {{ orders = \"o\", customers = \"c\" }}\n\
                 steps = [{{ sql = \"{sql}\" }}]\n\
                 [tasks.l]\nkind = \"load\"\ninput = \"t\"\npath = \"{name}.csv\"\n",
                orders.display(),
                customers.display()
            ),
        )
    };
    // As a value, even a hostile one is one literal: it matches nothing.
    let value = flow(
        "value",
        "SELECT region, count(*) AS n FROM customers WHERE region = {{ params.p }} GROUP BY region",
    );
    for (p, expected) in [("eu", "region,n\neu,13\n"), ("eu' OR '1'='1", "region,n\n")] {
        let (out, report) = run_flow(&dir.path, &value, &["--param", &format!("p={p}")]);
        assert!(out.status.success(), "{p}: {}", describe(&out));
        assert_eq!(report.unwrap().state, FlowState::Succeeded);
        assert_eq!(
            std::fs::read_to_string(dir.join("out/value.csv")).unwrap(),
            expected,
            "{p}"
        );
    }
    // Where a name goes, it is refused before anything runs: the parser
    // would read its single-quoted literal as the name.
    for (name, sql, p) in [
        ("table", "SELECT * FROM {{ params.p }}", "customers"),
        (
            "column",
            "SELECT c.{{ params.p }} FROM customers c",
            "region",
        ),
        (
            "alias",
            "SELECT region AS {{ params.p }} FROM customers",
            "x",
        ),
        (
            "join",
            "SELECT * FROM orders JOIN {{ params.p }} USING (customer_id)",
            "customers",
        ),
    ] {
        let f = flow(name, sql);
        let (out, report) = run_flow(&dir.path, &f, &["--param", &format!("p={p}")]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", describe(&out));
        assert!(report.is_none(), "{name}: nothing ran");
        let text = describe(&out);
        assert!(
            text.contains("tasks.t.steps[0].sql")
                && text.contains(&format!("uses '{p}' as a name")),
            "{name}: {text}"
        );
        assert!(!dir.join(&format!("out/{name}.csv")).exists(), "{name}");
    }
}

#[test]
fn the_example_sql_flow_counts_colors_per_letter() {
    let dir = TestDir::new("sql_example_flow");
    let flow = repo_root().join("flows/colors_sql.toml");
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    // The same, computed here from the file.
    let colors = std::fs::read_to_string(repo_root().join("examples/data/colors.csv")).unwrap();
    let mut by_letter: std::collections::BTreeMap<String, (u64, usize)> = Default::default();
    for line in colors.lines().skip(1) {
        let name = line.split(',').next().unwrap();
        let e = by_letter.entry(name[..1].to_uppercase()).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(name.chars().count());
    }
    let mut expected = String::from("letter,colors,longest\n");
    for (letter, (count, longest)) in by_letter.into_iter().filter(|(_, (n, _))| *n >= 5) {
        expected.push_str(&format!("{letter},{count},{longest}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("out/letters.csv")).unwrap(),
        expected
    );
}
