/*!
`amqp-ceiling`: the raw lapin request/reply ceiling of benchmark issue 4.

Two processes, like Conveyor's coordinator and worker node, on the same broker
and with the same AMQP settings as `actors/src/transport/amqp.rs`:

- `serve` (the worker's part): consumes the task queues on one channel per
  queue with `basic_qos(prefetch)` and at most `concurrency` requests at once
  per queue (Conveyor's defaults: concurrency = available parallelism,
  prefetch = concurrency); for each request it publishes a reply
  (persistent, `mandatory`, confirmed) to the reply queue the request names,
  and only then acks the request.
- `drive` (the coordinator's part): keeps `inflight` requests in flight. Each
  request is published persistent, `mandatory` and confirmed; on each reply
  it publishes the next request (confirmed) and then acks the reply, as the
  coordinator does. Prints one JSON line with the rate and the latencies.

Topology, all durable, under `--namespace ns` (Conveyor's names):
- `ns.tasks` (direct) → quorum queues `ns.tasks.{extract,transform,load}`
  (`--kinds` of them; request `i` goes to kind `i mod kinds`, so with one in
  flight the requests walk extract → transform → load like a flow), each with
  `x-delivery-limit` and `x-dead-letter-exchange = ns.dlx`;
- `ns.dlx` (topic) → quorum queue `ns.dead` (`#`);
- `ns.replies` (direct) → the driver's durable reply queue
  `ns.replies.drive-…`, bound by its own name (a classic queue, as Conveyor's
  reply queues are; `--reply-queue-type quorum` for a quorum one).

`drive` deletes its reply queue at the end; `drive --cleanup` or `cleanup`
deletes the rest of the namespace.
*/

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const KINDS: [&str; 3] = ["extract", "transform", "load"];
/// Prefetch of a Conveyor coordinator on its reply queue.
const REPLY_PREFETCH: u16 = 256;

#[derive(Parser)]
#[command(
    name = "amqp-ceiling",
    about = "Raw lapin request/reply ceiling (durable quorum queues, persistent messages, confirms, mandatory, manual acks)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Broker URL.
    #[arg(long, env = "CONVEYOR_TEST_AMQP_URL", default_value = DEFAULT_URL)]
    url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long)]
    namespace: String,
    /// Task queues (1-3: extract, transform, load); serve and drive must agree.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    kinds: u8,
    /// `x-delivery-limit` of the task queues (Conveyor's default).
    #[arg(long, default_value_t = 5)]
    delivery_limit: u32,
    /// Tokio worker threads (a Conveyor node's I/O runtime has 2).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// AMQP heartbeat in seconds (Conveyor's default), unless the URL sets one.
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum QueueType {
    Classic,
    Quorum,
}

#[derive(Subcommand)]
enum Cmd {
    /// The responder: answers requests until SIGTERM or SIGINT.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Requests handled at once per task queue (default: available parallelism, as Conveyor).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Unacked deliveries per task queue consumer (default: the concurrency, as Conveyor).
        #[arg(long)]
        prefetch: Option<u16>,
        /// Also publish a transient, confirmed `started` reply before the result, as a Conveyor worker does.
        #[arg(long)]
        started: bool,
    },
    /// The requester: keeps `inflight` requests in flight and prints one JSON line.
    Drive {
        #[command(flatten)]
        common: Common,
        /// Measured request/reply round trips.
        #[arg(long)]
        requests: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1)]
        inflight: u64,
        /// Round trips before the measurement, not counted.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// Type of the reply queue (Conveyor's reply queues are classic durable queues).
        #[arg(long, value_enum, default_value_t = QueueType::Classic)]
        reply_queue_type: QueueType,
        /// Fail when no reply arrives for this many seconds.
        #[arg(long, default_value_t = 30)]
        idle_timeout: u64,
        /// At the end, also delete the namespace's queues and exchanges.
        #[arg(long)]
        cleanup: bool,
    },
    /// Deletes the namespace's queues and exchanges.
    Cleanup {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Serve { common, .. } | Cmd::Drive { common, .. } | Cmd::Cleanup { common } => {
            common.threads.max(1)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                common,
                concurrency,
                prefetch,
                started,
            } => serve(common, concurrency, prefetch, started).await,
            Cmd::Drive {
                common,
                requests,
                inflight,
                warmup,
                reply_queue_type,
                idle_timeout,
                cleanup,
            } => {
                let opts = DriveOpts {
                    requests,
                    inflight: inflight.max(1),
                    warmup,
                    reply_queue_type,
                    idle_timeout: Duration::from_secs(idle_timeout.max(1)),
                    cleanup,
                };
                drive(common, opts).await
            }
            Cmd::Cleanup { common } => {
                let conn = connect(&common, "cleanup").await?;
                delete_topology(&conn, &Names::new(&common.namespace)).await;
                let _ = conn.close(200, "done".into()).await;
                Ok(())
            }
        }
    })
}

