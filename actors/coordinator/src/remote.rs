/*!
A flow handed to the cluster's coordinator nodes over the broker
(`conveyor run --submit`), and followed from this process: the run is saved
by the coordinator that accepts it and finishes even if this process stops.
*/

use std::time::Duration;

use conveyor_flow::FlowSource;
use conveyor_schemas::{FlowEvent, FlowEventKind, FlowSubmission, SCHEMA_VERSION};
use conveyor_transport::tasks::IoTasks;
use conveyor_transport::{Names, Subscription, Transport, TransportError};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::actor::Submitted;

/// How long the broker keeps a client's reply queue after it disconnects.
pub const CLIENT_REPLY_QUEUE_EXPIRY: Duration = Duration::from_secs(600);

/// Why a submission did not become a run.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the coordinator rejected the flow: {0}")]
    Rejected(String),
    #[error("no coordinator accepted the flow within {}: is a `conveyor node` with a [coordinator] table running on namespace `{namespace}`?", humantime::format_duration(*.within))]
    NotAccepted { within: Duration, namespace: String },
    #[error("internal: {0}")]
    Internal(String),
}

/// Runs `fut` on the I/O runtime, where the transport lives.
async fn on_io<T: Send + 'static>(
    io: &IoTasks,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, SubmitError> {
    io.spawn(fut)
        .await
        .map_err(|e| SubmitError::Internal(e.to_string()))
}

/// Hands the flow of `source` to the cluster's coordinator nodes, as the
/// client `client`, and follows it.
pub async fn submit(
    transport: &Transport,
    names: &Names,
    io: &IoTasks,
    client: &str,
    source: FlowSource,
    accept_within: Duration,
) -> Result<RemoteRun, SubmitError> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let queue = names.reply_queue(&format!("{client}.{suffix}"));
    let (t, q) = (transport.clone(), queue.clone());
    let expires = Some(CLIENT_REPLY_QUEUE_EXPIRY);
    let sub = on_io(io, async move { t.consume_replies(&q, expires).await }).await??;
    let request_id = uuid::Uuid::new_v4().to_string();
    let (events_tx, mut events) = mpsc::channel(64);
    io.spawn(pump_events(
        transport.clone(),
        queue.clone(),
        request_id.clone(),
        sub,
        events_tx,
    ));
    let msg = FlowSubmission {
        schema_version: SCHEMA_VERSION,
        request_id: request_id.clone(),
        flow_file: source.file,
        flow_text: source.text,
        flow_base: source.base,
        reply_to: queue,
        client: client.to_string(),
        params: source.params,
    };
    let t = transport.clone();
    on_io(io, async move {
        t.publish_submission(&msg, accept_within).await
    })
    .await??;
    info!(request_id = %request_id, "Flow submitted; waiting for a coordinator to accept it");
    let not_accepted = || SubmitError::NotAccepted {
        within: accept_within,
        namespace: names.namespace.clone(),
    };
    // A little longer than the submission's time to live, so that an
    // acceptance at the last moment is still seen.
    let first = tokio::time::timeout(accept_within + Duration::from_secs(2), events.recv())
        .await
        .map_err(|_| not_accepted())?
        .ok_or_else(not_accepted)?;
    let coordinator = first.coordinator.clone();
    let report = match first.event {
        FlowEventKind::Rejected { error } => return Err(SubmitError::Rejected(error)),
        FlowEventKind::Accepted { report }
        | FlowEventKind::Progress { report }
        | FlowEventKind::Finished { report } => report,
    };
    let (progress_tx, progress) = watch::channel(report.clone());
    let (done_tx, done) = oneshot::channel();
    let mut done_tx = Some(done_tx);
    if report.state.is_terminal() {
        if let Some(tx) = done_tx.take() {
            let _ = tx.send(report.clone());
        }
    }
    io.spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev.event {
                FlowEventKind::Accepted { report } | FlowEventKind::Progress { report } => {
                    progress_tx.send_replace(report);
                }
                FlowEventKind::Finished { report } => {
                    progress_tx.send_replace(report.clone());
                    if let Some(tx) = done_tx.take() {
                        let _ = tx.send(report);
                    }
                }
                FlowEventKind::Rejected { error } => {
                    warn!(error = %error, "The coordinator gave up on the flow run");
                }
            }
        }
    });
    Ok(RemoteRun {
        run: Submitted {
            flow_run: report.flow_run,
            progress,
            done,
        },
        coordinator,
        request_id,
    })
}

/// A flow run held by a coordinator node, followed from this process.
pub struct RemoteRun {
    pub run: Submitted,
    /// The coordinator node that accepted it.
    pub coordinator: String,
    pub request_id: String,
}

/// Feeds a client with the events of its submission, subscribing again
/// whenever the broker connection is lost.
async fn pump_events(
    transport: Transport,
    queue: String,
    request_id: String,
    mut sub: Subscription,
    events: mpsc::Sender<FlowEvent>,
) {
    loop {
        while let Some(d) = sub.deliveries.recv().await {
            let decoded = serde_json::from_slice::<FlowEvent>(&d.body);
            let _ = d.ack().await;
            match decoded {
                Ok(ev) if ev.request_id == request_id => {
                    if events.send(ev).await.is_err() {
                        sub.close().await;
                        return;
                    }
                }
                Ok(ev) => {
                    info!(request_id = %ev.request_id, "Ignoring an event for another submission")
                }
                Err(e) => warn!(error = %e, "Ignoring an undecodable event on the client queue"),
            }
        }
        if events.is_closed() {
            return;
        }
        sub = match transport
            .consume_replies(&queue, Some(CLIENT_REPLY_QUEUE_EXPIRY))
            .await
        {
            Ok(s) => s,
            Err(_) => return,
        };
    }
}
