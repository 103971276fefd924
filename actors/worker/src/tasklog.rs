/*!
Task logs on the worker side: the tracing events written inside a task
attempt's span, captured and shipped to the attempt's coordinator.

- [`TaskLogLayer`] is a `tracing_subscriber` layer. The binary installs it
  (`node/src/main.rs`), and so can a test. For an event, it looks up the
  span stack for an [`AttemptLog`] and, if one is there, appends the event as
  one [`TaskLogLine`]. An event outside every attempt costs one walk of its
  (usually empty) span stack; no attempt, no capture.
- [`AttemptLog`] is the bounded buffer of one delivery of an attempt. The
  worker attaches it to the attempt's span ([`AttemptLog::attach`]), and
  takes batches from it ([`AttemptLog::take`]): about once a second while
  the attempt runs, and once at its end. Pushing never blocks on the broker:
  past [`MAX_PENDING`] lines waiting, lines are counted as dropped, and the
  next batch says how many.

Events of the blocking pool are captured too, as long as the closure enters
the attempt's span (the worker does).

Every line is redacted as it is captured, before it is cut to length: the
values of the attempt's `${env:NAME}` secrets and every URL's password show
as `***` ([`conveyor_schemas::secrets::Secrets::redact`]).
*/

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conveyor_schemas::secrets::Secrets;
use conveyor_schemas::{LogBatch, TaskLogLine, TaskLogs, TaskMessage, SCHEMA_VERSION};
use tokio::sync::oneshot;
use tracing::field::{Field, Visit};
use tracing::{warn, Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use conveyor_transport::Transport;

/// Most lines an attempt holds between two batches; past it, lines are
/// dropped (and counted) rather than held up or kept without bound.
pub const MAX_PENDING: usize = 2_000;

/// Longest message kept, in bytes; a longer one is cut and marked.
pub const MAX_MESSAGE_BYTES: usize = 4_096;

/// Most lines in one [`TaskLogs`] message, so that a message stays small.
pub const MAX_BATCH: usize = 500;

/// The lines of one delivery of an attempt, waiting to be shipped.
#[derive(Debug, Default)]
pub struct AttemptLog {
    pending: Mutex<Pending>,
    /// What no line may show.
    secrets: Secrets,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<TaskLogLine>,
    /// The index of `lines[0]` among every line of this delivery.
    first_line: u64,
    /// Lines dropped since the last batch.
    dropped: u64,
}

/// A batch taken from an [`AttemptLog`]; see [`TaskLogs`].
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub first_line: u64,
    pub dropped: u64,
    pub lines: Vec<TaskLogLine>,
}

impl AttemptLog {
    pub fn new() -> Arc<AttemptLog> {
        Arc::new(AttemptLog::default())
    }

    /// A log whose lines show none of `secrets`.
    pub fn redacting(secrets: Secrets) -> Arc<AttemptLog> {
        Arc::new(AttemptLog {
            secrets,
            ..AttemptLog::default()
        })
    }

    /// Attaches this log to `span`, so that the events inside it land here.
    /// False when the process's subscriber keeps no span data (no
    /// `tracing_subscriber` registry): then nothing is captured.
    pub fn attach(self: &Arc<Self>, span: &tracing::Span) -> bool {
        let log = self.clone();
        span.with_subscriber(|(id, dispatch)| {
            let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
                return false;
            };
            match registry.span(id) {
                Some(data) => {
                    data.extensions_mut().replace(log);
                    true
                }
                None => false,
            }
        })
        .unwrap_or(false)
    }

    fn push(&self, line: TaskLogLine) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        if p.lines.len() >= MAX_PENDING {
            p.dropped += 1;
        } else {
            p.lines.push(line);
        }
    }

    /// Takes up to [`MAX_BATCH`] lines waiting (and the count of those
    /// dropped); none if there is nothing to say.
    pub fn take(&self) -> Option<Batch> {
        let mut p = self.pending.lock().ok()?;
        if p.lines.is_empty() && p.dropped == 0 {
            return None;
        }
        let n = p.lines.len().min(MAX_BATCH);
        let rest = p.lines.split_off(n);
        let lines = std::mem::replace(&mut p.lines, rest);
        let batch = Batch {
            first_line: p.first_line,
            dropped: std::mem::take(&mut p.dropped),
            lines,
        };
        p.first_line += n as u64;
        Some(batch)
    }

    /// Whether lines are waiting.
    pub fn is_empty(&self) -> bool {
        self.pending
            .lock()
            .map(|p| p.lines.is_empty() && p.dropped == 0)
            .unwrap_or(true)
    }
}

