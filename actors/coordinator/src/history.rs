/*!
Attempt history and task logs, in the coordinator's SQLite database beside
the runs ([`crate::runstore`]).

- `task_attempts`: one row per attempt of a task run: node, start, end, last
  sign of life, outcome, rows and bytes, error. Written as worker updates
  arrive ([`AttemptEvent`]).
- `task_logs`: the log lines workers ship ([`TaskLogs`], and the last
  batch inside an attempt's final update, [`TaskUpdate::logs`]), at most
  `[coordinator] log_lines` per attempt; past the cap, one line says so and
  counts what was dropped. `seq` (the rowid) only grows, so a follower reads
  "after the last seq seen".
- `task_log_streams`: per delivery of an attempt, how many of its lines are
  stored, so that a batch delivered twice is stored once.

Writes never run on the coordinator actor's thread: [`History`] hands them
to a writer thread with a connection of its own, which groups whatever is
waiting into one transaction (so a burst of small flows costs a few commits,
not one per message). A log message, or an update carrying lines, is acked
once its transaction commits, so a coordinator killed before that gets it
again. An update without lines is acked as soon as the run's own state is
saved; its attempt's row is written just after: a coordinator killed in
between misses that change of the row, and the attempt then shows as it
was last recorded.
Reads go through the handle's read-only connection ([`read_logs`],
[`read_attempts`]).
*/

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conveyor_schemas::{ErrorKind, TaskError, TaskLogs, TaskUpdate, UpdateStatus};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::runstore::{RunReader, StoreError};
use crate::view::{AttemptView, LogLine, LogPage, LogQuery};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS task_attempts (
    run          TEXT NOT NULL,
    task         TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    delivery     INTEGER NOT NULL DEFAULT 1,
    node         TEXT,
    started_ms   INTEGER,
    ended_ms     INTEGER,
    last_seen_ms INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    rows_in      INTEGER,
    rows_out     INTEGER,
    bytes_in     INTEGER,
    bytes_out    INTEGER,
    error        TEXT,
    log_lines    INTEGER NOT NULL DEFAULT 0,
    log_dropped  INTEGER NOT NULL DEFAULT 0,
    log_cap_seq  INTEGER,
    PRIMARY KEY (run, task, attempt)
);
CREATE TABLE IF NOT EXISTS task_logs (
    seq      INTEGER PRIMARY KEY,
    run      TEXT NOT NULL,
    task     TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    ts_ms    INTEGER NOT NULL,
    level    TEXT NOT NULL,
    node     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_logs_by_task ON task_logs(run, task, seq);
CREATE TABLE IF NOT EXISTS task_log_streams (
    run       TEXT NOT NULL,
    task      TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    delivery  INTEGER NOT NULL,
    next_line INTEGER NOT NULL,
    closed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, task, attempt, delivery)
);
";

/// Most log messages waiting for the writer; past it, the reply pump waits
/// (the broker keeps the rest) rather than memory growing.
const LOG_BACKLOG: usize = 256;

/// Most jobs in one transaction. SQLite has one writer at a time, and the
/// coordinator's own saves wait while this thread writes: a small group
/// holds the lock for a millisecond or so, not for as long as a backlog.
const GROUP: usize = 64;

/// What an update from a worker says about its attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptEvent {
    pub run: String,
    pub task: String,
    pub attempt: u32,
    pub delivery: u32,
    pub node: String,
    /// When the coordinator heard it, in ms since the epoch.
    pub at_ms: u64,
    pub what: AttemptChange,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttemptChange {
    Started,
    Progress {
        rows: u64,
    },
    Succeeded {
        rows_in: u64,
        rows_out: u64,
        bytes_in: Option<u64>,
        bytes_out: Option<u64>,
    },
    Failed(TaskError),
}

