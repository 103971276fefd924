/*!
The coordinator's durable memory: one SQLite row per flow run.

A coordinator node writes a run's snapshot *before* it publishes the task
messages the snapshot says were dispatched, and *before* it acks the worker
update that changed it. After a SIGKILL it reopens the database, rebuilds every
unfinished run, and publishes again each attempt that was recorded but never
confirmed by the broker. Results that arrived meanwhile wait in its durable
reply queue.

Each row also keeps the run's final [`RunReport`] and its timestamps, so a
finished run is read without parsing its flow again, and runs are listed by
time, flow and state through indexes ([`RunReader::list`], keyset-paginated
on `(created_ms, id)`: a page costs the same at 1k and 100k runs).

The database runs in WAL mode with `synchronous = NORMAL`: a commit survives
the process being killed at any point; a power loss may lose the last few
commits, which then replay as redeliveries that the fences absorb. The
coordinator holds an exclusive lock on `<db>.lock` beside it, so two
coordinators cannot share a database, while readers ([`RunReader`], the
`sqlite3` shell) can read it as it runs.

`conveyor run` without a coordinator node keeps its runs in memory
([`RunStore::Memory`]): the run lives and dies with that process.
*/

use std::fs::File;
use std::path::{Path, PathBuf};

use conveyor_flow::FlowSource;
use conveyor_schemas::{FlowState, RunReport};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::state::FlowSnapshot;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coordinator database {}: {message}", path.display())]
    Db { path: PathBuf, message: String },
    /// A run's state could not be encoded for saving (a bug).
    #[error("flow run {run}: cannot encode its {what}: {message}")]
    Encode {
        run: String,
        what: &'static str,
        message: String,
    },
}

/// One unfinished run, as loaded after a restart.
#[derive(Debug)]
pub struct StoredRun {
    pub id: String,
    pub source: FlowSource,
    /// The queue of the client waiting for it, if it was submitted.
    pub client: Option<(String, String)>,
    pub snapshot: FlowSnapshot,
}

pub enum RunStore {
    Memory,
    Sqlite {
        conn: Connection,
        path: PathBuf,
        /// Holds the exclusive lock on `<db>.lock` while the store is open.
        _lock: File,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedule_slots (
    flow        TEXT NOT NULL,
    slot_ms     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    PRIMARY KEY (flow, slot_ms)
);
CREATE TABLE IF NOT EXISTS flow_runs (
    id          TEXT PRIMARY KEY,
    request_id  TEXT UNIQUE,
    client_queue TEXT,
    flow_file   TEXT NOT NULL,
    flow_text   TEXT NOT NULL,
    flow_base   TEXT NOT NULL,
    state       TEXT NOT NULL,
    snapshot    TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
";

/// Columns added after the first release, with how to fill them in for
/// rows written before. `ALTER TABLE` runs once, when a column is missing.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // A run id is `FLOW-` and 12 hex digits.
    (
        "flow",
        "TEXT",
        "UPDATE flow_runs SET flow = substr(id, 1, length(id) - 13) WHERE flow IS NULL",
    ),
    ("report", "TEXT", ""),
    ("started_ms", "INTEGER", ""),
    ("ended_ms", "INTEGER", ""),
    // The run's params, as a JSON object; NULL for none.
    ("params", "TEXT", ""),
    // The run this one retries.
    ("retry_of", "TEXT", ""),
];

const INDEXES: &str = "
DROP INDEX IF EXISTS flow_runs_unfinished;
CREATE INDEX IF NOT EXISTS flow_runs_open ON flow_runs(state)
    WHERE state NOT IN ('Succeeded', 'Failed', 'Cancelled');
CREATE INDEX IF NOT EXISTS flow_runs_by_time ON flow_runs(created_ms, id);
CREATE INDEX IF NOT EXISTS flow_runs_by_flow ON flow_runs(flow, created_ms, id);
CREATE INDEX IF NOT EXISTS flow_runs_by_state ON flow_runs(state, created_ms, id);
";

fn state_text(s: FlowState) -> &'static str {
    s.as_str()
}

fn parse_state(s: &str) -> Option<FlowState> {
    FlowState::parse(s)
}

fn db_error(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |message| StoreError::Db {
        path: path.to_path_buf(),
        message,
    }
}

/// SQLite's busy handler for the coordinator's connection: short waits,
/// 5 s in all.
fn retry_busy(attempts: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(100));
    attempts < 50_000
}