impl Batch {
    /// This batch as the final update of its delivery carries it.
    pub fn into_update_logs(self, last: bool) -> LogBatch {
        LogBatch {
            first_line: self.first_line,
            dropped: self.dropped,
            last,
            lines: self.lines,
        }
    }

    /// The wire message of this batch, for the attempt `msg` on `delivery`.
    pub fn into_message(
        self,
        msg: &TaskMessage,
        node: &str,
        delivery: u32,
        last: bool,
    ) -> TaskLogs {
        TaskLogs {
            schema_version: SCHEMA_VERSION,
            flow_run: msg.flow_run.clone(),
            task: msg.task.clone(),
            task_run: msg.task_run.clone(),
            attempt: msg.attempt,
            node: node.to_string(),
            delivery,
            first_line: self.first_line,
            dropped: self.dropped,
            last,
            lines: self.lines,
        }
    }
}

/// How often a running attempt ships the lines it wrote.
pub const SHIP_EVERY: Duration = Duration::from_secs(1);

/// Ships one delivery's [`AttemptLog`] to its coordinator: about once a
/// second while it runs ([`Shipper::start`]), then the rest at its end,
/// inside its final update ([`Shipper::finish_into_update`]) or on its own
/// ([`Shipper::finish`]). Shipping is best effort: a batch the broker does
/// not take is dropped with a warning on the node's own log, and the task
/// goes on.
pub struct Shipper {
    to: Target,
    log: Arc<AttemptLog>,
    periodic: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

#[derive(Clone)]
struct Target {
    transport: Transport,
    msg: Arc<TaskMessage>,
    node: String,
    delivery: u32,
}

impl Shipper {
    /// Captures the events of the current span (the attempt's) from now on,
    /// and ships them while it runs. None when the process keeps no span
    /// data (its subscriber has no registry): then there is nothing to ship.
    pub fn start(
        transport: &Transport,
        msg: &TaskMessage,
        node: &str,
        delivery: u32,
        secrets: Secrets,
    ) -> Option<Shipper> {
        let log = AttemptLog::redacting(secrets);
        if !log.attach(&tracing::Span::current()) {
            return None;
        }
        let to = Target {
            transport: transport.clone(),
            msg: Arc::new(msg.clone()),
            node: node.to_string(),
            delivery,
        };
        let (stop, mut stopped) = oneshot::channel();
        let periodic = tokio::spawn({
            let (to, log) = (to.clone(), log.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SHIP_EVERY) => to.ship(&log, false).await,
                        _ = &mut stopped => return,
                    }
                }
            }
        });
        Some(Shipper {
            to,
            log,
            periodic: Some((stop, periodic)),
        })
    }

    /// Ships every line waiting, the last batch marked `last`. Called at the
    /// attempt's end; called again, it ships what was written since.
    pub async fn finish(&mut self) {
        self.stop_periodic().await;
        self.to.ship(&self.log, true).await;
    }

    /// Ends the shipping and takes the delivery's last batch, marked `last`,
    /// for its final update to carry: one message fewer per attempt. Lines
    /// beyond one batch ([`MAX_BATCH`]) are shipped first, in order, on
    /// their own. None when nothing is waiting.
    pub async fn finish_into_update(&mut self) -> Option<LogBatch> {
        self.stop_periodic().await;
        let mut batch = self.log.take();
        loop {
            let b = batch?;
            batch = self.log.take();
            if batch.is_none() {
                return Some(b.into_update_logs(true));
            }
            self.to.publish(b, false).await;
        }
    }

    async fn stop_periodic(&mut self) {
        if let Some((stop, periodic)) = self.periodic.take() {
            // Waits for a batch in flight, so that batches go out in order.
            let _ = stop.send(());
            let _ = periodic.await;
        }
    }

    /// Whether lines were written since the last batch.
    pub fn has_lines(&self) -> bool {
        !self.log.is_empty()
    }
}

impl Target {
    async fn ship(&self, log: &AttemptLog, last: bool) {
        let mut batch = log.take();
        while let Some(b) = batch {
            let next = log.take();
            self.publish(b, last && next.is_none()).await;
            batch = next;
        }
    }

