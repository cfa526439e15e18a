//! The in-process event bus: one `tokio::sync::broadcast` channel per
//! topic (e.g. `pbs/<study id>`), for websocket or SSE handlers to follow
//! work as it happens. Publishing never waits: a subscriber that falls
//! more than [`CAPACITY`] events behind loses the oldest ones (its
//! receiver says how many), so a slow client never blocks the work.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it loses some.
pub const CAPACITY: usize = 256;

/// One event: what happened (`kind`) and its JSON payload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub topic: String,
    pub kind: String,
    pub data: serde_json::Value,
}

#[derive(Default)]
pub struct EventBus {
    topics: Mutex<HashMap<String, broadcast::Sender<Event>>>,
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follow `topic` from now on.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Event> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Send to the topic's current subscribers; returns how many got it.
    /// A topic nobody follows any more is dropped.
    pub fn publish(&self, topic: &str, kind: &str, data: serde_json::Value) -> usize {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = topics.get(topic) else {
            return 0;
        };
        let event = Event {
            topic: topic.to_string(),
            kind: kind.to_string(),
            data,
        };
        match tx.send(event) {
            Ok(n) => n,
            Err(_) => {
                topics.remove(topic);
                0
            }
        }
    }

    /// Topics with a channel open (for metrics and tests).
    pub fn topics(&self) -> usize {
        self.topics.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn subscribers_get_their_topics_events_in_order() {
        let bus = EventBus::new();
        assert_eq!(bus.publish("a", "x", json!(1)), 0, "no one listens yet");
        let mut a = bus.subscribe("a");
        let mut b = bus.subscribe("b");
        assert_eq!(bus.publish("a", "progress", json!({"p": 0.5})), 1);
        assert_eq!(bus.publish("a", "done", json!({})), 1);
        assert_eq!(bus.publish("b", "done", json!(2)), 1);
        assert_eq!(a.recv().await.unwrap().kind, "progress");
        assert_eq!(a.recv().await.unwrap().kind, "done");
        assert_eq!(b.recv().await.unwrap().data, json!(2));
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_and_never_blocks() {
        let bus = EventBus::new();
        let mut slow = bus.subscribe("t");
        for i in 0..(CAPACITY + 10) {
            bus.publish("t", "n", json!(i));
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(slow.recv().await.unwrap().data, json!(10));
    }

    #[test]
    fn topics_without_subscribers_are_dropped() {
        let bus = EventBus::new();
        drop(bus.subscribe("gone"));
        assert_eq!(bus.topics(), 1);
        assert_eq!(bus.publish("gone", "x", json!(null)), 0);
        assert_eq!(bus.topics(), 0);
    }
}
