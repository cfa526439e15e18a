//! The platform's sections of the configuration: TLS, limits, batching,
//! the face detector, auth, storage, outgoing calls and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve HTTPS. Plain HTTP is only allowed on a loopback address unless
    /// `allow_plain_http_off_loopback` is set.
    pub enabled: bool,
    /// PEM certificate chain; empty: a self-signed one is made once in state_dir/tls.
    pub cert: PathBuf,
    /// PEM private key for `cert`.
    pub key: PathBuf,
    /// Host names put in the generated self-signed certificate.
    pub self_signed_names: Vec<String>,
    /// Permit plain HTTP on a non-loopback address (not recommended).
    pub allow_plain_http_off_loopback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest decoded image, in pixels (width × height), checked before decoding.
    pub max_pixels: u64,
    /// Image formats accepted for upload.
    pub formats: Vec<String>,
    /// Requests in flight (decoding, queued or in inference) before new ones get 503.
    pub max_in_flight: usize,
    /// Seconds a client is told to wait (Retry-After) when refused for load.
    pub retry_after_secs: u64,
    /// Seconds any request body may take to arrive, plus one second for
    /// every `body_min_bytes_per_sec` bytes it has sent: a body that falls
    /// behind is answered 408 and its connection closed, so slow or stalled
    /// clients hold nothing, while a large upload over a slow link that
    /// keeps moving gets through.
    pub body_read_timeout_secs: u64,
    /// The slowest average rate a body may arrive at once its first
    /// `body_read_timeout_secs` are spent, bytes per second.
    pub body_min_bytes_per_sec: u64,
    /// Memory all decoded images in flight may hold together, in bytes
    /// (each reserves width x height x 12 from its header before decoding).
    /// 0: a quarter of the machine's memory, at least 256 MiB.
    pub decode_budget_bytes: u64,
    /// Milliseconds a request waits for its share of the decode budget
    /// before it is refused with 503 and Retry-After.
    pub decode_wait_ms: u64,
}

