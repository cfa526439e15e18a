//! Prometheus metrics: every name, with its help text, is declared here.
//!
//! Names carry the `argus_` prefix and base units; labels are bounded (route
//! template, method, status, model, backend, reason), never a raw path or id.
//!
//! A label value known in advance (a batcher's model, an outcome of a fixed
//! set) is exported at zero from the start: a series that appears only with
//! its first event hides that event from `rate()` and `increase()`, and
//! would leave the dashboards and alerts in `ops/` nothing to read on an
//! idle appliance. Labels whose values come with traffic (route, status,
//! failure reason) appear with their first request.

use std::path::Path;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub queue_wait: HistogramVec,
    pub batch_size: HistogramVec,
    pub inference: HistogramVec,
    pub faces_detected: IntCounter,
    pub masked_frames: IntCounterVec,
    pub frame_uploads: IntCounterVec,
    pub failures: IntCounterVec,
    pub dropped_requests: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub backend_fallback: IntGaugeVec,
    pub stored_bytes: IntGauge,
    pub image_decode: Histogram,
    pub cells_counted: IntCounterVec,
    pub pbs_studies: IntCounterVec,
    pub pbs_study_seconds: Histogram,
    pub pbs_callbacks: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub skin_analyses: IntCounterVec,
    pub skin_algorithm_seconds: HistogramVec,
    pub skin_open_sockets: IntGaugeVec,
    pub queue_capacity: IntGaugeVec,
    pub ready: IntGauge,
    pub webhook_pending: IntGaugeVec,
    pub state_fs_avail: IntGauge,
    pub state_fs_size: IntGauge,
}

