//! Admin of the shared RabbitMQ: a namespace per test (deleted when it
//! drops), queue depths, raw publishes, and `block_on` for the async client.

use conveyor_actors::transport::Names;

pub fn amqp_url() -> String {
    std::env::var("CONVEYOR_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// The queue and exchange names of a test's namespace, as the nodes build them.
pub fn names_of(ns: &str) -> Names {
    Names {
        namespace: ns.to_string(),
    }
}

/// A unique namespace so tests can share one broker; its queues and
/// exchanges are deleted when it drops, whether the test passed or not.
pub struct Namespace(String);

impl std::ops::Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespace(&self.0);
    }
}

pub fn namespace(test: &str) -> Namespace {
    Namespace(format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}

/// Messages ready in a queue, via a passive declare on a fresh connection.
pub fn queue_depth(queue: &str) -> u32 {
    queue_depth_at(&amqp_url(), queue)
}

/// Messages ready in a queue of the broker at `url`.
pub fn queue_depth_at(url: &str, queue: &str) -> u32 {
    block_on(async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let n = q.message_count();
        let _ = conn.close(200, "bye".into()).await;
        n
    })
}

/// Deletes a test namespace's queues and exchanges from the shared broker.
pub fn delete_namespace(ns: &str) {
    block_on(async {
        let Ok(conn) =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        let Ok(ch) = conn.create_channel().await else {
            return;
        };
        let n = names_of(ns);
        for q in n.fixed_queues().into_iter().chain([n.reply_queue("coord")]) {
            let _ = ch.queue_delete(q.into(), Default::default()).await;
        }
        for ex in n.exchanges() {
            let _ = ch.exchange_delete(ex.into(), Default::default()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Publishes `bodies` to an exchange of the broker at `url` as any client
/// would, each confirmed: Ok when the broker took them all, else its answer.
pub fn publish_at(
    url: &str,
    exchange: &str,
    routing_key: &str,
    bodies: &[Vec<u8>],
    mandatory: bool,
) -> Result<(), String> {
    block_on(async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(Default::default())
            .await
            .map_err(|e| e.to_string())?;
        for body in bodies {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    lapin::options::BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    body,
                    lapin::BasicProperties::default(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            if !matches!(confirm, lapin::Confirmation::Ack(None)) {
                return Err(format!("{confirm:?}"));
            }
        }
        let _ = conn.close(200, "bye".into()).await;
        Ok(())
    })
}

/// Publishes raw bodies to the shared broker, as a hostile client would.
pub fn publish_raw(exchange: &str, routing_key: &str, bodies: &[Vec<u8>]) {
    publish_at(&amqp_url(), exchange, routing_key, bodies, true).expect("publish to RabbitMQ");
}

/// Runs a future to completion on a runtime of its own, for the broker
/// helpers that tests call from plain (non-async) code.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the test helpers")
        .block_on(future)
}
