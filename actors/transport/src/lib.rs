/*!
Transports move the JSON messages of `conveyor-schemas` between roles.

- `amqp` (cargo feature `amqp`): RabbitMQ through lapin, for clusters.
- [`inproc`]: an in-process bus with the same semantics (manual ack,
  redelivery of unacked work, a delivery limit, a dead-letter queue), for the
  embedded default.

Both run on the node's I/O runtime (a multi-thread tokio runtime of its own),
never on the actix thread. Actors call them through [`Transport`], which is
cheap to clone.

This crate is also what every role of a node shares, below the coordinator
and the worker:
- [`backoff`]: the one retry helper; [`tasks`]: every task a node spawns on
  its I/O runtime, tracked so that a stopping node can wait for them;
- [`metrics`]: the process-wide Prometheus recorder (each role describes
  its own metrics); [`fatal`]: why a node must exit; [`failpoint`]: fault
  injection for the fault tests (feature `failpoints`).
*/

pub mod backoff;
pub mod failpoint;
pub mod fatal;
pub mod metrics;
pub mod tasks;

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod inproc;

use conveyor_schemas::{
    FlowEvent, FlowSubmission, Heartbeat, RunFinished, TaskKind, TaskLogs, TaskMessage, TaskUpdate,
};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("broker: {0}")]
    Broker(String),
    /// The broker refused this node (credentials, vhost permissions, TLS):
    /// trying again cannot help.
    #[error("broker: {0}")]
    Refused(String),
    /// No broker answered within `--connect-timeout`.
    #[error("broker: {what}; gave up after {}", humantime::format_duration(*.waited))]
    Unreachable {
        what: String,
        waited: std::time::Duration,
    },
    #[error("the broker could not route the message to `{0}`: no queue is bound for it")]
    Unroutable(String),
    #[error("the broker refused the message (nack) for `{0}`")]
    Nacked(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

#[cfg(feature = "amqp")]
impl From<lapin::Error> for TransportError {
    fn from(e: lapin::Error) -> Self {
        TransportError::Broker(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, TransportError>;

/// Names of every exchange and queue, all under the namespace.
#[derive(Clone, Debug)]
pub struct Names {
    pub namespace: String,
}

impl Names {
    pub fn new(namespace: impl Into<String>) -> Names {
        Names {
            namespace: namespace.into(),
        }
    }

    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.namespace)
    }
    /// Direct exchange for worker results; each reply queue is bound by its
    /// name. Workers publish here and not to the default exchange, so that a
    /// worker's broker user needs no right to publish to arbitrary queues.
    pub fn replies_exchange(&self) -> String {
        format!("{}.replies", self.namespace)
    }
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.namespace)
    }
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.namespace)
    }
    pub fn task_queue(&self, kind: TaskKind) -> String {
        format!("{}.tasks.{kind}", self.namespace)
    }
    /// Exchange and quorum queue of flows submitted to coordinator nodes.
    pub fn submissions(&self) -> String {
        format!("{}.submissions", self.namespace)
    }
    /// The durable reply queue of a coordinator.
    pub fn reply_queue(&self, coordinator: &str) -> String {
        format!("{}.replies.{coordinator}", self.namespace)
    }
    /// Every queue whose name is known in advance: the task queues, the
    /// dead-letter queue and the submissions queue. Reply queues are named
    /// after their coordinator or client, so only [`Names::owns`] finds them.
    pub fn fixed_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = TaskKind::ALL.map(|k| self.task_queue(k)).into();
        queues.extend([self.dead_letter_queue(), self.submissions()]);
        queues
    }
    /// Every exchange of the namespace.
    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.tasks_exchange(),
            self.events_exchange(),
            self.replies_exchange(),
            self.dead_letter_exchange(),
            self.submissions(),
        ]
    }
    /// Whether a queue or exchange `name` lies under this namespace.
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(self.namespace.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// One message taken from a queue; it must be settled (ack, requeue or dead-letter).
pub struct Delivery {
    pub body: Vec<u8>,
    /// 1 on first delivery; grows with each redelivery.
    pub delivery: u32,
    /// Set when this is a dead-lettered task message coming back to its
    /// coordinator: why the broker gave up on it (e.g. `delivery_limit`).
    pub dead_letter_reason: Option<String>,
    acker: Acker,
}

enum Acker {
    InProc(inproc::InProcAcker),
    #[cfg(feature = "amqp")]
    Amqp(lapin::Acker),
}

impl Delivery {
    /// Acknowledges. `Ok(false)` means the ack could not be sent (channel
    /// closed): the message may be redelivered, and that is not a success.
    pub async fn ack(self) -> Result<bool> {
        match self.acker {
            Acker::InProc(a) => Ok(a.ack()),
            #[cfg(feature = "amqp")]
            Acker::Amqp(a) => Ok(a.ack(lapin::options::BasicAckOptions::default()).await?),
        }
    }

    /// Puts the message back for another delivery.
    pub async fn requeue(self) -> Result<bool> {
        match self.acker {
            Acker::InProc(a) => Ok(a.requeue()),
            #[cfg(feature = "amqp")]
            Acker::Amqp(a) => Ok(a
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?),
        }
    }

    /// Rejects without requeue: the broker moves it to the dead-letter queue.
    pub async fn dead_letter(self) -> Result<bool> {
        match self.acker {
            Acker::InProc(a) => Ok(a.dead_letter()),
            #[cfg(feature = "amqp")]
            Acker::Amqp(a) => Ok(a
                .reject(lapin::options::BasicRejectOptions { requeue: false })
                .await?),
        }
    }
}

/// A running consumer. Dropping the receiver and calling [`Subscription::close`]
/// returns every unacked message to its queue.
pub struct Subscription {
    pub deliveries: mpsc::Receiver<Delivery>,
    closer: Closer,
}

enum Closer {
    InProc(inproc::ConsumerHandle),
    #[cfg(feature = "amqp")]
    Amqp(lapin::Channel, String),
}

impl Subscription {
    /// Stops new deliveries; messages already delivered stay ours to settle.
    pub async fn cancel(&self) {
        match &self.closer {
            Closer::InProc(h) => h.cancel(),
            #[cfg(feature = "amqp")]
            Closer::Amqp(ch, tag) => {
                let _ = ch
                    .basic_cancel(
                        tag.as_str().into(),
                        lapin::options::BasicCancelOptions::default(),
                    )
                    .await;
            }
        }
    }

    /// Closes the consumer; the broker requeues what is still unacked.
    pub async fn close(self) {
        match self.closer {
            Closer::InProc(h) => h.cancel(),
            #[cfg(feature = "amqp")]
            Closer::Amqp(ch, _) => {
                let _ = ch.close(200, "consumer closed".into()).await;
            }
        }
    }
}

#[derive(Clone)]
pub enum Transport {
    InProc(inproc::InProcBus),
    #[cfg(feature = "amqp")]
    Amqp(amqp::AmqpTransport),
}

/// Decodes a heartbeat from either transport. One of another schema version
/// is refused: its kinds and fields may not mean what this node thinks.
pub(crate) fn decode_heartbeat(body: &[u8]) -> std::result::Result<Heartbeat, String> {
    let hb: Heartbeat = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if hb.schema_version != conveyor_schemas::SCHEMA_VERSION {
        return Err(format!(
            "node `{}` speaks schema version {}, this node {}",
            hb.node,
            hb.schema_version,
            conveyor_schemas::SCHEMA_VERSION
        ));
    }
    Ok(hb)
}

/// Decodes a run's end; one of another schema version is refused.
pub(crate) fn decode_run_finished(body: &[u8]) -> std::result::Result<RunFinished, String> {
    let ev: RunFinished = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if ev.schema_version != conveyor_schemas::SCHEMA_VERSION {
        return Err(format!("schema version {}", ev.schema_version));
    }
    Ok(ev)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| TransportError::Encode(e.to_string()))
}