struct Names {
    ns: String,
}

impl Names {
    fn new(ns: &str) -> Names {
        Names { ns: ns.to_string() }
    }
    fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.ns)
    }
    fn task_queue(&self, kind: &str) -> String {
        format!("{}.tasks.{kind}", self.ns)
    }
    fn replies_exchange(&self) -> String {
        format!("{}.replies", self.ns)
    }
    fn reply_queue(&self, id: &str) -> String {
        format!("{}.replies.{id}", self.ns)
    }
    fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.ns)
    }
    fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }
}

fn kinds(common: &Common) -> &'static [&'static str] {
    &KINDS[..common.kinds as usize]
}

/// The URL with the heartbeat, unless it sets its own (Conveyor's `connect_url`).
fn connect_url(url: &str, heartbeat: u64) -> String {
    if url.contains("heartbeat=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={}", heartbeat.max(1))
}

/// Connects as Conveyor does: lapin on the current tokio runtime through async-rs.
async fn connect(common: &Common, role: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(format!(
        "amqp-ceiling {role} {}",
        common.namespace
    )));
    let runtime = async_rs::Runtime::tokio_with_handle(tokio::runtime::Handle::current());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: None,
    };
    Connection::connect_with_config(
        &connect_url(&common.url, common.heartbeat),
        props,
        tls,
        runtime,
    )
    .await
    .map_err(|e| anyhow!("cannot connect to the broker: {e}"))
}

