/*!
The `conveyor` binary: parses the CLI, loads config, decides the process's
roles once ([`conveyor_config::NodeConfig::roles`]), sets up tracing, and
hands over to [`conveyor_node::node::Node`], the composition of the roles.
One binary per server; its config file says which roles it plays.
`display` draws live progress and the summary; `notify` tells a service
manager (systemd `Type=notify`) when the node is ready; `scrape` serves
Prometheus metrics at `/metrics` on `[metrics] listen`.
*/

mod client;
mod display;
mod notify;
mod scrape;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use conveyor_api::{ApiServer, ApiSetup};
use conveyor_config::{CoordinatorMode, Launch, NodeConfig};
use conveyor_coordinator::remote::SubmitError;
use conveyor_flow::FlowSpec;
use conveyor_node::node::{Node, NodeError};
use conveyor_schemas::{FlowState, RunReport};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Exit code of a flow that failed.
const EXIT_FLOW_FAILED: u8 = 1;
/// Exit code of bad usage, a bad config or a bad flow file.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of a node that gave up (a worker kind kept crashing, broker lost).
const EXIT_NODE_FAILED: u8 = 70;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "conveyor",
    version,
    about = "Run data pipelines (extract → transform → load, any DAG) on one machine or across a cluster",
    long_about = "Run data pipelines (extract → transform → load, any DAG) on one machine or across a cluster.\n\n\
Every server runs this same binary; its config file says which roles it plays (coordinator, \
extract/transform/load workers). Nodes coordinate through RabbitMQ. With no broker configured, \
`conveyor run` plays every role in one process.\n\n\
Examples:\n  conveyor run flows/colors.toml                 # embedded, no broker\n  \
conveyor runs list --state Failed                # through a coordinator's API\n  \
conveyor node --config worker.toml              # a worker node of a cluster\n  \
conveyor run flows/colors.toml --config client.toml --json\n  \
conveyor run flows/colors_pick.toml --param name=coral\n  \
conveyor validate flows/colors.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter, e.g. `info` or `conveyor_worker=debug`. Defaults to `info`
    /// for `node` and `error` for `run`.
    #[arg(long, global = true, env = "CONVEYOR_LOG")]
    log: Option<String>,

    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,

    /// How long to keep trying a broker that is down at start, e.g. `2m`.
    /// Default: `node` keeps trying (so a node started before its broker,
    /// or during a broker restart, comes up when the broker does); `run`
    /// gives up after 30s. Bad credentials and TLS failures exit at once.
    #[arg(long, global = true, value_parser = parse_positive_duration)]
    connect_timeout: Option<Duration>,
}

/// A duration that must be more than zero (a zero timeout expires at once).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// One `--param NAME=VALUE`.
fn parse_param(text: &str) -> Result<(String, String), String> {
    conveyor_flow::params::parse_assignment(text)
}

/// The `--param`s as a map; a name given twice is an error, not a silent
/// choice of one of the values.
fn param_map(
    params: Vec<(String, String)>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut map = std::collections::BTreeMap::new();
    for (name, value) in params {
        if map.insert(name.clone(), value).is_some() {
            return Err(format!("--param {name} is given twice"));
        }
    }
    Ok(map)
}

