/*!
The in-process bus of the embedded default.

It keeps the broker's contract so that embedded runs behave like cluster
runs: a message is delivered to one consumer at a time, at most `prefetch`
unacked per consumer; a message dropped without an ack goes back to the front
of its queue with its delivery count raised; past the delivery limit it goes
to the dead-letter queue instead.
*/

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use conveyor_schemas::{Heartbeat, RunFinished};
use tokio::sync::{broadcast, mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{Acker, Closer, Delivery, Names, Subscription};

struct Item {
    body: Vec<u8>,
    deliveries: u32,
    /// Queue that also receives this message if it is dead-lettered (the
    /// coordinator's reply queue), like the CC header on the broker.
    dead_letter_to: Option<Arc<Queue>>,
    /// Set on the copy delivered to `dead_letter_to`.
    death: Option<String>,
}

impl Item {
    fn new(body: Vec<u8>) -> Item {
        Item {
            body,
            deliveries: 0,
            dead_letter_to: None,
            death: None,
        }
    }
}

/// Moves a message to the dead-letter queue, and a copy to its coordinator.
fn dead_letter(dead: &Queue, mut item: Item, reason: &str) {
    if let Some(to) = item.dead_letter_to.take() {
        to.push_back(Item {
            body: item.body.clone(),
            deliveries: 0,
            dead_letter_to: None,
            death: Some(reason.to_string()),
        });
    }
    dead.push_back(item);
}

#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Item>>,
    notify: Notify,
}

impl Queue {
    fn push_back(&self, item: Item) {
        if let Ok(mut q) = self.items.lock() {
            q.push_back(item);
        }
        self.notify.notify_one();
    }

