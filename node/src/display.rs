/*! Human output: the live progress lines and the final summary table. */

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_config::NodeConfig;
use conveyor_schemas::{RunReport, TaskReport, TaskState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// One line per task, or per partitioned task (its partitions and its
/// gather together): state, rows, rows/s, elapsed, and for partitions done
/// so far an ETA. Lines are cut to the terminal's width, and nothing is drawn
/// when stderr is not a terminal. Redrawn ten times a second until finished.
pub fn spawn_progress(rx: watch::Receiver<RunReport>) -> Progress {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let lines = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars: Vec<(String, ProgressBar)> = Vec::new();
        let mut clocks = GroupClocks::default();
        while !flag.load(Ordering::Relaxed) {
            let report = rx.borrow().clone();
            for group in groups(&report, &mut clocks, Instant::now()) {
                let bar = match bars.iter().find(|(name, _)| *name == group.name) {
                    Some((_, bar)) => bar.clone(),
                    None => {
                        let bar = lines.add(ProgressBar::new_spinner().with_style(style.clone()));
                        bars.push((group.name.clone(), bar.clone()));
                        bar
                    }
                };
                bar.set_message(group.line);
                bar.tick();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, bar) in &bars {
            bar.finish_and_clear();
        }
        let _ = lines.clear();
    });
    Progress {
        stop,
        thread: Some(thread),
    }
}

/// A task, or a partitioned task's partitions and gather, as one line.
struct Group {
    name: String,
    line: String,
}

/// When each group was first seen running, for its elapsed time and rate.
#[derive(Default)]
struct GroupClocks(std::collections::HashMap<String, (Instant, Option<Instant>)>);

/// The name a task's line goes under: `load@3` and the gather `load` under `load`.
fn group_name(task: &str) -> &str {
    task.rsplit_once('@').map_or(task, |(base, _)| base)
}

fn groups(r: &RunReport, clocks: &mut GroupClocks, now: Instant) -> Vec<Group> {
    let mut names: Vec<&str> = Vec::new();
    for t in &r.tasks {
        let g = group_name(&t.name);
        if !names.contains(&g) {
            names.push(g);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let tasks: Vec<&TaskReport> = r
                .tasks
                .iter()
                .filter(|t| group_name(&t.name) == name)
                .collect();
            let line = group_line(name, &tasks, clocks, now);
            Group {
                name: name.to_string(),
                line,
            }
        })
        .collect()
}

fn group_line(name: &str, tasks: &[&TaskReport], clocks: &mut GroupClocks, now: Instant) -> String {
    let parts: Vec<&&TaskReport> = tasks.iter().filter(|t| t.name.contains('@')).collect();
    let all = |s: TaskState| tasks.iter().all(|t| t.state == s);
    let any = |s: TaskState| tasks.iter().any(|t| t.state == s);
    let state = if all(TaskState::Succeeded) {
        "done".to_string()
    } else if any(TaskState::Failed) {
        "failed".into()
    } else if all(TaskState::Skipped) {
        "skipped".into()
    } else if any(TaskState::Running) {
        "running".into()
    } else if any(TaskState::RetryWaiting) {
        "retrying".into()
    } else if any(TaskState::WaitingForWorker) {
        format!("waiting for a `{}` worker", tasks[0].kind)
    } else if any(TaskState::Queued) {
        "queued".into()
    } else {
        "pending".into()
    };
    let started = matches!(state.as_str(), "running" | "retrying" | "done" | "failed");
    let rows: u64 = tasks
        .iter()
        .filter(|t| parts.is_empty() || t.name.contains('@'))
        .map(|t| t.rows_out.or(t.rows_so_far).unwrap_or(0))
        .sum();
    let mut line = format!("{name:<16} {state}");
    let finished = matches!(state.as_str(), "done" | "failed" | "skipped");
    if started {
        let clock = clocks.0.entry(name.to_string()).or_insert((now, None));
        if finished && clock.1.is_none() {
            clock.1 = Some(now);
        }
        let elapsed = clock.1.unwrap_or(now).duration_since(clock.0);
        let secs = elapsed.as_secs_f64().max(0.001);
        line.push_str(&format!(
            " · {} rows · {}/s · {:.1}s",
            human(rows as f64),
            human(rows as f64 / secs),
            elapsed.as_secs_f64()
        ));
        if !parts.is_empty() {
            let done = parts
                .iter()
                .filter(|t| t.state == TaskState::Succeeded)
                .count();
            line.push_str(&format!(" · {done}/{} parts", parts.len()));
            if done > 0 && done < parts.len() && !finished {
                let eta = secs * (parts.len() - done) as f64 / done as f64;
                line.push_str(&format!(" · ETA {eta:.0}s"));
            }
        }
    }
    line
}

/// 1234567 → "1.2M".
fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1}G", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x => format!("{x:.0}"),
    }
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
            t.state.to_string(),
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
        "Flow {} ({}) {} in {:.2}s\n",
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
    let roles = match cfg.roles(conveyor_config::Launch::Node) {
        Ok(r) => r.describe(),
        Err(e) => e.to_string(),
    };
    let broker = match &cfg.broker {
        Some(b) => format!(
            "broker {} namespace {}",
            conveyor_config::redact_url(&b.url),
            b.namespace
        ),
        None => "embedded, no broker".into(),
    };
    format!("roles: {roles}; {broker}")
}
