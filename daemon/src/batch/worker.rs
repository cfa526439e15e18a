//! The backend thread: owns the backend, forms batches from the queue and
//! answers every request on its own oneshot channel.
//!
//! One `Batcher` per kind of work (`Workload`): face images, smear tiles,
//! cell crops. Items of one kind share batches; each batcher has its own
//! backend instance with just the models its work needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{Cancel, Next, Policy, Queue};
use crate::backend::{Backend, BackendError, Batch, BatchOutput, FaceBatch, FaceImage};
use crate::metrics::Metrics;
use crate::model::Face;

/// A kind of work the batcher gathers into batches.
pub trait Workload: Send + Sync + 'static {
    /// One request's unit of work.
    type Item: Send + 'static;
    /// What that unit gets back.
    type Output: Send + 'static;
    /// Model label for metrics.
    fn model(&self) -> &'static str;
    /// Refuse an item that cannot be batched (wrong size).
    fn check(&self, item: &Self::Item) -> Result<(), SubmitError>;
    /// A representative item for the warm-up inference.
    fn warm_item(&self) -> Self::Item;
    fn pack(&self, items: Vec<Self::Item>) -> Batch;
    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>>;
}

/// Face detection for a model input of one size: host-letterboxed images,
/// or whole frames for a backend that letterboxes them itself.
#[derive(Debug, Clone, Copy)]
pub struct FaceWork {
    pub width: usize,
    pub height: usize,
    /// The backend takes whole frames (its warm-up uses one).
    pub frames: bool,
}

impl Workload for FaceWork {
    type Item = (FaceImage, f32);
    type Output = Vec<Face>;

    fn model(&self) -> &'static str {
        "centerface"
    }

    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        let want = self.width * self.height * 3;
        let got = match &item.0 {
            FaceImage::Letterboxed(p) => p.len(),
            FaceImage::Frame(f, _) if f.width() > 0 && f.height() > 0 => return Ok(()),
            FaceImage::Frame(..) => 0,
        };
        if got != want {
            return Err(SubmitError::WrongSize { got, want });
        }
        Ok(())
    }

    fn warm_item(&self) -> Self::Item {
        let image = if self.frames {
            // A camera frame's size: the warm-up runs the letterbox kernel too.
            FaceImage::Frame(
                std::sync::Arc::new(image::RgbImage::from_pixel(1280, 720, image::Rgb([127; 3]))),
                None,
            )
        } else {
            FaceImage::Letterboxed(vec![127; self.width * self.height * 3])
        };
        (image, 0.5)
    }

    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        let (images, thresholds) = items.into_iter().unzip();
        Batch::Faces(FaceBatch {
            images,
            width: self.width,
            height: self.height,
            thresholds,
        })
    }

    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::Faces(v) => Some(v),
            _ => None,
        }
    }
}

/// Where a submitted item's result arrives.
pub type Reply<O> = oneshot::Receiver<Result<JobResult<O>, String>>;

struct Job<W: Workload> {
    item: W::Item,
    reply: oneshot::Sender<Result<JobResult<W::Output>, String>>,
    span: tracing::Span,
}

