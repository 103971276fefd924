/*!
Registered flows and their schedules, on a coordinator node.

[`Registry`] loads every `*.toml` flow of `[coordinator] flows = "DIR"` once,
at start: each can then be started by name ([`crate::handle::CoordinatorHandle::trigger`]),
and each with a `[flow] schedule` is fired by the coordinator actor through
[`Scheduler`].

A slot fires exactly once, whatever crashes when: the run it starts is
recorded with the slot in one SQLite transaction (table `schedule_slots`,
keyed by flow and slot), and on start the scheduler resumes from the latest
slot recorded for each flow, so a recorded slot is never fired again. The
slots missed while the coordinator was down follow the flow's `catchup`
([`conveyor_flow::Catchup`]). A flow that never fired has nothing to catch
up: its first slot is the first after the coordinator starts.

[`Scheduler`] is plain data with the time passed in, so its tests drive it
with explicit instants.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use conveyor_flow::{FlowSource, FlowSpec};
use tracing::{info, warn};

/// The param a scheduled run gets its slot time in (RFC 3339), when its flow
/// declares it.
pub const SLOT_PARAM: &str = "slot";

/// One registered flow, parsed with its params' defaults.
#[derive(Debug)]
pub struct Registered {
    pub flow: Arc<FlowSpec>,
    /// Its text, to parse again with each run's params.
    pub source: FlowSource,
    pub path: PathBuf,
}

impl Registered {
    /// The params the flow declares, with their defaults.
    pub fn params(&self) -> BTreeMap<String, Option<String>> {
        declared_params(&self.flow)
    }

    /// The source of a run with `params`.
    pub fn source_with(&self, params: BTreeMap<String, String>) -> FlowSource {
        FlowSource {
            params,
            ..self.source.clone()
        }
    }

    /// The source of the run that fires `slot_ms`: `slot` is set when the
    /// flow declares it.
    pub fn scheduled_source(&self, slot_ms: u64) -> FlowSource {
        let mut params = BTreeMap::new();
        if let Some(schedule) = &self.flow.schedule {
            if self.params().contains_key(SLOT_PARAM) {
                params.insert(SLOT_PARAM.to_string(), schedule.slot_text(slot_ms));
            }
        }
        self.source_with(params)
    }
}

/// The params `flow` declares, with their defaults.
fn declared_params(flow: &FlowSpec) -> BTreeMap<String, Option<String>> {
    flow.params.clone()
}

/// Loads a flow to register. A flow may declare params without a default:
/// a trigger must give them, so the flow is checked here with a sample value
/// for each. A scheduled run gets only `slot`, so a scheduled flow's other
/// params need defaults.
fn load_registered(path: &Path) -> Result<(FlowSpec, FlowSource), conveyor_flow::Problems> {
    FlowSpec::load_with_source(path).or_else(|problems| {
        let file = path.display().to_string();
        let Ok(text) = std::fs::read_to_string(path) else {
            return Err(problems);
        };
        let Ok(declared) = FlowSpec::declared_params(&file, &text) else {
            return Err(problems);
        };
        let required: Vec<&String> = declared
            .iter()
            .filter(|(_, default)| default.is_none())
            .map(|(name, _)| name)
            .collect();
        if required.is_empty() {
            return Err(problems);
        }
        let sample: BTreeMap<String, String> = required
            .iter()
            .map(|name| {
                let value = if name.as_str() == SLOT_PARAM {
                    "1970-01-01T00:00:00+00:00"
                } else {
                    "sample"
                };
                (name.to_string(), value.to_string())
            })
            .collect();
        let (flow, source) = FlowSpec::load_with_params(path, &sample).map_err(|_| problems)?;
        let unscheduled: Vec<&str> = required
            .iter()
            .map(|n| n.as_str())
            .filter(|n| *n != SLOT_PARAM)
            .collect();
        if flow.schedule.is_some() && !unscheduled.is_empty() {
            return Err(conveyor_flow::Problems {
                file,
                problems: vec![conveyor_flow::Problem {
                    key: "params".into(),
                    line: None,
                    message: format!(
                    "flow `{}` is scheduled, but its param{} `{}` {} no default; a scheduled run is given only `{SLOT_PARAM}`: give {} a default",
                    flow.name,
                    if unscheduled.len() == 1 { "" } else { "s" },
                    unscheduled.join("`, `"),
                    if unscheduled.len() == 1 { "has" } else { "have" },
                    if unscheduled.len() == 1 { "it" } else { "them" },
                ),
                }],
            });
        }
        Ok((
            flow,
            FlowSource {
                params: BTreeMap::new(),
                ..source
            },
        ))
    })
}

/// Why the registered flows could not be loaded: every problem at once.
#[derive(Debug, thiserror::Error)]
#[error("registered flows ([coordinator] flows = \"{}\"): {} problem{}\n{}", dir.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n"))]
pub struct RegistryError {
    pub dir: PathBuf,
    pub problems: Vec<String>,
}

/// The flows of `[coordinator] flows`, by name.
#[derive(Debug, Default)]
pub struct Registry {
    flows: BTreeMap<String, Registered>,
    /// The latest schedule lag of each flow (now − slot time when its run
    /// started), for metrics.
    lags: Mutex<BTreeMap<String, u64>>,
}

impl Registry {
    /// Loads every `*.toml` of `dir` (not hidden ones, not in
    /// subdirectories). A file that does not parse, a
    /// scheduled flow whose scheduled run would not parse, or two files
    /// with one `[flow] name` are errors: the node does not start, so that a
    /// schedule never silently stops firing.
    pub fn load(dir: &Path) -> Result<Registry, RegistryError> {
        let fail = |problems: Vec<String>| RegistryError {
            dir: dir.to_path_buf(),
            problems,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| fail(vec![format!("cannot read the directory: {e}")]))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| fail(vec![format!("cannot read the directory: {e}")]))?;
            let path = entry.path();
            // Hidden files are editors' and tools' (`.#daily.toml`), not flows.
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && path.extension().is_some_and(|x| x == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut flows: BTreeMap<String, Registered> = BTreeMap::new();
        let mut problems = Vec::new();
        for path in paths {
            let (flow, source) = match load_registered(&path) {
                Ok(loaded) => loaded,
                Err(p) => {
                    problems.push(p.to_string());
                    continue;
                }
            };
            let registered = Registered {
                flow: Arc::new(flow),
                source,
                path: path.clone(),
            };
            if registered.flow.schedule.is_some() {
                // A scheduled run gets no params but `slot`: each other
                // param needs a default.
                if let Err(p) = FlowSpec::parse_source(&registered.scheduled_source(0)) {
                    problems.push(format!(
                        "{}: its scheduled runs would not parse (a scheduled run is given no params but `{SLOT_PARAM}`):\n{p}",
                        path.display()
                    ));
                    continue;
                }
            }
            let name = registered.flow.name.clone();
            if let Some(first) = flows.get(&name) {
                problems.push(format!(
                    "{} and {} both name their flow `{name}`; a registered flow's name must be unique",
                    first.path.display(),
                    path.display()
                ));
                continue;
            }
            flows.insert(name, registered);
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        for (name, r) in &flows {
            match &r.flow.schedule {
                Some(s) => {
                    info!(flow = %name, file = %r.path.display(), schedule = %s.cron, timezone = %s.timezone, catchup = s.catchup.as_str(), "Registered a scheduled flow")
                }
                None => info!(flow = %name, file = %r.path.display(), "Registered a flow"),
            }
        }
        Ok(Registry {
            flows,
            lags: Mutex::default(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.flows.get(name)
    }

    /// Every flow, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Registered)> {
        self.flows.iter()
    }

    /// The latest schedule lag of each scheduled flow that fired, in ms:
    /// how late its last run started after its slot time.
    pub fn schedule_lags(&self) -> BTreeMap<String, u64> {
        self.lags.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn record_lag(&self, flow: &str, lag_ms: u64) {
        if let Ok(mut lags) = self.lags.lock() {
            lags.insert(flow.to_string(), lag_ms);
        }
    }
}

/// A slot to fire now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fire {
    pub flow: String,
    pub slot_ms: u64,
}

/// Where one scheduled flow stands.
#[derive(Debug)]
struct Cursor {
    flow: String,
    /// The latest slot fired (or recorded before the restart); none while
    /// the flow never fired.
    fired: Option<u64>,
    /// The next slot to wait for.
    next: Option<u64>,
}

/// Decides which slots are due, for the coordinator actor to fire.
pub struct Scheduler {
    registry: Arc<Registry>,
    cursors: Vec<Cursor>,
}

impl Scheduler {
    /// A scheduler that resumes each scheduled flow from its latest slot
    /// recorded (`last_fired`), at `now_ms`.
    pub fn new(
        registry: Arc<Registry>,
        mut last_fired: impl FnMut(&str) -> Option<u64>,
        now_ms: u64,
    ) -> Scheduler {
        let cursors = registry
            .iter()
            .filter_map(|(name, r)| {
                let schedule = r.flow.schedule.as_ref()?;
                let fired = last_fired(name);
                // A flow that never fired starts from now; one that did
                // catches up from its latest slot.
                let next = schedule.next_after(fired.unwrap_or(now_ms));
                Some(Cursor {
                    flow: name.clone(),
                    fired,
                    next,
                })
            })
            .collect();
        Scheduler { registry, cursors }
    }

    /// When the next slot of any flow is due, in ms since the epoch.
    pub fn next_due(&self) -> Option<u64> {
        self.cursors.iter().filter_map(|c| c.next).min()
    }

    /// The next slot of `flow`, if it is scheduled.
    pub fn next_of(&self, flow: &str) -> Option<u64> {
        self.cursors
            .iter()
            .find(|c| c.flow == flow)
            .and_then(|c| c.next)
    }

    /// The slots due at `now_ms`, per flow oldest first; each is returned
    /// once. Slots missed while down, or while the node was too busy to
    /// tick, follow the flow's `catchup`.
    pub fn due(&mut self, now_ms: u64) -> Vec<Fire> {
        let mut out = Vec::new();
        for c in &mut self.cursors {
            let Some(next) = c.next.filter(|&n| n <= now_ms) else {
                continue;
            };
            let Some(schedule) = self
                .registry
                .get(&c.flow)
                .and_then(|r| r.flow.schedule.as_ref())
            else {
                continue;
            };
            // Everything after the last fired slot, or from `next` on for a
            // flow that never fired.
            let after = c.fired.unwrap_or(next.saturating_sub(1));
            let missed = schedule.missed(after, now_ms);
            if missed.fire.len() > 1 || missed.fire.first() != Some(&next) {
                info!(flow = %c.flow, catchup = schedule.catchup.as_str(), first_missed = %schedule.slot_text(next), fired = missed.fire.len(), "Catching up on missed schedule slots");
            }
            if missed.truncated {
                warn!(flow = %c.flow, first_fired = %missed.fire.first().map(|s| schedule.slot_text(*s)).unwrap_or_default(), limit = conveyor_flow::schedule::MAX_CATCHUP_RUNS, "More missed slots than one catch-up fires; the earlier ones are skipped");
            }
            if let Some(&last) = missed.fire.last() {
                c.fired = Some(last);
            }
            c.next = schedule.next_after(now_ms.max(c.fired.unwrap_or(0)));
            out.extend(missed.fire.into_iter().map(|slot_ms| Fire {
                flow: c.flow.clone(),
                slot_ms,
            }));
        }
        out
    }

    /// A run of `fire` started at `now_ms`.
    pub fn started(&self, fire: &Fire, now_ms: u64) -> u64 {
        let lag = now_ms.saturating_sub(fire.slot_ms);
        self.registry.record_lag(&fire.flow, lag);
        lag
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("conveyor-sched-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn flow(name: &str, schedule: &str) -> String {
        format!("[flow]\nname = \"{name}\"\n{schedule}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out.csv\"\n")
    }

    const T0: u64 = 1_796_000_000_000; // a whole second

    /// A flow whose load path takes param `day` (no default), and `slot` if
    /// asked.
    fn flow_with_params(name: &str, schedule: &str, params: &str) -> String {
        format!("[flow]\nname = \"{name}\"\n{schedule}\n[params]\n{params}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out-{{{{ params.day }}}}.csv\"\n")
    }

    #[test]
    fn a_flow_with_required_params_registers_but_a_scheduled_one_needs_defaults() {
        let d = dir("required");
        std::fs::write(d.join("r.toml"), flow_with_params("r", "", "day = {}")).unwrap();
        let reg = Registry::load(&d).unwrap();
        let r = reg.get("r").unwrap();
        assert_eq!(r.params(), BTreeMap::from([("day".to_string(), None)]));
        // A trigger's params go into the run's source; none are saved here.
        assert!(r.source.params.is_empty());

        std::fs::write(
            d.join("s.toml"),
            flow_with_params("s", "schedule = \"0 2 * * *\"", "day = {}\nslot = {}"),
        )
        .unwrap();
        let err = Registry::load(&d).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("flow `s` is scheduled, but its param `day` has no default"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_registry_loads_every_flow_and_reports_every_problem_at_once() {
        let d = dir("registry");
        std::fs::write(d.join("a.toml"), flow("a", "")).unwrap();
        std::fs::write(
            d.join("b.toml"),
            flow("b", "schedule = \"* * * * * *\"\ncatchup = \"all\""),
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "not a flow").unwrap();
        std::fs::write(d.join(".#a.toml"), "an editor's lock file").unwrap();
        let reg = Registry::load(&d).unwrap();
        let names: Vec<&String> = reg.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(reg.get("a").unwrap().flow.schedule.is_none());
        assert_eq!(
            reg.get("b").unwrap().flow.schedule.as_ref().unwrap().cron,
            "* * * * * *"
        );

        std::fs::write(d.join("c.toml"), flow("a", "")).unwrap();
        std::fs::write(d.join("d.toml"), flow("d", "schedule = \"0 2 * * * * *\"")).unwrap();
        let err = Registry::load(&d).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("a.toml and") && text.contains("c.toml both name their flow `a`"),
            "{text}"
        );
        assert!(text.contains("d.toml: line 3: `flow.schedule`"), "{text}");
        let missing = Registry::load(&d.join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read the directory"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    fn registry(flows: &[(&str, &str)]) -> Arc<Registry> {
        let d = dir(&format!("reg-{}", flows[0].0));
        for (name, schedule) in flows {
            std::fs::write(d.join(format!("{name}.toml")), flow(name, schedule)).unwrap();
        }
        let reg = Registry::load(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        Arc::new(reg)
    }

    fn slots(fires: &[Fire], flow: &str) -> Vec<u64> {
        fires
            .iter()
            .filter(|f| f.flow == flow)
            .map(|f| (f.slot_ms - T0) / 1000)
            .collect()
    }

    #[test]
    fn each_slot_is_due_once_and_a_new_flow_starts_from_now() {
        let reg = registry(&[("every", "schedule = \"* * * * * *\""), ("plain", "")]);
        let mut s = Scheduler::new(reg, |_| None, T0 + 200);
        assert_eq!(s.next_due(), Some(T0 + 1000));
        assert!(s.due(T0 + 900).is_empty());
        assert_eq!(slots(&s.due(T0 + 1000), "every"), [1]);
        assert!(s.due(T0 + 1000).is_empty());
        assert!(s.due(T0 + 1500).is_empty());
        assert_eq!(slots(&s.due(T0 + 2010), "every"), [2]);
        // A late tick with catchup = "latest": the latest slot only.
        assert_eq!(slots(&s.due(T0 + 5500), "every"), [5]);
        assert_eq!(s.next_of("every"), Some(T0 + 6000));
        assert_eq!(s.next_of("plain"), None);
    }

    #[test]
    fn a_restart_resumes_after_the_last_recorded_slot_per_catchup() {
        let reg = registry(&[
            ("all", "schedule = \"* * * * * *\"\ncatchup = \"all\""),
            ("latest", "schedule = \"* * * * * *\""),
        ]);
        // Down from just after slot 3 was recorded to 7.4 s.
        let mut s = Scheduler::new(reg, |_| Some(T0 + 3000), T0 + 7400);
        let fires = s.due(T0 + 7400);
        assert_eq!(slots(&fires, "all"), [4, 5, 6, 7]);
        assert_eq!(slots(&fires, "latest"), [7]);
        assert!(s.due(T0 + 7900).is_empty());
        let fires = s.due(T0 + 8000);
        assert_eq!(
            (slots(&fires, "all"), slots(&fires, "latest")),
            (vec![8], vec![8])
        );
        let lag = s.started(&fires[0], T0 + 8040);
        assert_eq!(lag, 40);
        assert_eq!(s.registry().schedule_lags().get(&fires[0].flow), Some(&40));
    }
}