impl AttemptEvent {
    pub fn of_update(update: &TaskUpdate, at_ms: u64) -> AttemptEvent {
        let what = match &update.status {
            UpdateStatus::Started => AttemptChange::Started,
            UpdateStatus::Progress { rows } => AttemptChange::Progress { rows: *rows },
            UpdateStatus::Succeeded(o) => AttemptChange::Succeeded {
                rows_in: o.rows_in,
                rows_out: o.rows_out,
                bytes_in: o.bytes_in,
                bytes_out: o.bytes_out,
            },
            UpdateStatus::Failed { error } => AttemptChange::Failed(error.clone()),
        };
        AttemptEvent {
            run: update.flow_run.clone(),
            task: update.task.clone(),
            attempt: update.attempt,
            delivery: update.delivery,
            node: update.node.clone(),
            at_ms,
            what,
        }
    }
}

enum Job {
    Attempt(AttemptEvent),
    Logs {
        logs: TaskLogs,
        done: oneshot::Sender<Result<(), StoreError>>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
}

/// The coordinator's writer of attempts and logs: cheap to clone; the
/// writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct History {
    jobs: mpsc::UnboundedSender<Job>,
    backlog: Arc<Semaphore>,
}

impl History {
    /// Creates the tables in the database at `path` (already opened by the
    /// run store), and starts the writer thread. `log_lines` caps the lines
    /// kept per attempt.
    pub fn open(path: &Path, log_lines: u32) -> Result<History, StoreError> {
        let conn = open_writer(path)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            cap: u64::from(log_lines),
        };
        std::thread::Builder::new()
            .name("conveyor-history".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Db {
                path: path.to_path_buf(),
                message: format!("cannot start the history writer: {e}"),
            })?;
        Ok(History {
            jobs,
            backlog: Arc::new(Semaphore::new(LOG_BACKLOG)),
        })
    }

    /// Records what an update says about its attempt. Never waits.
    pub fn attempt(&self, event: AttemptEvent) {
        let _ = self.jobs.send(Job::Attempt(event));
    }

    /// Hands a batch of log lines to the writer, waiting first while
    /// [`LOG_BACKLOG`] batches are already waiting. The receiver answers
    /// once the lines are committed.
    pub async fn submit_logs(
        &self,
        logs: TaskLogs,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let permit = self
            .backlog
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| writer_stopped())?;
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Job::Logs {
                logs,
                done,
                _permit: permit,
            })
            .map_err(|_| writer_stopped())?;
        Ok(rx)
    }

    /// Stores a batch of log lines; resolves once they are committed.
    pub async fn logs(&self, logs: TaskLogs) -> Result<(), StoreError> {
        self.submit_logs(logs)
            .await?
            .await
            .map_err(|_| writer_stopped())?
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Db {
        path: PathBuf::from("history"),
        message: "the history writer has stopped".into(),
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    cap: u64,
}

/// How long the writer gathers jobs after the first one, so that a burst
/// is written in a few transactions rather than one per job (each takes the
/// write lock the coordinator's saves need too).
const GATHER: Duration = Duration::from_millis(20);

impl Writer {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let drain = |rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>| {
            while jobs.len() < GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        };
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            drain(&mut rx, &mut jobs);
            // Not a backlog: wait for the rest of the burst.
            if jobs.len() < GROUP {
                std::thread::sleep(GATHER);
                drain(&mut rx, &mut jobs);
            }
            let result = self.write(&jobs).map_err(|e| StoreError::Db {
                path: self.path.clone(),
                message: e.to_string(),
            });
            if let Err(e) = &result {
                warn!(error = %e, jobs = jobs.len(), "Cannot record attempts and task logs");
            }
            for job in jobs {
                if let Job::Logs { done, .. } = job {
                    let _ = done.send(result.clone());
                }
            }
        }
    }

    fn write(&self, jobs: &[Job]) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for job in jobs {
            match job {
                Job::Attempt(ev) => record_attempt(&tx, ev)?,
                Job::Logs { logs, .. } => append_logs(&tx, logs, self.cap)?,
            }
        }
        tx.commit()
    }
}

