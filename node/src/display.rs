/*! Human output: the live progress line and the final summary table. */

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_flow::NodeConfig;
use conveyor_schemas::{RunReport, TaskState};
use tokio::sync::watch;

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Redraws one status line on stderr every 100 ms until finished: the tasks
/// done, each active task (with rows read so far while it runs), elapsed time.
pub fn spawn_progress(rx: watch::Receiver<RunReport>) -> Progress {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let start = Instant::now();
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let mut i = 0;
        let mut err = std::io::stderr();
        while !flag.load(Ordering::Relaxed) {
            let line = status_line(&rx.borrow(), start.elapsed());
            let _ = write!(err, "\r\x1b[2K{} {line}", frames[i % frames.len()]);
            let _ = err.flush();
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    });
    Progress {
        stop,
        thread: Some(thread),
    }
}

fn status_line(r: &RunReport, elapsed: Duration) -> String {
    let done = r
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .count();
    let active: Vec<String> = r
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Running
                    | TaskState::Queued
                    | TaskState::WaitingForWorker
                    | TaskState::RetryWaiting
            )
        })
        .map(|t| match (&t.state, &t.node) {
            (TaskState::Running, Some(n)) => match t.rows_so_far {
                Some(rows) => format!("{} running on {n} ({rows} rows read)", t.name),
                None => format!("{} running on {n}", t.name),
            },
            (TaskState::WaitingForWorker, _) => {
                format!("{} waiting for a live `{}` worker", t.name, t.kind)
            }
            (TaskState::RetryWaiting, _) => format!("{} retrying", t.name),
            (s, _) => format!("{} {s:?}", t.name).to_lowercase(),
        })
        .collect();
    format!(
        "{} [{done}/{} tasks] {} · {:.1}s",
        r.flow,
        r.tasks.len(),
        if active.is_empty() {
            "starting".to_string()
        } else {
            active.join(", ")
        },
        elapsed.as_secs_f64()
    )
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

/// The final table printed after a run.
pub fn summary(r: &RunReport) -> String {
    let mut rows = vec![[
        "TASK".to_string(),
        "KIND".into(),
        "STATE".into(),
        "ATTEMPTS".into(),
        "NODE".into(),
        "ROWS IN".into(),
        "ROWS OUT".into(),
        "OUTPUT".into(),
    ]];
    for t in &r.tasks {
        rows.push([
            t.name.clone(),
            t.kind.to_string(),
            format!("{:?}", t.state),
            t.attempts.to_string(),
            opt(&t.node),
            opt(&t.rows_in),
            opt(&t.rows_out),
            opt(&t.output),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "Flow {} ({}) {:?} in {:.2}s\n",
        r.flow,
        r.flow_run,
        r.state,
        r.elapsed_ms as f64 / 1000.0
    );
    for row in &rows {
        let mut line = String::from(" ");
        for (w, cell) in widths.iter().zip(row) {
            line.push_str(&format!(" {cell:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("error: {e}\n"));
    }
    for t in &r.tasks {
        if let (Some(e), TaskState::Failed) = (&t.error, t.state) {
            if r.error.as_deref().is_none_or(|fe| !fe.contains(&e.message)) {
                out.push_str(&format!("  {}: {}\n", t.name, e.message));
            }
        }
    }
    out
}

pub fn roles(cfg: &NodeConfig) -> String {
    let roles = match cfg.roles(conveyor_flow::Launch::Node) {
        Ok(r) => r.describe(),
        Err(e) => e.to_string(),
    };
    let broker = match &cfg.broker {
        Some(b) => format!(
            "broker {} namespace {}",
            conveyor_flow::config::redact_url(&b.url),
            b.namespace
        ),
        None => "embedded, no broker".into(),
    };
    format!("roles: {roles}; {broker}")
}
