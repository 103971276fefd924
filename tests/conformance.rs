//! A worker written from `schemas/PROTOCOL.md` alone: raw AMQP through lapin,
//! messages as `serde_json::Value`, no Conveyor crate. It takes the
//! transform of a real flow between Rust extract and load workers, so a
//! worker in another language that follows the document can do the same.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{json, Value};

use crate::harness::{broker::*, colors::*, configs::*, processes::*, workdir::*};

/// The schema version PROTOCOL.md describes.
const VERSION: u64 = 2;
const NODE: &str = "conformance";

/// What the conformance worker saw and did, for the test's assertions.
#[derive(Default, Debug)]
struct Seen {
    committed: Vec<String>,
    answered_from_marker: Vec<String>,
    rejected: Vec<String>,
}

/// Publishes on the replies or events exchange, mandatory and confirmed
/// (PROTOCOL.md 3); an unroutable publish is an error.
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &Value, persistent: bool) {
    let mut props = BasicProperties::default().with_content_type("application/json".into());
    if persistent {
        props = props.with_delivery_mode(2);
    }
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body.to_string().as_bytes(),
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "publish to {exchange}/{key} not routed: {confirm:?}"
    );
}

/// The delivery number (PROTOCOL.md 3): x-delivery-count + 1, else by the flag.
fn delivery_number(props: &BasicProperties, redelivered: bool) -> u64 {
    let count = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n as u64 + 1,
        Some(AMQPValue::LongInt(n)) => n as u64 + 1,
        _ if redelivered => 2,
        _ => 1,
    }
}

fn update(msg: &Value, delivery: u64, status: Value) -> Value {
    json!({
        "schema_version": VERSION,
        "flow_run": msg["flow_run"],
        "task": msg["task"],
        "task_run": msg["task_run"],
        "attempt": msg["attempt"],
        "node": NODE,
        "delivery": delivery,
        "status": status,
    })
}

/// Checks a message as PROTOCOL.md 2.1 and 8 say; the reason to reject it.
fn check(msg: &Value) -> Result<(), String> {
    let name_ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if msg["schema_version"].as_u64() != Some(VERSION) {
        return Err(format!("schema_version {}", msg["schema_version"]));
    }
    if msg["spec"]["kind"] != "transform" {
        return Err(format!("kind {}", msg["spec"]["kind"]));
    }
    let run = msg["flow_run"].as_str().unwrap_or("");
    let task = msg["task"].as_str().unwrap_or("");
    let (base, part) = task.rsplit_once('@').unwrap_or((task, "0"));
    if !name_ok(run, 128) || !name_ok(base, 64) || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("names {run:?} {task:?}"));
    }
    if msg["attempt"].as_u64().unwrap_or(0) == 0
        || msg["reply_to"].as_str().unwrap_or("").is_empty()
    {
        return Err("attempt or reply_to".into());
    }
    Ok(())
}

/// A temporary name unique to this writer (PROTOCOL.md 5).
fn tmp_beside(path: &Path, attempt: u64) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    path.with_file_name(format!(
        ".{name}.a{attempt}-{}conformance-{}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn sync_dir(path: &Path) {
    File::open(path.parent().unwrap())
        .and_then(|d| d.sync_all())
        .unwrap();
}

/// Link `tmp` into place unless something is there (first attempt wins).
fn link_into_place(tmp: &Path, path: &Path) {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("link {}: {e}", path.display()),
    }
    std::fs::remove_file(tmp).unwrap();
    sync_dir(path);
}

/// Runs the transform: source artifact → `drop` steps → artifact sink, then
/// commits it and its marker under the task run's lock. Returns the output.
fn transform(store: &Path, msg: &Value) -> Value {
    let spec = &msg["spec"];
    assert_eq!(spec["source"]["type"], "artifact", "{spec}");
    assert_eq!(spec["sink"]["type"], "artifact", "{spec}");
    let mut dropped: Vec<String> = Vec::new();
    for step in spec["steps"].as_array().cloned().unwrap_or_default() {
        let cols = step["drop"].as_array().expect("only drop steps here");
        dropped.extend(cols.iter().map(|c| c.as_str().unwrap().to_string()));
    }
    let (run, task) = (
        msg["flow_run"].as_str().unwrap(),
        msg["task"].as_str().unwrap(),
    );
    let attempt = msg["attempt"].as_u64().unwrap();
    let input = store.join(spec["source"]["path"].as_str().unwrap());
    let reader =
        arrow::ipc::reader::FileReader::try_new(File::open(&input).unwrap(), None).unwrap();
    let schema = reader.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !dropped.contains(schema.field(i).name()))
        .collect();
    let out_schema = Arc::new(schema.project(&keep).unwrap());
    let rel = format!("{run}/{task}.arrow");
    let path = store.join(&rel);
    let tmp = tmp_beside(&path, attempt);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .unwrap();
    let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &out_schema).unwrap();
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.unwrap().project(&keep).unwrap();
        rows += batch.num_rows() as u64;
        writer.write(&batch).unwrap();
    }
    writer.finish().unwrap();
    writer.into_inner().unwrap().sync_all().unwrap();

    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join(format!("{run}/{task}.lock")))
        .unwrap();
    lock.lock().unwrap();
    let marker = store.join(format!("{run}/{task}.done.json"));
    if let Ok(text) = std::fs::read(&marker) {
        std::fs::remove_file(&tmp).unwrap();
        return serde_json::from_slice(&text).unwrap();
    }
    link_into_place(&tmp, &path);
    let output = json!({
        "rows_in": rows,
        "rows_out": rows,
        "artifact": { "path": rel, "rows": rows },
        "location": rel,
    });
    let tmp_marker = tmp_beside(&marker, attempt);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_marker)
        .unwrap();
    f.write_all(output.to_string().as_bytes()).unwrap();
    f.sync_all().unwrap();
    link_into_place(&tmp_marker, &marker);
    output
}