/// A run to record, as it starts.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub flow: &'a str,
    /// The submission's (request id, client queue).
    pub request: Option<(&'a str, &'a str)>,
    /// The flow's text, and the params of this run.
    pub source: &'a FlowSource,
    pub snapshot: &'a FlowSnapshot,
    /// The run this one retries.
    pub retry_of: Option<&'a str>,
    /// The schedule slot this run fires: recorded in the same transaction
    /// as the run, so a slot starts one run whatever crashes when.
    pub slot: Option<ScheduleSlot>,
    pub now_ms: u64,
}

/// One firing time of a registered flow's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSlot {
    pub flow: String,
    /// The slot's time, in ms since the epoch.
    pub slot_ms: u64,
}

/// What one save of a run records besides its snapshot.
pub struct RunUpdate<'a> {
    pub snapshot: &'a str,
    pub state: FlowState,
    /// The run's final report, as JSON: saved once the run has ended. A
    /// run in flight is reported live by its coordinator, so the many saves
    /// before the end do not each encode and write a report.
    pub report: Option<&'a str>,
    pub ended_ms: Option<u64>,
    pub now_ms: u64,
}

impl RunStore {
    /// Opens (creating if needed) the database at `path`, and locks it.
    pub fn open(path: &Path) -> Result<RunStore, StoreError> {
        let err = db_error(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err("it is in use by another coordinator process (each coordinator node needs a database of its own)".into()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock {}: {e}", lock_path.display())));
            }
        }
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        // Readers never hold the writer up for long in WAL mode, and the
        // history's writer ([`crate::history`]) holds the write lock for a
        // millisecond or so: retry every 100 µs (SQLite's own busy timeout
        // sleeps 1 ms and more on the actor's thread), for up to 5 s rather
        // than fail on a checkpoint.
        conn.busy_handler(Some(retry_busy))
            .map_err(|e| err(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        )
        .map_err(|e| err(e.to_string()))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(e.to_string()))?;
        migrate(&conn).map_err(|e| err(e.to_string()))?;
        conn.execute_batch(INDEXES)
            .map_err(|e| err(e.to_string()))?;
        count_runs_by_state(&conn).map_err(|e| err(e.to_string()))?;
        Ok(RunStore::Sqlite {
            conn,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        let path = match self {
            RunStore::Sqlite { path, .. } => path.clone(),
            RunStore::Memory => PathBuf::from(":memory:"),
        };
        StoreError::Db {
            path,
            message: e.to_string(),
        }
    }

    pub fn is_durable(&self) -> bool {
        matches!(self, RunStore::Sqlite { .. })
    }

    /// The database file, for readers; none in memory.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RunStore::Sqlite { path, .. } => Some(path),
            RunStore::Memory => None,
        }
    }

