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

use conveyor_schemas::Heartbeat;
use tokio::sync::{broadcast, mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{Acker, Closer, Delivery, Names, Subscription};

struct Item {
    body: Vec<u8>,
    deliveries: u32,
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
}

#[derive(Clone)]
pub struct InProcBus {
    inner: Arc<Inner>,
}

impl InProcBus {
    pub fn new(delivery_limit: u32) -> Self {
        InProcBus {
            inner: Arc::new(Inner {
                names: Names {
                    namespace: "local".into(),
                },
                delivery_limit,
                queues: Mutex::new(HashMap::new()),
                heartbeats: broadcast::channel(64).0,
            }),
        }
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    fn queue(&self, name: &str) -> Arc<Queue> {
        let mut queues = match self.inner.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        queues.entry(name.to_string()).or_default().clone()
    }

    pub fn publish(&self, queue: &str, body: Vec<u8>) {
        self.queue(queue).push_back(Item {
            body,
            deliveries: 0,
        });
    }

    /// Messages currently waiting in a queue (not counting unacked ones).
    pub fn depth(&self, queue: &str) -> usize {
        self.queue(queue).items.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn publish_heartbeat(&self, body: Vec<u8>) {
        let _ = self.inner.heartbeats.send(body);
    }

    pub fn heartbeats(&self) -> mpsc::Receiver<Heartbeat> {
        let mut rx = self.inner.heartbeats.subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(body) => {
                        if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&body) {
                            if tx.send(hb).await.is_err() {
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
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = cancel_rx.changed() => break,
                };
                let mut item = loop {
                    if *cancel_rx.borrow() {
                        return;
                    }
                    if let Some(item) = queue.pop() {
                        break item;
                    }
                    tokio::select! {
                        _ = queue.notify.notified() => {}
                        _ = cancel_rx.changed() => {}
                    }
                };
                if item.deliveries >= limit {
                    tracing::warn!(
                        deliveries = item.deliveries,
                        "Message reached the delivery limit; dead-lettering it"
                    );
                    dead.push_back(item);
                    continue;
                }
                item.deliveries += 1;
                let delivery = Delivery {
                    body: item.body.clone(),
                    delivery: item.deliveries,
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
            self.dead.push_back(item);
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