impl<W: Workload> Cancel for Job<W> {
    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

/// What a request gets back: its output and how its batch went.
#[derive(Debug, Clone)]
pub struct JobResult<O> {
    pub output: O,
    pub queue_ms: f64,
    /// Packing the batch's input buffer (the request's "blob" step).
    pub pack_ms: f64,
    pub inference_ms: f64,
    pub batch_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the inference queue is full")]
    QueueFull,
    #[error("the batcher is shut down")]
    ShutDown,
    #[error("image is {got} bytes, the model input needs {want}")]
    WrongSize { got: usize, want: usize },
}

/// Why [`Batcher::try_submit_item`] did not queue an item.
#[derive(Debug)]
enum Refused<T> {
    /// The queue is at its depth: the item, to try again once it drains.
    Full(T),
    Failed(SubmitError),
}

#[derive(Debug, Clone)]
pub struct BatcherInfo {
    pub backend: &'static str,
    pub device: String,
    pub max_batch: usize,
    pub input_width: usize,
    pub input_height: usize,
    /// Send whole frames: the backend letterboxes them on its device.
    pub frames: bool,
}

struct Shared<W: Workload> {
    queue: Mutex<Queue<Job<W>>>,
    /// The batcher's tickets and how many there are in all: see
    /// [`Shared::more_coming`].
    tickets: Arc<tokio::sync::Semaphore>,
    ticket_count: usize,
    wake: Condvar,
    /// Told whenever the queue makes room (a batch taken, stale items
    /// dropped) and when the batcher stops: see [`Batcher::submit_admitted`].
    room: tokio::sync::Notify,
    stop: AtomicBool,
    healthy: AtomicBool,
}

pub struct Batcher<W: Workload = FaceWork> {
    shared: Arc<Shared<W>>,
    info: BatcherInfo,
    masker: crate::backend::masker::Masker,
    /// Set, with the reason, once the device failed and the CPU took over.
    fallback: Option<Arc<std::sync::OnceLock<String>>>,
    work: Arc<W>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// One per item this batcher can hold at once (queued, or in the batch
    /// that runs): see [`Batcher::ticket`].
    tickets: Arc<tokio::sync::Semaphore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug in queue code; the queue
    // itself is still consistent (VecDeque ops do not leave it half-done).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher<FaceWork> {
    /// The face batcher: letterboxed images of `input_width` x `input_height`.
    pub fn start(
        backend: Box<dyn Backend>,
        policy: Policy,
        input_width: usize,
        input_height: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackendError> {
        let work = FaceWork {
            width: input_width,
            height: input_height,
            frames: backend.letterboxes_frames(),
        };
        Self::start_work(work, backend, policy, (input_width, input_height), metrics)
    }
}

impl<W: Workload> Batcher<W> {
    /// Warm the backend up with one real inference, then start its thread.
    /// `input` is the model input size reported in `info()`.
    pub fn start_work(
        work: W,
        mut backend: Box<dyn Backend>,
        policy: Policy,
        input: (usize, usize),
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackendError> {
        let (input_width, input_height) = input;
        let t = Instant::now();
        let warm = work.pack(vec![work.warm_item()]);
        backend.run(warm)?;
        tracing::info!(backend = backend.name(), device = %backend.device(), ms = t.elapsed().as_secs_f64() * 1e3, "warm-up inference done");
        let max_batch = policy.max_batch.min(backend.max_batch_size()).max(1);
        let masker = backend.masker();
        let fallback = backend.fallback();
        let info = BatcherInfo {
            backend: backend.name(),
            device: backend.device(),
            max_batch,
            input_width,
            input_height,
            frames: backend.letterboxes_frames(),
        };
        metrics.declare_batcher(work.model(), info.backend, policy.max_depth);
        let tickets = Arc::new(tokio::sync::Semaphore::new(
            policy.max_depth.max(1) + max_batch,
        ));
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(Policy {
                max_batch,
                ..policy
            })),
            tickets: tickets.clone(),
            ticket_count: policy.max_depth.max(1) + max_batch,
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        });
        let work = Arc::new(work);
        let thread = {
            let (shared, metrics, info, work) =
                (shared.clone(), metrics.clone(), info.clone(), work.clone());
            std::thread::Builder::new()
                .name(format!("argus-{}-{}", info.backend, work.model()))
                .spawn(move || {
                    let _end = ThreadEnd(shared.clone());
                    run_loop(backend, work, shared, metrics, info)
                })
                .map_err(|e| BackendError::Unavailable("thread".into(), e.to_string()))?
        };
        Ok(Self {
            shared,
            info,
            masker,
            fallback,
            work,
            thread: Mutex::new(Some(thread)),
            metrics,
            tickets,
        })
    }

    pub fn info(&self) -> &BatcherInfo {
        &self.info
    }

    /// Where this batcher's frames are masked.
    pub fn masker(&self) -> &crate::backend::masker::Masker {
        &self.masker
    }