    /// Records a new run.
    pub fn insert(&self, run: &NewRun) -> Result<(), StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(());
        };
        let snap = serde_json::to_string(run.snapshot).map_err(|e| self.fail(e))?;
        let params = (!run.source.params.is_empty())
            .then(|| serde_json::to_string(&run.source.params))
            .transpose()
            .map_err(|e| self.fail(e))?;
        let tx = conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        // Statements are cached: one is prepared once, not per run.
        if let Some(slot) = &run.slot {
            tx.prepare_cached(
                "INSERT INTO schedule_slots (flow, slot_ms, run_id) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![slot.flow, slot.slot_ms as i64, run.id]))
            .map_err(|e| self.fail(e))?;
        }
        tx.prepare_cached(
            "INSERT INTO flow_runs (id, flow, request_id, client_queue, flow_file, flow_text, flow_base, state, snapshot, created_ms, updated_ms, started_ms, params, retry_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                run.id,
                run.flow,
                run.request.map(|r| r.0),
                run.request.map(|r| r.1),
                run.source.file,
                run.source.text,
                run.source.base,
                state_text(run.snapshot.state),
                snap,
                run.now_ms as i64,
                run.snapshot.started_ms as i64,
                params,
                run.retry_of,
            ])
        })
        .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Saves a run's new snapshot and report.
    pub fn update(&self, id: &str, u: &RunUpdate) -> Result<(), StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(());
        };
        let args = params![
            id,
            u.snapshot,
            state_text(u.state),
            u.report,
            u.ended_ms.map(|m| m as i64),
            u.now_ms as i64
        ];
        // Most saves keep the run's state. Such a save does not name
        // `state` among what it sets, so SQLite leaves the two indexes on
        // the state and the run counts' trigger alone: one page written,
        // not three. Only a changed state takes the second statement.
        let same_state = conn
            .prepare_cached(
                "UPDATE flow_runs SET snapshot = ?2, report = COALESCE(?4, report), ended_ms = ?5, updated_ms = ?6 WHERE id = ?1 AND state = ?3",
            )
            .and_then(|mut stmt| stmt.execute(args))
            .map_err(|e| self.fail(e))?;
        if same_state == 0 {
            conn.prepare_cached(
                "UPDATE flow_runs SET snapshot = ?2, state = ?3, report = COALESCE(?4, report), ended_ms = ?5, updated_ms = ?6 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(args))
            .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// The run a submission already started.
    pub fn find_request(&self, request_id: &str) -> Result<Option<StoredRun>, StoreError> {
        Ok(self
            .select("WHERE request_id = ?1", params![request_id])?
            .pop())
    }

    fn select(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT id, flow_file, flow_text, flow_base, request_id, client_queue, snapshot, params
             FROM flow_runs {filter} ORDER BY created_ms, id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FlowSource {
                        file: r.get(1)?,
                        text: r.get(2)?,
                        base: r.get(3)?,
                        params: Default::default(),
                    },
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, mut source, request, queue, snap, params) = row.map_err(|e| self.fail(e))?;
            if let Some(params) = params {
                source.params = serde_json::from_str(&params)
                    .map_err(|e| self.fail(format!("run {id}: saved params: {e}")))?;
            }
            let snapshot =
                serde_json::from_str(&snap).map_err(|e| self.fail(format!("run {id}: {e}")))?;
            out.push(StoredRun {
                id,
                source,
                client: request.zip(queue),
                snapshot,
            });
        }
        Ok(out)
    }

    /// The latest schedule slot recorded for `flow` (a primary-key lookup):
    /// the scheduler resumes after it, so a recorded slot never fires again.
    pub fn last_slot(&self, flow: &str) -> Result<Option<u64>, StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(None);
        };
        conn.query_row(
            "SELECT MAX(slot_ms) FROM schedule_slots WHERE flow = ?1",
            params![flow],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map(|ms| ms.map(|ms| ms as u64))
        .map_err(|e| self.fail(e))
    }

    /// One run by its id, ended or not; none in memory.
    pub fn load(&self, id: &str) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.select("WHERE id = ?1", params![id])?.pop())
    }

    /// Every run not yet Succeeded, Failed or Cancelled, oldest first.
    pub fn unfinished(&self) -> Result<Vec<StoredRun>, StoreError> {
        self.select(
            "WHERE state NOT IN ('Succeeded', 'Failed', 'Cancelled')",
            [],
        )
    }
}

/// Runs by flow and state, kept by triggers in the writer's own
/// transactions: counting runs by state reads a handful of rows, however
/// long the history (a `GROUP BY` over 100k runs is a scan).
const RUN_COUNTS: &str = "
CREATE TABLE run_counts (
    flow  TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (flow, state)
) WITHOUT ROWID;
INSERT INTO run_counts (flow, state, n)
    SELECT coalesce(flow, ''), state, count(*) FROM flow_runs GROUP BY 1, 2;
CREATE TRIGGER run_counts_insert AFTER INSERT ON flow_runs BEGIN
    INSERT INTO run_counts (flow, state, n) VALUES (coalesce(NEW.flow, ''), NEW.state, 1)
        ON CONFLICT (flow, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER run_counts_update AFTER UPDATE OF state, flow ON flow_runs
    WHEN OLD.state IS NOT NEW.state OR OLD.flow IS NOT NEW.flow BEGIN
    UPDATE run_counts SET n = n - 1 WHERE flow = coalesce(OLD.flow, '') AND state = OLD.state;
    INSERT INTO run_counts (flow, state, n) VALUES (coalesce(NEW.flow, ''), NEW.state, 1)
        ON CONFLICT (flow, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER run_counts_delete AFTER DELETE ON flow_runs BEGIN
    UPDATE run_counts SET n = n - 1 WHERE flow = coalesce(OLD.flow, '') AND state = OLD.state;
END;
";

/// Creates the run counts and fills them from the runs already there, once,
/// in one transaction.
fn count_runs_by_state(conn: &Connection) -> rusqlite::Result<()> {
    let have: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'run_counts'",
        [],
        |r| r.get(0),
    )?;
    if !have {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {RUN_COUNTS} COMMIT;"))?;
    }
    Ok(())
}

/// Adds the columns a database written by an older version lacks.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA table_info(flow_runs)")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for name in names {
            have.push(name?);
        }
    }
    for (column, ty, backfill) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == column) {
            conn.execute_batch(&format!("ALTER TABLE flow_runs ADD COLUMN {column} {ty}"))?;
            if !backfill.is_empty() {
                conn.execute_batch(backfill)?;
            }
        }
    }
    Ok(())
}