    async fn publish(&self, batch: Batch, last: bool) {
        let logs = batch.into_message(&self.msg, &self.node, self.delivery, last);
        if let Err(e) = self.transport.publish_logs(&self.msg.reply_to, &logs).await {
            // Outside the attempt's span: this line is about its log.
            warn!(parent: None, task_run = %self.msg.task_run, attempt = self.msg.attempt, lines = logs.lines.len(), error = %e, "Cannot ship task log lines; dropping them");
        }
    }
}

/// Captures the events inside a task attempt's span into its [`AttemptLog`].
/// Give it its own level filter (`.with_filter(LevelFilter::INFO)`), so that
/// what is captured does not depend on what the node prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskLogLayer;

impl<S> Layer<S> for TaskLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let log = span.extensions().get::<Arc<AttemptLog>>().cloned();
            if let Some(log) = log {
                log.push(line_of(event, &log.secrets));
                return;
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One event as a line: its message, then its other fields as `key=value`,
/// with `secrets` (and URL passwords) redacted.
fn line_of(event: &Event<'_>, secrets: &Secrets) -> TaskLogLine {
    let mut text = LineText::default();
    event.record(&mut text);
    let mut message = text.message;
    if !text.fields.is_empty() {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&text.fields);
    }
    let mut message = secrets.redact(&message);
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [cut]");
    }
    TaskLogLine {
        ts_ms: now_ms(),
        level: event.metadata().level().as_str().to_string(),
        message,
    }
}

/// A field's value, quoted when it would not read back as one token.
fn push_token(out: &mut String, value: &str) {
    if value.is_empty() || value.contains([' ', '"', '=']) {
        let _ = write!(out, "{value:?}");
    } else {
        out.push_str(value);
    }
}

#[derive(Default)]
struct LineText {
    message: String,
    fields: String,
}

impl LineText {
    fn field(&mut self, name: &str) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        self.fields.push_str(name);
        self.fields.push('=');
    }
}

