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

/// A metric, registered where it is made (so none is left out of the
/// registry); a name or label set Prometheus refuses is a bug, found by the
/// first start.
fn register<C>(r: &Registry, made: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let c = made.expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::with_opts(Opts::new(name, help)))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::with_opts(Opts::new(name, help)))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, Histogram::with_opts(opts))
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels))
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let m = Self {
            http_requests: counter_vec(
                &r,
                "argus_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "argus_http_request_duration_seconds",
                "Time from request head to response head.",
                LATENCY_BUCKETS,
                &["route", "method"],
            ),
            queue_depth: gauge_vec(
                &r,
                "argus_batch_queue_depth",
                "Requests waiting in the micro-batch queue.",
                &["model"],
            ),
            queue_wait: histogram_vec(
                &r,
                "argus_batch_queue_wait_seconds",
                "Time a request waited in the queue before its batch ran.",
                LATENCY_BUCKETS,
                &["model"],
            ),
            batch_size: histogram_vec(
                &r,
                "argus_batch_size",
                "Images per inference batch.",
                BATCH_BUCKETS,
                &["model"],
            ),
            inference: histogram_vec(
                &r,
                "argus_inference_duration_seconds",
                "Wall time of one batched inference.",
                LATENCY_BUCKETS,
                &["model", "backend"],
            ),
            faces_detected: counter(
                &r,
                "argus_faces_detected_total",
                "Faces returned by detect and mask.",
            ),
            masked_frames: counter_vec(
                &r,
                "argus_masked_frames_total",
                "Masked frames answered, by output format and where they were encoded (device, host).",
                &["format", "encoder"],
            ),
            frame_uploads: counter_vec(
                &r,
                "argus_device_frame_uploads_total",
                "Frames put on the GPU, by who uploaded them: the request (once, for both the batch and the masking) or the batch (the device's frame budget was spent, or the upload failed).",
                &["by"],
            ),
            failures: counter_vec(
                &r,
                "argus_failures_total",
                "Requests refused or failed, by API family (platform for the platform's own routes) and reason.",
                &["family", "reason"],
            ),
            dropped_requests: counter_vec(
                &r,
                "argus_batch_dropped_total",
                "Queued requests dropped because their client had gone.",
                &["model"],
            ),
            build_info: gauge_vec(
                &r,
                "argus_build_info",
                "Always 1; labels say the version, backend and device in use.",
                &["version", "backend", "device"],
            ),
            backend_fallback: gauge_vec(
                &r,
                "argus_backend_fallback",
                "1 when the model's batches run on the CPU because its GPU device failed.",
                &["model"],
            ),
            stored_bytes: gauge(&r, "argus_storage_blob_bytes", "Bytes of image blobs on disk."),
            image_decode: histogram(
                &r,
                "argus_image_decode_duration_seconds",
                "Time to decode an uploaded image.",
                LATENCY_BUCKETS,
            ),
            cells_counted: counter_vec(
                &r,
                "argus_cells_counted_total",
                "Blood cells counted in smear photos, by kind (rbc, wbc, platelet).",
                &["kind"],
            ),
            pbs_studies: counter_vec(
                &r,
                "argus_pbs_studies_total",
                "PBS study analyses finished, by status (ready, failed).",
                &["status"],
            ),
            pbs_study_seconds: histogram(
                &r,
                "argus_pbs_study_duration_seconds",
                "Time to analyse one PBS study, all its files and tasks.",
                &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0],
            ),
            pbs_callbacks: counter_vec(
                &r,
                "argus_pbs_callbacks_total",
                "Callback POST attempts, by outcome (delivered, retried, abandoned).",
                &["outcome"],
            ),
            webhook_deliveries: counter_vec(
                &r,
                "argus_webhook_deliveries_total",
                "Webhook and callback delivery attempts, by API family and outcome (delivered, retried, abandoned).",
                &["family", "outcome"],
            ),
            skin_analyses: counter_vec(
                &r,
                "argus_skin_analyses_total",
                "Selfies analysed by the skin API, by outcome (analysed, no_face, failed; \
                 cleared: its results were erased while it was analysed).",
                &["outcome"],
            ),
            skin_algorithm_seconds: histogram_vec(
                &r,
                "argus_skin_algorithm_duration_seconds",
                "Time of each stage of a skin analysis (decode, detect, face_mesh, iris_and_age, measure).",
                LATENCY_BUCKETS,
                &["stage"],
            ),
            skin_open_sockets: gauge_vec(
                &r,
                "argus_skin_open_websockets",
                "Open websockets of the skin API, by kind (notifications, results).",
                &["kind"],
            ),
            queue_capacity: gauge_vec(
                &r,
                "argus_batch_queue_capacity",
                "Requests the micro-batch queue holds at most; beyond it new ones are refused.",
                &["model"],
            ),
            ready: gauge(
                &r,
                "argus_ready",
                "1 when the appliance is ready for traffic, as /ready answers (every family's models warm and answering, not draining); sampled at each scrape.",
            ),
            webhook_pending: gauge_vec(
                &r,
                "argus_webhook_pending",
                "Webhook and callback deliveries waiting to be sent or retried, by API family; sampled at each scrape.",
                &["family"],
            ),
            state_fs_avail: gauge(
                &r,
                "argus_state_filesystem_avail_bytes",
                "Bytes available to the daemon on the filesystem of its state directory (statvfs f_bavail); sampled at each scrape.",
            ),
            state_fs_size: gauge(
                &r,
                "argus_state_filesystem_size_bytes",
                "Size in bytes of the filesystem of the state directory; sampled at each scrape.",
            ),
            registry: r,
        };
        // process_cpu_seconds_total, process_resident_memory_bytes, open
        // file descriptors and the like, from /proc.
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
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
        for outcome in ["analysed", "no_face", "failed", "cleared"] {
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