/// One run as the history shows it: without its flow text or snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub flow: String,
    pub state: FlowState,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// The final report; none while the run is in flight (its coordinator
    /// reports it live).
    pub report: Option<RunReport>,
}

/// What a run was started with, besides its flow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOrigin {
    pub params: std::collections::BTreeMap<String, String>,
    /// The run this one retries.
    pub retry_of: Option<String>,
}

/// Where a page of runs starts: after this run, in newest-first order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: u64,
    pub id: String,
}

impl Cursor {
    /// `CREATED_MS.ID`, as an API passes it around.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (ms, id) = text.split_once('.')?;
        Some(Cursor {
            created_ms: ms.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// Which runs to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub flow: Option<String>,
    pub state: Option<FlowState>,
    /// Created at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Created before this time.
    pub until_ms: Option<u64>,
    /// At most this many, capped at [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: usize,
    pub after: Option<Cursor>,
}

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// One page of runs, and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub next: Option<Cursor>,
}

/// Most flows [`RunReader::overview`] reports.
pub const OVERVIEW_FLOWS: usize = 20;

/// Runs created in one hour, counted from [`Overview::since_ms`].
#[derive(Clone, Debug, PartialEq)]
pub struct HourStat {
    /// Hours after `since_ms` (0 = the first).
    pub hour: u32,
    pub runs: u64,
    pub failed: u64,
    /// Runs that ended (succeeded, failed or cancelled).
    pub ended: u64,
}

/// One flow's ended runs over the overview's window.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowStat {
    pub flow: String,
    pub ended: u64,
    pub failed: u64,
    /// Median and 95th percentile run duration (nearest rank).
    pub p50_ms: u64,
    pub p95_ms: u64,
}

/// Runs per hour, failures, and durations per flow since a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Overview {
    pub since_ms: u64,
    /// Only the hours that had runs, in order.
    pub hours: Vec<HourStat>,
    pub flows: Vec<FlowStat>,
}

/// A read-only connection to a coordinator's database, for the API and the
/// dashboard: its queries never block the coordinator's writes (WAL).
pub struct RunReader {
    conn: Connection,
    path: PathBuf,
}

