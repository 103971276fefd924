//! Schedules of registered flows on a coordinator node: a 1-second cron
//! fires exactly once per slot across a coordinator SIGKILL, and the slots
//! missed while it was down follow each flow's `catchup`. Checked from the
//! coordinator's database: `schedule_slots` joined with `flow_runs`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::harness::{broker::*, configs::*, processes::*, workdir::*};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn open(db: &Path) -> Connection {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Slots recorded for `flow`, oldest first: (slot_ms, run id, the run's state).
fn slots(db: &Path, flow: &str) -> Vec<(u64, String, Option<String>)> {
    let conn = open(db);
    let mut stmt = conn
        .prepare(
            "SELECT s.slot_ms, s.run_id, r.state FROM schedule_slots s
             LEFT JOIN flow_runs r ON r.id = s.run_id
             WHERE s.flow = ?1 ORDER BY s.slot_ms",
        )
        .unwrap();
    stmt.query_map([flow], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Runs of `flow` that no slot started (there must be none).
fn runs_without_a_slot(db: &Path, flow: &str) -> Vec<String> {
    let conn = open(db);
    let mut stmt = conn
        .prepare(
            "SELECT id FROM flow_runs WHERE flow = ?1
             AND id NOT IN (SELECT run_id FROM schedule_slots)",
        )
        .unwrap();
    stmt.query_map([flow], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Waits until `flow` has recorded more than `count` slots; returns how many.
fn wait_for_slots(db: &Path, flow: &str, count: usize, node: &NodeProcess) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = if db.exists() {
            slots(db, flow).len()
        } else {
            0
        };
        if n > count {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{flow} recorded {n} slots, not more than {count}, within 30s:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_terminal(state: Option<&str>) -> bool {
    matches!(state, Some("Succeeded" | "Failed" | "Cancelled"))
}

fn scheduled_flow(name: &str, catchup: &str) -> String {
    format!(
        "[flow]\nname = \"{name}\"\nschedule = \"* * * * * *\"\ncatchup = \"{catchup}\"\n\n\
         [tasks.extract]\nkind = \"extract\"\npath = \"in.csv\"\n\n\
         [tasks.load]\nkind = \"load\"\ninput = \"extract\"\npath = \"{name}.csv\"\n"
    )
}

#[test]
fn a_one_second_schedule_fires_once_per_slot_across_a_coordinator_sigkill() {
    let dir = TestDir::new("schedule_sigkill");
    let ns = namespace("schedule_sigkill");
    let storage = dir.join("shared");
    let db = dir.join("coord-state/coordinator.db");
    dir.write("flows/in.csv", "id,name\n1,one\n2,two\n");
    dir.write("flows/every.toml", &scheduled_flow("every", "all"));
    dir.write("flows/newest.toml", &scheduled_flow("newest", "latest"));
    let w_cfg = dir.write(
        "w.toml",
        &node_config("w", &ns, &["extract", "load"], &storage, ""),
    );
    let _worker = NodeProcess::start(&w_cfg, &dir.join("w.log"), &[]);
    let coord_cfg = dir.write(
        "coord.toml",
        &node_config(
            "coord",
            &ns,
            &[],
            &storage,
            &format!(
                "[coordinator]\ndb = \"{}\"\nflows = \"{}\"\n",
                db.display(),
                dir.join("flows").display()
            ),
        ),
    );

    let mut coord = NodeProcess::start(&coord_cfg, &dir.join("coord-1.log"), &[]);
    let before = wait_for_slots(&db, "every", 2, &coord);
    // SIGKILL just as a slot was recorded: its run is in flight.
    wait_for_slots(&db, "every", before, &coord);
    coord.sigkill();
    let killed_ms = wall_ms();
    let fired_before = slots(&db, "every").len();
    std::thread::sleep(Duration::from_secs(3));

    let restarted_ms = wall_ms();
    let coord = NodeProcess::start(&coord_cfg, &dir.join("coord-2.log"), &[]);
    coord.wait_for_line(
        &["Catching up on missed schedule slots", "flow=every"],
        Duration::from_secs(10),
    );
    wait_for_slots(&db, "every", fired_before + 6, &coord);
    wait_for_slots(&db, "newest", 6, &coord);
    // Every run of a slot up to now ends; later slots may still be running.
    let cutoff = wall_ms();
    let deadline = Instant::now() + Duration::from_secs(30);
    for flow in ["every", "newest"] {
        while slots(&db, flow)
            .iter()
            .any(|(ms, _, state)| *ms <= cutoff && !is_terminal(state.as_deref()))
        {
            assert!(
                Instant::now() < deadline,
                "runs of {flow} did not end within 30s:\n{}",
                coord.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    for flow in ["every", "newest"] {
        let all = slots(&db, flow);
        let upto: Vec<_> = all.iter().filter(|(ms, _, _)| *ms <= cutoff).collect();
        assert!(upto.len() >= 8, "{flow}: {upto:?}");
        let mut runs: Vec<&String> = all.iter().map(|(_, run, _)| run).collect();
        runs.sort();
        runs.dedup();
        assert_eq!(runs.len(), all.len(), "{flow}: a run for two slots");
        for (ms, run, state) in &upto {
            assert_eq!(ms % 1000, 0, "{flow}: slot {ms} is not on a whole second");
            assert_eq!(
                state.as_deref(),
                Some("Succeeded"),
                "{flow}: run {run} of slot {ms}"
            );
        }
        assert_eq!(
            runs_without_a_slot(&db, flow),
            Vec::<String>::new(),
            "{flow}"
        );
        let gaps: Vec<(u64, u64)> = upto
            .windows(2)
            .map(|w| (w[0].0, w[1].0))
            .filter(|(a, b)| b - a != 1000)
            .collect();
        match flow {
            // catchup = "all": the slots missed while down fired on restart,
            // so they are every second, without a gap.
            "every" => assert_eq!(gaps, [], "{flow}: {upto:?}"),
            // catchup = "latest": one gap over the downtime, ending at the
            // latest slot missed. (A tick delayed over a second by a loaded
            // machine also skips to the latest slot: such a gap is short.)
            _ => {
                let spans_kill =
                    |(before, after): &(u64, u64)| *before <= killed_ms && *after > killed_ms;
                let over: Vec<(u64, u64)> = gaps.iter().copied().filter(spans_kill).collect();
                let other: Vec<(u64, u64)> =
                    gaps.iter().copied().filter(|g| !spans_kill(g)).collect();
                assert_eq!(over.len(), 1, "{flow}: {gaps:?} in {upto:?}");
                let (last_before, first_after) = over[0];
                assert!(
                    first_after >= killed_ms + 2000 && first_after <= restarted_ms + 20_000,
                    "{flow}: gap {gaps:?}, killed at {killed_ms}, restarted at {restarted_ms}"
                );
                assert!(last_before + 2000 <= first_after, "{flow}: {gaps:?}");
                assert!(
                    other.iter().all(|(a, b)| b - a <= 3000),
                    "{flow}: a long gap while the coordinator ran: {gaps:?}"
                );
            }
        }
    }
}

/// A registered flow that does not parse, and two flows with one name: the
/// coordinator node refuses to start, and `validate` says the same, each
/// problem with its file (and line).
#[test]
fn bad_registered_flows_stop_the_coordinator_node_with_every_problem() {
    let dir = TestDir::new("schedule_bad_flows");
    let ns = namespace("schedule_bad_flows");
    dir.write("flows/a.toml", &scheduled_flow("twin", "latest"));
    dir.write("flows/b.toml", &scheduled_flow("twin", "all"));
    dir.write(
        "flows/c.toml",
        &scheduled_flow("zoned", "latest").replace(
            "catchup = \"latest\"",
            "catchup = \"latest\"\ntimezone = \"Europe/Pariss\"",
        ),
    );
    let cfg = dir.write(
        "coord.toml",
        &node_config(
            "coord",
            &ns,
            &[],
            &dir.join("shared"),
            &format!(
                "[coordinator]\ndb = \"{}\"\nflows = \"flows\"\n",
                dir.join("coordinator.db").display()
            ),
        ),
    );
    let expect = |text: &str| {
        assert!(text.contains("2 problems"), "{text}");
        assert!(
            text.contains("a.toml and") && text.contains("b.toml both name their flow `twin`"),
            "{text}"
        );
        assert!(
            text.contains("c.toml: line 5: `flow.timezone`: `Europe/Pariss` is not a time zone"),
            "{text}"
        );
    };
    let mut validate = std::process::Command::new(conveyor_bin());
    validate.arg("validate").arg(&cfg);
    let out = output_within(validate, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    expect(&String::from_utf8_lossy(&out.stderr));

    let mut node = std::process::Command::new(conveyor_bin());
    node.args(["node", "--config"])
        .arg(&cfg)
        .env_remove("CONVEYOR_BROKER_URL");
    let out = output_within(node, Duration::from_secs(30));
    assert!(!out.status.success(), "{}", describe(&out));
    expect(&String::from_utf8_lossy(&out.stderr));
    assert!(
        !dir.join("coordinator.db").exists(),
        "the node opened its database"
    );
}