#[derive(Subcommand)]
enum Command {
    /// Run one node until SIGINT or SIGTERM, then stop gracefully.
    ///
    /// On a signal the node stops consuming, lets in-flight tasks finish within
    /// the grace period (the rest go back to their queue), and closes its
    /// broker connection.
    Node {
        /// The node config file (see config.toml in the repository).
        #[arg(long, short)]
        config: PathBuf,
        /// How long in-flight tasks may run on after a stop signal; an
        /// unfinished task then goes back to its queue for another worker,
        /// and the process exits.
        #[arg(long, env = "CONVEYOR_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Run one flow to completion and report it.
    ///
    /// Without --config (or with a config that has no [broker]) every role runs
    /// in this process. With a broker, this process is the coordinator and the
    /// tasks go to the worker nodes; the run lives as long as this process.
    /// With --submit, a coordinator node takes the flow, saves it in its
    /// database and sees it through even if this process stops.
    ///
    /// Exit code: 0 succeeded, 1 failed, 2 bad usage, config or flow file (or
    /// a flow the coordinator rejected), 70 broker or coordinator trouble, 130
    /// interrupted.
    Run {
        /// The flow file.
        flow: PathBuf,
        /// A node config: its broker, and any workers to run in this process too.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the final run report to stdout as one JSON document.
        #[arg(long)]
        json: bool,
        /// Hand the flow to a coordinator node (a `conveyor node` whose config
        /// has [coordinator]) instead of coordinating it here. Needs --config
        /// with a [broker].
        #[arg(long, requires = "config")]
        submit: bool,
        /// With --submit: return once a coordinator has accepted the flow,
        /// printing the flow run id (or, with --json, the accepted report).
        #[arg(long, requires = "submit")]
        detach: bool,
        /// With --submit: how long a coordinator has to accept the flow.
        #[arg(long, default_value = "30s", value_parser = parse_positive_duration, requires = "submit")]
        accept_timeout: Duration,
        /// A value for one of the flow's [params], used wherever the flow
        /// writes `{{ params.NAME }}`; repeat for each param. A param not
        /// given takes its default; one without a default must be given.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Check a flow file or a node config; report every problem at once.
    ///
    /// For a flow, --param gives values to its [params] as `run` would, and
    /// a param given that the flow does not declare, or a required one not
    /// given, is reported with the other problems.
    Validate {
        /// A flow file (has [flow]) or a node config (has [node]).
        file: PathBuf,
        /// A value for one of the flow's [params]; repeat for each param.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Print (or write) the JSON Schemas of the wire contract.
    Schemas {
        /// Write one file per message into this directory instead of printing.
        #[arg(long, conflicts_with = "openapi")]
        out: Option<PathBuf>,
        /// Print the HTTP API's OpenAPI document instead (checked in as
        /// schemas/openapi.json).
        #[arg(long)]
        openapi: bool,
    },
    /// Operate runs on a coordinator node, through its HTTP API.
    ///
    /// The server comes from --server or CONVEYOR_SERVER (default
    /// http://127.0.0.1:7070), the token from CONVEYOR_API_TOKEN. Tables by
    /// default, --json for the API's JSON.
    ///
    /// Exit code: 0 ok, 1 a watched run ended other than Succeeded, 2 bad
    /// usage or a request the server refused (4xx), 70 server unreachable
    /// or failing (5xx).
    Runs {
        #[command(subcommand)]
        cmd: client::RunsCmd,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// List the flows registered with a coordinator node (its
    /// `[coordinator] flows` directory), through its HTTP API.
    Flows {
        #[command(subcommand)]
        cmd: client::FlowsCmd,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Start a run of a registered flow, through a coordinator node's HTTP
    /// API; print its run id.
    ///
    /// Exit code: 0 started (with --watch: succeeded), 1 with --watch: the
    /// run ended other than Succeeded, 2 bad usage or refused (4xx), 70
    /// server unreachable or failing (5xx).
    Trigger {
        /// The registered flow's name.
        flow: String,
        /// A value for one of the flow's [params], as NAME=VALUE; repeat
        /// for more.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = client::parse_param)]
        params: Vec<(String, String)>,
        /// Follow the run to its end, as `conveyor runs watch` does.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        server: client::ServerArgs,
    },
}

/// Sets up logging to stderr. A `--log` (or `CONVEYOR_LOG`) filter that does
/// not parse is an error, not a silent fallback.
fn init_tracing(filter: Option<&str>, default: &str, json: bool) -> Result<(), String> {
    let filter = match filter {
        Some(text) => EnvFilter::builder()
            .parse(text)
            .map_err(|e| format!("--log (or CONVEYOR_LOG) `{text}` is not a log filter: {e}; e.g. `info` or `conveyor_worker=debug,info`"))?,
        None => EnvFilter::new(default),
    };
    let print = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let print = if json {
        print.json().with_filter(filter).boxed()
    } else {
        print.with_filter(filter).boxed()
    };
    // Task logs are captured at `info` whatever the node prints, so that a
    // quiet node still ships its tasks' lines to their coordinator.
    tracing_subscriber::registry()
        .with(print)
        .with(conveyor_worker::tasklog::TaskLogLayer.with_filter(LevelFilter::INFO))
        .init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Node { .. } => "info",
        _ => "error",
    };
    if let Err(e) = init_tracing(cli.log.as_deref(), default_log, cli.log_json) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let code = match cli.command {
        Command::Node { config, grace } => cmd_node(&config, grace, cli.connect_timeout),
        Command::Run {
            flow,
            config,
            json,
            submit,
            detach,
            accept_timeout,
            params,
        } => {
            let params = match param_map(params) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            let how = match (submit, detach) {
                (false, _) => How::Here,
                (true, false) => How::Submit {
                    accept_timeout,
                    detach: false,
                },
                (true, true) => How::Submit {
                    accept_timeout,
                    detach: true,
                },
            };
            cmd_run(
                &flow,
                &params,
                config.as_deref(),
                json,
                how,
                cli.connect_timeout,
            )
        }
        Command::Validate { file, params } => match param_map(params) {
            Ok(params) => cmd_validate(&file, &params),
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_BAD_INPUT
            }
        },
        Command::Schemas { out, openapi } => {
            if openapi {
                print!("{}", conveyor_api::openapi::document());
                0
            } else {
                cmd_schemas(out.as_deref())
            }
        }
        Command::Runs { cmd, server } => client::runs(cmd, &server),
        Command::Flows { cmd, server } => client::flows(cmd, &server),
        Command::Trigger {
            flow,
            params,
            watch,
            server,
        } => client::trigger(&flow, params, watch, &server),
    };
    ExitCode::from(code)
}

/// The multi-thread runtime that owns lapin and every broker future, apart
/// from the actix thread.
fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("conveyor-io")
        .enable_all()
        .build()
}

/// Who coordinates a `conveyor run`.
#[derive(Clone, Copy)]
enum How {
    /// This process.
    Here,
    /// A coordinator node, over the broker.
    Submit {
        accept_timeout: Duration,
        detach: bool,
    },
}

/// How a run ended, before it is printed.
enum Outcome {
    Finished(RunReport),
    Detached(RunReport),
    Interrupted { remote: Option<(String, String)> },
}

fn cmd_run(
    flow_path: &Path,
    params: &std::collections::BTreeMap<String, String>,
    config: Option<&Path>,
    json: bool,
    how: How,
    connect_timeout: Option<Duration>,
) -> u8 {
    let (flow, source) = match FlowSpec::load_with_params(flow_path, params) {
        Ok(f) => f,
        Err(problems) => {
            eprint!("error: invalid flow\n{problems}");
            return EXIT_BAD_INPUT;
        }
    };
    let cfg = match config {
        Some(path) => match NodeConfig::load(path) {
            Ok(c) => c,
            Err(problems) => {
                eprint!("error: invalid node config\n{problems}");
                return EXIT_BAD_INPUT;
            }
        },
        None => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            NodeConfig::embedded(&cwd)
        }
    };
    let launch = match how {
        How::Here => Launch::Run,
        How::Submit { .. } => Launch::Submit,
    };
    let mut roles = match cfg.roles(launch) {
        Ok(r) => r,
        Err(e) => {
            let file = config.map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("error: {file}: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if connect_timeout.is_some() {
        roles.connect_timeout = connect_timeout;
    }
    // With --submit the coordinator node decides, against its own list.
    if let (How::Here, Some(refused)) = (how, refused_secrets(&cfg, &source)) {
        eprintln!("error: {refused}");
        return EXIT_BAD_INPUT;
    }
    if config.is_some() {
        warn_if_sources_unrestricted(&cfg, &roles);
    }
    let io = match io_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return EXIT_NODE_FAILED;
        }
    };
    let live = std::io::stderr().is_terminal() && !json;
    let system = actix::System::new();
    let outcome: Result<Outcome, NodeError> = system.block_on(async {
        let mut node = Node::start(&cfg, &roles, io.handle().clone()).await?;
        let (submitted, remote) = match how {
            How::Here => (node.submit(Arc::new(flow), source).await?, None),
            How::Submit {
                accept_timeout,
                detach,
            } => {
                if live {
                    eprint!("waiting for a coordinator to accept the flow…");
                }
                let accepted = node.submit_remote(source, accept_timeout).await;
                if live {
                    eprint!("\r\x1b[2K");
                }
                let r = accepted?;
                if detach {
                    let report = r.run.progress.borrow().clone();
                    node.shutdown(Duration::from_secs(1)).await;
                    return Ok(Outcome::Detached(report));
                }
                let id = r.run.flow_run.clone();
                (r.run, Some((r.coordinator, id)))
            }
        };
        let progress = live.then(|| display::spawn_progress(submitted.progress.clone()));
        let result = tokio::select! {
            report = submitted.done => report.map(Outcome::Finished).map_err(|_| NodeError::Internal("the coordinator stopped before the flow finished".into())),
            reason = node.fatal.recv() => Err(reason.map(NodeError::from).unwrap_or_else(|| NodeError::Internal("the node failed".into()))),
            _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted { remote }),
        };
        if let Some(p) = progress {
            p.finish();
        }
        let grace = if matches!(result, Ok(Outcome::Finished(_))) { Duration::from_secs(5) } else { Duration::from_secs(1) };
        node.shutdown(grace).await;
        result
    });
    stop_runtime(io);
    match outcome {
        Ok(Outcome::Finished(report)) => {
            if json {
                print_json(&report);
            } else {
                print!("{}", display::summary(&report));
            }
            if report.state == FlowState::Succeeded {
                0
            } else {
                EXIT_FLOW_FAILED
            }
        }
        Ok(Outcome::Detached(report)) => {
            if json {
                print_json(&report);
            } else {
                println!("{}", report.flow_run);
            }
            0
        }
        Ok(Outcome::Interrupted { remote: None }) => {
            eprintln!("interrupted: the flow run was left incomplete");
            EXIT_INTERRUPTED
        }
        Ok(Outcome::Interrupted {
            remote: Some((coordinator, run)),
        }) => {
            eprintln!("interrupted: flow run {run} goes on, held by coordinator `{coordinator}`");
            EXIT_INTERRUPTED
        }
        Err(NodeError::Submit(SubmitError::Rejected(e))) => {
            eprintln!("error: the coordinator rejected the flow: {e}");
            EXIT_BAD_INPUT
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_NODE_FAILED
        }
    }
}

