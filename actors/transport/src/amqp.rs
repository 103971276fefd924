/*!
RabbitMQ through lapin.

Topology, all durable and under the namespace `ns`:
- `ns.tasks` (direct): binding key = task kind, to the quorum queue
  `ns.tasks.{kind}`, which has an explicit `x-delivery-limit` and dead-letters
  to `ns.dlx` (topic) → `ns.dead` (bound `#`) and, through the task's CC
  header, to its coordinator's reply queue;
- `ns.events` (topic): heartbeats, routing key `heartbeat.{node}`;
- `ns.replies` (direct): worker results, to a coordinator's durable reply
  queue `ns.replies.{coordinator}`, bound by its own name.

Tasks and updates are published persistent, `mandatory`, on a channel in
confirm mode; a publish only counts once the broker confirmed it, and an
unroutable one is an error. Consumers ack manually.

The connection runs on the node's I/O runtime (`connect_with_runtime`), so a
busy actix thread can never starve its heartbeats.
*/

use std::sync::Arc;
use std::time::Duration;

use conveyor_schemas::{Heartbeat, TaskKind};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::mpsc;

use crate::backoff::Backoff;

use super::{Acker, Closer, Delivery, Names, Result, Subscription, TransportError};

/// A live connection and its confirm-mode publisher channel.
#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    /// Shared by every publisher of this node; lapin pipelines publishes on
    /// it and matches each confirm to its publish.
    publisher: Channel,
}

impl Live {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.publisher.status().connected()
    }
}

struct Shared {
    url: String,
    /// Extra CA certificates (PEM) for amqps://.
    tls_ca: Option<String>,
    names: Names,
    delivery_limit: u32,
    node: String,
    io: tokio::runtime::Handle,
    live: tokio::sync::RwLock<Option<Live>>,
    /// Serialises reconnects so that one outage makes one reconnect loop.
    reconnecting: tokio::sync::Mutex<()>,
    /// Reply queues declared on this connection, declared again after a reconnect.
    reply_queues: std::sync::Mutex<Vec<(String, Option<Duration>)>>,
    /// Set by `close`: no reconnects after a deliberate shutdown.
    closed: std::sync::atomic::AtomicBool,
}

/// RabbitMQ transport that survives broker restarts and dropped connections:
/// every operation goes through [`AmqpTransport::live`], which reconnects with
/// backoff and declares the topology again.
#[derive(Clone)]
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long the consumers found on the task queues when a coordinator starts
/// count as live workers, before their own heartbeats must take over.
const CONSUMERS_LIVE_FOR: Duration = Duration::from_secs(6);

/// How long a nacked publish is resent before it counts as failed. A quorum
/// queue nacks while it has no leader, e.g. while it recovers after a broker
/// restart; the documented answer to a nack is to publish again.
const NACK_PATIENCE: Duration = Duration::from_secs(60);

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

fn delivery_count(props: &BasicProperties) -> Option<u32> {
    let headers = props.headers().as_ref()?;
    let value = headers.inner().get("x-delivery-count")?;
    let n = match value {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => *n as i64,
        AMQPValue::LongUInt(n) => *n as i64,
        AMQPValue::ShortInt(n) => *n as i64,
        AMQPValue::ShortUInt(n) => *n as i64,
        _ => return None,
    };
    u32::try_from(n).ok()
}

impl AmqpTransport {
    /// Connects, opens the confirm-mode publisher channel and declares the
    /// topology. Fails if the first connection fails: a bad URL or password
    /// should stop a node at start, not make it retry forever.
    pub async fn connect(
        url: &str,
        namespace: &str,
        delivery_limit: u32,
        node: &str,
        io: tokio::runtime::Handle,
    ) -> Result<Self> {
        AmqpTransport::connect_tls(
            url,
            namespace,
            delivery_limit,
            node,
            io,
            None,
            Some(Duration::ZERO),
        )
        .await
    }

