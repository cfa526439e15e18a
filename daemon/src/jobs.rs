//! The durable job queue shared by the families: a job is an id in the
//! family's queue tree (`<family>_queue` in the one sled database), put
//! there in the same flush as the record it refers to and removed only
//! once its work is done, so a daemon stopped or killed with `kill -9`
//! finds it again at start and the runner resumes it. The work itself
//! keeps its partial results and progress in the family's own record
//! (and may publish progress on the [`events`](crate::events) bus).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::events::EventBus;
use crate::store::{Store, StoreError};

/// One family's queue of job ids.
pub struct JobQueue {
    name: String,
    /// Job id -> when it was queued (a big-endian sequence number from
    /// the database's id generator, increasing across restarts).
    tree: sled::Tree,
    db: sled::Db,
    wake: tokio::sync::Notify,
}

impl JobQueue {
    /// The queue named `name` (the tree `<name>_queue`).
    pub fn open(store: &Store, name: &str) -> Result<Self, StoreError> {
        Ok(Self {
            name: name.to_string(),
            tree: store.db().open_tree(format!("{name}_queue"))?,
            db: store.db().clone(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Queue `id` behind every job queued before it; durable with the
    /// next store flush. Call [`JobQueue::wake`] once flushed. A job
    /// queued again while still queued keeps its place.
    pub fn enqueue(&self, id: Uuid) -> Result<(), StoreError> {
        let seq = self.db.generate_id()?.to_be_bytes();
        // Err(current) only means it is queued already.
        let _ = self
            .tree
            .compare_and_swap(id.as_bytes(), None::<&[u8]>, Some(&seq[..]))?;
        Ok(())
    }

    /// Its work is done (or its record is gone).
    pub fn dequeue(&self, id: Uuid) -> Result<(), StoreError> {
        self.tree.remove(id.as_bytes())?;
        Ok(())
    }

    /// Queued ids, first come first: in the order they were queued (jobs
    /// queued by an older version, with no sequence number, first).
    pub fn queued(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, seq) = item?;
            if let Ok(id) = Uuid::from_slice(&k) {
                out.push((seq, id));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// Let the runner look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The event-bus topic of job `id`'s progress: `jobs/<queue>/<id>`.
    pub fn topic(&self, id: Uuid) -> String {
        format!("jobs/{}/{id}", self.name)
    }

    /// Tell followers of job `id` how far it is: `done` of `total` steps,
    /// with a message. (The job's own record keeps what survives a restart.)
    pub fn progress(&self, events: &EventBus, id: Uuid, done: usize, total: usize, message: &str) {
        events.publish(
            &self.topic(id),
            "progress",
            serde_json::json!({
                "job": id,
                "done": done,
                "total": total,
                "fraction": if total == 0 { 1.0 } else { done as f64 / total as f64 },
                "message": message,
            }),
        );
    }

    /// Progress within a unit of work (a file's tiles): the same event
    /// with only `fraction` (0 to 1) and `message`.
    pub fn progress_fraction(&self, events: &EventBus, id: Uuid, fraction: f64, message: &str) {
        events.publish(
            &self.topic(id),
            "progress",
            serde_json::json!({
                "job": id,
                "fraction": fraction.clamp(0.0, 1.0),
                "message": message,
            }),
        );
    }
}

/// Run `work` on every queued job until `shutdown` flips to true. `work`
/// dequeues a job itself when it is done (in the same flush as its
/// results); a job whose `work` fails stays queued and is tried again on
/// a later pass, a second later at the earliest.
pub async fn run<F, Fut, E>(
    queue: Arc<JobQueue>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut(Uuid) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    loop {
        if *shutdown.borrow() {
            return;
        }
        let queued = queue.queued().unwrap_or_else(|e| {
            tracing::error!(queue = %queue.name, error = %e, "reading the job queue failed");
            Vec::new()
        });
        for id in queued {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = work(id).await {
                tracing::error!(queue = %queue.name, job = %id, error = %e, "job failed; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::select! {
            _ = queue.wake.notified() => {}
            // Err: the sender is gone, which also means stop.
            r = shutdown.changed() => if r.is_err() { return; },
            // A wake-up lost between the scan and the wait.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A retention sweep: `sweep` (blocking; returns how many things it
/// removed) at start and every hour until `shutdown`, each removal logged
/// with `what` and `days`. It works from the records' own times, so days
/// that passed while the appliance was off are caught up at the next
/// start; a failed sweep is logged and tried again an hour later.
pub async fn hourly_sweep<F>(
    what: &'static str,
    days: u32,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    sweep: F,
) where
    F: Fn() -> Result<usize, crate::store::StoreError> + Send + Sync + Clone + 'static,
{
    loop {
        match tokio::task::spawn_blocking(sweep.clone()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, days, "retention: deleted {what}"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retention sweep of {what} failed; tried again in an hour")
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep of {what} panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sweep runs at start (a failing one does not end the task) and
    /// the task stops on shutdown, without waiting out the hour.
    #[tokio::test]
    async fn a_sweep_runs_at_start_and_stops_on_shutdown() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let counted = runs.clone();
        let task = tokio::spawn(hourly_sweep("test things", 1, rx, move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::Corrupt("a failing sweep".into()))
        }));
        let ran = || runs.load(std::sync::atomic::Ordering::SeqCst);
        while ran() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
        assert_eq!(ran(), 1);
    }

    #[test]
    fn jobs_come_out_in_the_order_they_were_queued() {
        let dir = tempfile::tempdir().unwrap();
        // Random ids, so key order is not queue order.
        let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
        {
            let store = Store::open(dir.path()).unwrap();
            let q = JobQueue::open(&store, "test").unwrap();
            for id in &ids {
                q.enqueue(*id).unwrap();
            }
            // Queued again while queued: keeps its place.
            q.enqueue(ids[0]).unwrap();
            assert_eq!(q.queued().unwrap(), ids);
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let q = JobQueue::open(&store, "test").unwrap();
        assert_eq!(q.queued().unwrap(), ids, "after a reopen");
        // Done and queued again: now last.
        q.dequeue(ids[0]).unwrap();
        q.enqueue(ids[0]).unwrap();
        let mut want = ids[1..].to_vec();
        want.push(ids[0]);
        assert_eq!(q.queued().unwrap(), want);
    }

    /// Jobs survive a reopen; the runner works each, retries a failing
    /// one, and stops on shutdown.
    #[tokio::test]
    async fn queued_jobs_survive_restart_and_failures_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        {
            let store = Store::open(dir.path()).unwrap();
            let q = JobQueue::open(&store, "test").unwrap();
            q.enqueue(a).unwrap();
            q.enqueue(b).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let q = Arc::new(JobQueue::open(&store, "test").unwrap());
        assert_eq!(q.queued().unwrap(), vec![a, b]);
        let bus = EventBus::new();
        let mut follow = bus.subscribe(&q.topic(a));
        q.progress(&bus, a, 1, 4, "tile 1 of 4");
        let e = follow.recv().await.unwrap();
        assert_eq!(
            (e.kind.as_str(), &e.data["fraction"]),
            ("progress", &serde_json::json!(0.25))
        );
        let seen: Arc<Mutex<Vec<Uuid>>> = Arc::default();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (q2, seen2) = (q.clone(), seen.clone());
        let runner = tokio::spawn(run(q.clone(), rx, move |id| {
            let (q, seen) = (q2.clone(), seen2.clone());
            async move {
                let first_try_of_b = {
                    let mut s = seen.lock().unwrap();
                    s.push(id);
                    id == b && s.iter().filter(|x| **x == b).count() == 1
                };
                if first_try_of_b {
                    return Err("transient");
                }
                q.dequeue(id).map_err(|_| "store")
            }
        }));
        for _ in 0..100 {
            if q.queued().unwrap().is_empty() {
                break;
            }
            q.wake();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(q.queued().unwrap().is_empty());
        tx.send(true).unwrap();
        runner.await.unwrap();
        let s = seen.lock().unwrap().clone();
        assert_eq!(s.iter().filter(|x| **x == b).count(), 2, "{s:?}");
    }
}
