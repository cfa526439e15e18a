//! Dynamic micro-batching policy, as plain data.
//!
//! A batch closes when it is full, when its oldest request has waited
//! `max_wait`, or when no other request is on its way (waiting would only
//! delay the ones queued); requests whose client has gone are dropped before they cost
//! an inference. The queue is bounded: a push past `max_depth` is refused,
//! which the HTTP layer turns into 429 with Retry-After.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub max_depth: usize,
}

/// Whether the request behind an item is still wanted.
pub trait Cancel {
    fn is_cancelled(&self) -> bool;
}

#[derive(Debug)]
pub struct Entry<T> {
    pub item: T,
    pub enqueued: Instant,
}

#[derive(Debug)]
pub enum Next<T> {
    Empty,
    WaitUntil(Instant),
    Ready(Vec<Entry<T>>),
}

#[derive(Debug)]
pub struct Queue<T> {
    items: VecDeque<Entry<T>>,
    policy: Policy,
    dropped: u64,
}

impl<T: Cancel> Queue<T> {
    pub fn new(policy: Policy) -> Self {
        let policy = Policy {
            max_batch: policy.max_batch.max(1),
            max_depth: policy.max_depth.max(1),
            ..policy
        };
        Self {
            items: VecDeque::with_capacity(policy.max_depth),
            policy,
            dropped: 0,
        }
    }

    /// At `max_depth`: the next push is refused.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.policy.max_depth
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Requests dropped because their client went away, since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queue `item`, or hand it back when the queue is full.
    pub fn push(&mut self, item: T, now: Instant) -> Result<(), T> {
        if self.items.len() >= self.policy.max_depth {
            return Err(item);
        }
        self.items.push_back(Entry {
            item,
            enqueued: now,
        });
        Ok(())
    }

    /// The next batch, assuming more requests may be on their way.
    pub fn next(&mut self, now: Instant) -> Next<T> {
        self.next_expecting(now, true)
    }

    /// The next batch; with `more_coming` false (every request admitted
    /// for this queue is already in it) the queued ones go at once, since
    /// waiting `max_wait` could gain no company for them.
    pub fn next_expecting(&mut self, now: Instant, more_coming: bool) -> Next<T> {
        let before = self.items.len();
        self.items.retain(|e| !e.item.is_cancelled());
        self.dropped += (before - self.items.len()) as u64;
        let Some(oldest) = self.items.front() else {
            return Next::Empty;
        };
        let deadline = oldest.enqueued + self.policy.max_wait;
        if self.items.len() >= self.policy.max_batch || deadline <= now || !more_coming {
            let n = self.items.len().min(self.policy.max_batch);
            Next::Ready(self.items.drain(..n).collect())
        } else {
            Next::WaitUntil(deadline)
        }
    }

    /// Everything still queued, for shutdown.
    pub fn drain_all(&mut self) -> Vec<Entry<T>> {
        self.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Item<'a>(u32, &'a Cell<bool>);
    impl Cancel for Item<'_> {
        fn is_cancelled(&self) -> bool {
            self.1.get()
        }
    }

    fn policy() -> Policy {
        Policy {
            max_batch: 3,
            max_wait: Duration::from_millis(5),
            max_depth: 4,
        }
    }

    fn ids(v: &[Entry<Item>]) -> Vec<u32> {
        v.iter().map(|e| e.item.0).collect()
    }

    #[test]
    fn goes_at_once_when_no_one_else_is_coming() {
        let live = Cell::new(false);
        let t0 = Instant::now();
        let mut q = Queue::new(policy());
        q.push(Item(1, &live), t0).ok().unwrap();
        assert!(matches!(q.next_expecting(t0, true), Next::WaitUntil(_)));
        match q.next_expecting(t0, false) {
            Next::Ready(v) => assert_eq!(ids(&v), [1]),
            _ => panic!("expected a batch"),
        }
        assert!(matches!(q.next_expecting(t0, false), Next::Empty));
    }

    #[test]
    fn waits_for_more_until_the_oldest_times_out() {
        let live = Cell::new(false);
        let t0 = Instant::now();
        let mut q = Queue::new(policy());
        q.push(Item(1, &live), t0).ok().unwrap();
        match q.next(t0 + Duration::from_millis(1)) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_millis(5)),
            other => panic!(
                "expected wait, got {other:?}",
                other = matches!(other, Next::Empty)
            ),
        }
        q.push(Item(2, &live), t0 + Duration::from_millis(2))
            .ok()
            .unwrap();
        match q.next(t0 + Duration::from_millis(5)) {
            Next::Ready(v) => assert_eq!(ids(&v), vec![1, 2]),
            _ => panic!("expected a batch at the deadline"),
        }
        assert!(matches!(q.next(t0), Next::Empty));
    }

    #[test]
    fn full_batch_goes_at_once_and_in_order() {
        let live = Cell::new(false);
        let t0 = Instant::now();
        let mut q = Queue::new(policy());
        for i in 0..4 {
            q.push(Item(i, &live), t0).ok().unwrap();
        }
        match q.next(t0) {
            Next::Ready(v) => assert_eq!(ids(&v), vec![0, 1, 2]),
            _ => panic!("a full batch must not wait"),
        }
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn bounded_depth_refuses_and_returns_the_item() {
        let live = Cell::new(false);
        let t0 = Instant::now();
        let mut q = Queue::new(policy());
        for i in 0..4 {
            assert!(q.push(Item(i, &live), t0).is_ok());
        }
        let back = q.push(Item(9, &live), t0).unwrap_err();
        assert_eq!(back.0, 9);
    }

    #[test]
    fn cancelled_requests_are_dropped_before_batching() {
        let (live, gone) = (Cell::new(false), Cell::new(true));
        let t0 = Instant::now();
        let mut q = Queue::new(policy());
        q.push(Item(1, &gone), t0).ok().unwrap();
        q.push(Item(2, &live), t0).ok().unwrap();
        q.push(Item(3, &gone), t0).ok().unwrap();
        match q.next(t0 + Duration::from_secs(1)) {
            Next::Ready(v) => assert_eq!(ids(&v), vec![2]),
            _ => panic!(),
        }
        assert_eq!(q.dropped(), 2);
    }
}