    /// Like [`AmqpTransport::connect`]; `tls_ca` is a PEM bundle of CA
    /// certificates trusted for `amqps://` besides the web PKI roots.
    pub async fn connect_tls(
        url: &str,
        namespace: &str,
        delivery_limit: u32,
        node: &str,
        io: tokio::runtime::Handle,
        tls_ca: Option<String>,
        connect_timeout: Option<Duration>,
    ) -> Result<Self> {
        let transport = AmqpTransport {
            shared: Arc::new(Shared {
                tls_ca,
                url: url.to_string(),
                names: Names::new(namespace),
                delivery_limit,
                node: node.to_string(),
                io,
                live: tokio::sync::RwLock::new(None),
                reconnecting: tokio::sync::Mutex::new(()),
                reply_queues: std::sync::Mutex::new(Vec::new()),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let live = transport.open_at_start(connect_timeout).await?;
        *transport.shared.live.write().await = Some(live);
        Ok(transport)
    }

    async fn open(&self) -> Result<Live> {
        let sh = &self.shared;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("conveyor {}", sh.node)));
        let runtime = async_rs::Runtime::tokio_with_handle(sh.io.clone());
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: sh.tls_ca.clone(),
        };
        let conn = Connection::connect_with_config(&sh.url, props, tls, runtime)
            .await
            .map_err(|e| {
                let what = format!(
                    "cannot connect to {}: {e}",
                    conveyor_schemas::redact::redact_url(&sh.url)
                );
                if refused_for_good(&e) {
                    TransportError::Refused(what)
                } else {
                    TransportError::Broker(what)
                }
            })?;
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let live = Live {
            conn: Arc::new(conn),
            publisher,
        };
        declare_topology(&live.publisher, &sh.names, sh.delivery_limit).await?;
        let replies = sh
            .reply_queues
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default();
        for (queue, expires) in replies {
            declare_reply_queue(&live.publisher, &sh.names, &queue, expires).await?;
        }
        Ok(live)
    }