    /// Why this batcher's device backend handed over to the CPU, if it did.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback
            .as_ref()
            .and_then(|f| f.get())
            .map(String::as_str)
    }

    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed) && !self.shared.stop.load(Ordering::Relaxed)
    }

    pub fn queue_len(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Whether a new item would be refused now (the queue at its depth, or
    /// every [`ticket`](Self::ticket) taken), so a request can be turned
    /// away before its upload is read.
    pub fn is_full(&self) -> bool {
        self.tickets.available_permits() == 0 || lock(&self.shared.queue).is_full()
    }

    /// A place for one item among those this batcher can hold at once
    /// (`queue_depth` queued plus one running batch), taken before costly
    /// work that precedes `submit` (a request's decode) and kept until the
    /// answer is in; `None` when all are taken. Without tickets, under
    /// overload every request that found the queue open decoded its image
    /// and most then found it full; with them no decode is wasted.
    pub fn ticket(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.tickets.clone().try_acquire_owned().ok()
    }

    /// Queue one item; the receiver resolves when its batch ran.
    pub fn submit_item(&self, item: W::Item) -> Result<Reply<W::Output>, SubmitError> {
        self.try_submit_item(item).map_err(|r| match r {
            Refused::Full(_) => SubmitError::QueueFull,
            Refused::Failed(e) => e,
        })
    }

    /// [`submit_item`](Self::submit_item), except that a full queue hands
    /// the item back, for [`submit_admitted`](Self::submit_admitted) to
    /// try again once there is room.
    fn try_submit_item(&self, item: W::Item) -> Result<Reply<W::Output>, Refused<W::Item>> {
        self.work.check(&item).map_err(Refused::Failed)?;
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(Refused::Failed(SubmitError::ShutDown));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            item,
            reply,
            span: tracing::Span::current(),
        };
        let depth = {
            let mut q = lock(&self.shared.queue);
            q.push(job, Instant::now())
                .map_err(|job| Refused::Full(job.item))?;
            q.len()
        };
        self.metrics
            .queue_depth
            .with_label_values(&[self.work.model()])
            .set(depth as i64);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Queue one item of a request already admitted (it holds a
    /// [`ticket`](Self::ticket) or its family's own admission): a full
    /// queue, filled by work that takes no tickets (other photos' tiles),
    /// is waited out for as long as the backend keeps taking batches.
    /// Refusing then, after the upload and decode were paid for, would
    /// waste them and answer 429 to a request that was let in; on a slow
    /// or loaded machine the wait is long, but it moves.
    ///
    /// Errors: [`SubmitError::QueueFull`] once `wait` has passed with no
    /// batch taken (the backend is stuck); the others as
    /// [`submit_item`](Self::submit_item).
    pub async fn submit_admitted(
        &self,
        mut item: W::Item,
        wait: Duration,
    ) -> Result<Reply<W::Output>, SubmitError> {
        loop {
            // Registered before the try, so room made between a refusal
            // and the await still wakes this waiter.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_submit_item(item) {
                Ok(rx) => return Ok(rx),
                Err(Refused::Failed(e)) => return Err(e),
                Err(Refused::Full(back)) => {
                    item = back;
                    // Woken, the backend took a batch: progress, so the
                    // next wait is a whole `wait` again.
                    if tokio::time::timeout(wait, room).await.is_err() {
                        return Err(SubmitError::QueueFull);
                    }
                }
            }
        }
    }

    /// Finish queued work, then stop the thread.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        // Waiters for room try again and find the batcher shut down.
        self.shared.room.notify_waiters();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl<W: Workload> Drop for Batcher<W> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<W: Workload> Shared<W> {
    /// Whether a request may still join the `queued` ones soon. Requests
    /// that take a [`Batcher::ticket`] hold it from the end of their upload
    /// (through the decode) to their answer; when every ticket taken
    /// belongs to a queued request, nothing is on its way and a lone
    /// request would wait `max_wait` for nobody (3 ms of a ~20 ms detect).
    /// Workloads that take no tickets give no such sign: they wait as before.
    fn more_coming(&self, queued: usize) -> bool {
        let taken = self
            .ticket_count
            .saturating_sub(self.tickets.available_permits());
        taken == 0 || taken > queued
    }
}

/// Ends the batcher with its thread, a panic included: queued items are
/// answered (their reply senders dropped: "the backend thread stopped"),
/// new ones refused, and waiters for room let go, rather than left waiting
/// on a queue nothing takes from.
struct ThreadEnd<W: Workload>(Arc<Shared<W>>);

impl<W: Workload> Drop for ThreadEnd<W> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        if std::thread::panicking() {
            self.0.healthy.store(false, Ordering::Relaxed);
            tracing::error!("a batcher thread panicked; its queue is answered with errors");
        }
        drop(lock(&self.0.queue).drain_all());
        self.0.room.notify_waiters();
    }
}

