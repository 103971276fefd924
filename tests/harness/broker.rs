//! Admin of the shared RabbitMQ: a namespace per test (deleted when it
//! drops), queue depths, raw publishes, and `block_on` for the async client.

use std::process::{Command, Stdio};

use conveyor_transport::Names;

pub fn amqp_url() -> String {
    std::env::var("CONVEYOR_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// The shared test broker's host port, from its URL.
pub fn shared_broker_port() -> u16 {
    let url = amqp_url();
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5672)
}

/// The queue and exchange names of a test's namespace, as the nodes build them.
pub fn names_of(ns: &str) -> Names {
    Names::new(ns)
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

/// Deletes every queue and exchange of a test namespace from the shared
/// broker, including the reply queues that coordinators and clients name at
/// run time.
pub fn delete_namespace(ns: &str) {
    let (queues, exchanges) = namespace_topology(ns);
    block_on(async {
        let Ok(conn) =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        let Ok(ch) = conn.create_channel().await else {
            return;
        };
        for q in queues {
            let _ = ch.queue_delete(q.into(), Default::default()).await;
        }
        for ex in exchanges {
            let _ = ch.exchange_delete(ex.into(), Default::default()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// The queues and exchanges of `ns`: the names known in advance, plus what
/// `rabbitmqctl` lists under the namespace when the shared broker runs on
/// this host (tests run as root there). Without the listing, reply queues
/// other than the `coord` coordinator's stay behind.
fn namespace_topology(ns: &str) -> (Vec<String>, Vec<String>) {
    let n = names_of(ns);
    let mut queues = n.fixed_queues();
    queues.push(n.reply_queue("coord"));
    let mut exchanges = n.exchanges();
    if let Some(vhost) = local_vhost(&amqp_url()) {
        let listed = |what| {
            rabbitmqctl_names(what, &vhost)
                .into_iter()
                .filter(|q| n.owns(q))
        };
        queues.extend(listed("list_queues"));
        exchanges.extend(listed("list_exchanges"));
    }
    for names in [&mut queues, &mut exchanges] {
        names.sort();
        names.dedup();
    }
    (queues, exchanges)
}

/// The virtual host of an AMQP URL whose broker runs on this host, or None
/// when it runs elsewhere (then `rabbitmqctl` here would list another broker).
fn local_vhost(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    if !["127.0.0.1", "localhost", "::1"].contains(&host) {
        return None;
    }
    let vhost = path.split('?').next().unwrap_or("");
    Some(match vhost {
        "" => "/".to_string(),
        v => v.replace("%2f", "/").replace("%2F", "/"),
    })
}

/// The `name` column of `rabbitmqctl LIST_COMMAND` in `vhost`; empty when
/// rabbitmqctl is absent or fails.
fn rabbitmqctl_names(list_command: &str, vhost: &str) -> Vec<String> {
    let out = Command::new("rabbitmqctl")
        .args(["--timeout", "20", list_command, "-q", "--no-table-headers"])
        .args(["-p", vhost, "name"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => Vec::new(),
    }
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

#[test]
fn local_vhost_is_found_only_for_a_broker_on_this_host() {
    let local = |url| local_vhost(url);
    assert_eq!(
        local("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
        Some("/")
    );
    assert_eq!(local("amqp://localhost").as_deref(), Some("/"));
    assert_eq!(
        local("amqps://u:p@[::1]:5671/prod?heartbeat=5").as_deref(),
        Some("prod")
    );
    assert_eq!(local("amqp://guest:guest@broker.example:5672/%2f"), None);
    assert_eq!(local("not a url"), None);
}

#[test]
fn dropping_a_namespace_deletes_the_reply_queues_named_at_run_time() {
    let ns = namespace("drop");
    let client_queue = names_of(&ns).reply_queue("client.0123abcd");
    let exists = |queue: String| {
        block_on(async move {
            let conn = lapin::Connection::connect(&amqp_url(), Default::default())
                .await
                .expect("connect to RabbitMQ");
            let ch = conn.create_channel().await.unwrap();
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let found = ch
                .queue_declare(queue.as_str().into(), passive, Default::default())
                .await
                .is_ok();
            let _ = conn.close(200, "bye".into()).await;
            found
        })
    };
    block_on(async {
        let conn = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(client_queue.as_str().into(), durable, Default::default())
            .await
            .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    });
    assert!(exists(client_queue.clone()));
    drop(ns);
    assert!(
        !exists(client_queue),
        "the client reply queue outlived its namespace"
    );
}