    /// The first connection: a broker that is down (not started yet, or
    /// restarting) is tried again with backoff, for up to `timeout` (none:
    /// as long as it takes); a broker that refuses this node fails at once.
    async fn open_at_start(&self, timeout: Option<Duration>) -> Result<Live> {
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX).with_jitter();
        loop {
            match self.open().await {
                Ok(live) => {
                    if backoff.failures() > 0 {
                        tracing::info!(
                            failures = backoff.failures(),
                            "Connected to the broker after it was unreachable"
                        );
                    }
                    return Ok(live);
                }
                Err(TransportError::Broker(what)) => {
                    let waited = started.elapsed();
                    let mut delay = backoff.failed();
                    if let Some(limit) = timeout {
                        if waited >= limit {
                            return Err(TransportError::Unreachable {
                                what,
                                waited: limit,
                            });
                        }
                        // The last try comes at the limit, not past it.
                        delay = delay.min(limit - waited);
                    }
                    if backoff.worth_logging() {
                        tracing::warn!(error = %what, failures = backoff.failures(), retry_in_ms = delay.as_millis() as u64, "Broker unreachable at start; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The live connection, reconnecting (with backoff, as long as it takes)
    /// when it was lost. Fails only once the transport was closed.
    async fn live(&self) -> Result<Live> {
        if let Some(live) = self.live_now().await {
            return Ok(live);
        }
        let _one_at_a_time = self.shared.reconnecting.lock().await;
        if let Some(live) = self.live_now().await {
            return Ok(live);
        }
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX).with_jitter();
        loop {
            if self.is_closed() {
                return Err(TransportError::Broker("the connection was closed".into()));
            }
            match self.open().await {
                Ok(live) => {
                    crate::metrics::broker_reconnected();
                    tracing::info!(broker = %conveyor_schemas::redact::redact_url(&self.shared.url), failures = backoff.failures(), "Reconnected to the broker; topology declared again");
                    *self.shared.live.write().await = Some(live.clone());
                    return Ok(live);
                }
                Err(e) => {
                    let delay = backoff.failed();
                    if backoff.worth_logging() {
                        tracing::warn!(error = %e, failures = backoff.failures(), retry_in_ms = delay.as_millis() as u64, "Broker unreachable; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared
            .closed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live connection if there is one right now, without reconnecting.
    async fn live_now(&self) -> Option<Live> {
        self.shared
            .live
            .read()
            .await
            .as_ref()
            .filter(|l| l.usable())
            .cloned()
    }

    pub fn names(&self) -> &Names {
        &self.shared.names
    }

    /// Declares a coordinator's durable reply queue (again after each reconnect).
    pub async fn declare_reply_queue(&self, queue: &str, expires: Option<Duration>) -> Result<()> {
        if let Ok(mut queues) = self.shared.reply_queues.lock() {
            if !queues.iter().any(|(q, _)| q == queue) {
                queues.push((queue.to_string(), expires));
            }
        }
        let live = self.live().await?;
        declare_reply_queue(&live.publisher, &self.shared.names, queue, expires).await
    }

    /// Publishes with `mandatory` and waits for the broker's confirm. A publish
    /// cut off by a lost connection is sent again on the next one, so nothing
    /// unconfirmed is lost; a duplicate that results is fenced downstream.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        let started = tokio::time::Instant::now();
        loop {
            let live = self.live().await?;
            let sent = async {
                live.publisher
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        props.clone(),
                    )
                    .await?
                    .await
            }
            .await;
            match sent {
                Ok(Confirmation::Ack(None)) => return Ok(()),
                Ok(Confirmation::Ack(Some(_))) => {
                    return Err(TransportError::Unroutable(routing_key.to_string()))
                }
                Ok(Confirmation::Nack(_)) => {
                    if started.elapsed() >= NACK_PATIENCE {
                        return Err(TransportError::Nacked(routing_key.to_string()));
                    }
                    let delay = backoff.failed();
                    tracing::warn!(
                        routing_key,
                        retry_in_ms = delay.as_millis() as u64,
                        "Broker nacked a publish (queue unavailable?); publishing again"
                    );
                    tokio::time::sleep(delay).await;
                }
                Ok(Confirmation::NotRequested) => {
                    return Err(TransportError::Broker("publisher confirms are off".into()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, routing_key, "Publish not confirmed; sending it again once connected");
                    backoff.wait().await;
                }
            }
        }
    }

    pub async fn publish_task(
        &self,
        kind: TaskKind,
        task_run: &str,
        reply_to: &str,
        body: Vec<u8>,
    ) -> Result<()> {
        // The CC routing key is unbound on the tasks exchange, but the broker
        // keeps it when dead-lettering, which routes the dead task back to
        // its coordinator.
        let mut headers = FieldTable::default();
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongString(reply_to.into())].into()),
        );
        let props = persistent()
            .with_message_id(task_run.into())
            .with_headers(headers);
        self.publish_confirmed(
            &self.shared.names.tasks_exchange(),
            kind.as_str(),
            &body,
            props,
        )
        .await
    }

    /// Declares the submissions exchange and queue (idempotent).
    pub async fn declare_submissions(&self) -> Result<()> {
        let live = self.live().await?;
        declare_submissions(
            &live.publisher,
            &self.shared.names,
            self.shared.delivery_limit,
        )
        .await
    }

    pub async fn publish_submission(
        &self,
        request_id: &str,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        let props = persistent()
            .with_message_id(request_id.into())
            .with_expiration(ttl.as_millis().to_string().into());
        self.declare_submissions().await?;
        let name = self.shared.names.submissions();
        self.publish_confirmed(&name, "submit", &body, props).await
    }

    /// Like [`AmqpTransport::publish_update`], but not written to the
    /// broker's disk: for updates a broker restart may lose (started,
    /// progress). Still `mandatory` and confirmed, so a missing reply queue
    /// is an error.
    pub async fn publish_update_transient(&self, reply_to: &str, body: Vec<u8>) -> Result<()> {
        self.publish_confirmed(
            &self.shared.names.replies_exchange(),
            reply_to,
            &body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await
    }

    pub async fn publish_update(&self, reply_to: &str, body: Vec<u8>) -> Result<()> {
        self.publish_confirmed(
            &self.shared.names.replies_exchange(),
            reply_to,
            &body,
            persistent(),
        )
        .await
    }

    /// Heartbeats are fire-and-forget: skipped while disconnected, and a
    /// lost one is replaced by the next.
    pub async fn publish_heartbeat(&self, node: &str, body: Vec<u8>) -> Result<()> {
        self.publish_event(&format!("heartbeat.{node}"), body).await
    }

    /// Publishes on the events exchange: not persistent, not confirmed, not
    /// mandatory; nothing waits for an event that found no listener.
    pub async fn publish_event(&self, routing_key: &str, body: Vec<u8>) -> Result<()> {
        let Some(live) = self.live_now().await else {
            return Ok(());
        };
        live.publisher
            .basic_publish(
                self.shared.names.events_exchange().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await?;
        Ok(())
    }

    /// Consumes `queue` on a channel of its own, so closing it requeues
    /// exactly this consumer's unacked messages. The delivery stream ends when
    /// the connection is lost; callers subscribe again.
    pub async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Subscription> {
        let live = self.live().await?;
        let channel = live.conn.create_channel().await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await?;
        let consumer_tag = format!("{tag}-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                consumer_tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (tx, rx) = mpsc::channel(prefetch.max(1) as usize);
        let queue_name = queue.to_string();
        tokio::spawn(async move {
            while let Some(next) = consumer.next().await {
                match next {
                    Ok(d) => {
                        let delivery = delivery_count(&d.properties)
                            .map(|n| n + 1)
                            .unwrap_or(if d.redelivered { 2 } else { 1 });
                        let dead_letter_reason = header_text(&d.properties, "x-first-death-reason");
                        let out = Delivery {
                            body: d.data,
                            delivery,
                            dead_letter_reason,
                            acker: Acker::Amqp(d.acker),
                        };
                        if tx.send(out).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(queue = %queue_name, error = %e, "Consumer stopped");
                        break;
                    }
                }
            }
        });
        Ok(Subscription {
            deliveries: rx,
            closer: Closer::Amqp(channel, consumer_tag),
        })
    }

    /// Heartbeats of every node, for as long as the transport lives: the
    /// subscription is renewed after each reconnect.
    pub async fn consume_heartbeats(&self) -> Result<mpsc::Receiver<Heartbeat>> {
        // Workers that are already running announce themselves at their next
        // heartbeat, up to an interval from now; until then a new
        // coordinator would think their kinds have no live worker and hold
        // its first tasks back. The broker knows now: a task queue with
        // consumers has live workers.
        let first = self.consumers_as_heartbeat().await;
        self.consume_events("heartbeat.*", super::decode_heartbeat, first)
            .await
    }

    /// The events bound by `binding` on the events exchange, decoded, for
    /// as long as the transport lives: the subscription (a queue of this
    /// connection's own) is renewed after each reconnect. `first` is handed
    /// out before them.
    pub async fn consume_events<T: Send + 'static>(
        &self,
        binding: &'static str,
        decode: fn(&[u8]) -> std::result::Result<T, String>,
        first: Option<T>,
    ) -> Result<mpsc::Receiver<T>> {
        let (tx, rx) = mpsc::channel(64);
        let transport = self.clone();
        let mut consumer = transport.subscribe_events(binding).await?;
        if let Some(ev) = first {
            let _ = tx.send(ev).await;
        }
        tokio::spawn(async move {
            loop {
                while let Some(next) = consumer.next().await {
                    let Ok(d) = next else { break };
                    match decode(&d.data) {
                        Ok(ev) => {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, binding, "Ignoring an event"),
                    }
                }
                if tx.is_closed() || transport.is_closed() {
                    return;
                }
                let mut backoff = Backoff::new(RECONNECT_MAX, RECONNECT_MAX);
                loop {
                    match transport.subscribe_events(binding).await {
                        Ok(c) => {
                            consumer = c;
                            break;
                        }
                        Err(_) if transport.is_closed() => return,
                        Err(e) => {
                            tracing::warn!(error = %e, binding, "Cannot resubscribe to events; retrying");
                            backoff.wait().await;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    /// The kinds whose task queues have consumers, as a heartbeat that
    /// expires after [`CONSUMERS_LIVE_FOR`] (a worker's own heartbeats take
    /// over by then). None when no queue has a consumer or the broker is out
    /// of reach; a kind whose queue cannot be probed counts as having none.
    async fn consumers_as_heartbeat(&self) -> Option<Heartbeat> {
        let live = self.live().await.ok()?;
        // A passive declare of a missing queue closes its channel: each kind
        // gets a channel of its own, so one missing queue hides no other.
        let probes = TaskKind::ALL.into_iter().map(|kind| {
            let (conn, names) = (&live.conn, &self.shared.names);
            async move {
                let channel = conn.create_channel().await.ok()?;
                let queue = channel
                    .queue_declare(
                        names.task_queue(kind).as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                if queue.is_ok() {
                    let _ = channel.close(200, "done".into()).await;
                }
                queue.ok().filter(|q| q.consumer_count() > 0).map(|_| kind)
            }
        });
        let kinds: Vec<TaskKind> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        (!kinds.is_empty()).then(|| Heartbeat {
            schema_version: conveyor_schemas::SCHEMA_VERSION,
            node: "(task queue consumers)".into(),
            kinds,
            in_flight: Vec::new(),
            interval_ms: (CONSUMERS_LIVE_FOR / 3).as_millis() as u64,
            version: None,
        })
    }

    async fn subscribe_events(&self, binding: &str) -> Result<lapin::Consumer> {
        let live = self.live().await?;
        let channel = live.conn.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                self.shared.names.events_exchange().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(channel
            .basic_consume(
                queue.name().clone(),
                binding.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?)
    }

    pub async fn close(&self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(live) = self.shared.live.write().await.take() {
            let _ = live.conn.close(200, "node shutting down".into()).await;
        }
    }
}

/// Whether a connection error means the broker refused this node (bad
/// credentials, no access to the vhost, a TLS certificate it cannot trust):
/// then retrying cannot help. A refused or reset TCP connection, a timeout or
/// a name that does not resolve yet may pass.
fn refused_for_good(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(_)
        | lapin::ErrorKind::AuthProviderError(_)
        | lapin::ErrorKind::InvalidProtocolVersion(_) => true,
        lapin::ErrorKind::IOError(io) => {
            let text = io.to_string().to_ascii_lowercase();
            io.kind() == std::io::ErrorKind::InvalidData
                || [
                    "certificate",
                    "tls",
                    "handshake",
                    "access_refused",
                    "access-refused",
                ]
                .iter()
                .any(|w| text.contains(w))
        }
        _ => false,
    }
}

fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// A quorum queue that dead-letters a message after `delivery_limit`
/// deliveries (the broker's default limit is none, so set it explicitly).
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

async fn declare_durable_exchange(ch: &Channel, name: String, kind: ExchangeKind) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
        .await?;
    Ok(())
}

async fn declare_topology(ch: &Channel, n: &Names, delivery_limit: u32) -> Result<()> {
    // Topic dead-letter exchange: `ns.dead` takes every dead letter ("#"); a
    // coordinator's reply queue also takes those whose CC header names it.
    for (name, kind) in [
        (n.tasks_exchange(), ExchangeKind::Direct),
        (n.events_exchange(), ExchangeKind::Topic),
        (n.replies_exchange(), ExchangeKind::Direct),
        (n.dead_letter_exchange(), ExchangeKind::Topic),
    ] {
        declare_durable_exchange(ch, name, kind).await?;
    }
    let queue_opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(n.dead_letter_queue().into(), queue_opts, quorum_args())
        .await?;
    ch.queue_bind(
        n.dead_letter_queue().into(),
        n.dead_letter_exchange().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for kind in TaskKind::ALL {
        let args = guarded_quorum_args(n, delivery_limit);
        ch.queue_declare(n.task_queue(kind).into(), queue_opts, args)
            .await
            .map_err(|e| {
                let text = e.to_string();
                let hint = if text.contains("PRECONDITION") {
                    " (it exists with other arguments, e.g. another delivery_limit: delete it or keep the old value)"
                } else {
                    ""
                };
                TransportError::Broker(format!("cannot declare queue {}{hint}: {text}", n.task_queue(kind)))
            })?;
        ch.queue_bind(
            n.task_queue(kind).into(),
            n.tasks_exchange().into(),
            kind.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The exchange and quorum queue of flows submitted to coordinator nodes,
/// declared only by the nodes that use them (a worker's broker user needs no
/// rights on them). A submission that crashes every coordinator that takes it
/// is dead-lettered like a poison task.
async fn declare_submissions(ch: &Channel, n: &Names, delivery_limit: u32) -> Result<()> {
    declare_durable_exchange(ch, n.submissions(), ExchangeKind::Direct).await?;
    let args = guarded_quorum_args(n, delivery_limit);
    ch.queue_declare(
        n.submissions().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        n.submissions().into(),
        n.submissions().into(),
        "submit".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn declare_reply_queue(
    ch: &Channel,
    n: &Names,
    queue: &str,
    expires: Option<Duration>,
) -> Result<()> {
    let mut args = FieldTable::default();
    if let Some(d) = expires {
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(d.as_millis() as i64),
        );
    }
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        n.replies_exchange().into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // Dead-lettered tasks published with CC = this queue come back here.
    ch.queue_bind(
        queue.into(),
        n.dead_letter_exchange().into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}