fn run_loop<W: Workload>(
    mut backend: Box<dyn Backend>,
    work: Arc<W>,
    shared: Arc<Shared<W>>,
    metrics: Arc<Metrics>,
    info: BatcherInfo,
) {
    let model = work.model();
    let fallback = backend.fallback();
    loop {
        let entries = {
            let mut q = lock(&shared.queue);
            loop {
                let dropped_before = q.dropped();
                let more = shared.more_coming(q.len());
                let next = q.next_expecting(Instant::now(), more);
                let dropped = q.dropped() - dropped_before;
                if dropped > 0 {
                    shared.room.notify_waiters();
                    metrics
                        .dropped_requests
                        .with_label_values(&[model])
                        .inc_by(dropped);
                }
                match next {
                    Next::Ready(v) => break v,
                    // On stop, queued requests are still served: the drain
                    // lets in-flight HTTP requests finish.
                    Next::WaitUntil(_) if shared.stop.load(Ordering::SeqCst) => {
                        break q.drain_all()
                    }
                    Next::Empty if shared.stop.load(Ordering::SeqCst) => return,
                    Next::Empty => q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                    Next::WaitUntil(t) => {
                        let d = t.saturating_duration_since(Instant::now());
                        q = shared
                            .wake
                            .wait_timeout(q, d)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        };
        shared.room.notify_waiters();
        metrics
            .queue_depth
            .with_label_values(&[model])
            .set(lock(&shared.queue).len() as i64);
        if entries.is_empty() {
            continue;
        }
        let started = Instant::now();
        let n = entries.len();
        let mut items = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(n);
        let mut waits = Vec::with_capacity(n);
        let span = entries[0].item.span.clone();
        for e in entries {
            items.push(e.item.item);
            replies.push(e.item.reply);
            let w = started.duration_since(e.enqueued);
            metrics
                .queue_wait
                .with_label_values(&[model])
                .observe(w.as_secs_f64());
            waits.push(w.as_secs_f64() * 1e3);
        }
        let batch = work.pack(items);
        let pack_ms = started.elapsed().as_secs_f64() * 1e3;
        let result = span.in_scope(|| backend.run(batch));
        let secs = started.elapsed().as_secs_f64();
        metrics
            .inference
            .with_label_values(&[model, info.backend])
            .observe(secs);
        metrics
            .batch_size
            .with_label_values(&[model])
            .observe(n as f64);
        if let Some(why) = &fallback {
            metrics
                .backend_fallback
                .with_label_values(&[model])
                .set(why.get().is_some() as i64);
        }
        match result.map(|out| work.unpack(out)) {
            Ok(Some(outputs)) if outputs.len() == n => {
                shared.healthy.store(true, Ordering::Relaxed);
                for ((reply, output), q) in replies.into_iter().zip(outputs).zip(waits) {
                    let _ = reply.send(Ok(JobResult {
                        output,
                        queue_ms: q,
                        pack_ms,
                        inference_ms: (secs * 1e3 - pack_ms).max(0.0),
                        batch_size: n,
                    }));
                }
            }
            Ok(_) => fail_all(
                replies,
                "backend returned the wrong results".into(),
                &shared,
            ),
            Err(err) => fail_all(replies, err.to_string(), &shared),
        }
    }
}

fn fail_all<W: Workload>(
    replies: Vec<oneshot::Sender<Result<JobResult<W::Output>, String>>>,
    msg: String,
    shared: &Shared<W>,
) {
    tracing::error!(error = %msg, "inference batch failed");
    shared.healthy.store(false, Ordering::Relaxed);
    for r in replies {
        let _ = r.send(Err(msg.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, ModelPaths, ModelSet, Target};

    /// The real CenterFace on the CPU behind a batcher of one-image batches
    /// and a queue of one, so a burst of a few images overfills it.
    fn tight_batcher() -> Batcher {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
        let models = ModelPaths::in_dir(root.as_ref());
        let cpu = backend::start(&Target::Cpu, &models, ModelSet::Faces, 1).unwrap();
        let policy = Policy {
            max_batch: 1,
            max_wait: Duration::from_millis(1),
            max_depth: 1,
        };
        Batcher::start(cpu, policy, 320, 224, Arc::new(Metrics::new())).unwrap()
    }

    fn blank() -> (FaceImage, f32) {
        (FaceImage::Letterboxed(vec![128; 320 * 224 * 3]), 0.5)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admitted_items_wait_for_room_where_plain_ones_are_refused() {
        let b = tight_batcher();
        // Submitted in a tight loop, far faster than one inference: the
        // queue of one is full by the third.
        let plain: Vec<_> = (0..8).map(|_| b.submit_item(blank())).collect();
        assert!(plain
            .iter()
            .any(|r| matches!(r, Err(SubmitError::QueueFull))));
        for rx in plain.into_iter().flatten() {
            rx.await.unwrap().unwrap();
        }
        let b = Arc::new(b);
        let admitted: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let rx = b.submit_admitted(blank(), Duration::from_secs(30)).await;
                    rx.expect("an admitted item waits for room").await
                })
            })
            .collect();
        for t in admitted {
            assert_eq!(t.await.unwrap().unwrap().unwrap().batch_size, 1);
        }
    }

    #[tokio::test]
    async fn admitted_items_are_refused_once_the_batcher_stopped() {
        let b = tight_batcher();
        b.shutdown();
        let r = b.submit_admitted(blank(), Duration::from_secs(30)).await;
        assert!(matches!(r, Err(SubmitError::ShutDown)));
    }
}
