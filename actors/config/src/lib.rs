/*!
The node config file: which roles a node plays and where it keeps its data.

Phase one reads the TOML with every problem collected (`conveyor_flow::diag`);
phase two fills defaults, applies `CONVEYOR_BROKER_URL`, and resolves relative
paths against the config file's directory. See `config.toml` at the repository
root for the documented example.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conveyor_schemas::names::check_name;
pub use conveyor_schemas::secrets::AllowList;
use conveyor_schemas::TaskKind;

use conveyor_flow::diag::{parse_document, read_file, Diag, Problems, Tbl};

/// Where file sources may read when a node config sets no `[workers]
/// input_roots`: this folder beside the config file.
pub const DEFAULT_INPUT_DIR: &str = "data";

/// Environment variable that overrides `[broker] url`.
pub const BROKER_URL_ENV: &str = "CONVEYOR_BROKER_URL";

#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub node_name: String,
    /// Absent: embedded mode, every role in one process over the in-process transport.
    pub broker: Option<BrokerConfig>,
    /// Present: this node plays the coordinator.
    pub coordinator: Option<CoordinatorConfig>,
    /// Worker kinds this node runs, with their concurrency.
    pub workers: BTreeMap<TaskKind, usize>,
    pub artifacts: PathBuf,
    pub output_root: PathBuf,
    /// `[storage] keep_failed`: how long a failed run's artifacts stay for a
    /// retry (a succeeded run's go when it ends).
    pub keep_failed: Duration,
    /// How often workers announce themselves; peers expire them after three.
    pub heartbeat: Duration,
    /// Longest CSV record or JSON line a source may hold, in bytes.
    pub max_record_bytes: u64,
    /// `[workers] input_roots`: directories file and glob sources may read
    /// under; `None`: any (`conveyor run` without a config). A config file
    /// that sets none gets [`DEFAULT_INPUT_DIR`] beside it.
    pub input_roots: Option<Vec<PathBuf>>,
    /// `[workers] allow_urls`: URL prefixes URL sources may fetch; `None`:
    /// any (`["*"]`, or `conveyor run` without a config); a config file that
    /// sets none fetches no URL.
    pub allow_urls: Option<Vec<String>>,
    /// `[secrets] allow`: the environment variables a flow's `${env:NAME}`
    /// may read on this node (a worker reads no other; a coordinator refuses
    /// a flow naming another at submit). A config file that sets none
    /// allows none; `conveyor run` without a config allows every one.
    pub secrets: AllowList,
    /// `[api]`: the HTTP API and dashboard, served by a coordinator node.
    pub api: ApiConfig,
    /// `[metrics]`: where this node serves Prometheus metrics.
    pub metrics: MetricsConfig,
}

/// Default address of a coordinator node's HTTP API.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7070";

/// Environment variable holding an API token (role `operate`), besides
/// `[api] tokens`; the CLI sends it too.
pub const API_TOKEN_ENV: &str = "CONVEYOR_API_TOKEN";

/// `[api]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    /// `listen = "HOST:PORT"`; `None` (`listen = "off"`) turns the API off.
    pub listen: Option<String>,
    pub tokens: Vec<ApiToken>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// `adhoc`: whether `POST /api/v1/runs` takes flow text; false: only
    /// registered flows run through the API.
    pub adhoc: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: Some(DEFAULT_API_LISTEN.into()),
            tokens: Vec::new(),
            max_body_bytes: 1 << 20,
            adhoc: true,
        }
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiRole {
    /// Read runs, flows, nodes and logs.
    Read,
    /// Also start, cancel and retry runs.
    Operate,
}

#[derive(Clone, PartialEq)]
pub struct ApiToken {
    pub token: String,
    pub role: ApiRole,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

impl ApiConfig {
    /// Why this API must not start: it would listen beyond this machine
    /// with no token, so anyone who reaches the port could start runs.
    pub fn exposure_problem(&self) -> Option<String> {
        let listen = self.listen.as_deref()?;
        if !self.tokens.is_empty() || is_loopback(listen) {
            return None;
        }
        Some(format!(
            "[api] listen = \"{listen}\" is not a loopback address and no API token is set: \
             add [api] tokens = [{{ token_env = \"NAME\", role = \"operate\" }}], set {API_TOKEN_ENV}, \
             or listen on 127.0.0.1"
        ))
    }
}

/// Whether `HOST:PORT` names this machine only (127.0.0.0/8, ::1, localhost).
pub fn is_loopback(listen: &str) -> bool {
    let host = match listen.rsplit_once(':') {
        Some((host, _)) => host,
        None => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads `[api]`: `listen`, `max_body` and `tokens`. A token is given as
/// `token = "..."` or, to keep it out of the file, `token_env = "NAME"`.
fn parse_api(mut api: Tbl) -> ApiConfig {
    let mut out = ApiConfig::default();
    if let Some(listen) = api.str("listen") {
        if listen == "off" {
            out.listen = None;
        } else if listen.parse::<std::net::SocketAddr>().is_ok()
            || listen.rsplit_once(':').is_some_and(|(h, p)| {
                h.eq_ignore_ascii_case("localhost") && p.parse::<u16>().is_ok()
            })
        {
            out.listen = Some(listen);
        } else {
            api.error(
                "listen",
                format!("`{listen}` is not HOST:PORT (e.g. \"127.0.0.1:7070\") or \"off\""),
            );
        }
    }
    if let Some(adhoc) = api.bool("adhoc") {
        out.adhoc = adhoc;
    }
    if let Some(text) = api.str("max_body") {
        match parse_size(&text) {
            Some(n) if n >= 1024 => out.max_body_bytes = n,
            _ => api.error(
                "max_body",
                format!("`{text}` is not a size of at least 1KiB, e.g. \"1MiB\""),
            ),
        }
    }
    if let Some(found) = api.get("tokens") {
        let diag = api.diag;
        let entries: Vec<&dyn toml_edit::TableLike> = if let Some(a) = found.item.as_array() {
            a.iter()
                .filter_map(|v| v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike))
                .collect()
        } else if let Some(a) = found.item.as_array_of_tables() {
            a.iter().map(|t| t as &dyn toml_edit::TableLike).collect()
        } else {
            Vec::new()
        };
        let count = found
            .item
            .as_array()
            .map(|a| a.len())
            .or_else(|| found.item.as_array_of_tables().map(|a| a.len()));
        if count != Some(entries.len()) {
            diag.report(
                &found.path,
                found.span.clone(),
                "must be a list of tables like { token_env = \"NAME\", role = \"read\" }",
            );
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let mut t = Tbl::new(
                diag,
                format!("{}[{i}]", found.path),
                entry,
                found.span.clone(),
            );
            let token = match (t.str("token"), t.str("token_env")) {
                (Some(token), None) => Some(token),
                (None, Some(name)) => match std::env::var(&name) {
                    Ok(v) if !v.is_empty() => Some(v),
                    _ => {
                        t.error(
                            "token_env",
                            format!("environment variable `{name}` is not set"),
                        );
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    t.error("token", "set either `token` or `token_env`, not both");
                    None
                }
                (None, None) => {
                    t.error("token", "is required (or `token_env = \"NAME\"`)");
                    None
                }
            };
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                t.error("token", "must be at least 16 characters");
            }
            let role = match t.req_str("role").as_deref() {
                Some("read") => Some(ApiRole::Read),
                Some("operate") => Some(ApiRole::Operate),
                Some(other) => {
                    t.error(
                        "role",
                        format!("`{other}` is not a role; expected \"read\" or \"operate\""),
                    );
                    None
                }
                None => None,
            };
            t.finish();
            if let (Some(token), Some(role)) = (token, role) {
                out.tokens.push(ApiToken { token, role });
            }
        }
    }
    api.finish();
    out
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsConfig {
    /// `listen = "HOST:PORT"` serves `/metrics`; `None`: not served.
    pub listen: Option<String>,
}

/// `[coordinator] notify`: where to POST a run's final report.
#[derive(Clone, PartialEq)]
pub struct NotifyConfig {
    pub url: String,
    /// The final states that are sent (`Failed` by default).
    pub states: Vec<conveyor_schemas::FlowState>,
    /// `timeout`: how long one delivery may take, from connect to the
    /// receiver's answer.
    pub timeout: Duration,
    /// `attempts`: deliveries tried, with backoff between them, before the
    /// notification is given up with a warning.
    pub attempts: u32,
}

/// Default `timeout` of a `[coordinator] notify` webhook.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `attempts` of a `[coordinator] notify` webhook.
pub const DEFAULT_NOTIFY_ATTEMPTS: u32 = 5;

impl NotifyConfig {
    /// A webhook told of the runs that end `Failed`, with the defaults.
    pub fn new(url: impl Into<String>) -> NotifyConfig {
        NotifyConfig {
            url: url.into(),
            states: vec![conveyor_schemas::FlowState::Failed],
            timeout: DEFAULT_NOTIFY_TIMEOUT,
            attempts: DEFAULT_NOTIFY_ATTEMPTS,
        }
    }
}

// A webhook URL may carry credentials: never print them.
impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &redact_url(&self.url))
            .field("states", &self.states)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

#[derive(Clone, PartialEq)]
pub struct BrokerConfig {
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub namespace: String,
    /// Unacked deliveries per worker consumer. Defaults to its concurrency.
    pub prefetch: Option<u16>,
    /// Deliveries of one task message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// AMQP connection heartbeat: a silent link is declared dead after about
    /// two of these, and the node reconnects.
    pub heartbeat: Duration,
    /// PEM file of CA certificates to trust for `amqps://`, besides the
    /// public web PKI roots (a private CA).
    pub tls_ca: Option<PathBuf>,
}

/// Default longest CSV record or JSON line (`[workers] max_record`): far
/// above any sane row, far below a worker's memory.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 20;

/// Default AMQP connection heartbeat (RabbitMQ's own default is 60s).
pub const DEFAULT_AMQP_HEARTBEAT: Duration = Duration::from_secs(10);

impl BrokerConfig {
    /// The URL with the configured heartbeat, unless the URL sets its own.
    pub fn connect_url(&self) -> String {
        if self.url.contains("heartbeat=") {
            return self.url.clone();
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}heartbeat={}",
            self.url,
            self.heartbeat.as_secs().max(1)
        )
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("prefetch", &self.prefetch)
            .field("delivery_limit", &self.delivery_limit)
            .field("heartbeat", &self.heartbeat)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// How long a ready task waits for a live worker of its kind before its flow fails.
    pub worker_wait: Duration,
    /// The SQLite database of a coordinator node (`conveyor node`). `conveyor
    /// run` keeps its one run in memory and ignores it.
    pub db: Option<PathBuf>,
    /// `flows = "DIR"`: the flow files registered with this coordinator, to
    /// trigger by name and to schedule.
    pub flows: Option<PathBuf>,
    /// Webhooks told of runs that end.
    pub notify: Vec<NotifyConfig>,
    /// Most log lines kept per task attempt.
    pub log_lines: u32,
    /// The node's `[secrets] allow` ([`NodeConfig::roles`] copies it
    /// here): a flow submitted over the broker naming another variable is
    /// rejected.
    pub secrets: AllowList,
}

/// Default of `[coordinator] log_lines`.
pub const DEFAULT_LOG_LINES: u32 = 10_000;

/// Default coordinator database, relative to the config file's directory.
pub const DEFAULT_COORDINATOR_DB: &str = "coordinator.db";

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            worker_wait: Duration::from_secs(30),
            db: None,
            flows: None,
            notify: Vec::new(),
            log_lines: DEFAULT_LOG_LINES,
            secrets: AllowList::any(),
        }
    }
}

/// How a process plays the coordinator role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorMode {
    Off,
    /// A long-lived coordinator node: a stable, durable reply queue, its
    /// database, and flows submitted over the broker.
    Service,
    /// `conveyor run`: this process coordinates its one run, in memory, with
    /// a reply queue of its own that the broker deletes some time after the
    /// client went away.
    Client,
}

/// What a `conveyor` command asks of the node config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `conveyor node`: the roles the config lists.
    Node,
    /// `conveyor run`: this process coordinates the run; the config adds
    /// its broker and any workers.
    Run,
    /// `conveyor run --submit`: a coordinator node takes the run; this
    /// process only follows it (and runs any workers the config lists).
    Submit,
}

/// The roles one process plays, decided once from the config and the
/// command, and then only read.
#[derive(Clone, Debug, PartialEq)]
pub struct Roles {
    pub coordinator: CoordinatorMode,
    /// The coordinator's settings, when it plays one.
    pub coordinator_config: CoordinatorConfig,
    /// Worker kinds run in this process, with their concurrency.
    pub workers: BTreeMap<TaskKind, usize>,
    /// How long to keep trying a broker that is down at start
    /// (`--connect-timeout`); none: as long as it takes.
    pub connect_timeout: Option<Duration>,
}

/// Default `[storage] keep_failed`: a week to retry a failed run.
pub const DEFAULT_KEEP_FAILED: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long `conveyor run` waits for a broker that is down at start, unless
/// `--connect-timeout` says otherwise. A node keeps trying.
pub const RUN_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A config that cannot serve the command asked of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolesError(pub String);

impl std::fmt::Display for RolesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RolesError {}

impl NodeConfig {
    /// The roles this config plays for `launch`.
    pub fn roles(&self, launch: Launch) -> Result<Roles, RolesError> {
        let coordinator = match launch {
            Launch::Node if self.coordinator.is_some() => CoordinatorMode::Service,
            Launch::Node => CoordinatorMode::Off,
            Launch::Run => {
                if self.broker.is_none() && self.workers.is_empty() {
                    return Err(RolesError(
                        "a config without a broker must list [workers] to run a flow".into(),
                    ));
                }
                CoordinatorMode::Client
            }
            Launch::Submit => {
                if self.broker.is_none() {
                    return Err(RolesError(
                        "--submit needs a [broker] to reach the coordinator node".into(),
                    ));
                }
                CoordinatorMode::Off
            }
        };
        Ok(Roles {
            coordinator,
            coordinator_config: CoordinatorConfig {
                secrets: self.secrets.clone(),
                ..self.coordinator.clone().unwrap_or_default()
            },
            workers: self.workers.clone(),
            connect_timeout: match launch {
                Launch::Node => None,
                Launch::Run | Launch::Submit => Some(RUN_CONNECT_TIMEOUT),
            },
        })
    }
}

impl Roles {
    /// `coordinator, extract×2, load×1`, for logs and `validate`.
    pub fn describe(&self) -> String {
        let mut roles = Vec::new();
        if self.coordinator != CoordinatorMode::Off {
            roles.push("coordinator".to_string());
        }
        for (kind, n) in &self.workers {
            roles.push(format!("{kind}×{n}"));
        }
        if roles.is_empty() {
            "none".into()
        } else {
            roles.join(", ")
        }
    }
}

/// Hides a URL's userinfo, for logs and reports.
pub use conveyor_schemas::redact::redact_url;

/// `"64MiB"`, `"1GiB"`, `"512KiB"`, `"1MB"` or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl NodeConfig {
    /// The config of `conveyor run FLOW` with no `--config`: every role, in this process.
    pub fn embedded(base: &Path) -> NodeConfig {
        let concurrency = default_concurrency();
        NodeConfig {
            node_name: "local".into(),
            broker: None,
            coordinator: Some(CoordinatorConfig::default()),
            workers: TaskKind::ALL
                .into_iter()
                .map(|k| (k, concurrency))
                .collect(),
            artifacts: base.join(".conveyor/artifacts"),
            output_root: base.join("out"),
            keep_failed: DEFAULT_KEEP_FAILED,
            heartbeat: Duration::from_secs(1),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            // The person who runs `conveyor run FLOW` without a config is
            // the operator: the flow is theirs, and so are the files, the
            // network and the environment it may use. No API is served.
            input_roots: None,
            allow_urls: None,
            secrets: AllowList::any(),
            // `conveyor run` serves no API: its run lives in this process.
            api: ApiConfig {
                listen: None,
                ..ApiConfig::default()
            },
            metrics: MetricsConfig::default(),
        }
    }

    pub fn load(path: &Path) -> Result<NodeConfig, Problems> {
        let (file, text) = read_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let broker_env = std::env::var(BROKER_URL_ENV).ok().filter(|s| !s.is_empty());
        let mut cfg = NodeConfig::parse(&file, &text, base, broker_env)?;
        if let Some(token) = std::env::var(API_TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
            cfg.api.tokens.push(ApiToken {
                token,
                role: ApiRole::Operate,
            });
        }
        Ok(cfg)
    }

    pub fn parse(
        file: &str,
        text: &str,
        base: &Path,
        broker_env: Option<String>,
    ) -> Result<NodeConfig, Problems> {
        let doc = parse_document(file, text)?;
        let diag = Diag::new(text);
        let mut root = Tbl::new(&diag, "", doc.as_table(), None);
        let mut embedded = NodeConfig::embedded(base);
        embedded.workers.clear();
        embedded.coordinator = None;
        embedded.api = ApiConfig::default();
        // A node config is safe by default: a flow may come from anyone who
        // can submit one, so its sources read only the data folder beside
        // the config, fetch no URL and read no environment variable.
        embedded.input_roots = Some(vec![base.join(DEFAULT_INPUT_DIR)]);
        embedded.allow_urls = Some(Vec::new());
        embedded.secrets = AllowList::only(Vec::new());
        let mut cfg = embedded;

        if let Some(mut node) = root.table("node") {
            if let Some(name) = node.str("name") {
                match check_name("node name", &name) {
                    Ok(()) => cfg.node_name = name,
                    Err(e) => node.error("name", e.to_string()),
                }
            }
            if let Some(d) = node.duration("heartbeat") {
                if d < Duration::from_millis(100) {
                    node.error("heartbeat", "must be at least 100ms");
                } else {
                    cfg.heartbeat = d;
                }
            }
            node.finish();
        } else if !root.has("node") {
            root.error("node", "is required: a `[node]` table with a `name`");
        }

        let mut broker_url = broker_env;
        if let Some(mut broker) = root.table("broker") {
            let url = broker.str("url");
            if broker_url.is_none() {
                broker_url = url;
            }
            let namespace = broker.str("namespace").unwrap_or_else(|| "conveyor".into());
            if let Err(e) = check_name("namespace", &namespace) {
                broker.error("namespace", e.to_string());
            }
            let prefetch = broker.uint("prefetch", 1, 10_000).map(|p| p as u16);
            let delivery_limit = broker.uint("delivery_limit", 1, 1000).unwrap_or(5) as u32;
            let heartbeat = broker
                .duration("heartbeat")
                .unwrap_or(DEFAULT_AMQP_HEARTBEAT);
            if heartbeat < Duration::from_secs(1) {
                broker.error(
                    "heartbeat",
                    "must be at least 1s (AMQP counts whole seconds)",
                );
            }
            if let Some(url) = &broker_url {
                if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                    broker.error("url", "must start with amqp:// or amqps://");
                }
            }
            let tls_ca = broker.str("tls_ca").map(|p| base.join(p));
            if let (Some(ca), Some(url)) = (&tls_ca, &broker_url) {
                if !url.starts_with("amqps://") {
                    broker.error("tls_ca", "is set but the broker url is not amqps://");
                } else if !ca.is_file() {
                    broker.error("tls_ca", format!("{} is not a readable file", ca.display()));
                }
            }
            if broker_url.is_none() && broker.has("namespace") {
                broker.error(
                    "url",
                    format!("is required when [broker] is present (or set {BROKER_URL_ENV})"),
                );
            }
            broker.finish();
            cfg.broker = broker_url.clone().map(|url| BrokerConfig {
                url,
                namespace,
                prefetch,
                delivery_limit,
                heartbeat,
                tls_ca,
            });
        } else if let Some(url) = broker_url {
            cfg.broker = Some(BrokerConfig {
                url,
                namespace: "conveyor".into(),
                prefetch: None,
                delivery_limit: 5,
                heartbeat: DEFAULT_AMQP_HEARTBEAT,
                tls_ca: None,
            });
        }

        if let Some(mut coord) = root.table("coordinator") {
            let mut c = CoordinatorConfig::default();
            if let Some(d) = coord.positive_duration("worker_wait") {
                c.worker_wait = d;
            }
            if let Some(n) = coord.uint("log_lines", 0, 1_000_000) {
                c.log_lines = n as u32;
            }
            c.db = Some(
                base.join(
                    coord
                        .str("db")
                        .unwrap_or_else(|| DEFAULT_COORDINATOR_DB.into()),
                ),
            );
            c.notify = parse_notify(&mut coord);
            c.flows = coord.str("flows").map(|dir| base.join(dir));
            coord.finish();
            cfg.coordinator = Some(c);
        }

        if let Some(mut workers) = root.table("workers") {
            if let Some(text) = workers.str("max_record") {
                match parse_size(&text) {
                    Some(n) if n >= 1024 => cfg.max_record_bytes = n,
                    _ => workers.error(
                        "max_record",
                        format!("`{text}` is not a size of at least 1KiB, e.g. \"64MiB\""),
                    ),
                }
            }
            if let Some(roots) = workers.str_list("input_roots") {
                cfg.input_roots = Some(roots.iter().map(|r| base.join(r)).collect());
            }
            if let Some(prefixes) = workers.str_list("allow_urls") {
                for p in prefixes.iter().filter(|p| p.as_str() != ANY_URL) {
                    // A bare host would also allow `https://host.evil.example/`.
                    let ok = (p.starts_with("http://") || p.starts_with("https://"))
                        && p.splitn(4, '/').nth(3).is_some();
                    if !ok {
                        workers.error(
                            "allow_urls",
                            format!("`{p}` must be an http(s) URL prefix ending in a path, e.g. \"https://data.example.org/\""),
                        );
                    }
                }
                cfg.allow_urls = if prefixes.iter().any(|p| p == ANY_URL) {
                    None
                } else {
                    Some(prefixes)
                };
            }
            let kinds = workers.str_list("kinds");
            let kinds = workers.required("kinds", kinds).unwrap_or_default();
            let mut concurrency_of = BTreeMap::new();
            if let Some(mut conc) = workers.table("concurrency") {
                for key in conc.keys() {
                    match TaskKind::parse(&key) {
                        Some(kind) => {
                            if let Some(n) = conc.uint(&key, 1, 1024) {
                                concurrency_of.insert(kind, n as usize);
                            }
                        }
                        None => {
                            conc.get(&key);
                            conc.error(
                                &key,
                                "unknown task kind; expected extract, transform or load",
                            );
                        }
                    }
                }
                conc.finish();
            }
            for name in &kinds {
                match TaskKind::parse(name) {
                    Some(kind) => {
                        let n = concurrency_of
                            .get(&kind)
                            .copied()
                            .unwrap_or_else(default_concurrency);
                        cfg.workers.insert(kind, n);
                    }
                    None => workers.error(
                        "kinds",
                        format!("unknown task kind `{name}`; expected extract, transform or load"),
                    ),
                }
            }
            for kind in concurrency_of.keys() {
                if !cfg.workers.contains_key(kind) && diag.is_clean() {
                    workers.error(
                        "concurrency",
                        format!("sets `{kind}` but `{kind}` is not in `kinds`"),
                    );
                }
            }
            workers.finish();
        }

        if let Some(api) = root.table("api") {
            cfg.api = parse_api(api);
        }

        if let Some(secrets) = root.table("secrets") {
            cfg.secrets = parse_secrets(secrets);
        }

        if let Some(mut metrics) = root.table("metrics") {
            cfg.metrics.listen =
                metrics
                    .str("listen")
                    .and_then(|listen| match check_listen(&listen) {
                        Ok(addr) => addr,
                        Err(e) => {
                            metrics.error("listen", e);
                            None
                        }
                    });
            metrics.finish();
        }

        if let Some(mut storage) = root.table("storage") {
            if let Some(p) = storage.str("artifacts") {
                cfg.artifacts = base.join(p);
            }
            if let Some(p) = storage.str("output_root") {
                cfg.output_root = base.join(p);
            }
            if let Some(d) = storage.positive_duration("keep_failed") {
                cfg.keep_failed = d;
            }
            storage.finish();
        }
        root.finish();

        if cfg.broker.is_none() && cfg.coordinator.is_none() != cfg.workers.is_empty() {
            // Without a broker a node can only talk to itself, so it must play every role.
            diag.report(
                "broker",
                None,
                "a node without a broker runs embedded and needs both [coordinator] and [workers] (or set [broker] url)",
            );
        }
        diag.finish(file)?;
        Ok(cfg)
    }
}

/// `allow_urls = ["*"]`: any URL, the loud opt-out (a warning at start).
pub const ANY_URL: &str = "*";

/// Reads `[secrets] allow`: glob patterns of variable names (`PG_*`).
fn parse_secrets(mut secrets: Tbl) -> AllowList {
    let patterns = secrets.str_list("allow").unwrap_or_default();
    for p in &patterns {
        let ok = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'*' | b'?'));
        if !ok {
            secrets.error(
                "allow",
                format!("`{p}` is not a variable name pattern: letters, digits, `_`, and `*` or `?` as wildcards, e.g. \"PG_*\""),
            );
        }
    }
    secrets.finish();
    AllowList::only(patterns)
}

/// A `listen` address: `"HOST:PORT"` (`None` for `"off"`), or why not.
/// The host is checked when the node binds it, which names it too.
pub fn check_listen(text: &str) -> Result<Option<String>, String> {
    if text == "off" {
        return Ok(None);
    }
    let port = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok());
    match port {
        Some(_) => Ok(Some(text.to_string())),
        None => Err(format!(
            "`{text}` is not HOST:PORT (or \"off\"), e.g. \"127.0.0.1:9100\""
        )),
    }
}

/// `[coordinator] notify`: one webhook as a table, `notify = { url = "…" }`,
/// or several, as `[[coordinator.notify]]` tables or an array of inline
/// tables. Every problem is reported, with its key.
fn parse_notify(coord: &mut Tbl) -> Vec<NotifyConfig> {
    let Some(found) = coord.get("notify") else {
        return Vec::new();
    };
    let diag = coord.diag;
    let mut tables = Vec::new();
    if let Some(t) = found.item.as_table_like() {
        tables.push(Tbl::new(diag, found.path.clone(), t, found.span.clone()));
    } else if let Some(array) = found.item.as_array_of_tables() {
        for (i, t) in array.iter().enumerate() {
            tables.push(Tbl::new(
                diag,
                format!("{}[{i}]", found.path),
                t,
                t.span().or(found.span.clone()),
            ));
        }
    } else if let Some(array) = found.item.as_array() {
        for (i, v) in array.iter().enumerate() {
            match v.as_inline_table() {
                Some(t) => tables.push(Tbl::new(
                    diag,
                    format!("{}[{i}]", found.path),
                    t,
                    v.span().or(found.span.clone()),
                )),
                None => diag.report(
                    &format!("{}[{i}]", found.path),
                    v.span().or(found.span.clone()),
                    "must be a table such as { url = \"https://hooks.example.org/conveyor\" }",
                ),
            }
        }
    } else {
        diag.report(
            &found.path,
            found.span,
            "must be a table such as { url = \"https://hooks.example.org/conveyor\", states = [\"Failed\"] }, or an array of them",
        );
        return Vec::new();
    }
    let mut hooks = Vec::new();
    for mut t in tables {
        let url = t.req_str("url");
        if let Some(u) = &url {
            let host = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
            if host.is_none_or(|h| h.rsplit('@').next().unwrap_or("").is_empty()) {
                t.error(
                    "url",
                    format!("`{}` is not an http(s) URL with a host", redact_url(u)),
                );
            }
        }
        let mut hook = NotifyConfig::new(url.unwrap_or_default());
        if let Some(names) = t.str_list("states") {
            let mut states = Vec::new();
            for name in &names {
                match conveyor_schemas::FlowState::parse(name).filter(|s| s.is_terminal()) {
                    Some(state) if !states.contains(&state) => states.push(state),
                    Some(_) => {}
                    None => t.error(
                        "states",
                        format!("`{name}` is not a final run state; expected Succeeded, Failed or Cancelled"),
                    ),
                }
            }
            if names.is_empty() {
                t.error("states", "is empty: name at least one of Succeeded, Failed or Cancelled (or remove the webhook)");
            }
            hook.states = states;
        }
        if let Some(d) = t.positive_duration("timeout") {
            hook.timeout = d;
        }
        if let Some(n) = t.uint("attempts", 1, 100) {
            hook.attempts = n as u32;
        }
        t.finish();
        hooks.push(hook);
    }
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: Option<&str>) -> Result<NodeConfig, Problems> {
        NodeConfig::parse(
            "node.toml",
            text,
            Path::new("/etc/conveyor"),
            env.map(str::to_string),
        )
    }

    #[test]
    fn a_worker_node_config_parses_with_defaults() {
        let cfg = parse(
            "[node]\nname = \"w1\"\n[broker]\nurl = \"amqp://u:p@h:5672/%2f\"\nnamespace = \"t1\"\n[workers]\nkinds = [\"extract\", \"load\"]\n[workers.concurrency]\nload = 3\n[storage]\nartifacts = \"a\"\noutput_root = \"/srv/out\"\n",
            None,
        )
        .unwrap();
        assert_eq!(cfg.node_name, "w1");
        let broker = cfg.broker.clone().unwrap();
        assert_eq!(
            (broker.namespace.as_str(), broker.delivery_limit),
            ("t1", 5)
        );
        assert_eq!(cfg.workers.get(&TaskKind::Load), Some(&3));
        assert!(cfg.workers.contains_key(&TaskKind::Extract));
        assert!(!cfg.workers.contains_key(&TaskKind::Transform));
        assert_eq!(cfg.artifacts, PathBuf::from("/etc/conveyor/a"));
        assert_eq!(cfg.output_root, PathBuf::from("/srv/out"));
        assert!(cfg.coordinator.is_none());
        assert!(
            !format!("{cfg:?}").contains(":p@"),
            "password leaked in Debug"
        );
    }

    #[test]
    fn env_overrides_the_broker_url() {
        let cfg = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://a/%2f\"\n[workers]\nkinds=[\"load\"]\n",
            Some("amqp://b/%2f"),
        )
        .unwrap();
        assert_eq!(cfg.broker.unwrap().url, "amqp://b/%2f");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = parse(
            "[node]\nname = \"w\"\nbogus = 1\n[broker]\nurl = \"http://x\"\nprefetch = 0\n[workers]\nkinds = [\"extract\", \"teleport\"]\n",
            None,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "node.bogus",
                "broker.url",
                "broker.prefetch",
                "workers.kinds"
            ],
            "{err}"
        );
        assert_eq!(err.problems[0].line, Some(3));
    }

    #[test]
    fn the_amqp_heartbeat_goes_into_the_url() {
        let cfg = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\nheartbeat = \"3s\"\n[workers]\nkinds=[\"load\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.broker.unwrap().connect_url(),
            "amqp://h/%2f?heartbeat=3"
        );
    }

    #[test]
    fn tls_ca_needs_amqps_and_a_readable_file() {
        let err = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\ntls_ca = \"ca.pem\"\n[workers]\nkinds=[\"load\"]\n",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not amqps://"), "{err}");
        let err = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqps://h/%2f\"\ntls_ca = \"missing-ca.pem\"\n[workers]\nkinds=[\"load\"]\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/conveyor/missing-ca.pem is not a readable file"),
            "{err}"
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("2 KiB"), Some(2048));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host/%2f"), "amqp://host/%2f");
    }

    #[test]
    fn a_zero_worker_wait_is_an_error_with_its_line() {
        let err = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\nworker_wait = \"0s\"\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(
            (err.problems[0].key.as_str(), err.problems[0].line),
            ("coordinator.worker_wait", Some(6))
        );
    }

    #[test]
    fn log_lines_is_read_and_checked() {
        let text = |n: &str| {
            format!("[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\nlog_lines = {n}\n")
        };
        let cfg = parse(&text("250"), None).unwrap();
        assert_eq!(cfg.coordinator.unwrap().log_lines, 250);
        let err = parse(&text("-1"), None).unwrap_err();
        assert_eq!(
            (err.problems[0].key.as_str(), err.problems[0].line),
            ("coordinator.log_lines", Some(6))
        );
        assert!(err.to_string().contains("0 to 1000000"), "{err}");
    }

    #[test]
    fn source_rules_resolve_against_the_config_and_refuse_bare_hosts() {
        let cfg = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[workers]\nkinds = [\"extract\"]\ninput_roots = [\"data\", \"/srv/in\"]\nallow_urls = [\"https://data.example.org/\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.input_roots.unwrap(),
            [
                PathBuf::from("/etc/conveyor/data"),
                PathBuf::from("/srv/in")
            ]
        );
        assert_eq!(cfg.allow_urls.unwrap(), ["https://data.example.org/"]);
        let err = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[workers]\nkinds = [\"extract\"]\nallow_urls = [\"https://data.example.org\"]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "workers.allow_urls", "{err}");
    }

    /// Issue 22, item 1: a node config confines flows unless it opts out.
    #[test]
    fn a_node_config_is_confined_by_default_and_opts_out_loudly() {
        let cfg = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[workers]\nkinds = [\"extract\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.input_roots.unwrap(),
            [PathBuf::from("/etc/conveyor/data")]
        );
        assert_eq!(cfg.allow_urls, Some(Vec::new()));
        assert!(!cfg.secrets.allows("PG_URL") && !cfg.secrets.is_any());
        assert!(cfg.api.adhoc);
        let open = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[workers]\nkinds = [\"extract\"]\ninput_roots = [\"/\"]\nallow_urls = [\"*\"]\n[secrets]\nallow = [\"PG_*\", \"*\"]\n[api]\nadhoc = false\n",
            None,
        )
        .unwrap();
        assert_eq!(open.input_roots.unwrap(), [PathBuf::from("/")]);
        assert_eq!(open.allow_urls, None);
        assert!(open.secrets.is_any());
        assert!(!open.api.adhoc);
        let pg = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[secrets]\nallow = [\"PG_*\"]\n",
            None,
        )
        .unwrap();
        assert!(pg.secrets.allows("PG_URL") && !pg.secrets.allows("HOME"));
        let err = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[secrets]\nallow = [\"PG-*\"]\nread = true\n",
            None,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["secrets.allow", "secrets.read"], "{err}");
        let embedded = NodeConfig::embedded(Path::new("/tmp"));
        assert!(embedded.input_roots.is_none() && embedded.allow_urls.is_none());
        assert!(embedded.secrets.is_any());
    }

    const COORD: &str = "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n";

    #[test]
    fn metrics_listen_parses_and_bad_addresses_name_the_key() {
        let cfg = parse(
            &format!("{COORD}[coordinator]\n[metrics]\nlisten = \"127.0.0.1:9100\"\n"),
            None,
        )
        .unwrap();
        assert_eq!(cfg.metrics.listen.as_deref(), Some("127.0.0.1:9100"));
        let off = parse(
            &format!("{COORD}[coordinator]\n[metrics]\nlisten = \"off\"\n"),
            None,
        )
        .unwrap();
        assert_eq!(off.metrics.listen, None);
        let absent = parse(&format!("{COORD}[coordinator]\n"), None).unwrap();
        assert_eq!(absent.metrics.listen, None, "metrics are off unless set");
        for bad in ["9100", ":9100", "localhost:http", "h:70000"] {
            let err = parse(
                &format!("{COORD}[coordinator]\n[metrics]\nlisten = \"{bad}\"\nport = 1\n"),
                None,
            )
            .unwrap_err();
            let found: Vec<(&str, Option<usize>)> = err
                .problems
                .iter()
                .map(|p| (p.key.as_str(), p.line))
                .collect();
            assert_eq!(
                found,
                [("metrics.listen", Some(7)), ("metrics.port", Some(8))],
                "{err}"
            );
            assert!(err.to_string().contains("is not HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn notify_is_a_table_or_an_array_of_tables_with_defaults() {
        use conveyor_schemas::FlowState;
        let one = parse(
            &format!("{COORD}[coordinator]\nnotify = {{ url = \"https://u:secret@hooks.example.org/c\" }}\n"),
            None,
        )
        .unwrap();
        let hooks = one.coordinator.unwrap().notify;
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].states, [FlowState::Failed]);
        assert_eq!(hooks[0].timeout, DEFAULT_NOTIFY_TIMEOUT);
        assert_eq!(hooks[0].attempts, DEFAULT_NOTIFY_ATTEMPTS);
        assert!(
            !format!("{hooks:?}").contains("secret"),
            "a webhook password leaked in Debug: {hooks:?}"
        );
        let many = parse(
            &format!("{COORD}[coordinator]\n[[coordinator.notify]]\nurl = \"http://127.0.0.1:8/a\"\nstates = [\"Succeeded\", \"Cancelled\"]\ntimeout = \"2s\"\nattempts = 2\n[[coordinator.notify]]\nurl = \"http://127.0.0.1:8/b\"\n"),
            None,
        )
        .unwrap();
        let hooks = many.coordinator.unwrap().notify;
        assert_eq!(hooks.len(), 2);
        assert_eq!(
            hooks[0].states,
            [FlowState::Succeeded, FlowState::Cancelled]
        );
        assert_eq!(
            (hooks[0].timeout, hooks[0].attempts),
            (Duration::from_secs(2), 2)
        );
        assert_eq!(hooks[1].url, "http://127.0.0.1:8/b");
        let inline = parse(
            &format!("{COORD}[coordinator]\nnotify = [{{ url = \"http://a/x\" }}, {{ url = \"http://b/y\", states = [\"Succeeded\"] }}]\n"),
            None,
        )
        .unwrap();
        assert_eq!(inline.coordinator.unwrap().notify.len(), 2);
    }

    #[test]
    fn every_notify_problem_is_reported_with_its_key() {
        let err = parse(
            &format!("{COORD}[coordinator]\n[[coordinator.notify]]\nurl = \"ftp://u:secret@h/x\"\nstates = [\"Running\", \"Failed\", \"Exploded\"]\ntimeout = \"0s\"\nattempts = 0\nretries = 3\n[[coordinator.notify]]\nstates = []\n"),
            None,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "coordinator.notify[0].url",
                "coordinator.notify[0].states",
                "coordinator.notify[0].states",
                "coordinator.notify[0].timeout",
                "coordinator.notify[0].attempts",
                "coordinator.notify[0].retries",
                "coordinator.notify[1].url",
                "coordinator.notify[1].states",
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.contains("`Running` is not a final run state"),
            "{text}"
        );
        assert!(
            text.contains("`Exploded` is not a final run state"),
            "{text}"
        );
        let err = parse(
            &format!("{COORD}[coordinator]\nnotify = \"http://h/x\"\n"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "coordinator.notify", "{err}");
        assert_eq!(err.problems[0].line, Some(6), "{err}");
    }

    #[test]
    fn the_registered_flows_dir_resolves_against_the_config() {
        let cfg = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\nflows = \"flows\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.coordinator.unwrap().flows,
            Some(PathBuf::from("/etc/conveyor/flows"))
        );
    }

    #[test]
    fn the_api_section_parses_tokens_and_reports_each_problem() {
        std::env::set_var("CONVEYOR_TEST_API_TOKEN_SET", "a-token-from-the-env-0123");
        let cfg = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\n[api]\nlisten = \"0.0.0.0:8080\"\nmax_body = \"2MiB\"\ntokens = [{ token = \"an-operate-token-012345\", role = \"operate\" }, { token_env = \"CONVEYOR_TEST_API_TOKEN_SET\", role = \"read\" }]\n",
            None,
        )
        .unwrap();
        assert_eq!(cfg.api.listen.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(cfg.api.max_body_bytes, 2 << 20);
        assert_eq!(
            cfg.api.tokens,
            [
                ApiToken {
                    token: "an-operate-token-012345".into(),
                    role: ApiRole::Operate
                },
                ApiToken {
                    token: "a-token-from-the-env-0123".into(),
                    role: ApiRole::Read
                }
            ]
        );
        assert!(!format!("{:?}", cfg.api).contains("an-operate-token"));
        assert_eq!(cfg.api.exposure_problem(), None);
        let open = ApiConfig {
            tokens: Vec::new(),
            ..cfg.api.clone()
        };
        assert!(open.exposure_problem().unwrap().contains("not a loopback"));
        assert_eq!(ApiConfig::default().exposure_problem(), None);
        assert!(
            is_loopback("[::1]:7070") && is_loopback("localhost:1") && !is_loopback("10.0.0.1:80")
        );

        let err = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\n[api]\nlisten = \"everywhere\"\nmax_body = \"lots\"\ntokens = [{ token = \"short\", role = \"admin\" }, { token_env = \"CONVEYOR_TEST_API_TOKEN_UNSET\", role = \"read\" }]\n",
            None,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "api.listen",
                "api.max_body",
                "api.tokens[0].token",
                "api.tokens[0].role",
                "api.tokens[1].token_env"
            ],
            "{err}"
        );
        assert_eq!(err.problems[0].line, Some(7));
        let off = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\n[api]\nlisten = \"off\"\n",
            None,
        )
        .unwrap();
        assert_eq!(off.api.listen, None);
    }

    #[test]
    fn roles_follow_the_command() {
        let worker = parse(
            "[node]\nname = \"w\"\n[broker]\nurl = \"amqp://h/%2f\"\n[workers]\nkinds = [\"load\"]\n",
            None,
        )
        .unwrap();
        let node = worker.roles(Launch::Node).unwrap();
        assert_eq!(node.coordinator, CoordinatorMode::Off);
        assert_eq!(node.describe(), format!("load×{}", default_concurrency()));
        assert_eq!(
            worker.roles(Launch::Run).unwrap().coordinator,
            CoordinatorMode::Client
        );
        assert_eq!(
            worker.roles(Launch::Submit).unwrap().coordinator,
            CoordinatorMode::Off
        );
        let coord = parse(
            "[node]\nname = \"c\"\n[broker]\nurl = \"amqp://h/%2f\"\n[coordinator]\nworker_wait = \"5s\"\n",
            None,
        )
        .unwrap();
        let roles = coord.roles(Launch::Node).unwrap();
        assert_eq!(roles.coordinator, CoordinatorMode::Service);
        assert_eq!(roles.coordinator_config.worker_wait, Duration::from_secs(5));
        assert_eq!(roles.coordinator_config.flows, None);
        assert_eq!(roles.describe(), "coordinator");
        let embedded = NodeConfig::embedded(Path::new("/tmp"));
        let err = embedded.roles(Launch::Submit).unwrap_err();
        assert!(
            err.to_string().contains("--submit needs a [broker]"),
            "{err}"
        );
    }
}