/// How long the I/O runtime may take to stop once the node has stopped. A
/// task still blocking by then was returned to its queue when the broker
/// connection closed: it is abandoned, not waited for, so that a stop signal
/// ends the process within the grace period.
const RUNTIME_STOP_WITHIN: Duration = Duration::from_secs(2);

fn stop_runtime(io: tokio::runtime::Runtime) {
    io.shutdown_timeout(RUNTIME_STOP_WITHIN);
}

fn print_json(report: &RunReport) {
    match serde_json::to_string_pretty(report) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode the report: {e}"),
    }
}

/// A node config whose workers opt out of a confinement (`input_roots =
/// ["/"]`, `allow_urls = ["*"]`, `[secrets] allow = ["*"]`) lets any flow
/// read any file, fetch any address or read any variable the node can
/// reach: say so once at start (`conveyor run` with no config, whose
/// operator runs their own flow, stays quiet).
fn warn_if_sources_unrestricted(cfg: &NodeConfig, roles: &conveyor_config::Roles) {
    if roles.workers.is_empty() {
        return;
    }
    let mut open = Vec::new();
    let root = Path::new("/");
    if cfg
        .input_roots
        .as_ref()
        .is_none_or(|roots| roots.iter().any(|r| r == root))
    {
        open.push("[workers] input_roots = [\"/\"]");
    }
    if cfg.allow_urls.is_none() {
        open.push("[workers] allow_urls = [\"*\"]");
    }
    if cfg.secrets.is_any() {
        open.push("[secrets] allow = [\"*\"]");
    }
    if !open.is_empty() {
        tracing::warn!(
            opted_out = %open.join(", "),
            "This node's config opts out of confining flows ({}): a flow submitted by anyone with an operate token may read any file, fetch any URL or read any environment variable this node can reach",
            open.join(", ")
        );
    }
}

