/*!
What feeds the coordinator actor from the broker, and how it stops.

- [`pump_replies`]: its reply queue: workers' updates (saved before acked),
  their log lines (handed to the history, acked once stored), and dead
  letters of its tasks.
- [`pump_submissions`]: flows submitted over the broker
  (`conveyor run --submit`), acked once the run is saved.
- [`stop`]: the actor stops taking messages; the pumps end with it.

Each pump subscribes again when the broker connection is lost, until the
coordinator or the transport stops.
*/

use std::time::Duration;

use actix::prelude::*;
use conveyor_schemas::{FlowSubmission, TaskLogs, TaskMessage, TaskUpdate, SCHEMA_VERSION};
use conveyor_transport::{Delivery, Subscription, Transport};
use tracing::{info, warn};

use crate::actor::{Coordinator, DeadLettered, SubmitRemote, UpdateFromWorker};
use crate::history::History;

/// Feeds the coordinator with submitted flows. A submission is acked once
/// the coordinator saved its run (or rejected it with an answer).
pub async fn pump_submissions(
    transport: Transport,
    mut sub: Subscription,
    coordinator: Addr<Coordinator>,
) {
    loop {
        while let Some(d) = sub.deliveries.recv().await {
            match serde_json::from_slice::<FlowSubmission>(&d.body) {
                Ok(submission) => match coordinator.send(SubmitRemote(submission)).await {
                    Ok(Ok(())) => {
                        let _ = d.ack().await;
                    }
                    _ => {
                        let _ = d.requeue().await;
                        sub.close().await;
                        return;
                    }
                },
                Err(e) => {
                    warn!(error = %e, bytes = d.body.len(), "Dead-lettering an undecodable flow submission");
                    let _ = d.dead_letter().await;
                }
            }
        }
        if !coordinator.connected() || transport.is_closed() {
            return;
        }
        warn!("Submission consumer ended (connection lost?); subscribing again");
        sub = match transport.consume_submissions().await {
            Ok(s) => s,
            Err(_) => return,
        };
    }
}

/// Feeds the coordinator from its reply queue, subscribing again whenever
/// the broker connection is lost, until the coordinator or the transport stops.
pub async fn pump_replies(
    transport: Transport,
    queue: String,
    expires: Option<Duration>,
    mut replies: Subscription,
    coordinator: Addr<Coordinator>,
    history: Option<History>,
) {
    loop {
        while let Some(d) = replies.deliveries.recv().await {
            if let Some(reason) = d.dead_letter_reason.clone() {
                if let Ok(task) = serde_json::from_slice::<TaskMessage>(&d.body) {
                    if !matches!(
                        coordinator.send(DeadLettered { task, reason }).await,
                        Ok(Ok(()))
                    ) {
                        let _ = d.requeue().await;
                        replies.close().await;
                        return;
                    }
                }
                let _ = d.ack().await;
                continue;
            }
            match serde_json::from_slice::<TaskUpdate>(&d.body) {
                Ok(mut update) => {
                    // A final update may carry its delivery's last log lines.
                    let logs = update.take_logs();
                    if !matches!(coordinator.send(UpdateFromWorker(update)).await, Ok(Ok(()))) {
                        let _ = d.requeue().await;
                        replies.close().await;
                        return;
                    }
                    match logs {
                        // Acked once the lines are stored too; a redelivery
                        // is recognised as an update and as a batch.
                        Some(logs) => store_logs(history.as_ref(), logs, d).await,
                        None => match d.ack().await {
                            Ok(true) => {}
                            _ => warn!("Reply ack not sent; the update may arrive again and will be recognised"),
                        },
                    }
                }
                // Not an update: a batch of log lines, told apart by shape.
                Err(e) => match serde_json::from_slice::<TaskLogs>(&d.body) {
                    Ok(logs) => store_logs(history.as_ref(), logs, d).await,
                    Err(_) => {
                        // The reply queue has no dead-letter exchange on purpose: it
                        // is itself bound to the DLX, so a dead letter would loop back.
                        warn!(error = %e, bytes = d.body.len(), "Dropping an undecodable update from the reply queue");
                        let _ = d.dead_letter().await;
                    }
                },
            }
        }
        if !coordinator.connected() || transport.is_closed() {
            return;
        }
        warn!(queue = %queue, "Reply consumer ended (connection lost?); subscribing again");
        replies = match transport.consume_replies(&queue, expires).await {
            Ok(sub) => sub,
            // Only a closed transport fails here: reconnects wait as long as needed.
            Err(_) => return,
        };
        info!(queue = %queue, "Reply consumer resubscribed");
    }
}

/// Hands a batch of log lines to the history writer, and acks it once
/// committed, off the pump: the updates behind it do not wait for the
/// write. A coordinator without a database keeps no logs: it acks at once.
async fn store_logs(history: Option<&History>, logs: TaskLogs, d: Delivery) {
    let Some(history) = history else {
        let _ = d.ack().await;
        return;
    };
    if logs.schema_version != SCHEMA_VERSION {
        info!(node = %logs.node, schema_version = logs.schema_version, "Dropping task log lines of another schema version");
        let _ = d.ack().await;
        return;
    }
    let (run, task) = (logs.flow_run.clone(), logs.task.clone());
    match history.submit_logs(logs).await {
        Ok(committed) => {
            tokio::spawn(async move {
                if let Ok(Err(e)) = committed.await {
                    warn!(flow_run = %run, task = %task, error = %e, "Cannot store task log lines; dropping them");
                }
                let _ = d.ack().await;
            });
        }
        Err(e) => {
            warn!(flow_run = %run, task = %task, error = %e, "Cannot store task log lines; dropping them");
            let _ = d.ack().await;
        }
    }
}

/// Stops the coordinator actor: it takes no more messages, and its pumps
/// end (what they had not acked is redelivered to the next coordinator).
pub fn stop(coordinator: &Addr<Coordinator>) {
    coordinator.do_send(StopCoordinator);
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopCoordinator;

impl Handler<StopCoordinator> for Coordinator {
    type Result = ();
    fn handle(&mut self, _: StopCoordinator, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