impl Limits {
    /// `decode_budget_bytes`, with 0 resolved for this machine.
    pub fn decode_budget(&self) -> u64 {
        match self.decode_budget_bytes {
            0 => crate::imaging::budget::default_budget_bytes(),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most images run together on the CPU backend.
    pub max_batch_size: usize,
    /// Most images run together on a GPU backend, where one dispatch per
    /// layer serves the whole batch and bigger batches pay.
    pub gpu_max_batch_size: usize,
    /// Longest a request waits for others to join its batch, in milliseconds.
    pub max_wait_ms: u64,
    /// Requests waiting for inference before new ones get 429; 0 (the
    /// default) counts it in batches of the backend that serves the queue:
    /// [`QUEUE_BATCHES`] of them (see [`BatchConfig::queue_depth_for`]).
    pub queue_depth: usize,
}

/// Batches a queue holds when `batch.queue_depth` is 0: one gathering while
/// one runs, and one to spare for a burst. More only adds waiting: under
/// overload every request beyond it would wait longer for the same rate,
/// and each one's decoded photo is memory touched for nothing (measured in
/// BENCHMARKS.md, "The batch's copies off the batcher thread").
pub const QUEUE_BATCHES: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Model input width; every image is letterboxed into it. Multiple of 32.
    pub input_width: u32,
    /// Model input height. Multiple of 32.
    pub input_height: u32,
    /// "auto": photos too large for one pass to see a `min_face_px` face
    /// are also detected tile by tile at near-native resolution; "off":
    /// one pass only.
    pub tiling: Tiling,
    /// The smallest face, in original pixels, tiling must find.
    pub min_face_px: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tiling {
    Auto,
    Off,
}

impl DetectorConfig {
    /// The `detect::DetectParams::tile_min_face_px` these settings ask for.
    pub fn tile_min_face_px(&self) -> Option<f32> {
        (self.tiling == Tiling::Auto).then_some(self.min_face_px)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require `X-API-Key` on detect and mask.
    pub api_key_enabled: bool,
    /// Requests per minute per key (per client address when keys are off).
    pub detect_per_minute: u32,
    pub mask_per_minute: u32,
    /// Admin login attempts per minute per client address.
    pub admin_login_per_minute: u32,
    /// Admin session lifetime in seconds.
    pub session_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Keep uploaded originals, masked outputs and job records (admin
    /// listings answer 501 when off). Keys and admin users are always kept.
    pub enabled: bool,
    /// Lifetime of signed download URLs, in seconds.
    pub signed_url_ttl_secs: u64,
    /// Keep the uploaded (unmasked) original of each request. false: only
    /// the record and the masked output are kept; the admin API's
    /// `original_url` is null and the original's download answers 404.
    pub keep_originals: bool,
    /// Days an uploaded image (original, masked outputs, records) is kept;
    /// older ones are deleted by an hourly sweep, as the admin DELETE does.
    /// 0 keeps them until deleted.
    pub retention_days: u32,
}

/// Browser clients on other origins (a kiosk's web app, a clinic portal).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins (`https://kiosk.example.com`, `http://10.0.0.5:3000`) whose
    /// pages may call the API from a browser, or `["*"]` for any. Empty:
    /// no CORS headers, so browsers keep other origins' pages out. Cookies
    /// are never shared across origins (the console's session stays its
    /// own); the families' keys and tokens travel in headers, which the
    /// preflight allows.
    pub allow_origins: Vec<String>,
}

/// Whether `o` is `*` or an origin as browsers send it: `http` or `https`,
/// a host, an optional port, nothing after.
pub fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let Ok(u) = url::Url::parse(o) else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && u.host().is_some()
}

/// Outgoing calls (PBS callbacks, webhooks), all through `outbound::client`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Internal hosts outgoing calls may reach: host names, addresses or
    /// CIDR networks (`"lis.clinic.local"`, `"10.20.0.0/16"`, `"fd00::/8"`).
    /// Loopback, link-local, private (RFC 1918), unique-local and CGNAT
    /// addresses are refused unless listed here.
    pub allow: Vec<String>,
    /// Extra PEM root certificates trusted for outgoing HTTPS (besides the
    /// public roots). `pbs.callback_ca_file` is the older name of this.
    pub ca_file: PathBuf,
    /// Timeout of one outgoing call, in seconds.
    pub timeout_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            ca_file: PathBuf::new(),
            timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Also serve /metrics on this address (plain HTTP); unset: only on the API listener.
    pub listen: Option<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            self_signed_names: vec!["localhost".into(), "argus.local".into()],
            allow_plain_http_off_loopback: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 30 * 1024 * 1024,
            max_pixels: 40_000_000,
            formats: ["jpeg", "png", "webp", "bmp"].map(String::from).to_vec(),
            max_in_flight: 64,
            retry_after_secs: 1,
            body_read_timeout_secs: 30,
            body_min_bytes_per_sec: 8192,
            decode_budget_bytes: 0,
            decode_wait_ms: 2000,
        }
    }
}

impl BatchConfig {
    /// The batch size cap for the backend that was picked.
    pub fn max_batch_for(&self, target: &crate::backend::Target) -> usize {
        if target.is_gpu() {
            self.gpu_max_batch_size
        } else {
            self.max_batch_size
        }
    }

    /// Requests the queue in front of `target`'s backend holds: the
    /// configured `queue_depth`, or when it is 0, [`QUEUE_BATCHES`] batches
    /// of [`max_batch_for`](Self::max_batch_for) (12 on the CPU backend's
    /// default batch of 4, 96 on a GPU's 32).
    pub fn queue_depth_for(&self, target: &crate::backend::Target) -> usize {
        match self.queue_depth {
            0 => QUEUE_BATCHES * self.max_batch_for(target).max(1),
            n => n,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 4,
            gpu_max_batch_size: 32,
            max_wait_ms: 3,
            queue_depth: 0,
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            input_width: 640,
            input_height: 640,
            tiling: Tiling::Auto,
            min_face_px: 40.0,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_key_enabled: true,
            detect_per_minute: 300,
            mask_per_minute: 150,
            admin_login_per_minute: 10,
            session_ttl_secs: 43_200,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            signed_url_ttl_secs: 300,
            keep_originals: true,
            retention_days: 0,
        }
    }
}
