/*!
RabbitMQ through lapin.

Topology, all durable and under the namespace `ns`:
- `ns.tasks` (direct): binding key = task kind, to the quorum queue
  `ns.tasks.{kind}`, which has an explicit `x-delivery-limit` and dead-letters
  to `ns.dlx` (topic) → `ns.dead` (bound `#`) and, through the task's CC
  header, to its coordinator's reply queue;
- `ns.events` (topic): heartbeats, routing key `heartbeat.{node}`;
- `ns.replies.{coordinator}`: a coordinator's durable reply queue.

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

use super::{Acker, Closer, Delivery, Names, Result, Subscription, TransportError};

#[derive(Clone)]
pub struct AmqpTransport {
    conn: Arc<Connection>,
    /// Confirm-mode channel shared by every publisher of this node; lapin
    /// pipelines publishes on it and matches each confirm to its publish.
    publisher: Channel,
    names: Names,
}

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
    /// Connects, opens the confirm-mode publisher channel and declares the topology.
    pub async fn connect(
        url: &str,
        namespace: &str,
        delivery_limit: u32,
        node: &str,
        io: tokio::runtime::Handle,
    ) -> Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("conveyor {node}")));
        let runtime = async_rs::Runtime::tokio_with_handle(io);
        let conn = Connection::connect_with_runtime(url, props, runtime)
            .await
            .map_err(|e| {
                TransportError::Broker(format!(
                    "cannot connect to {}: {e}",
                    crate::config::redact_url(url)
                ))
            })?;
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let transport = AmqpTransport {
            conn: Arc::new(conn),
            publisher,
            names: Names {
                namespace: namespace.to_string(),
            },
        };
        transport.declare_topology(delivery_limit).await?;
        Ok(transport)
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    async fn declare_topology(&self, delivery_limit: u32) -> Result<()> {
        let ch = &self.publisher;
        let n = &self.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            n.tasks_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            n.events_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        // Topic: `ns.dead` takes every dead letter ("#"); a coordinator's reply
        // queue also takes those whose CC header names it.
        ch.exchange_declare(
            n.dead_letter_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(n.dead_letter_queue().into(), queue_opts, quorum.clone())
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
            let mut args = quorum.clone();
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(delivery_limit as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(n.dead_letter_exchange().into()),
            );
            ch.queue_declare(n.task_queue(kind).into(), queue_opts, args)
                .await
                .map_err(|e| {
                    TransportError::Broker(format!(
                        "cannot declare queue {} (if it exists with another delivery_limit, delete it or keep the old value): {e}",
                        n.task_queue(kind)
                    ))
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

    pub async fn declare_reply_queue(&self, queue: &str, expires: Option<Duration>) -> Result<()> {
        let mut args = FieldTable::default();
        if let Some(d) = expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(d.as_millis() as i64),
            );
        }
        self.publisher
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        // Dead-lettered tasks published with CC = this queue come back here.
        self.publisher
            .queue_bind(
                queue.into(),
                self.names.dead_letter_exchange().into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        let confirm = self
            .publisher
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
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(TransportError::Unroutable(routing_key.to_string())),
            Confirmation::Nack(_) => Err(TransportError::Nacked(routing_key.to_string())),
            Confirmation::NotRequested => {
                Err(TransportError::Broker("publisher confirms are off".into()))
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
        self.publish_confirmed(&self.names.tasks_exchange(), kind.as_str(), &body, props)
            .await
    }

    pub async fn publish_update(&self, reply_to: &str, body: Vec<u8>) -> Result<()> {
        self.publish_confirmed("", reply_to, &body, persistent())
            .await
    }

    pub async fn publish_heartbeat(&self, node: &str, body: Vec<u8>) -> Result<()> {
        // Heartbeats are fire-and-forget: a lost one is replaced by the next.
        self.publisher
            .basic_publish(
                self.names.events_exchange().into(),
                format!("heartbeat.{node}").into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await?;
        Ok(())
    }

    /// Consumes `queue` on a channel of its own, so closing it requeues
    /// exactly this consumer's unacked messages.
    pub async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Subscription> {
        let channel = self.conn.create_channel().await?;
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
                        let dead_letter_reason = d
                            .properties
                            .headers()
                            .as_ref()
                            .and_then(|h| h.inner().get("x-first-death-reason").cloned())
                            .and_then(|v| match v {
                                AMQPValue::LongString(s) => Some(s.to_string()),
                                AMQPValue::ShortString(s) => Some(s.to_string()),
                                _ => None,
                            });
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
                        tracing::error!(queue = %queue_name, error = %e, "Consumer stopped");
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

    pub async fn consume_heartbeats(&self) -> Result<mpsc::Receiver<Heartbeat>> {
        let channel = self.conn.create_channel().await?;
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
                self.names.events_exchange().into(),
                "heartbeat.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "heartbeats".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // Keep the channel alive as long as the consumer runs.
            let _channel = channel;
            while let Some(Ok(d)) = consumer.next().await {
                match serde_json::from_slice::<Heartbeat>(&d.data) {
                    Ok(hb) => {
                        if tx.send(hb).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Ignoring an undecodable heartbeat"),
                }
            }
        });
        Ok(rx)
    }

    pub async fn close(&self) {
        let _ = self.conn.close(200, "node shutting down".into()).await;
    }
}