/// A channel in confirm mode, shared by all publishers of the process.
async fn publisher(conn: &Connection) -> Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn guarded_quorum_args(n: &Names, delivery_limit: u32) -> FieldTable {
    let mut args = quorum_args();
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(delivery_limit as i64),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(n.dead_letter_exchange().into()),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn declare_topology(ch: &Channel, n: &Names, common: &Common) -> Result<()> {
    for (name, kind) in [
        (n.tasks_exchange(), ExchangeKind::Direct),
        (n.replies_exchange(), ExchangeKind::Direct),
        (n.dead_letter_exchange(), ExchangeKind::Topic),
    ] {
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(name.into(), kind, opts, FieldTable::default())
            .await?;
    }
    ch.queue_declare(n.dead_letter_queue().into(), durable(), quorum_args())
        .await?;
    ch.queue_bind(
        n.dead_letter_queue().into(),
        n.dead_letter_exchange().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for kind in kinds(common) {
        let queue = n.task_queue(kind);
        ch.queue_declare(
            queue.clone().into(),
            durable(),
            guarded_quorum_args(n, common.delivery_limit),
        )
        .await
        .with_context(|| format!("cannot declare {queue}"))?;
        ch.queue_bind(
            queue.into(),
            n.tasks_exchange().into(),
            (*kind).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

async fn declare_reply_queue(ch: &Channel, n: &Names, queue: &str, kind: QueueType) -> Result<()> {
    let args = match kind {
        QueueType::Classic => FieldTable::default(),
        QueueType::Quorum => quorum_args(),
    };
    ch.queue_declare(queue.into(), durable(), args).await?;
    for exchange in [n.replies_exchange(), n.dead_letter_exchange()] {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Deletes every queue and exchange of the namespace, each on a channel of
/// its own (a failed delete closes its channel). Reports, never fails.
async fn delete_topology(conn: &Connection, n: &Names) {
    let queues = KINDS
        .iter()
        .map(|k| n.task_queue(k))
        .chain([n.dead_letter_queue()]);
    for queue in queues {
        if let Err(e) = delete_queue(conn, &queue).await {
            eprintln!("amqp-ceiling: cannot delete queue {queue}: {e}");
        }
    }
    for exchange in [
        n.tasks_exchange(),
        n.replies_exchange(),
        n.dead_letter_exchange(),
    ] {
        let deleted = async {
            let ch = conn.create_channel().await?;
            ch.exchange_delete(exchange.clone().into(), ExchangeDeleteOptions::default())
                .await?;
            let _ = ch.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(())
        };
        if let Err(e) = deleted.await {
            eprintln!("amqp-ceiling: cannot delete exchange {exchange}: {e}");
        }
    }
}

async fn delete_queue(conn: &Connection, queue: &str) -> Result<()> {
    let ch = conn.create_channel().await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = ch.close(200, "done".into()).await;
    Ok(())
}

/// Publishes with `mandatory` and waits for the broker's confirm; an
/// unroutable or nacked message is an error.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<()> {
    let confirmation = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => bail!("unroutable: {exchange} / {routing_key}"),
        Confirmation::Nack(_) => bail!("the broker nacked a publish to {exchange} / {routing_key}"),
        Confirmation::NotRequested => bail!("publisher confirms are off"),
    }
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

// ---------------------------------------------------------------- serve

async fn serve(
    common: Common,
    concurrency: Option<usize>,
    prefetch: Option<u16>,
    started: bool,
) -> Result<()> {
    let concurrency = concurrency.unwrap_or_else(default_concurrency).max(1);
    let prefetch = prefetch
        .unwrap_or(concurrency.min(u16::MAX as usize) as u16)
        .max(1);
    let names = Arc::new(Names::new(&common.namespace));
    let conn = connect(&common, "serve").await?;
    let publisher = publisher(&conn).await?;
    declare_topology(&publisher, &names, &common).await?;
    let node: Arc<str> = format!("ceiling-serve-{}", std::process::id()).into();

    let mut consumers = JoinSet::new();
    for kind in kinds(&common) {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                names.task_queue(kind).into(),
                format!("{node}-{kind}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let slots = Arc::new(Semaphore::new(concurrency));
        let (publisher, names, node) = (publisher.clone(), names.clone(), node.clone());
        consumers.spawn(async move {
            // The channel lives as long as its consumer.
            let _channel = channel;
            let mut served = 0u64;
            while let Some(next) = consumer.next().await {
                let delivery = match next {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("amqp-ceiling serve: consumer of {kind} stopped: {e}");
                        break;
                    }
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (publisher, names, node) = (publisher.clone(), names.clone(), node.clone());
                tokio::spawn(async move {
                    if let Err(e) = respond(&publisher, &names, &node, delivery, started).await {
                        eprintln!("amqp-ceiling serve: {e:#}");
                        std::process::exit(1);
                    }
                    drop(permit);
                });
                served += 1;
            }
            (kind, served)
        });
    }
    println!(
        "{}",
        json!({"ready": true, "namespace": common.namespace, "kinds": common.kinds,
               "concurrency": concurrency, "prefetch": prefetch, "started": started})
    );
    std::io::stdout().flush()?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        ended = consumers.join_next() => {
            if let Some(Ok((kind, _))) = ended {
                eprintln!("amqp-ceiling serve: the consumer of {kind} ended (queue deleted?); stopping");
            }
        }
    }
    // Unacked requests go back to their queues when the connection closes.
    let _ = conn.close(200, "amqp-ceiling serve stopping".into()).await;
    Ok(())
}

/// Answers one request: the reply is published (confirmed) before the ack.
async fn respond(
    publisher: &Channel,
    names: &Names,
    node: &str,
    delivery: lapin::message::Delivery,
    started: bool,
) -> Result<()> {
    let request: Value = serde_json::from_slice(&delivery.data).context("undecodable request")?;
    let reply_to = request["reply_to"]
        .as_str()
        .context("request without reply_to")?;
    let update = |status: Value| {
        json!({
            "schema_version": 2,
            "flow_run": request["flow_run"],
            "task": request["task"],
            "task_run": request["task_run"],
            "attempt": request["attempt"],
            "seq": request["seq"],
            "node": node,
            "delivery": if delivery.redelivered { 2 } else { 1 },
            "status": status,
        })
    };
    if started {
        let body = serde_json::to_vec(&update(json!({"state": "started"})))?;
        publish_confirmed(
            publisher,
            &names.replies_exchange(),
            reply_to,
            &body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await?;
    }
    let output = format!(
        "/srv/conveyor/artifacts/{}/{}.arrow",
        request["flow_run"].as_str().unwrap_or("?"),
        request["task"].as_str().unwrap_or("?")
    );
    let body = serde_json::to_vec(&update(json!({
        "state": "succeeded",
        "output": {"artifact": output, "rows": 3, "bytes": 1184},
        "elapsed_ms": 1,
    })))?;
    publish_confirmed(
        publisher,
        &names.replies_exchange(),
        reply_to,
        &body,
        persistent(),
    )
    .await?;
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

// ---------------------------------------------------------------- drive

struct DriveOpts {
    requests: u64,
    inflight: u64,
    warmup: u64,
    reply_queue_type: QueueType,
    idle_timeout: Duration,
    cleanup: bool,
}

/// What a request publisher needs; shared by the tasks in flight.
struct Requester {
    publisher: Channel,
    names: Names,
    kinds: &'static [&'static str],
    run_id: String,
    reply_queue: String,
    sent: Mutex<HashMap<u64, Instant>>,
}

impl Requester {
    /// A TaskMessage-sized request (about 300 bytes of JSON).
    fn request(&self, seq: u64) -> (&'static str, String, Vec<u8>) {
        let kind = self.kinds[(seq % self.kinds.len() as u64) as usize];
        let flow = seq / self.kinds.len() as u64;
        let flow_run = format!("{}-{flow:010}", self.run_id);
        let task_run = format!("{flow_run}-{kind}");
        let body = json!({
            "schema_version": 2,
            "flow": "ceiling",
            "flow_run": flow_run,
            "task": kind,
            "task_run": task_run,
            "attempt": 1,
            "reply_to": self.reply_queue,
            "seq": seq,
            "spec": {
                "kind": kind,
                "source": {"type": "file", "path": "/srv/conveyor/in/tiny.csv", "format": "csv"},
                "steps": [{"drop": ["note"]}],
                "sink": {"type": "artifact"},
            },
        });
        (
            kind,
            task_run,
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    /// Publishes request `seq` (persistent, mandatory, confirmed), with the
    /// CC header Conveyor sets for dead-lettering back to the requester.
    async fn send(&self, seq: u64) -> Result<()> {
        let (kind, task_run, body) = self.request(seq);
        let mut headers = FieldTable::default();
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(
                vec![AMQPValue::LongString(self.reply_queue.as_str().into())].into(),
            ),
        );
        let props = persistent()
            .with_message_id(task_run.into())
            .with_headers(headers);
        self.sent
            .lock()
            .map_err(|_| anyhow!("poisoned lock"))?
            .insert(seq, Instant::now());
        publish_confirmed(
            &self.publisher,
            &self.names.tasks_exchange(),
            kind,
            &body,
            props,
        )
        .await
    }

    fn sent_at(&self, seq: u64) -> Option<Instant> {
        self.sent.lock().ok()?.remove(&seq)
    }
}

struct Phase {
    elapsed: Duration,
    latencies: Vec<Duration>,
    reply_bytes: usize,
}

/// Runs `count` round trips, `inflight` at once, with sequence numbers from `base`.
async fn run_phase(
    req: &Arc<Requester>,
    consumer: &mut lapin::Consumer,
    base: u64,
    count: u64,
    inflight: u64,
    idle: Duration,
) -> Result<Phase> {
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let started = Instant::now();
    let mut issued = inflight.min(count);
    for i in 0..issued {
        let req = req.clone();
        tasks.spawn(async move { req.send(base + i).await });
    }
    let mut latencies = Vec::with_capacity(count as usize);
    let mut reply_bytes = 0;
    while (latencies.len() as u64) < count {
        let delivery = match tokio::time::timeout(idle, consumer.next()).await {
            Err(_) => bail!(
                "no reply for {}s ({} of {count} received; is `serve` running with --kinds {}?)",
                idle.as_secs(),
                latencies.len(),
                req.kinds.len()
            ),
            Ok(None) => bail!("the reply consumer ended"),
            Ok(Some(d)) => d?,
        };
        let reply: Value = serde_json::from_slice(&delivery.data).context("undecodable reply")?;
        let next = if reply["status"]["state"] == "started" {
            // A Conveyor worker's transient `started` update: ack, no round trip.
            None
        } else {
            let seq = reply["seq"].as_u64().context("reply without seq")?;
            let Some(at) = req.sent_at(seq) else {
                bail!("reply to unknown or answered request {seq}");
            };
            latencies.push(at.elapsed());
            reply_bytes = delivery.data.len();
            (issued < count).then(|| {
                issued += 1;
                base + issued - 1
            })
        };
        let req = req.clone();
        // The next request is confirmed before the reply is acked, as the coordinator does.
        tasks.spawn(async move {
            if let Some(seq) = next {
                req.send(seq).await?;
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(Phase {
        elapsed: started.elapsed(),
        latencies,
        reply_bytes,
    })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    ms(sorted[rank - 1])
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn drive(common: Common, opts: DriveOpts) -> Result<()> {
    if opts.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let names = Names::new(&common.namespace);
    let conn = connect(&common, "drive").await?;
    let publisher = publisher(&conn).await?;
    declare_topology(&publisher, &names, &common).await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let run_id = format!("{}{nanos:08x}", std::process::id());
    let reply_queue = names.reply_queue(&format!("drive-{run_id}"));
    declare_reply_queue(&publisher, &names, &reply_queue, opts.reply_queue_type).await?;

    let consuming = conn.create_channel().await?;
    consuming
        .basic_qos(REPLY_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consuming
        .basic_consume(
            reply_queue.clone().into(),
            format!("drive-{run_id}").into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let req = Arc::new(Requester {
        publisher,
        names,
        kinds: kinds(&common),
        run_id,
        reply_queue: reply_queue.clone(),
        sent: Mutex::new(HashMap::new()),
    });
    let request_bytes = req.request(opts.warmup).2.len();

    let outcome = async {
        if opts.warmup > 0 {
            run_phase(
                &req,
                &mut consumer,
                0,
                opts.warmup,
                opts.inflight,
                opts.idle_timeout,
            )
            .await
            .context("warm-up")?;
        }
        run_phase(
            &req,
            &mut consumer,
            opts.warmup,
            opts.requests,
            opts.inflight,
            opts.idle_timeout,
        )
        .await
    }
    .await;

    let _ = consuming.close(200, "done".into()).await;
    if let Err(e) = delete_queue(&conn, &reply_queue).await {
        eprintln!("amqp-ceiling: cannot delete queue {reply_queue}: {e}");
    }
    if opts.cleanup {
        delete_topology(&conn, &req.names).await;
    }
    let _ = conn.close(200, "done".into()).await;

    let mut phase = outcome?;
    phase.latencies.sort_unstable();
    let seconds = phase.elapsed.as_secs_f64();
    let mean = phase.latencies.iter().sum::<Duration>() / phase.latencies.len() as u32;
    println!(
        "{}",
        json!({
            "inflight": opts.inflight,
            "requests": opts.requests,
            "seconds": (seconds * 1e4).round() / 1e4,
            "rr_per_s": ((opts.requests as f64 / seconds) * 10.0).round() / 10.0,
            "p50_ms": percentile_ms(&phase.latencies, 0.50),
            "p99_ms": percentile_ms(&phase.latencies, 0.99),
            "mean_ms": ms(mean),
            "max_ms": phase.latencies.last().copied().map(ms).unwrap_or(0.0),
            "warmup": opts.warmup,
            "kinds": common.kinds,
            "reply_queue_type": match opts.reply_queue_type {
                QueueType::Classic => "classic",
                QueueType::Quorum => "quorum",
            },
            "request_bytes": request_bytes,
            "reply_bytes": phase.reply_bytes,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 0.5), 50.0);
        assert_eq!(percentile_ms(&d, 0.99), 99.0);
        assert_eq!(percentile_ms(&d[..1], 0.99), 1.0);
    }

    #[test]
    fn the_heartbeat_goes_into_the_url_unless_set() {
        assert_eq!(connect_url("amqp://h/%2f", 10), "amqp://h/%2f?heartbeat=10");
        assert_eq!(
            connect_url("amqp://h/%2f?frame_max=8192", 3),
            "amqp://h/%2f?frame_max=8192&heartbeat=3"
        );
        assert_eq!(
            connect_url("amqp://h/%2f?heartbeat=5", 10),
            "amqp://h/%2f?heartbeat=5"
        );
    }
}