fn record_attempt(conn: &Connection, ev: &AttemptEvent) -> rusqlite::Result<()> {
    let key = params![
        ev.run,
        ev.task,
        ev.attempt,
        ev.delivery,
        ev.node,
        ev.at_ms as i64
    ];
    // A start may arrive after its result: it never moves the outcome,
    // and never starts the attempt after it ended.
    conn.prepare_cached(
        "INSERT INTO task_attempts (run, task, attempt, delivery, node, started_ms, last_seen_ms, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'Running')
         ON CONFLICT (run, task, attempt) DO UPDATE SET
            delivery = max(delivery, excluded.delivery),
            node = excluded.node,
            last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?
    .execute(key)?;
    match &ev.what {
        AttemptChange::Started => {
            conn.prepare_cached(
                "UPDATE task_attempts SET started_ms = min(?4, coalesce(ended_ms, ?4))
                 WHERE run = ?1 AND task = ?2 AND attempt = ?3 AND started_ms IS NULL",
            )?
            .execute(params![ev.run, ev.task, ev.attempt, ev.at_ms as i64])?;
        }
        AttemptChange::Progress { rows } => {
            conn.prepare_cached(
                "UPDATE task_attempts SET rows_in = ?4
                 WHERE run = ?1 AND task = ?2 AND attempt = ?3 AND outcome = 'Running'",
            )?
            .execute(params![ev.run, ev.task, ev.attempt, *rows as i64])?;
        }
        AttemptChange::Succeeded {
            rows_in,
            rows_out,
            bytes_in,
            bytes_out,
        } => {
            conn.prepare_cached(
                "UPDATE task_attempts SET outcome = 'Succeeded', ended_ms = ?4,
                    started_ms = coalesce(started_ms, ?4), rows_in = ?5, rows_out = ?6,
                    bytes_in = ?7, bytes_out = ?8, error = NULL
                 WHERE run = ?1 AND task = ?2 AND attempt = ?3",
            )?
            .execute(params![
                ev.run,
                ev.task,
                ev.attempt,
                ev.at_ms as i64,
                *rows_in as i64,
                *rows_out as i64,
                bytes_in.map(|b| b as i64),
                bytes_out.map(|b| b as i64),
            ])?;
        }
        AttemptChange::Failed(error) => {
            let outcome = match error.kind {
                ErrorKind::Cancelled => "Cancelled",
                ErrorKind::WorkerLost => "Lost",
                _ => "Failed",
            };
            let text = serde_json::to_string(error).unwrap_or_default();
            // A succeeded attempt stays succeeded (its output is committed).
            conn.prepare_cached(
                "UPDATE task_attempts SET outcome = ?4, ended_ms = ?5,
                    started_ms = coalesce(started_ms, ?5), error = ?6
                 WHERE run = ?1 AND task = ?2 AND attempt = ?3 AND outcome != 'Succeeded'",
            )?
            .execute(params![
                ev.run,
                ev.task,
                ev.attempt,
                outcome,
                ev.at_ms as i64,
                text
            ])?;
        }
    }
    Ok(())
}

fn append_logs(conn: &Connection, logs: &TaskLogs, cap: u64) -> rusqlite::Result<()> {
    let (run, task, attempt) = (&logs.flow_run, &logs.task, logs.attempt);
    let stored: Option<u64> = conn
        .prepare_cached(
            "SELECT next_line FROM task_log_streams
             WHERE run = ?1 AND task = ?2 AND attempt = ?3 AND delivery = ?4",
        )?
        .query_row(params![run, task, attempt, logs.delivery], |r| {
            r.get::<_, i64>(0).map(|n| n as u64)
        })
        .optional()?;
    let next = stored.unwrap_or(0);
    // Batches are disjoint runs of lines, stored whole or not at all: one
    // that starts before the next line expected was stored already (the
    // broker delivered it again).
    if stored.is_some() && logs.first_line < next {
        return Ok(());
    }
    let now = logs.lines.last().map(|l| l.ts_ms).unwrap_or(0);
    conn.prepare_cached(
        "INSERT INTO task_attempts (run, task, attempt, delivery, node, last_seen_ms, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'Running')
         ON CONFLICT (run, task, attempt) DO NOTHING",
    )?
    .execute(params![
        run,
        task,
        attempt,
        logs.delivery,
        logs.node,
        now as i64
    ])?;
    let (mut kept, mut dropped, cap_seq): (u64, u64, Option<i64>) = conn
        .prepare_cached(
            "SELECT log_lines, log_dropped, log_cap_seq FROM task_attempts
             WHERE run = ?1 AND task = ?2 AND attempt = ?3",
        )?
        .query_row(params![run, task, attempt], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get(2)?,
            ))
        })?;
    let mut cap_seq = cap_seq;
    let mut insert = conn.prepare_cached(
        "INSERT INTO task_logs (run, task, attempt, ts_ms, level, node, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let worker_dropped = (logs.dropped > 0).then(|| conveyor_schemas::TaskLogLine {
        ts_ms: logs.lines.first().map(|l| l.ts_ms).unwrap_or(now),
        level: "WARN".into(),
        message: format!(
            "{} lines were dropped by the worker: the task wrote them faster than they could be shipped",
            logs.dropped
        ),
    });
    let fresh = logs.lines.iter();
    for line in worker_dropped.iter().chain(fresh) {
        if kept < cap {
            insert.execute(params![
                run,
                task,
                attempt,
                line.ts_ms as i64,
                level_of(&line.level),
                logs.node,
                clip(&line.message)
            ])?;
            kept += 1;
            continue;
        }
        if cap_seq.is_none() {
            insert.execute(params![
                run,
                task,
                attempt,
                line.ts_ms as i64,
                "WARN",
                logs.node,
                cap_message(cap, 0)
            ])?;
            cap_seq = Some(conn.last_insert_rowid());
        }
        dropped += 1;
    }
    if let (Some(seq), true) = (cap_seq, dropped > 0) {
        conn.prepare_cached("UPDATE task_logs SET message = ?2 WHERE seq = ?1")?
            .execute(params![seq, cap_message(cap, dropped)])?;
    }
    conn.prepare_cached(
        "UPDATE task_attempts SET log_lines = ?4, log_dropped = ?5, log_cap_seq = ?6
         WHERE run = ?1 AND task = ?2 AND attempt = ?3",
    )?
    .execute(params![
        run,
        task,
        attempt,
        kept as i64,
        dropped as i64,
        cap_seq
    ])?;
    let next_line = next.max(logs.first_line + logs.lines.len() as u64);
    conn.prepare_cached(
        "INSERT INTO task_log_streams (run, task, attempt, delivery, next_line, closed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run, task, attempt, delivery) DO UPDATE SET
            next_line = max(next_line, excluded.next_line),
            closed = max(closed, excluded.closed)",
    )?
    .execute(params![
        run,
        task,
        attempt,
        logs.delivery,
        next_line as i64,
        logs.last as i64
    ])?;
    Ok(())
}

