//! Prometheus metrics: every name, with its help text, is declared here.
//!
//! Names carry the `argus_` prefix and base units; labels are bounded (route
//! template, method, status, model, backend, reason), never a raw path or id.

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
}

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
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