impl Visit for LineText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field.name());
            push_token(&mut self.fields, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field.name());
            // `%value` fields (errors, paths) arrive here as Display.
            push_token(&mut self.fields, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{info, info_span, warn};
    use tracing_subscriber::layer::SubscriberExt;

    fn subscriber() -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry()
            .with(TaskLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
    }

    #[test]
    fn events_inside_an_attempt_span_are_captured_with_their_fields_and_no_others() {
        tracing::subscriber::with_default(subscriber(), || {
            info!("Before any attempt");
            let span = info_span!("task", flow_run = "r", task_run = "r.t", attempt = 2);
            let log = AttemptLog::new();
            assert!(log.attach(&span));
            span.in_scope(|| {
                let error = std::io::Error::other("disk full");
                info!(rows = 3, file = "a b.csv", error = %error, "Read a file");
                tracing::debug!("Below the capture level");
                let inner = info_span!("step", step = "cast");
                inner.in_scope(|| warn!(column = "x", "Cast lost precision"));
            });
            // The blocking pool: a thread that enters the span.
            let on_thread = span.clone();
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let _in = on_thread.enter();
                    info!(bytes = 10u64, "Wrote the output");
                })
            })
            .join()
            .unwrap();
            info!("After the attempt");
            let batch = log.take().unwrap();
            let texts: Vec<(&str, &str)> = batch
                .lines
                .iter()
                .map(|l| (l.level.as_str(), l.message.as_str()))
                .collect();
            assert_eq!(
                texts,
                [
                    (
                        "INFO",
                        "Read a file rows=3 file=\"a b.csv\" error=\"disk full\""
                    ),
                    ("WARN", "Cast lost precision column=x"),
                    ("INFO", "Wrote the output bytes=10"),
                ]
            );
            assert_eq!((batch.first_line, batch.dropped), (0, 0));
            assert!(batch.lines.iter().all(|l| l.ts_ms > 0));
            assert!(log.take().is_none());
        });
    }

    #[test]
    fn secrets_and_url_passwords_never_reach_a_line() {
        tracing::subscriber::with_default(subscriber(), || {
            let span = info_span!("task");
            let log = AttemptLog::redacting(Secrets::of(["hunter2".to_string()]));
            assert!(log.attach(&span));
            span.in_scope(|| {
                warn!(path = "/data/hunter2/a.csv", "Cannot read");
                info!(url = "postgres://app:pw@db/x", "Connecting");
            });
            let texts: Vec<String> = log
                .take()
                .unwrap()
                .lines
                .into_iter()
                .map(|l| l.message)
                .collect();
            assert_eq!(
                texts,
                [
                    "Cannot read path=/data/***/a.csv",
                    "Connecting url=postgres://app:***@db/x"
                ]
            );
        });
    }

    #[test]
    fn a_full_buffer_drops_and_counts_and_batches_number_their_lines() {
        tracing::subscriber::with_default(subscriber(), || {
            let span = info_span!("task");
            let log = AttemptLog::new();
            assert!(log.attach(&span));
            span.in_scope(|| {
                for i in 0..MAX_PENDING + 7 {
                    info!(i, "Line");
                }
            });
            let mut first = Vec::new();
            let mut dropped = 0;
            let mut lines = 0;
            while let Some(b) = log.take() {
                assert!(b.lines.len() <= MAX_BATCH);
                first.push(b.first_line);
                dropped += b.dropped;
                lines += b.lines.len();
            }
            assert_eq!((lines, dropped), (MAX_PENDING, 7));
            assert_eq!(first, [0, 500, 1000, 1500]);
            span.in_scope(|| info!("After the drain"));
            let b = log.take().unwrap();
            assert_eq!((b.first_line, b.dropped, b.lines.len()), (2000, 0, 1));
        });
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        tracing::subscriber::with_default(subscriber(), || {
            let span = info_span!("task");
            let log = AttemptLog::new();
            log.attach(&span);
            let long = "é".repeat(MAX_MESSAGE_BYTES);
            span.in_scope(|| info!("{long}"));
            let line = &log.take().unwrap().lines[0];
            assert!(line.message.len() <= MAX_MESSAGE_BYTES + 8);
            assert!(line.message.ends_with(" [cut]"));
        });
    }

    #[tokio::test]
    async fn the_last_batch_rides_in_the_update_and_the_earlier_ones_go_first() {
        use conveyor_schemas::{ArtifactRef, SinkSpec, SourceSpec, TaskKind, TaskSpec};
        let _default = tracing::subscriber::set_default(subscriber());
        let bus = conveyor_transport::inproc::InProcBus::new(5);
        let transport = Transport::InProc(bus.clone());
        let msg = TaskMessage {
            schema_version: SCHEMA_VERSION,
            flow: "f".into(),
            flow_run: "r".into(),
            task: "t".into(),
            task_run: "r.t".into(),
            attempt: 3,
            reply_to: "replies".into(),
            spec: TaskSpec {
                kind: TaskKind::Transform,
                source: SourceSpec::Artifact(ArtifactRef {
                    path: "r/e.arrow".into(),
                    rows: 0,
                }),
                steps: vec![],
                sink: SinkSpec::Artifact,
            },
        };
        let span = info_span!("task");
        let mut shipper = {
            let _in = span.enter();
            let shipper = Shipper::start(&transport, &msg, "n1", 2, Secrets::default()).unwrap();
            for i in 0..MAX_BATCH + 3 {
                info!(i, "Line");
            }
            shipper
        };
        let tail = shipper.finish_into_update().await.unwrap();
        assert_eq!(
            (tail.first_line, tail.last, tail.lines.len()),
            (500, true, 3)
        );
        // The batch before it went out on its own, not marked last.
        let mut replies = bus.consume("replies", 10);
        let d = replies.deliveries.recv().await.unwrap();
        let shipped: TaskLogs = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            (
                shipped.first_line,
                shipped.last,
                shipped.lines.len(),
                shipped.attempt,
                shipped.delivery
            ),
            (0, false, MAX_BATCH, 3, 2)
        );
        assert_eq!(bus.depth("replies"), 0);
        // The update gives the coordinator the same batch as a TaskLogs.
        let mut update = conveyor_schemas::TaskUpdate::for_attempt(
            &msg,
            "n1",
            2,
            conveyor_schemas::UpdateStatus::Started,
        )
        .with_logs(Some(tail));
        let body = serde_json::to_vec(&update).unwrap();
        let logs = update.take_logs().unwrap();
        assert!(update.logs.is_none());
        assert_eq!(
            (
                logs.first_line,
                logs.last,
                logs.lines.len(),
                logs.node.as_str()
            ),
            (500, true, 3, "n1")
        );
        let decoded: conveyor_schemas::TaskUpdate = serde_json::from_slice(&body).unwrap();
        assert_eq!(decoded.logs.map(|l| l.lines.len()), Some(3));
        // Nothing waiting: no batch for the update.
        assert!(shipper.finish_into_update().await.is_none());
    }

    #[test]
    fn without_a_registry_nothing_attaches() {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            let span = info_span!("task");
            assert!(!AttemptLog::new().attach(&span));
        });
    }
}
