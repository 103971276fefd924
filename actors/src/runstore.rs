/*!
The coordinator's durable memory: one SQLite row per flow run.

A coordinator node writes a run's snapshot *before* it publishes the task
messages the snapshot says were dispatched, and *before* it acks the worker
update that changed it. After a SIGKILL it reopens the database, rebuilds every
unfinished run, and publishes again each attempt that was recorded but never
confirmed by the broker. Results that arrived meanwhile wait in its durable
reply queue.

The database runs in WAL mode with `synchronous = NORMAL`: a commit survives
the process being killed at any point; a power loss may lose the last few
commits, which then replay as redeliveries that the fences absorb. The file is
opened with an exclusive lock, so two coordinators cannot share it.

`conveyor run` without a coordinator node keeps its runs in memory
([`RunStore::Memory`]): the run lives and dies with that process.
*/

use std::path::{Path, PathBuf};

use conveyor_schemas::FlowState;
use rusqlite::{params, Connection};

use conveyor_flow::FlowSource;

use crate::state::FlowSnapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coordinator database {}: {message}", path.display())]
    Db { path: PathBuf, message: String },
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
    Sqlite { conn: Connection, path: PathBuf },
}

const SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS flow_runs_unfinished ON flow_runs(state)
    WHERE state NOT IN ('Succeeded', 'Failed');
";

fn state_text(s: FlowState) -> &'static str {
    match s {
        FlowState::Running => "Running",
        FlowState::WaitingForWorker => "WaitingForWorker",
        FlowState::Succeeded => "Succeeded",
        FlowState::Failed => "Failed",
    }
}

impl RunStore {
    /// Opens (creating if needed) the database at `path`, and locks it.
    pub fn open(path: &Path) -> Result<RunStore, StoreError> {
        let err = |message: String| StoreError::Db {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let locked = |e: rusqlite::Error| {
            let text = e.to_string();
            if text.contains("locked") || text.contains("busy") {
                err("it is in use by another coordinator process (each coordinator node needs a database of its own)".into())
            } else {
                err(text)
            }
        };
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_millis(0))
            .map_err(|e| err(e.to_string()))?;
        let setup = conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        );
        setup.map_err(locked)?;
        // The exclusive lock is taken by the first write.
        conn.execute_batch(SCHEMA).map_err(locked)?;
        Ok(RunStore::Sqlite {
            conn,
            path: path.to_path_buf(),
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

    /// Records a new run. `request` is the submission's (request id, client queue).
    pub fn insert(
        &self,
        id: &str,
        request: Option<(&str, &str)>,
        source: &FlowSource,
        snapshot: &FlowSnapshot,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(());
        };
        let snap = serde_json::to_string(snapshot).map_err(|e| self.fail(e))?;
        conn.execute(
            "INSERT INTO flow_runs (id, request_id, client_queue, flow_file, flow_text, flow_base, state, snapshot, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![
                id,
                request.map(|r| r.0),
                request.map(|r| r.1),
                source.file,
                source.text,
                source.base,
                state_text(snapshot.state),
                snap,
                now_ms as i64
            ],
        )
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Saves a run's new snapshot.
    pub fn update(
        &self,
        id: &str,
        snapshot: &str,
        state: FlowState,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let RunStore::Sqlite { conn, .. } = self else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare_cached(
                "UPDATE flow_runs SET snapshot = ?2, state = ?3, updated_ms = ?4 WHERE id = ?1",
            )
            .map_err(|e| self.fail(e))?;
        stmt.execute(params![id, snapshot, state_text(state), now_ms as i64])
            .map_err(|e| self.fail(e))?;
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
            "SELECT id, flow_file, flow_text, flow_base, request_id, client_queue, snapshot
             FROM flow_runs {filter} ORDER BY created_ms, id"
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FlowSource {
                        file: r.get(1)?,
                        text: r.get(2)?,
                        base: r.get(3)?,
                    },
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, source, request, queue, snap) = row.map_err(|e| self.fail(e))?;
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

    /// Every run not yet Succeeded or Failed, oldest first.
    pub fn unfinished(&self) -> Result<Vec<StoredRun>, StoreError> {
        self.select("WHERE state NOT IN ('Succeeded', 'Failed')", [])
    }
}
#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn runs_survive_reopening_and_a_second_opener_is_refused() {
        let dir = std::env::temp_dir().join(format!("conveyor-runstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.db");
        let source = FlowSource {
            file: "f.toml".into(),
            text: "[flow]".into(),
            base: "/x".into(),
        };
        {
            let store = RunStore::open(&path).unwrap();
            store
                .insert(
                    "a",
                    Some(("req-1", "client-q")),
                    &source,
                    &snap(FlowState::Running),
                    5,
                )
                .unwrap();
            store
                .insert("b", None, &source, &snap(FlowState::Running), 6)
                .unwrap();
            let done = serde_json::to_string(&snap(FlowState::Succeeded)).unwrap();
            store.update("b", &done, FlowState::Succeeded, 7).unwrap();
            assert!(
                RunStore::open(&path).is_err(),
                "a second coordinator must not open a locked database"
            );
        }
        let store = RunStore::open(&path).unwrap();
        let runs = store.unfinished().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].id, "a");
        assert_eq!(runs[0].source, source);
        assert_eq!(runs[0].client, Some(("req-1".into(), "client-q".into())));
        assert_eq!(store.find_request("req-1").unwrap().unwrap().id, "a");
        assert!(store.find_request("req-2").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