/// Longest message stored, in bytes: a worker in another language may not
/// cut its lines as the Rust workers do.
const MAX_STORED_MESSAGE: usize = 8 * 1024;

fn clip(message: &str) -> &str {
    if message.len() <= MAX_STORED_MESSAGE {
        return message;
    }
    let mut cut = MAX_STORED_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    &message[..cut]
}

/// One of the five level names; anything else is stored as `INFO`.
fn level_of(level: &str) -> &'static str {
    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        .into_iter()
        .find(|l| l.eq_ignore_ascii_case(level))
        .unwrap_or("INFO")
}

fn cap_message(cap: u64, dropped: u64) -> String {
    format!(
        "Log cap reached: this coordinator keeps at most {cap} lines per attempt ([coordinator] log_lines); {dropped} later lines were dropped"
    )
}

/// Log lines to read; see [`crate::view::LogQuery`].
pub const DEFAULT_LOG_PAGE: usize = 1_000;
pub const MAX_LOG_PAGE: usize = 10_000;

/// How long after its attempt ended a task's log may still get lines (the
/// last batch travels beside the result, not before it).
pub const LATE_LINES: Duration = Duration::from_secs(5);

/// Whether a run may still get log lines: it is in flight, or it ended
/// within [`LATE_LINES`] (its last batches may still be on their way).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunLiveness {
    pub live: bool,
    pub ended_ms: Option<u64>,
}