/// The conformance worker: consumes `NS.tasks.transform` until `stop`.
async fn conformance_worker(ns: String, store: PathBuf, stop: Arc<AtomicBool>) -> Seen {
    let names = names_of(&ns);
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let publisher = conn.create_channel().await.unwrap();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_ch
        .basic_consume(
            names
                .task_queue(conveyor_schemas::TaskKind::Transform)
                .into(),
            NODE.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = Seen::default();
    let heartbeat = json!({
        "schema_version": VERSION, "node": NODE, "kinds": ["transform"],
        "in_flight": [], "interval_ms": 200,
    });
    while !stop.load(Ordering::Relaxed) {
        // Heartbeats (PROTOCOL.md 9): not mandatory-routed to a queue of
        // ours, so published without the confirm check.
        let _ = publisher
            .basic_publish(
                names.events_exchange().into(),
                format!("heartbeat.{NODE}").into(),
                BasicPublishOptions::default(),
                heartbeat.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await;
        let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            continue;
        };
        if delivery.data.len() > 1 << 20 {
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
            continue;
        }
        let msg: Value = match serde_json::from_slice(&delivery.data) {
            Ok(v) => v,
            Err(e) => {
                seen.rejected.push(e.to_string());
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .unwrap();
                continue;
            }
        };
        if let Err(why) = check(&msg) {
            seen.rejected.push(why);
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
            continue;
        }
        let n = delivery_number(&delivery.properties, delivery.redelivered);
        let reply_to = msg["reply_to"].as_str().unwrap().to_string();
        let replies = names.replies_exchange();
        let (run, task) = (
            msg["flow_run"].as_str().unwrap(),
            msg["task"].as_str().unwrap(),
        );
        let marker = store.join(format!("{run}/{task}.done.json"));
        let output = if let Ok(text) = std::fs::read(&marker) {
            seen.answered_from_marker.push(msg["task_run"].to_string());
            serde_json::from_slice::<Value>(&text).unwrap()
        } else {
            publish(
                &publisher,
                &replies,
                &reply_to,
                &update(&msg, n, json!({"state": "started"})),
                true,
            )
            .await;
            let (store, m) = (store.clone(), msg.clone());
            let output = tokio::task::spawn_blocking(move || transform(&store, &m))
                .await
                .unwrap();
            seen.committed.push(msg["task_run"].to_string());
            output
        };
        let mut status = output.clone();
        status["state"] = json!("succeeded");
        publish(
            &publisher,
            &replies,
            &reply_to,
            &update(&msg, n, status),
            true,
        )
        .await;
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
    seen
}

#[test]
fn a_worker_written_from_the_protocol_document_runs_a_flow_s_transform() {
    let dir = TestDir::new("conformance");
    let ns = namespace("conform");
    let storage = dir.join("shared");
    let cfg = dir.write(
        "w.toml",
        &node_config("rust-worker", &ns, &["extract", "load"], &storage, ""),
    );
    // The Rust worker declares the topology the document describes.
    let _w = NodeProcess::start(&cfg, &dir.join("w.log"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (ns, store, stop) = (ns.to_string(), storage.join("artifacts"), stop.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
                .block_on(conformance_worker(ns, store, stop))
        })
    };
    let flow = colors_flow(&dir, "colors", "");
    let client = dir.write(
        "client.toml",
        &node_config("client", &ns, &[], &dir.join("client"), ""),
    );
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    let seen = worker.join().expect("the conformance worker ran");
    assert!(out.status.success(), "{}\n{seen:?}", describe(&out));
    let report = report.unwrap();
    let transform = report.tasks.iter().find(|t| t.name == "transform").unwrap();
    assert_eq!(transform.node.as_deref(), Some(NODE), "{report:?}");
    assert_eq!(
        (transform.rows_in, transform.rows_out),
        (Some(148), Some(148))
    );
    for t in report.tasks.iter().filter(|t| t.name != "transform") {
        assert_eq!(t.node.as_deref(), Some("rust-worker"), "{t:?}");
    }
    assert_eq!(seen.committed.len(), 1, "{seen:?}");
    assert!(seen.rejected.is_empty(), "{seen:?}");
    assert_colors_promise(&amqp_url(), &ns, &storage);
}