/// `conveyor run`: a flow naming a variable outside the config's
/// `[secrets] allow` is refused before it is submitted, naming it.
fn refused_secrets(cfg: &NodeConfig, source: &conveyor_flow::FlowSource) -> Option<String> {
    let refused = cfg.secrets.refused_in(&source.text);
    (!refused.is_empty()).then(|| {
        let names: Vec<String> = refused.iter().map(|n| format!("`{n}`")).collect();
        format!(
            "{}: names the environment variable {} (as `${{env:NAME}}`), not in the node config's [secrets] allow",
            source.file,
            names.join(", ")
        )
    })
}

fn cmd_node(config: &Path, grace: Duration, connect_timeout: Option<Duration>) -> u8 {
    let cfg = match NodeConfig::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("error: invalid node config\n{problems}");
            return EXIT_BAD_INPUT;
        }
    };
    let io = match io_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return EXIT_NODE_FAILED;
        }
    };
    let mut roles = match cfg.roles(Launch::Node) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", config.display());
            return EXIT_BAD_INPUT;
        }
    };
    if connect_timeout.is_some() {
        roles.connect_timeout = connect_timeout;
    }
    warn_if_sources_unrestricted(&cfg, &roles);
    let serves_api = roles.coordinator == CoordinatorMode::Service;
    if let Some(problem) = node_start_problems(&cfg).into_iter().next() {
        eprintln!("error: {}: {problem}", config.display());
        stop_runtime(io);
        return EXIT_BAD_INPUT;
    }
    if let Err(e) = start_metrics(&cfg, &io) {
        eprintln!("error: {}: {e}", config.display());
        stop_runtime(io);
        return EXIT_NODE_FAILED;
    }
    let system = actix::System::new();
    let code = system.block_on(async {
        let mut node = match Node::start(&cfg, &roles, io.handle().clone()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "Node failed to start");
                return EXIT_NODE_FAILED;
            }
        };
        let api = match (&node.coordinator, serves_api) {
            (Some(handle), true) => {
                let flow_base = roles
                    .coordinator_config
                    .flows
                    .clone()
                    .unwrap_or_else(|| config_dir(config));
                let setup = ApiSetup {
                    config: cfg.api.clone(),
                    node: cfg.node_name.clone(),
                    flow_base,
                    // `/metrics` on this listener too (start_metrics
                    // installed the recorder for it).
                    metrics: Some(Arc::new(|| {
                        conveyor_transport::metrics::render().unwrap_or_default()
                    })),
                    // The dashboard, at `/` on the same listener.
                    extra: Some(conveyor_dashboard::mount(handle.clone())),
                    secrets: cfg.secrets.clone(),
                };
                match ApiServer::start(setup, handle.clone()) {
                    Ok(api) => api,
                    Err(e) => {
                        tracing::error!(error = %e, "Node failed to start its API");
                        node.shutdown(Duration::from_secs(1)).await;
                        return EXIT_NODE_FAILED;
                    }
                }
            }
            _ => None,
        };
        tracing::info!(node = %cfg.node_name, roles = %roles.describe(), "Node running; stop with SIGINT or SIGTERM");
        actix::spawn(notify::ready_when(node.roles_started()));
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM");
                return EXIT_NODE_FAILED;
            }
        };
        let code = tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received; stopping gracefully"); 0 }
            _ = term.recv() => { tracing::info!("SIGTERM received; stopping gracefully"); 0 }
            reason = node.fatal.recv() => {
                let reason = reason.map(|r| r.to_string()).unwrap_or_else(|| "unknown".into());
                tracing::error!(reason = %reason, "Node giving up");
                EXIT_NODE_FAILED
            }
        };
        notify::stopping();
        // The node first, so that a client following a run is told the
        // coordinator stopped (an `error` event) rather than cut off.
        node.shutdown(grace).await;
        if let Some(api) = api {
            api.stop().await;
        }
        code
    });
    stop_runtime(io);
    code
}