/// A page of log lines of `task` in `run`, after `after`, and whether more
/// may come.
pub fn read_logs(
    conn: &Connection,
    q: &LogQuery,
    run: RunLiveness,
    now_ms: u64,
) -> rusqlite::Result<(Vec<LogLine>, bool)> {
    let recently = |ended: u64| now_ms.saturating_sub(ended) < LATE_LINES.as_millis() as u64;
    let run_live = run.live;
    let run_recent = run_live || run.ended_ms.is_some_and(recently);
    let limit = match q.limit {
        0 => DEFAULT_LOG_PAGE,
        n => n.min(MAX_LOG_PAGE),
    };
    let after = q.after.unwrap_or(0) as i64;
    let attempt = q.attempt.map(i64::from);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, attempt, ts_ms, level, node, message FROM task_logs
         WHERE run = ?1 AND task = ?2 AND seq > ?3 AND (?4 IS NULL OR attempt = ?4)
         ORDER BY seq LIMIT ?5",
    )?;
    let lines = stmt
        .query_map(
            params![q.run, q.task, after, attempt, limit as i64],
            log_line,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // More may come while an attempt runs, or for a little while after it
    // ended until its last batch is in.
    let mut stmt = conn.prepare_cached(
        "SELECT a.attempt, a.outcome, a.ended_ms,
            EXISTS (SELECT 1 FROM task_log_streams s WHERE s.run = a.run AND s.task = a.task
                    AND s.attempt = a.attempt AND s.delivery = a.delivery AND s.closed = 1)
         FROM task_attempts a WHERE a.run = ?1 AND a.task = ?2 AND (?3 IS NULL OR a.attempt = ?3)",
    )?;
    let mut live = false;
    let mut attempts = 0;
    let rows = stmt.query_map(params![q.run, q.task, attempt], |r| {
        Ok((
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    for row in rows {
        let (outcome, ended, closed) = row?;
        attempts += 1;
        if closed {
            continue;
        }
        // Still running; or ended (it, or its run) so recently that its
        // last lines may not be in yet.
        let running = outcome == "Running" && run_recent;
        let late = ended.is_some_and(|e| recently(e as u64));
        live |= running || late;
    }
    // A task not yet started, of a run in flight, may still log; and the
    // attempts of a run that just ended may not be recorded yet.
    if (q.attempt.is_none() && run_live) || (attempts == 0 && run_recent) {
        live = true;
    }
    Ok((lines, live))
}

/// A log line from a row of `seq, attempt, ts_ms, level, node, message`.
fn log_line(r: &rusqlite::Row) -> rusqlite::Result<LogLine> {
    Ok(LogLine {
        seq: r.get::<_, i64>(0)? as u64,
        attempt: r.get(1)?,
        ts_ms: r.get::<_, i64>(2)? as u64,
        level: r.get(3)?,
        node: r.get(4)?,
        message: r.get(5)?,
    })
}

/// Every attempt of every task of `run`, in start order. An attempt still
/// `Running` that a later attempt replaced, or whose run is no longer in
/// flight, is `Lost` (`Cancelled` if its run was), and ends where it was
/// last seen.
pub fn read_attempts(
    conn: &Connection,
    run: &str,
    run_live: bool,
) -> rusqlite::Result<Vec<AttemptView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT task, attempt, delivery, node, started_ms, ended_ms, last_seen_ms, outcome,
            rows_in, rows_out, bytes_in, bytes_out, error,
            EXISTS (SELECT 1 FROM task_attempts b WHERE b.run = a.run AND b.task = a.task
                    AND b.attempt > a.attempt),
            (SELECT state FROM flow_runs f WHERE f.id = a.run),
            (SELECT ended_ms FROM flow_runs f WHERE f.id = a.run)
         FROM task_attempts a WHERE run = ?1
         ORDER BY coalesce(started_ms, last_seen_ms), task, attempt",
    )?;
    let opt = |v: Option<i64>| v.map(|n| n as u64);
    let rows = stmt.query_map(params![run], |r| {
        let outcome: String = r.get(7)?;
        let superseded: bool = r.get(13)?;
        let last_seen: i64 = r.get(6)?;
        let lost = outcome == "Running" && (superseded || !run_live);
        // An attempt aborted because its run was cancelled reports nothing.
        let run_state: Option<String> = r.get(14)?;
        let run_ended: Option<i64> = r.get(15)?;
        // Aborted by its run's cancel, it ended when the run did; lost, it
        // ended where it was last seen.
        let (gone, died_ms) = match run_state.as_deref() {
            Some("Cancelled") if !superseded => {
                ("Cancelled", last_seen.max(run_ended.unwrap_or(last_seen)))
            }
            _ => ("Lost", last_seen),
        };
        let error: Option<String> = r.get(12)?;
        Ok(AttemptView {
            task: r.get(0)?,
            attempt: r.get(1)?,
            delivery: r.get(2)?,
            node: r.get(3)?,
            started_ms: opt(r.get(4)?),
            ended_ms: if lost {
                Some(died_ms as u64)
            } else {
                opt(r.get(5)?)
            },
            outcome: if lost { gone.into() } else { outcome },
            rows_in: opt(r.get(8)?),
            rows_out: opt(r.get(9)?),
            bytes_in: opt(r.get(10)?),
            bytes_out: opt(r.get(11)?),
            error: error.and_then(|e| serde_json::from_str(&e).ok()),
        })
    })?;
    rows.collect()
}

impl RunReader {
    /// A page of a task's log lines, as [`crate::handle::CoordinatorHandle::logs`]
    /// reads them; `run_live` says whether the coordinator holds the run in
    /// flight (a reader without its coordinator passes false). Does not check
    /// that the run or task exists.
    pub fn task_logs(&self, q: &LogQuery, run_live: bool) -> Result<LogPage, StoreError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ended_ms = match run_live {
            true => None,
            false => self.get(&q.run)?.and_then(|run| run.ended_ms),
        };
        let run = RunLiveness {
            live: run_live,
            ended_ms,
        };
        let (lines, live) = self.query(|c| read_logs(c, q, run, now_ms))?;
        Ok(LogPage { lines, live })
    }

    /// The last `limit` log lines of a task's attempts (one, or all) before
    /// sequence number `before` (all if none), oldest first: a bounded tail,
    /// read backwards through the `(run, task, seq)` key.
    pub fn task_log_tail(
        &self,
        run: &str,
        task: &str,
        attempt: Option<u32>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        let limit = limit.clamp(1, MAX_LOG_PAGE);
        let before = before
            .map(|b| b.min(i64::MAX as u64) as i64)
            .unwrap_or(i64::MAX);
        let attempt = attempt.map(i64::from);
        self.query(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, attempt, ts_ms, level, node, message FROM task_logs
                 WHERE run = ?1 AND task = ?2 AND seq < ?3 AND (?4 IS NULL OR attempt = ?4)
                 ORDER BY seq DESC LIMIT ?5",
            )?;
            let mut lines = stmt
                .query_map(params![run, task, before, attempt, limit as i64], log_line)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            lines.reverse();
            Ok(lines)
        })
    }

    /// Every attempt of every task of `run`, in start order; see [`read_attempts`].
    pub fn attempts(&self, run: &str, run_live: bool) -> Result<Vec<AttemptView>, StoreError> {
        self.query(|c| read_attempts(c, run, run_live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_schemas::{TaskLogLine, SCHEMA_VERSION};

    fn temp_db(name: &str) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("conveyor-history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.db");
        (dir, path)
    }

    fn batch(attempt: u32, delivery: u32, first: u64, n: u64, last: bool) -> TaskLogs {
        TaskLogs {
            schema_version: SCHEMA_VERSION,
            flow_run: "r".into(),
            task: "t".into(),
            task_run: "r.t".into(),
            attempt,
            node: "w1".into(),
            delivery,
            first_line: first,
            dropped: 0,
            last,
            lines: (first..first + n)
                .map(|i| TaskLogLine {
                    ts_ms: 1000 + i,
                    level: "INFO".into(),
                    message: format!("line {i}"),
                })
                .collect(),
        }
    }

    fn query(attempt: Option<u32>, after: Option<u64>) -> LogQuery {
        LogQuery {
            run: "r".into(),
            task: "t".into(),
            attempt,
            after,
            limit: 0,
        }
    }

    fn in_flight() -> RunLiveness {
        RunLiveness {
            live: true,
            ended_ms: None,
        }
    }

    /// A run that ended long ago.
    fn ended() -> RunLiveness {
        RunLiveness {
            live: false,
            ended_ms: Some(0),
        }
    }

    fn event(attempt: u32, at_ms: u64, what: AttemptChange) -> AttemptEvent {
        AttemptEvent {
            run: "r".into(),
            task: "t".into(),
            attempt,
            delivery: 1,
            node: "w1".into(),
            at_ms,
            what,
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn lines_are_stored_once_in_order_and_capped_with_one_line_that_counts_the_rest() {
        let (dir, path) = temp_db("cap");
        let history = History::open(&path, 5).unwrap();
        block_on(async {
            history.logs(batch(1, 1, 0, 3, false)).await.unwrap();
            // The same batch again (a redelivery), then the rest.
            history.logs(batch(1, 1, 0, 3, false)).await.unwrap();
            history.logs(batch(1, 1, 3, 6, true)).await.unwrap();
            let mut hostile = batch(2, 1, 0, 1, true);
            hostile.lines[0].message = "x".repeat(100_000);
            hostile.lines[0].level = "LOUD".into();
            history.logs(hostile).await.unwrap();
        });
        let conn = Connection::open(&path).unwrap();
        let (lines, _) = read_logs(&conn, &query(Some(1), None), ended(), 0).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts.len(), 6, "{texts:?}");
        assert_eq!(
            &texts[..5],
            ["line 0", "line 1", "line 2", "line 3", "line 4"]
        );
        assert!(
            texts[5].contains("at most 5 lines") && texts[5].contains("4 later lines were dropped"),
            "{}",
            texts[5]
        );
        assert_eq!(lines[5].level, "WARN");
        // Across attempts, seq only grows; a follower reads after the last seen.
        let (all, _) = read_logs(&conn, &query(None, None), ended(), 0).unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let (after, _) = read_logs(&conn, &query(None, Some(all[5].seq)), ended(), 0).unwrap();
        assert_eq!(after.len(), 1);
        // A line from a careless worker is cut and its level made one we know.
        assert_eq!(after[0].attempt, 2);
        assert_eq!(after[0].message.len(), MAX_STORED_MESSAGE);
        assert_eq!(after[0].level, "INFO");
        assert_eq!(after[0].node, "w1");
        drop(history);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn attempts_record_their_node_times_rows_and_outcome_and_a_lost_one_ends_when_last_seen() {
        let (dir, path) = temp_db("attempts");
        let history = History::open(&path, 100).unwrap();
        let error = TaskError {
            kind: ErrorKind::Io,
            message: "download failed".into(),
            retryable: true,
        };
        history.attempt(event(1, 10, AttemptChange::Started));
        history.attempt(event(1, 20, AttemptChange::Failed(error.clone())));
        history.attempt(event(2, 30, AttemptChange::Started));
        history.attempt(event(2, 35, AttemptChange::Progress { rows: 4 }));
        // Attempt 3 starts late: its start arrives after its result.
        history.attempt(event(
            3,
            50,
            AttemptChange::Succeeded {
                rows_in: 9,
                rows_out: 8,
                bytes_in: Some(100),
                bytes_out: None,
            },
        ));
        history.attempt(event(3, 60, AttemptChange::Started));
        // Another run, cancelled while its attempt ran: the worker aborted
        // the attempt and reported nothing.
        history.attempt(AttemptEvent {
            run: "c".into(),
            ..event(1, 70, AttemptChange::Started)
        });
        // A log batch is committed after every event sent before it.
        block_on(history.logs(batch(3, 1, 0, 1, true))).unwrap();
        let conn = Connection::open(&path).unwrap();
        // The run store's table (only the columns read here).
        conn.execute_batch(
            "CREATE TABLE flow_runs (id TEXT PRIMARY KEY, state TEXT, ended_ms INTEGER);
             INSERT INTO flow_runs VALUES ('c', 'Cancelled', 95), ('r', 'Succeeded', 60);",
        )
        .unwrap();
        let attempts = read_attempts(&conn, "r", true).unwrap();
        let seen: Vec<(u32, &str, Option<u64>, Option<u64>)> = attempts
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str(), a.started_ms, a.ended_ms))
            .collect();
        assert_eq!(
            seen,
            [
                (1, "Failed", Some(10), Some(20)),
                (2, "Lost", Some(30), Some(35)),
                (3, "Succeeded", Some(50), Some(50)),
            ]
        );
        assert_eq!(attempts[0].error.as_ref(), Some(&error));
        assert_eq!(attempts[1].rows_in, Some(4));
        assert_eq!(
            (
                attempts[2].rows_in,
                attempts[2].rows_out,
                attempts[2].bytes_in
            ),
            (Some(9), Some(8), Some(100))
        );
        assert_eq!(attempts[2].node.as_deref(), Some("w1"));
        // Its bar ends where the cancel stopped it, not at its last sign of life.
        let cancelled = read_attempts(&conn, "c", false).unwrap();
        assert_eq!(
            (cancelled[0].outcome.as_str(), cancelled[0].ended_ms),
            ("Cancelled", Some(95))
        );
        assert_eq!(read_attempts(&conn, "r", false).unwrap()[1].outcome, "Lost");
        drop(history);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn logs_are_live_while_an_attempt_runs_and_not_once_its_last_batch_is_in() {
        let (dir, path) = temp_db("live");
        let history = History::open(&path, 100).unwrap();
        history.attempt(event(1, 10, AttemptChange::Started));
        block_on(history.logs(batch(1, 1, 0, 2, false))).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert!(
            read_logs(&conn, &query(Some(1), None), in_flight(), 10)
                .unwrap()
                .1
        );
        history.attempt(event(
            1,
            20,
            AttemptChange::Succeeded {
                rows_in: 1,
                rows_out: 1,
                bytes_in: None,
                bytes_out: None,
            },
        ));
        block_on(history.logs(batch(1, 1, 2, 1, false))).unwrap();
        // Ended, its last batch not yet in: live for a little while.
        assert!(
            read_logs(&conn, &query(Some(1), None), in_flight(), 21)
                .unwrap()
                .1
        );
        assert!(
            !read_logs(&conn, &query(Some(1), None), ended(), 20 + 6_000)
                .unwrap()
                .1
        );
        // A run that just ended, whose attempts are not recorded yet: its
        // lines may still come.
        let other = LogQuery {
            run: "just-ended".into(),
            ..query(None, None)
        };
        let just_ended = RunLiveness {
            live: false,
            ended_ms: Some(20),
        };
        assert!(read_logs(&conn, &other, just_ended, 21).unwrap().1);
        assert!(!read_logs(&conn, &other, just_ended, 20 + 6_000).unwrap().1);
        block_on(history.logs(batch(1, 1, 3, 0, true))).unwrap();
        assert!(
            !read_logs(&conn, &query(Some(1), None), in_flight(), 21)
                .unwrap()
                .1
        );
        let (lines, _) = read_logs(&conn, &query(Some(1), None), ended(), 0).unwrap();
        assert_eq!(lines.len(), 3);
        drop(history);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