    fn push_front(&self, item: Item) {
        if let Ok(mut q) = self.items.lock() {
            q.push_front(item);
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Item> {
        self.items.lock().ok()?.pop_front()
    }
}

struct Inner {
    names: Names,
    delivery_limit: u32,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    heartbeats: broadcast::Sender<Vec<u8>>,
    runs_finished: broadcast::Sender<Vec<u8>>,
    /// Set by [`InProcBus::close`]: every consumer and heartbeat stream ends,
    /// as they do when a broker connection closes.
    closed: watch::Sender<bool>,
}

#[derive(Clone)]
pub struct InProcBus {
    inner: Arc<Inner>,
}

impl InProcBus {
    pub fn new(delivery_limit: u32) -> Self {
        InProcBus {
            inner: Arc::new(Inner {
                names: Names::new("local"),
                delivery_limit,
                queues: Mutex::new(HashMap::new()),
                heartbeats: broadcast::channel(64).0,
                runs_finished: broadcast::channel(64).0,
                closed: watch::channel(false).0,
            }),
        }
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Ends every consumer and heartbeat stream; messages stay queued.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    fn queue(&self, name: &str) -> Arc<Queue> {
        let mut queues = match self.inner.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        queues.entry(name.to_string()).or_default().clone()
    }

    pub fn publish(&self, queue: &str, body: Vec<u8>) {
        self.queue(queue).push_back(Item::new(body));
    }

    /// Publishes a task whose dead-lettered copy goes to `reply_to`.
    pub fn publish_task(&self, queue: &str, body: Vec<u8>, reply_to: &str) {
        let mut item = Item::new(body);
        item.dead_letter_to = Some(self.queue(reply_to));
        self.queue(queue).push_back(item);
    }

    /// Messages currently waiting in a queue (not counting unacked ones).
    pub fn depth(&self, queue: &str) -> usize {
        self.queue(queue).items.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn publish_heartbeat(&self, body: Vec<u8>) {
        let _ = self.inner.heartbeats.send(body);
    }

    pub fn heartbeats(&self) -> mpsc::Receiver<Heartbeat> {
        self.events(&self.inner.heartbeats, super::decode_heartbeat)
    }

    pub fn publish_run_finished(&self, body: Vec<u8>) {
        let _ = self.inner.runs_finished.send(body);
    }

    pub fn runs_finished(&self) -> mpsc::Receiver<RunFinished> {
        self.events(&self.inner.runs_finished, super::decode_run_finished)
    }

    /// The decodable messages of one broadcast, until the bus closes.
    fn events<T: Send + 'static>(
        &self,
        topic: &broadcast::Sender<Vec<u8>>,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> mpsc::Receiver<T> {
        let mut rx = topic.subscribe();
        let mut closed = self.inner.closed.subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // Messages sent before the bus closed are still handed out.
                let next = tokio::select! {
                    biased;
                    next = rx.recv() => next,
                    _ = closed.wait_for(|c| *c) => break,
                };
                match next {
                    Ok(body) => {
                        if let Ok(event) = decode(&body) {
                            if tx.send(event).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        out
    }

    pub fn consume(&self, queue_name: &str, prefetch: u16) -> Subscription {
        let queue = self.queue(queue_name);
        let dead = self.queue(&self.inner.names.dead_letter_queue());
        let limit = self.inner.delivery_limit;
        let permits = Arc::new(Semaphore::new(prefetch.max(1) as usize));
        let (tx, rx) = mpsc::channel(prefetch.max(1) as usize);
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        let mut closed = self.inner.closed.subscribe();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = cancel_rx.changed() => break,
                    _ = closed.wait_for(|c| *c) => break,
                };
                let mut item = loop {
                    if *cancel_rx.borrow() || *closed.borrow() {
                        return;
                    }
                    if let Some(item) = queue.pop() {
                        break item;
                    }
                    tokio::select! {
                        _ = queue.notify.notified() => {}
                        _ = cancel_rx.changed() => {}
                        _ = closed.changed() => {}
                    }
                };
                if item.deliveries >= limit {
                    tracing::warn!(
                        deliveries = item.deliveries,
                        "Message reached the delivery limit; dead-lettering it"
                    );
                    dead_letter(&dead, item, "delivery_limit");
                    continue;
                }
                item.deliveries += 1;
                let delivery = Delivery {
                    body: item.body.clone(),
                    delivery: item.deliveries,
                    dead_letter_reason: item.death.clone(),
                    acker: Acker::InProc(InProcAcker {
                        queue: queue.clone(),
                        dead: dead.clone(),
                        item: Some(item),
                        _permit: permit,
                    }),
                };
                if tx.send(delivery).await.is_err() {
                    break;
                }
            }
        });
        Subscription {
            deliveries: rx,
            closer: Closer::InProc(ConsumerHandle { cancel: cancel_tx }),
        }
    }
}

pub struct ConsumerHandle {
    cancel: watch::Sender<bool>,
}

impl ConsumerHandle {
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }
}

/// Settles one in-process delivery. Dropped unsettled, it requeues.
pub struct InProcAcker {
    queue: Arc<Queue>,
    dead: Arc<Queue>,
    item: Option<Item>,
    _permit: OwnedSemaphorePermit,
}

impl InProcAcker {
    pub fn ack(mut self) -> bool {
        self.item.take();
        true
    }

    pub fn requeue(mut self) -> bool {
        if let Some(item) = self.item.take() {
            self.queue.push_front(item);
        }
        true
    }

    pub fn dead_letter(mut self) -> bool {
        if let Some(item) = self.item.take() {
            dead_letter(&self.dead, item, "rejected");
        }
        true
    }
}

impl Drop for InProcAcker {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.queue.push_front(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unacked_messages_come_back_and_poison_is_dead_lettered() {
        let bus = InProcBus::new(2);
        bus.publish("q", b"one".to_vec());
        let mut sub = bus.consume("q", 1);
        let first = sub.deliveries.recv().await.unwrap();
        assert_eq!((first.body.as_slice(), first.delivery), (&b"one"[..], 1));
        drop(first); // a crashed worker: no ack
        let second = sub.deliveries.recv().await.unwrap();
        assert_eq!(second.delivery, 2);
        drop(second);
        // Past the limit of two deliveries it goes to the dead-letter queue.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(bus.depth(&bus.names().dead_letter_queue()), 1);
        assert_eq!(bus.depth("q"), 0);
    }

    #[tokio::test]
    async fn a_dead_lettered_task_also_reaches_its_coordinator() {
        let bus = InProcBus::new(1);
        bus.publish_task("q", b"task".to_vec(), "replies");
        let mut sub = bus.consume("q", 1);
        let d = sub.deliveries.recv().await.unwrap();
        assert!(d.dead_letter_reason.is_none());
        drop(d);
        let mut replies = bus.consume("replies", 1);
        let copy = replies.deliveries.recv().await.unwrap();
        assert_eq!(copy.body, b"task".to_vec());
        assert_eq!(copy.dead_letter_reason.as_deref(), Some("delivery_limit"));
        assert_eq!(bus.depth(&bus.names().dead_letter_queue()), 1);
    }

    #[tokio::test]
    async fn prefetch_bounds_unacked_deliveries() {
        let bus = InProcBus::new(5);
        for i in 0..3u8 {
            bus.publish("q", vec![i]);
        }
        let mut sub = bus.consume("q", 2);
        let a = sub.deliveries.recv().await.unwrap();
        let _b = sub.deliveries.recv().await.unwrap();
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(100), sub.deliveries.recv())
                .await;
        assert!(third.is_err(), "a third delivery arrived past prefetch 2");
        assert!(a.ack().await.unwrap());
        let c = sub.deliveries.recv().await.unwrap();
        assert_eq!(c.body, vec![2]);
    }
}