/// What stops `conveyor node` from starting with `cfg` beyond its parse:
/// one list, so that `conveyor validate` refuses every config that the node
/// refuses.
fn node_start_problems(cfg: &NodeConfig) -> Vec<String> {
    let mut problems = Vec::new();
    match cfg.roles(Launch::Node) {
        Ok(roles) => {
            if roles.coordinator == CoordinatorMode::Service {
                problems.extend(cfg.api.exposure_problem());
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

/// The directory of the config file, absolute, where the paths of an
/// ad-hoc flow resolve when `[coordinator] flows` is not set.
fn config_dir(config: &Path) -> PathBuf {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// Installs the metrics recorder on a node that shows its metrics (`[metrics]
/// listen`, or a coordinator's API), before its roles start so that they
/// record from the first task; then serves `/metrics` on `[metrics] listen`.
fn start_metrics(cfg: &NodeConfig, io: &tokio::runtime::Runtime) -> Result<(), String> {
    let api = cfg.coordinator.is_some() && cfg.api.listen.is_some();
    if cfg.metrics.listen.is_none() && !api {
        return Ok(());
    }
    conveyor_transport::metrics::install().map_err(|e| e.to_string())?;
    conveyor_worker::metrics::describe();
    conveyor_coordinator::metrics::describe();
    if let Some(listen) = &cfg.metrics.listen {
        let listener = io
            .block_on(scrape::bind(listen))
            .map_err(|e| e.to_string())?;
        io.spawn(scrape::serve(
            listener,
            Arc::new(|| conveyor_transport::metrics::render().unwrap_or_default()),
        ));
    }
    Ok(())
}

fn cmd_validate(file: &Path, params: &std::collections::BTreeMap<String, String>) -> u8 {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: cannot read: {e}", file.display());
            return EXIT_BAD_INPUT;
        }
    };
    let is_flow = text.lines().any(|l| {
        let l = l.trim();
        l == "[flow]" || l.starts_with("[tasks.") || l == "[tasks]"
    });
    if !is_flow && !params.is_empty() {
        eprintln!(
            "error: {}: --param gives values to a flow's [params]; this is a node config",
            file.display()
        );
        return EXIT_BAD_INPUT;
    }
    if is_flow {
        match FlowSpec::load_with_params(file, params) {
            Ok((flow, _)) => {
                let declared: Vec<String> = flow
                    .params
                    .iter()
                    .map(|(name, default)| match default {
                        Some(d) => format!("{name} (default {d:?})"),
                        None => format!("{name} (required)"),
                    })
                    .collect();
                let params = if declared.is_empty() {
                    String::new()
                } else {
                    format!("; params: {}", declared.join(", "))
                };
                println!(
                    "ok: {} is a valid flow `{}` with {} tasks{params}",
                    file.display(),
                    flow.name,
                    flow.tasks.len()
                );
                0
            }
            Err(problems) => {
                eprint!("{problems}");
                EXIT_BAD_INPUT
            }
        }
    } else {
        match NodeConfig::load(file) {
            Ok(cfg) => {
                let problems = node_start_problems(&cfg);
                if !problems.is_empty() {
                    for problem in problems {
                        eprintln!("error: {}: {problem}", file.display());
                    }
                    return EXIT_BAD_INPUT;
                }
                let roles = display::roles(&cfg);
                println!(
                    "ok: {} is a valid node config for `{}` ({roles})",
                    file.display(),
                    cfg.node_name
                );
                match cfg.coordinator.as_ref().and_then(|c| c.flows.as_deref()) {
                    Some(dir) => validate_registered_flows(dir),
                    None => 0,
                }
            }
            Err(problems) => {
                eprint!("{problems}");
                EXIT_BAD_INPUT
            }
        }
    }
}

/// Loads `[coordinator] flows` as the node would at start.
fn validate_registered_flows(dir: &Path) -> u8 {
    match conveyor_coordinator::schedules::Registry::load(dir) {
        Ok(registry) => {
            let total = registry.iter().count();
            let scheduled = registry
                .iter()
                .filter(|(_, r)| r.flow.schedule.is_some())
                .count();
            println!(
                "ok: {} registers {total} flows ({scheduled} scheduled)",
                dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_BAD_INPUT
        }
    }
}

fn cmd_schemas(out: Option<&Path>) -> u8 {
    for (name, text) in conveyor_schemas::json_schemas() {
        match out {
            Some(dir) => {
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(name), &text))
                {
                    eprintln!("error: {}: {e}", dir.join(name).display());
                    return EXIT_NODE_FAILED;
                }
                println!("wrote {}", dir.join(name).display());
            }
            None => println!("// {name}\n{text}"),
        }
    }
    0
}