impl Transport {
    /// Publishes one attempt to the queue of its kind, confirmed by the broker.
    pub async fn publish_task(&self, msg: &TaskMessage) -> Result<()> {
        let body = encode(msg)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish_task(
                    &bus.names().task_queue(msg.spec.kind()),
                    body,
                    &msg.reply_to,
                );
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => {
                t.publish_task(msg.spec.kind(), &msg.task_run, &msg.reply_to, body)
                    .await
            }
        }
    }

    /// Publishes a worker's update. Results are persistent; `Started` and
    /// `Progress` are transient (cheaper for the broker; a broker restart may
    /// lose them, and nothing depends on them).
    // Without `amqp`, what only the broker uses goes unread.
    #[cfg_attr(not(feature = "amqp"), allow(unused_variables))]
    pub async fn publish_update(&self, reply_to: &str, update: &TaskUpdate) -> Result<()> {
        let body = encode(update)?;
        let transient = matches!(
            update.status,
            conveyor_schemas::UpdateStatus::Started
                | conveyor_schemas::UpdateStatus::Progress { .. }
        );
        match self {
            Transport::InProc(bus) => {
                bus.publish(reply_to, body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) if transient => t.publish_update_transient(reply_to, body).await,
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_update(reply_to, body).await,
        }
    }

    /// A batch of an attempt's log lines, on its coordinator's reply queue:
    /// persistent and confirmed like a result, so that the lines outlive
    /// the worker once it is done.
    pub async fn publish_logs(&self, reply_to: &str, logs: &TaskLogs) -> Result<()> {
        let body = encode(logs)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish(reply_to, body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_update(reply_to, body).await,
        }
    }

    /// An event for the client of a submitted flow, on its reply queue.
    pub async fn publish_event(&self, reply_to: &str, event: &FlowEvent) -> Result<()> {
        let body = encode(event)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish(reply_to, body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_update(reply_to, body).await,
        }
    }

    /// Hands a flow to the coordinator nodes. The broker drops it if no
    /// coordinator takes it within `ttl`.
    // Without `amqp`, what only the broker uses goes unread.
    #[cfg_attr(not(feature = "amqp"), allow(unused_variables))]
    pub async fn publish_submission(
        &self,
        sub: &FlowSubmission,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let body = encode(sub)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish(&bus.names().submissions(), body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_submission(&sub.request_id, body, ttl).await,
        }
    }

    /// Consumes the submissions queue (a coordinator node).
    pub async fn consume_submissions(&self) -> Result<Subscription> {
        match self {
            Transport::InProc(bus) => Ok(bus.consume(&bus.names().submissions(), 16)),
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => {
                t.declare_submissions().await?;
                t.consume(&t.names().submissions(), 16, "submissions").await
            }
        }
    }

    pub async fn publish_heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        let body = encode(hb)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish_heartbeat(body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_heartbeat(&hb.node, body).await,
        }
    }

    /// Tells every worker node that a run ended (best effort, unconfirmed,
    /// like a heartbeat: a node that misses it sweeps later).
    pub async fn publish_run_finished(&self, ev: &RunFinished) -> Result<()> {
        let body = encode(ev)?;
        match self {
            Transport::InProc(bus) => {
                bus.publish_run_finished(body);
                Ok(())
            }
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.publish_event("run.finished", body).await,
        }
    }

    /// The ends of runs, for as long as the transport lives.
    pub async fn consume_runs_finished(&self) -> Result<mpsc::Receiver<RunFinished>> {
        match self {
            Transport::InProc(bus) => Ok(bus.runs_finished()),
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => {
                t.consume_events("run.finished", decode_run_finished, None)
                    .await
            }
        }
    }

    // Without `amqp`, what only the broker uses goes unread.
    #[cfg_attr(not(feature = "amqp"), allow(unused_variables))]
    pub async fn consume_tasks(
        &self,
        kind: TaskKind,
        prefetch: u16,
        tag: &str,
    ) -> Result<Subscription> {
        match self {
            Transport::InProc(bus) => Ok(bus.consume(&bus.names().task_queue(kind), prefetch)),
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.consume(&t.names().task_queue(kind), prefetch, tag).await,
        }
    }

    /// Declares the coordinator's durable reply queue and consumes it.
    /// `expires` lets the broker delete the queue of a client that went away.
    // Without `amqp`, what only the broker uses goes unread.
    #[cfg_attr(not(feature = "amqp"), allow(unused_variables))]
    pub async fn consume_replies(
        &self,
        queue: &str,
        expires: Option<std::time::Duration>,
    ) -> Result<Subscription> {
        match self {
            Transport::InProc(bus) => Ok(bus.consume(queue, 256)),
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => {
                t.declare_reply_queue(queue, expires).await?;
                t.consume(queue, 256, "coordinator").await
            }
        }
    }

    pub async fn consume_heartbeats(&self) -> Result<mpsc::Receiver<Heartbeat>> {
        match self {
            Transport::InProc(bus) => Ok(bus.heartbeats()),
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.consume_heartbeats().await,
        }
    }

    pub async fn close(&self) {
        match self {
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.close().await,
            Transport::InProc(bus) => bus.close(),
        }
    }

    /// Whether [`Transport::close`] was called: consumers that end then
    /// ended because the node is stopping, not because a link was lost.
    pub fn is_closed(&self) -> bool {
        match self {
            #[cfg(feature = "amqp")]
            Transport::Amqp(t) => t.is_closed(),
            Transport::InProc(bus) => bus.is_closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_lies_under_the_namespace_and_no_other() {
        let n = Names::new("ns");
        let all = n.fixed_queues().into_iter().chain(n.exchanges());
        let all: Vec<String> = all.chain([n.reply_queue("c.1234")]).collect();
        assert!(all.iter().all(|name| n.owns(name)), "{all:?}");
        assert!(!n.owns("ns2.tasks"));
        assert!(!n.owns("ns"));
        assert!(!n.owns("other.ns.tasks"));
        assert_eq!(n.fixed_queues().len(), TaskKind::ALL.len() + 2);
    }
}
