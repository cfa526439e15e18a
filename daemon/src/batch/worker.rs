//! The backend thread: owns the backend, forms batches from the queue and
//! answers every request on its own oneshot channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::queue::{Cancel, Next, Policy, Queue};
use crate::backend::{Backend, BackendError, Batch, BatchOutput, FaceBatch};
use crate::metrics::Metrics;
use crate::model::Face;

const MODEL: &str = "centerface";

/// One face-detection request: a letterboxed image of the batcher's input size.
struct Job {
    pixels: Vec<u8>,
    threshold: f32,
    reply: oneshot::Sender<Result<JobResult, String>>,
    span: tracing::Span,
}

impl Cancel for Job {
    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

/// What a request gets back: its candidates and how its batch went.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub faces: Vec<Face>,
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

#[derive(Debug, Clone)]
pub struct BatcherInfo {
    pub backend: &'static str,
    pub device: String,
    pub max_batch: usize,
    pub input_width: usize,
    pub input_height: usize,
}

struct Shared {
    queue: Mutex<Queue<Job>>,
    wake: Condvar,
    stop: AtomicBool,
    healthy: AtomicBool,
}

pub struct Batcher {
    shared: Arc<Shared>,
    info: BatcherInfo,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug in queue code; the queue
    // itself is still consistent (VecDeque ops do not leave it half-done).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher {
    /// Warm the backend up with one real inference, then start its thread.
    pub fn start(
        mut backend: Box<dyn Backend>,
        policy: Policy,
        input_width: usize,
        input_height: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackendError> {
        let warm = FaceBatch {
            pixels: vec![127; input_width * input_height * 3],
            width: input_width,
            height: input_height,
            thresholds: vec![0.5],
        };
        let t = Instant::now();
        backend.run(Batch::Faces(warm))?;
        tracing::info!(backend = backend.name(), device = %backend.device(), ms = t.elapsed().as_secs_f64() * 1e3, "warm-up inference done");
        let max_batch = policy.max_batch.min(backend.max_batch_size()).max(1);
        let info = BatcherInfo {
            backend: backend.name(),
            device: backend.device(),
            max_batch,
            input_width,
            input_height,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(Policy {
                max_batch,
                ..policy
            })),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        });
        let thread = {
            let (shared, metrics, info) = (shared.clone(), metrics.clone(), info.clone());
            std::thread::Builder::new()
                .name(format!("argus-{}", info.backend))
                .spawn(move || run_loop(backend, shared, metrics, info))
                .map_err(|e| BackendError::Unavailable("thread".into(), e.to_string()))?
        };
        Ok(Self {
            shared,
            info,
            thread: Mutex::new(Some(thread)),
            metrics,
        })
    }

    pub fn info(&self) -> &BatcherInfo {
        &self.info
    }

    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed) && !self.shared.stop.load(Ordering::Relaxed)
    }

    pub fn queue_len(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Queue one letterboxed image; the receiver resolves when its batch ran.
    pub fn submit(
        &self,
        pixels: Vec<u8>,
        threshold: f32,
    ) -> Result<oneshot::Receiver<Result<JobResult, String>>, SubmitError> {
        let want = self.info.input_width * self.info.input_height * 3;
        if pixels.len() != want {
            return Err(SubmitError::WrongSize {
                got: pixels.len(),
                want,
            });
        }
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(SubmitError::ShutDown);
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            pixels,
            threshold,
            reply,
            span: tracing::Span::current(),
        };
        let depth = {
            let mut q = lock(&self.shared.queue);
            q.push(job, Instant::now())
                .map_err(|_| SubmitError::QueueFull)?;
            q.len()
        };
        self.metrics
            .queue_depth
            .with_label_values(&[MODEL])
            .set(depth as i64);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Finish queued work, then stop the thread.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run_loop(
    mut backend: Box<dyn Backend>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    info: BatcherInfo,
) {
    loop {
        let entries = {
            let mut q = lock(&shared.queue);
            loop {
                let dropped_before = q.dropped();
                let next = q.next(Instant::now());
                let dropped = q.dropped() - dropped_before;
                if dropped > 0 {
                    metrics
                        .dropped_requests
                        .with_label_values(&[MODEL])
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
        metrics
            .queue_depth
            .with_label_values(&[MODEL])
            .set(lock(&shared.queue).len() as i64);
        if entries.is_empty() {
            continue;
        }
        let started = Instant::now();
        let n = entries.len();
        let mut pixels = Vec::with_capacity(n * info.input_width * info.input_height * 3);
        let mut thresholds = Vec::with_capacity(n);
        let mut waits = Vec::with_capacity(n);
        for e in &entries {
            pixels.extend_from_slice(&e.item.pixels);
            thresholds.push(e.item.threshold);
            let w = started.duration_since(e.enqueued);
            metrics
                .queue_wait
                .with_label_values(&[MODEL])
                .observe(w.as_secs_f64());
            waits.push(w.as_secs_f64() * 1e3);
        }
        let pack_ms = started.elapsed().as_secs_f64() * 1e3;
        let span = entries[0].item.span.clone();
        let result = span.in_scope(|| {
            backend.run(Batch::Faces(FaceBatch {
                pixels,
                width: info.input_width,
                height: info.input_height,
                thresholds,
            }))
        });
        let secs = started.elapsed().as_secs_f64();
        metrics
            .inference
            .with_label_values(&[MODEL, info.backend])
            .observe(secs);
        metrics
            .batch_size
            .with_label_values(&[MODEL])
            .observe(n as f64);
        match result {
            Ok(BatchOutput::Faces(per_image)) if per_image.len() == n => {
                shared.healthy.store(true, Ordering::Relaxed);
                for ((e, faces), q) in entries.into_iter().zip(per_image).zip(waits) {
                    let _ = e.item.reply.send(Ok(JobResult {
                        faces,
                        queue_ms: q,
                        pack_ms,
                        inference_ms: (secs * 1e3 - pack_ms).max(0.0),
                        batch_size: n,
                    }));
                }
            }
            Ok(_) => fail_all(
                entries,
                "backend returned the wrong number of results".into(),
                &shared,
            ),
            Err(err) => fail_all(entries, err.to_string(), &shared),
        }
    }
}

fn fail_all(entries: Vec<super::queue::Entry<Job>>, msg: String, shared: &Shared) {
    tracing::error!(error = %msg, "inference batch failed");
    shared.healthy.store(false, Ordering::Relaxed);
    for e in entries {
        let _ = e.item.reply.send(Err(msg.clone()));
    }
}