impl RunReader {
    pub fn open(path: &Path) -> Result<RunReader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_error(path)(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| db_error(path)(e.to_string()))?;
        Ok(RunReader {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        db_error(&self.path)(e.to_string())
    }

    /// Runs a query of another table of the database ([`crate::history`]).
    pub(crate) fn query<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&self.conn).map_err(|e| self.fail(e))
    }

    const COLUMNS: &'static str = "id, flow, state, created_ms, started_ms, ended_ms, report";

    fn summary(&self, r: &rusqlite::Row) -> rusqlite::Result<(RunSummary, Option<String>)> {
        let id: String = r.get(0)?;
        let state: String = r.get(2)?;
        Ok((
            RunSummary {
                flow: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                state: parse_state(&state).unwrap_or(FlowState::Failed),
                created_ms: r.get::<_, i64>(3)? as u64,
                started_ms: r.get::<_, Option<i64>>(4)?.map(|m| m as u64),
                ended_ms: r.get::<_, Option<i64>>(5)?.map(|m| m as u64),
                report: None,
                id,
            },
            r.get(6)?,
        ))
    }

    fn with_report(
        &self,
        (mut run, report): (RunSummary, Option<String>),
    ) -> Result<RunSummary, StoreError> {
        run.report = match report {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| self.fail(format!("run {}: saved report: {e}", run.id)))?,
            ),
            None => None,
        };
        Ok(run)
    }

    /// One run, finished or not, as last saved.
    pub fn get(&self, id: &str) -> Result<Option<RunSummary>, StoreError> {
        let sql = format!("SELECT {} FROM flow_runs WHERE id = ?1", Self::COLUMNS);
        let row = self
            .conn
            .query_row(&sql, params![id], |r| self.summary(r))
            .optional()
            .map_err(|e| self.fail(e))?;
        row.map(|r| self.with_report(r)).transpose()
    }

    /// What a run was started with: its params and the run it retries.
    pub fn origin(&self, id: &str) -> Result<Option<RunOrigin>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT params, retry_of FROM flow_runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, Option<String>>(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        let Some((params, retry_of)) = row else {
            return Ok(None);
        };
        let params = match params {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| self.fail(format!("run {id}: saved params: {e}")))?,
            None => Default::default(),
        };
        Ok(Some(RunOrigin { params, retry_of }))
    }

    /// How many runs are in each state, of one flow or of all; states with
    /// no run are left out. Read from the counts the writer keeps, so it
    /// costs the same at 1k and 100k runs.
    pub fn counts(&self, flow: Option<&str>) -> Result<Vec<(FlowState, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT state, sum(n) FROM run_counts WHERE ?1 IS NULL OR flow = ?1 GROUP BY state",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![flow], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n) = row.map_err(|e| self.fail(e))?;
            if let Some(state) = parse_state(&state).filter(|_| n > 0) {
                out.push((state, n as u64));
            }
        }
        out.sort_by_key(|(s, _)| FlowState::ALL.iter().position(|a| a == s));
        Ok(out)
    }

    /// The id of the latest run of `flow` (through `flow_runs_by_flow`).
    pub fn last_run(&self, flow: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM flow_runs WHERE flow = ?1 ORDER BY created_ms DESC, id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row(params![flow], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))
    }

    /// The runs among `ids` that the history has, without their reports
    /// (one query by primary key), in no particular order.
    pub fn summaries(&self, ids: &[String]) -> Result<Vec<RunSummary>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "SELECT id, flow, state, created_ms, started_ms, ended_ms, NULL FROM flow_runs WHERE id IN ({marks})"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(ids.iter()), |r| self.summary(r))
            .map_err(|e| self.fail(e))?;
        rows.map(|r| r.map(|(run, _)| run).map_err(|e| self.fail(e)))
            .collect()
    }

    /// The flow a run was started from, to draw its tasks' graph.
    pub fn source(&self, id: &str) -> Result<Option<FlowSource>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT flow_file, flow_text, flow_base, params FROM flow_runs WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        let Some((file, text, base, params)) = row else {
            return Ok(None);
        };
        let params = match params {
            Some(p) => serde_json::from_str(&p)
                .map_err(|e| self.fail(format!("run {id}: saved params: {e}")))?,
            None => Default::default(),
        };
        Ok(Some(FlowSource {
            file,
            text,
            base,
            params,
        }))
    }

    /// Runs created since `since_ms` (through `flow_runs_by_time`): how
    /// many per hour and how many failed, and each flow's p50 and p95
    /// duration over its ended runs (window functions, in SQLite). At most
    /// [`OVERVIEW_FLOWS`] flows, the busiest first.
    pub fn overview(&self, since_ms: u64) -> Result<Overview, StoreError> {
        const HOUR: i64 = 3_600_000;
        let since = since_ms as i64;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (created_ms - ?1) / ?2 AS h, count(*),
                        sum(state = 'Failed'), sum(state IN ('Succeeded', 'Failed', 'Cancelled'))
                 FROM flow_runs WHERE created_ms >= ?1 GROUP BY h ORDER BY h",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![since, HOUR], |r| {
                Ok(HourStat {
                    hour: r.get::<_, i64>(0)?.max(0) as u32,
                    runs: r.get::<_, i64>(1)? as u64,
                    failed: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                    ended: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                })
            })
            .map_err(|e| self.fail(e))?;
        let hours = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.fail(e))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "WITH d AS (
                    SELECT flow, state, ended_ms - coalesce(started_ms, created_ms) AS ms
                    FROM flow_runs WHERE created_ms >= ?1 AND ended_ms IS NOT NULL
                 ), r AS (
                    SELECT flow, state, ms,
                        row_number() OVER (PARTITION BY flow ORDER BY ms) AS i,
                        count(*) OVER (PARTITION BY flow) AS n
                    FROM d
                 )
                 SELECT flow, n, sum(state = 'Failed'),
                    max(CASE WHEN i = (n * 50 + 99) / 100 THEN ms END),
                    max(CASE WHEN i = (n * 95 + 99) / 100 THEN ms END)
                 FROM r GROUP BY flow ORDER BY n DESC, flow LIMIT ?2",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![since, OVERVIEW_FLOWS as i64], |r| {
                Ok(FlowStat {
                    flow: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    ended: r.get::<_, i64>(1)? as u64,
                    failed: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                    p50_ms: r.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as u64,
                    p95_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
                })
            })
            .map_err(|e| self.fail(e))?;
        let flows = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.fail(e))?;
        Ok(Overview {
            since_ms,
            hours,
            flows,
        })
    }

    /// A page of runs, newest first. Every filter is served by an index on
    /// `(filter, created_ms, id)`, and the page starts after the cursor by
    /// key, never by offset.
    pub fn list(&self, q: &RunQuery) -> Result<RunPage, StoreError> {
        let limit = match q.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut filters = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |v: rusqlite::types::Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(flow) = &q.flow {
            filters.push(format!("flow = {}", arg(flow.clone().into())));
        }
        if let Some(state) = q.state {
            filters.push(format!(
                "state = {}",
                arg(state_text(state).to_string().into())
            ));
        }
        if let Some(since) = q.since_ms {
            filters.push(format!("created_ms >= {}", arg((since as i64).into())));
        }
        if let Some(until) = q.until_ms {
            filters.push(format!("created_ms < {}", arg((until as i64).into())));
        }
        if let Some(after) = &q.after {
            let ms = arg((after.created_ms as i64).into());
            let id = arg(after.id.clone().into());
            filters.push(format!("(created_ms, id) < ({ms}, {id})"));
        }
        let limit_arg = arg(((limit + 1) as i64).into());
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM flow_runs {filter} ORDER BY created_ms DESC, id DESC LIMIT {limit_arg}",
            Self::COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| self.summary(r))
            .map_err(|e| self.fail(e))?;
        let mut runs = Vec::with_capacity(limit + 1);
        for row in rows {
            runs.push(self.with_report(row.map_err(|e| self.fail(e))?)?);
        }
        let next = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(|r| Cursor {
                created_ms: r.created_ms,
                id: r.id.clone(),
            })
        } else {
            None
        };
        Ok(RunPage { runs, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run<'a>(
        id: &'a str,
        source: &'a FlowSource,
        snapshot: &'a FlowSnapshot,
        now_ms: u64,
    ) -> NewRun<'a> {
        NewRun {
            id,
            flow: "f",
            request: None,
            source,
            snapshot,
            retry_of: None,
            slot: None,
            now_ms,
        }
    }

    fn snap(state: FlowState) -> FlowSnapshot {
        FlowSnapshot {
            state,
            error: None,
            reply_to: "q".into(),
            worker_wait_ms: 1000,
            started_ms: 1,
            finished_ms: None,
            tasks: vec![],
        }
    }

    fn update(store: &RunStore, id: &str, state: FlowState, ended: Option<u64>, now: u64) {
        let text = serde_json::to_string(&snap(state)).unwrap();
        let report = RunReport {
            flow: "f".into(),
            flow_run: id.into(),
            state,
            elapsed_ms: 3,
            error: None,
            tasks: vec![],
        };
        let report = serde_json::to_string(&report).unwrap();
        store
            .update(
                id,
                &RunUpdate {
                    snapshot: &text,
                    state,
                    report: Some(&report),
                    ended_ms: ended,
                    now_ms: now,
                },
            )
            .unwrap();
    }

    fn test_source() -> FlowSource {
        FlowSource {
            file: "f.toml".into(),
            text: "[flow]".into(),
            base: "/x".into(),
            params: Default::default(),
        }
    }

    fn temp_db(name: &str) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("conveyor-runstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.db");
        (dir, path)
    }

    #[test]
    fn runs_survive_reopening_and_a_second_opener_is_refused() {
        let (dir, path) = temp_db("reopen");
        let source = test_source();
        {
            let store = RunStore::open(&path).unwrap();
            let running = snap(FlowState::Running);
            store
                .insert(&NewRun {
                    request: Some(("req-1", "client-q")),
                    ..new_run("a", &source, &running, 5)
                })
                .unwrap();
            store.insert(&new_run("b", &source, &running, 6)).unwrap();
            update(&store, "b", FlowState::Succeeded, Some(7), 7);
            let second = RunStore::open(&path)
                .err()
                .expect("a second coordinator must not open a locked database");
            assert!(
                second.to_string().contains("another coordinator"),
                "{second}"
            );
            // A retry, with params: both read back as its origin.
            let with_params = FlowSource {
                params: [("day".to_string(), "2026-11-30".to_string())].into(),
                ..source.clone()
            };
            store
                .insert(&NewRun {
                    retry_of: Some("b"),
                    ..new_run("c", &with_params, &running, 8)
                })
                .unwrap();
            // Readers are welcome while the coordinator runs.
            let reader = RunReader::open(&path).unwrap();
            let origin = reader.origin("c").unwrap().unwrap();
            assert_eq!(origin.params, with_params.params);
            assert_eq!(origin.retry_of.as_deref(), Some("b"));
            assert_eq!(reader.origin("b").unwrap(), Some(RunOrigin::default()));
            assert_eq!(reader.origin("nosuch").unwrap(), None);
            let b = reader.get("b").unwrap().unwrap();
            assert_eq!((b.state, b.ended_ms), (FlowState::Succeeded, Some(7)));
            assert_eq!(b.report.unwrap().flow_run, "b");
        }
        let store = RunStore::open(&path).unwrap();
        let runs = store.unfinished().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, "a");
        assert_eq!(runs[0].source, source);
        assert_eq!(runs[0].client, Some(("req-1".into(), "client-q".into())));
        assert_eq!(store.find_request("req-1").unwrap().unwrap().id, "a");
        assert!(store.find_request("req-2").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A save that keeps the state writes the snapshot without touching
    /// the state; one that changes it moves the run between the counts.
    #[test]
    fn saves_with_and_without_a_state_change_keep_runs_and_counts_right() {
        let (dir, path) = temp_db("saves");
        let source = test_source();
        let store = RunStore::open(&path).unwrap();
        let running = snap(FlowState::Running);
        store.insert(&new_run("a", &source, &running, 5)).unwrap();
        let reader = RunReader::open(&path).unwrap();
        let counts = || {
            let mut c = reader.counts(None).unwrap();
            c.retain(|(_, n)| *n > 0);
            c
        };
        assert_eq!(counts(), vec![(FlowState::Running, 1)]);
        // The same state, a new snapshot (one more task): saved.
        let mut more = snap(FlowState::Running);
        more.worker_wait_ms = 2000;
        let text = serde_json::to_string(&more).unwrap();
        let save = |state, text: &str| {
            store
                .update(
                    "a",
                    &RunUpdate {
                        snapshot: text,
                        state,
                        report: None,
                        ended_ms: None,
                        now_ms: 6,
                    },
                )
                .unwrap()
        };
        save(FlowState::Running, &text);
        assert_eq!(store.unfinished().unwrap()[0].snapshot.worker_wait_ms, 2000);
        assert_eq!(counts(), vec![(FlowState::Running, 1)]);
        // A new state: the counts and the index on the state follow.
        update(&store, "a", FlowState::Succeeded, Some(7), 7);
        assert_eq!(counts(), vec![(FlowState::Succeeded, 1)]);
        assert!(store.unfinished().unwrap().is_empty());
        let page = reader
            .list(&RunQuery {
                state: Some(FlowState::Succeeded),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.runs.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runs_list_newest_first_by_keyset_pages_and_filters() {
        let (dir, path) = temp_db("list");
        let store = RunStore::open(&path).unwrap();
        let source = FlowSource {
            file: "f.toml".into(),
            text: String::new(),
            base: "/".into(),
            params: Default::default(),
        };
        // 7 runs of two flows; two share a creation time, so the id breaks the tie.
        for (i, (flow, ms)) in [
            ("a", 10),
            ("b", 11),
            ("a", 12),
            ("a", 12),
            ("b", 13),
            ("a", 14),
            ("a", 15),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("{flow}-{i:012}");
            let running = snap(FlowState::Running);
            store
                .insert(&NewRun {
                    flow,
                    ..new_run(&id, &source, &running, ms)
                })
                .unwrap();
            if i % 2 == 0 {
                update(&store, &id, FlowState::Succeeded, Some(ms + 1), ms + 1);
            }
        }
        let reader = RunReader::open(&path).unwrap();
        let mut q = RunQuery {
            limit: 3,
            ..RunQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = reader.list(&q).unwrap();
            assert!(page.runs.len() <= 3);
            seen.extend(page.runs.iter().map(|r| r.id.clone()));
            match page.next {
                Some(next) => q.after = Some(Cursor::decode(&next.encode()).unwrap()),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "a-000000000006",
                "a-000000000005",
                "b-000000000004",
                "a-000000000003",
                "a-000000000002",
                "b-000000000001",
                "a-000000000000",
            ]
        );
        let only = |q: RunQuery| -> Vec<String> {
            reader
                .list(&q)
                .unwrap()
                .runs
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(
            only(RunQuery {
                flow: Some("b".into()),
                ..RunQuery::default()
            }),
            ["b-000000000004", "b-000000000001"]
        );
        assert_eq!(
            only(RunQuery {
                state: Some(FlowState::Succeeded),
                since_ms: Some(11),
                until_ms: Some(15),
                ..RunQuery::default()
            }),
            ["b-000000000004", "a-000000000002"]
        );
        let plan: String = reader
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM flow_runs WHERE flow = 'a' AND (created_ms, id) < (12, 'x') ORDER BY created_ms DESC, id DESC LIMIT 5",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("flow_runs_by_flow"), "{plan}");
        // 4 of the 7 were saved Succeeded; the counts follow every change.
        assert_eq!(
            reader.counts(None).unwrap(),
            [(FlowState::Running, 3), (FlowState::Succeeded, 4)]
        );
        assert_eq!(
            reader.counts(Some("b")).unwrap(),
            [(FlowState::Running, 1), (FlowState::Succeeded, 1)]
        );
        update(&store, "b-000000000001", FlowState::Failed, Some(20), 20);
        assert_eq!(
            reader.counts(Some("b")).unwrap(),
            [(FlowState::Succeeded, 1), (FlowState::Failed, 1)]
        );
        assert!(reader.counts(Some("nosuch")).unwrap().is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_slot_is_recorded_with_its_run_and_only_once() {
        let (dir, path) = temp_db("slots");
        let store = RunStore::open(&path).unwrap();
        let source = FlowSource {
            file: "f.toml".into(),
            text: String::new(),
            base: "/".into(),
            params: Default::default(),
        };
        let running = snap(FlowState::Running);
        let slot = |ms| {
            Some(ScheduleSlot {
                flow: "f".into(),
                slot_ms: ms,
            })
        };
        assert_eq!(store.last_slot("f").unwrap(), None);
        for (id, ms) in [("f-000000000001", 1000), ("f-000000000002", 2000)] {
            store
                .insert(&NewRun {
                    slot: slot(ms),
                    ..new_run(id, &source, &running, ms)
                })
                .unwrap();
        }
        assert_eq!(store.last_slot("f").unwrap(), Some(2000));
        assert_eq!(store.last_slot("g").unwrap(), None);
        // The same slot again: refused, and its run is not recorded either.
        let again = store.insert(&NewRun {
            slot: slot(2000),
            ..new_run("f-000000000003", &source, &running, 3000)
        });
        assert!(again.is_err());
        let reader = RunReader::open(&path).unwrap();
        assert!(reader.get("f-000000000003").unwrap().is_none());
        assert_eq!(
            reader.last_run("f").unwrap().as_deref(),
            Some("f-000000000002")
        );
        assert_eq!(reader.last_run("g").unwrap(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_of_the_previous_version_gains_the_new_columns() {
        let (dir, path) = temp_db("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            old.execute(
                "INSERT INTO flow_runs (id, flow_file, flow_text, flow_base, state, snapshot, created_ms, updated_ms)
                 VALUES ('colors-0123456789ab', 'f.toml', '', '/', 'Succeeded', '{}', 1, 2)",
                [],
            )
            .unwrap();
        }
        let store = RunStore::open(&path).unwrap();
        let reader = RunReader::open(&path).unwrap();
        let run = reader.get("colors-0123456789ab").unwrap().unwrap();
        assert_eq!(
            (run.flow.as_str(), run.state),
            ("colors", FlowState::Succeeded)
        );
        assert!(run.report.is_none());
        // The counts start from the runs the old database holds.
        assert_eq!(reader.counts(None).unwrap(), [(FlowState::Succeeded, 1)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