/// Outcomes of a webhook or callback delivery attempt.
pub const DELIVERY_OUTCOMES: &[&str] = &["delivered", "retried", "abandoned"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

fn hist(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            http_requests: IntCounterVec::new(
                opts(
                    "argus_http_requests_total",
                    "HTTP requests answered, by route template, method and status.",
                ),
                &["route", "method", "status"],
            )
            .expect("static metric definition"),
            http_duration: HistogramVec::new(
                hist(
                    "argus_http_request_duration_seconds",
                    "Time from request head to response head.",
                    LATENCY_BUCKETS,
                ),
                &["route", "method"],
            )
            .expect("static metric definition"),
            queue_depth: IntGaugeVec::new(
                opts(
                    "argus_batch_queue_depth",
                    "Requests waiting in the micro-batch queue.",
                ),
                &["model"],
            )
            .expect("static metric definition"),
            queue_wait: HistogramVec::new(
                hist(
                    "argus_batch_queue_wait_seconds",
                    "Time a request waited in the queue before its batch ran.",
                    LATENCY_BUCKETS,
                ),
                &["model"],
            )
            .expect("static metric definition"),
            batch_size: HistogramVec::new(
                hist(
                    "argus_batch_size",
                    "Images per inference batch.",
                    BATCH_BUCKETS,
                ),
                &["model"],
            )
            .expect("static metric definition"),
            inference: HistogramVec::new(
                hist(
                    "argus_inference_duration_seconds",
                    "Wall time of one batched inference.",
                    LATENCY_BUCKETS,
                ),
                &["model", "backend"],
            )
            .expect("static metric definition"),
            faces_detected: IntCounter::with_opts(opts(
                "argus_faces_detected_total",
                "Faces returned by detect and mask.",
            ))
            .expect("static metric definition"),
            masked_frames: IntCounterVec::new(
                opts(
                    "argus_masked_frames_total",
                    "Masked frames answered, by output format and where they were encoded (device, host).",
                ),
                &["format", "encoder"],
            )
            .expect("static metric definition"),
            frame_uploads: IntCounterVec::new(
                opts(
                    "argus_device_frame_uploads_total",
                    "Frames put on the GPU, by who uploaded them: the request (once, for both the batch and the masking) or the batch (the device's frame budget was spent, or the upload failed).",
                ),
                &["by"],
            )
            .expect("static metric definition"),
            failures: IntCounterVec::new(
                opts(
                    "argus_failures_total",
                    "Requests refused or failed, by API family (platform for the platform's own routes) and reason.",
                ),
                &["family", "reason"],
            )
            .expect("static metric definition"),
            dropped_requests: IntCounterVec::new(
                opts(
                    "argus_batch_dropped_total",
                    "Queued requests dropped because their client had gone.",
                ),
                &["model"],
            )
            .expect("static metric definition"),
            build_info: IntGaugeVec::new(
                opts(
                    "argus_build_info",
                    "Always 1; labels say the version, backend and device in use.",
                ),
                &["version", "backend", "device"],
            )
            .expect("static metric definition"),
            backend_fallback: IntGaugeVec::new(
                opts(
                    "argus_backend_fallback",
                    "1 when the model's batches run on the CPU because its GPU device failed.",
                ),
                &["model"],
            )
            .expect("static metric definition"),
            stored_bytes: IntGauge::with_opts(opts(
                "argus_storage_blob_bytes",
                "Bytes of image blobs on disk.",
            ))
            .expect("static metric definition"),
            image_decode: Histogram::with_opts(hist(
                "argus_image_decode_duration_seconds",
                "Time to decode an uploaded image.",
                LATENCY_BUCKETS,
            ))
            .expect("static metric definition"),
            cells_counted: IntCounterVec::new(
                opts(
                    "argus_cells_counted_total",
                    "Blood cells counted in smear photos, by kind (rbc, wbc, platelet).",
                ),
                &["kind"],
            )
            .expect("static metric definition"),
            pbs_studies: IntCounterVec::new(
                opts(
                    "argus_pbs_studies_total",
                    "PBS study analyses finished, by status (ready, failed).",
                ),
                &["status"],
            )
            .expect("static metric definition"),
            pbs_study_seconds: Histogram::with_opts(hist(
                "argus_pbs_study_duration_seconds",
                "Time to analyse one PBS study, all its files and tasks.",
                &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0],
            ))
            .expect("static metric definition"),
            pbs_callbacks: IntCounterVec::new(
                opts(
                    "argus_pbs_callbacks_total",
                    "Callback POST attempts, by outcome (delivered, retried, abandoned).",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
            webhook_deliveries: IntCounterVec::new(
                opts(
                    "argus_webhook_deliveries_total",
                    "Webhook and callback delivery attempts, by API family and outcome (delivered, retried, abandoned).",
                ),
                &["family", "outcome"],
            )
            .expect("static metric definition"),
            skin_analyses: IntCounterVec::new(
                opts(
                    "argus_skin_analyses_total",
                    "Selfies analysed by the skin API, by outcome (analysed, no_face, failed).",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
            skin_algorithm_seconds: HistogramVec::new(
                hist(
                    "argus_skin_algorithm_duration_seconds",
                    "Time of each stage of a skin analysis (decode, detect, face_mesh, iris_and_age, measure).",
                    LATENCY_BUCKETS,
                ),
                &["stage"],
            )
            .expect("static metric definition"),
            skin_open_sockets: IntGaugeVec::new(
                opts(
                    "argus_skin_open_websockets",
                    "Open websockets of the skin API, by kind (notifications, results).",
                ),
                &["kind"],
            )
            .expect("static metric definition"),
            queue_capacity: IntGaugeVec::new(
                opts(
                    "argus_batch_queue_capacity",
                    "Requests the micro-batch queue holds at most; beyond it new ones are refused.",
                ),
                &["model"],
            )
            .expect("static metric definition"),
            ready: IntGauge::with_opts(opts(
                "argus_ready",
                "1 when the appliance is ready for traffic, as /ready answers (every family's models warm and answering, not draining); sampled at each scrape.",
            ))
            .expect("static metric definition"),
            webhook_pending: IntGaugeVec::new(
                opts(
                    "argus_webhook_pending",
                    "Webhook and callback deliveries waiting to be sent or retried, by API family; sampled at each scrape.",
                ),
                &["family"],
            )
            .expect("static metric definition"),
            state_fs_avail: IntGauge::with_opts(opts(
                "argus_state_filesystem_avail_bytes",
                "Bytes available to the daemon on the filesystem of its state directory (statvfs f_bavail); sampled at each scrape.",
            ))
            .expect("static metric definition"),
            state_fs_size: IntGauge::with_opts(opts(
                "argus_state_filesystem_size_bytes",
                "Size in bytes of the filesystem of the state directory; sampled at each scrape.",
            ))
            .expect("static metric definition"),
        };
        let r = &m.registry;
        for c in [
            Box::new(m.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.http_duration.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.queue_wait.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.inference.clone()),
            Box::new(m.faces_detected.clone()),
            Box::new(m.masked_frames.clone()),
            Box::new(m.frame_uploads.clone()),
            Box::new(m.failures.clone()),
            Box::new(m.dropped_requests.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.backend_fallback.clone()),
            Box::new(m.stored_bytes.clone()),
            Box::new(m.image_decode.clone()),
            Box::new(m.cells_counted.clone()),
            Box::new(m.pbs_studies.clone()),
            Box::new(m.pbs_study_seconds.clone()),
            Box::new(m.pbs_callbacks.clone()),
            Box::new(m.webhook_deliveries.clone()),
            Box::new(m.skin_analyses.clone()),
            Box::new(m.skin_algorithm_seconds.clone()),
            Box::new(m.skin_open_sockets.clone()),
            Box::new(m.queue_capacity.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.webhook_pending.clone()),
            Box::new(m.state_fs_avail.clone()),
            Box::new(m.state_fs_size.clone()),
        ] {
            r.register(c).expect("metric names are unique");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, open
        // file descriptors and the like, from /proc.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric names are unique");
        m.declare_fixed_labels();
        m
    }

    /// Export at zero every series whose label values are a fixed set,
    /// named in the metric's help text.
    fn declare_fixed_labels(&self) {
        for format in ["jpeg", "png", "webp"] {
            for encoder in ["device", "host"] {
                self.masked_frames.with_label_values(&[format, encoder]);
            }
        }
        for by in ["request", "batch"] {
            self.frame_uploads.with_label_values(&[by]);
        }
        for kind in ["rbc", "wbc", "platelet"] {
            self.cells_counted.with_label_values(&[kind]);
        }
        for status in ["ready", "failed"] {
            self.pbs_studies.with_label_values(&[status]);
        }
        for outcome in ["analysed", "no_face", "failed"] {
            self.skin_analyses.with_label_values(&[outcome]);
        }
        for stage in ["decode", "detect", "face_mesh", "iris_and_age", "measure"] {
            self.skin_algorithm_seconds.with_label_values(&[stage]);
        }
        for kind in ["notifications", "results"] {
            self.skin_open_sockets.with_label_values(&[kind]);
        }
    }

    /// Export a batcher's series at zero from its start: its queue (and
    /// the queue's capacity), waits, batch sizes, inference time on
    /// `backend`, drops and device fallback (0: not fallen back).
    pub fn declare_batcher(&self, model: &str, backend: &str, capacity: usize) {
        self.queue_depth.with_label_values(&[model]).set(0);
        self.queue_capacity
            .with_label_values(&[model])
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        self.queue_wait.with_label_values(&[model]);
        self.batch_size.with_label_values(&[model]);
        self.inference.with_label_values(&[model, backend]);
        self.dropped_requests.with_label_values(&[model]);
        self.backend_fallback.with_label_values(&[model]).set(0);
    }

    /// Sample the free and total space of the filesystem holding `dir`.
    /// A failure (the directory gone) is logged and leaves the last values.
    pub fn sample_filesystem(&self, dir: &Path) {
        match filesystem_space(dir) {
            Ok((avail, size)) => {
                self.state_fs_avail
                    .set(i64::try_from(avail).unwrap_or(i64::MAX));
                self.state_fs_size
                    .set(i64::try_from(size).unwrap_or(i64::MAX));
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "statvfs of the state directory failed")
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// (available to unprivileged users, total) bytes of the filesystem
/// holding `path`.
#[cfg(unix)]
// The statvfs fields are u64 on some targets and u32 on others.
#[allow(clippy::useless_conversion)]
fn filesystem_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call,
    // and `st` points to writable memory the size of a `statvfs`.
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let block = u64::from(st.f_frsize);
    Ok((
        u64::from(st.f_bavail).saturating_mul(block),
        u64::from(st.f_blocks).saturating_mul(block),
    ))
}

#[cfg(not(unix))]
fn filesystem_space(_path: &Path) -> std::io::Result<(u64, u64)> {
    Err(std::io::ErrorKind::Unsupported.into())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
