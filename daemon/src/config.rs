//! The daemon's one typed configuration.
//!
//! Sources, later ones winning: embedded defaults, the TOML file
//! (`--config` / `ARGUS_CONFIG`), `ARGUS_*` environment variables, CLI flags.
//! Every leaf setting `a.b` has the variable `ARGUS_A_B` (top-level `x` has
//! `ARGUS_X`); values are parsed as TOML, so `ARGUS_TLS=false`,
//! `ARGUS_BATCH_MAX_WAIT_MS=4` and `ARGUS_LISTEN=127.0.0.1:8443` all work.
//! `config/argusd.toml` documents every setting with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the API listener.
    pub listen: SocketAddr,
    /// Where sled, blobs, the TLS certificate and the control socket live.
    pub state_dir: PathBuf,
    /// Directory holding `manifest.toml` and the weights. Empty: `./models`
    /// if it exists, else the `models/` of the source tree argusd was built from.
    pub models_dir: PathBuf,
    /// Inference backend: "auto", "cpu", "cuda" or "wgpu".
    pub backend: BackendKind,
    /// CPU threads for inference, named `argus-infer-N` (0: `RAYON_NUM_THREADS`
    /// when set, else one per core).
    pub cpu_threads: usize,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Log format: "auto" (JSON unless stderr is a terminal), "json" or "text".
    pub log_format: String,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub batch: BatchConfig,
    pub detector: DetectorConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub metrics: MetricsConfig,
    pub pbs: PbsConfig,
    /// Outgoing calls (callbacks, webhooks): which internal hosts they may reach.
    pub outbound: OutboundConfig,
    /// Cell counting (blood smears).
    pub cells: CountParams,
    /// Skin analysis: the quality gates in front of every skin metric.
    pub skin: SkinParams,
    /// The skin family's HTTP API: tokens, uploads, webhooks, retention.
    pub skin_api: SkinApiConfig,
    /// The audit trail of security events (`state_dir/audit/`).
    pub audit: AuditConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbsConfig {
    /// The appliance's public host name: client tokens' `aud` must equal it.
    pub public_host: String,
    /// Lifetime of `/auth/login` session tokens, in seconds.
    pub session_ttl_secs: u64,
    /// Largest accepted smear photo upload, in bytes.
    pub max_file_bytes: usize,
    /// Most files one study may hold.
    pub max_files_per_study: usize,
    /// Red-cell diameter in the clinic's photos, in pixels, used only for a
    /// photo whose own red cells cannot be measured (too few clean single
    /// cells, or a measure no red cell has; the photo's result then carries
    /// a warning). Every other photo is analysed at the size measured from
    /// it (`imaging::rbc_size`), so photos at any magnification count
    /// alike. 0: use 7.5 um at `microns_per_px` if that is set, else BCCD's
    /// ~100 px.
    pub native_rbc_diameter_px: f32,
    /// The camera's microns per pixel at the sample. When set, each photo's
    /// red-cell diameter is also reported in microns (with a warning when
    /// it is outside what red cells measure), and 7.5 um at this scale is
    /// the fallback size when `native_rbc_diameter_px` is 0. 0: unknown.
    pub microns_per_px: f32,
    /// Extra PEM root certificates trusted for callback URLs (besides the
    /// public web roots), e.g. a clinic's own CA. Empty: none.
    pub callback_ca_file: PathBuf,
    /// Delivery attempts per callback before it is given up.
    pub callback_max_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt (max 10 min).
    pub callback_retry_base_ms: u64,
    /// Timeout of one callback POST, in seconds.
    pub callback_timeout_secs: u64,
}

impl Default for PbsConfig {
    fn default() -> Self {
        Self {
            public_host: "argus.local".into(),
            session_ttl_secs: 43_200,
            max_file_bytes: 30 * 1024 * 1024,
            max_files_per_study: 200,
            native_rbc_diameter_px: 0.0,
            microns_per_px: 0.0,
            callback_ca_file: PathBuf::new(),
            callback_max_attempts: 12,
            callback_retry_base_ms: 2000,
            callback_timeout_secs: 10,
        }
    }
}

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
    /// Seconds an upload may take to arrive; past it the answer is 408 and
    /// the connection is closed, so slow or stalled clients hold nothing.
    pub body_read_timeout_secs: u64,
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
    /// Requests waiting for inference before new ones get 429.
    pub queue_depth: usize,
}

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

impl Config {
    /// Timeout of one outgoing call: `outbound.timeout_secs`, unless only
    /// the older `pbs.callback_timeout_secs` was changed from its default.
    pub fn outbound_timeout(&self) -> std::time::Duration {
        let d = OutboundConfig::default().timeout_secs;
        let secs = if self.outbound.timeout_secs == d && self.pbs.callback_timeout_secs != d {
            self.pbs.callback_timeout_secs
        } else {
            self.outbound.timeout_secs
        };
        std::time::Duration::from_secs(secs.max(1))
    }

    /// The CA file outgoing calls trust: `outbound.ca_file`, else the
    /// older `pbs.callback_ca_file`.
    pub fn outbound_ca_file(&self) -> &Path {
        if self.outbound.ca_file.as_os_str().is_empty() {
            &self.pbs.callback_ca_file
        } else {
            &self.outbound.ca_file
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Also serve /metrics on this address (plain HTTP); unset: only on the API listener.
    pub listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".parse().expect("static address"),
            state_dir: PathBuf::from("state"),
            models_dir: PathBuf::new(),
            backend: BackendKind::Auto,
            cpu_threads: 0,
            shutdown_grace_secs: 20,
            log_format: "auto".into(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            batch: BatchConfig::default(),
            detector: DetectorConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
            pbs: PbsConfig::default(),
            outbound: OutboundConfig::default(),
            cells: Default::default(),
            skin: Default::default(),
            skin_api: Default::default(),
            audit: Default::default(),
        }
    }
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
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 4,
            gpu_max_batch_size: 32,
            max_wait_ms: 3,
            queue_depth: 32,
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

/// Apply `ARGUS_*` variables from `vars` onto `value` (a serialized Config).
fn apply_env(
    value: &mut toml::Value,
    prefix: &str,
    vars: &[(String, String)],
    errors: &mut Vec<String>,
) {
    let toml::Value::Table(table) = value else {
        return;
    };
    for (key, v) in table.iter_mut() {
        let name = format!("{prefix}_{}", key.to_uppercase());
        if let toml::Value::Table(t) = v {
            // ARGUS_TLS=false is ARGUS_TLS_ENABLED=false: a section's own
            // variable switches it, where the section has an `enabled` switch.
            if let (Some(slot), Some((_, raw))) =
                (t.get_mut("enabled"), vars.iter().find(|(k, _)| *k == name))
            {
                match raw.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => *slot = toml::Value::Boolean(true),
                    "false" | "0" | "no" | "off" => *slot = toml::Value::Boolean(false),
                    other => errors.push(format!("{name} must be true or false, got {other:?}")),
                }
            }
            apply_env(v, &name, vars, errors);
            continue;
        }
        let Some((_, raw)) = vars.iter().find(|(k, _)| *k == name) else {
            continue;
        };
        // Parse as a TOML value; bare words (paths, addresses) fall back to strings.
        *v = match format!("x = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("x").unwrap_or(toml::Value::String(raw.clone())),
            Err(_) => toml::Value::String(raw.clone()),
        };
        if matches!(v, toml::Value::String(_)) && matches!(raw.as_str(), "") {
            errors.push(format!("{name} is set but empty"));
        }
    }
}

/// `ARGUS_*` variables read outside the configuration: the config file's
/// path, the log filter, the AVX-512 switch, and the tools' and tests' own.
const OTHER_ENV: &[&str] = &[
    "ARGUS_CONFIG",
    "ARGUS_LOG",
    "ARGUS_NO_AVX512",
    "ARGUS_KEY",
    "ARGUS_BENCH_BATCHES",
    "ARGUS_KEEP_REPORT",
];

/// Every variable name that sets something: each leaf and each section
/// (a section's own name switches its `enabled`).
fn env_names(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = value {
        for (key, v) in t {
            let name = format!("{prefix}_{}", key.to_uppercase());
            env_names(v, &name, out);
            out.push(name);
        }
    }
}

impl Config {
    /// The `ARGUS_*` names among `vars` that set nothing (a typo, or a
    /// setting that does not exist), for a warning at start.
    pub fn unknown_env(vars: &[String]) -> Vec<String> {
        let mut known = Vec::new();
        if let Ok(v) = toml::Value::try_from(Config::default()) {
            env_names(&v, "ARGUS", &mut known);
        }
        vars.iter()
            .filter(|k| k.starts_with("ARGUS_"))
            .filter(|k| !known.contains(k) && !OTHER_ENV.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    /// Defaults, then `file` (if any), then `ARGUS_*` from the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("ARGUS_"))
            .collect();
        Self::load_from(file, &vars)
    }

    pub fn load_from(file: Option<&Path>, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut base =
            toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Parse {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
            // Check the file alone first so unknown keys are reported against it.
            Config::deserialize(file_value.clone()).map_err(|e| ConfigError::Parse {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?;
            merge(&mut base, file_value);
        }
        let mut errors = Vec::new();
        apply_env(&mut base, "ARGUS", vars, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Config::deserialize(base).map_err(|e| ConfigError::Parse {
            origin: "ARGUS_* environment".into(),
            message: e.to_string(),
        })
    }

    /// Check everything at once and report every problem together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let d = &self.detector;
        if d.input_width == 0
            || d.input_height == 0
            || !d.input_width.is_multiple_of(32)
            || !d.input_height.is_multiple_of(32)
        {
            p.push(format!(
                "detector.input_width/input_height must be positive multiples of 32, got {}x{}",
                d.input_width, d.input_height
            ));
        }
        if d.input_width > 4096 || d.input_height > 4096 {
            p.push("detector input larger than 4096 is not supported".into());
        }
        if !(8.0..=10_000.0).contains(&d.min_face_px) {
            p.push(format!(
                "detector.min_face_px must be 8..=10000, got {}",
                d.min_face_px
            ));
        }
        let c = &self.cells;
        for (name, v) in [
            ("cells.parasite_threshold", c.parasite_threshold),
            ("cells.wbc_min_confidence", c.wbc_min_confidence),
        ] {
            if v.is_nan() || v <= 0.0 || v > 1.0 {
                p.push(format!("{name} is a probability in (0, 1], got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&c.rbc_circle_support) {
            p.push(format!(
                "cells.rbc_circle_support must be 0 (off) to 1, got {}",
                c.rbc_circle_support
            ));
        }
        if !(c.rbc_min_separation > 0.0 && c.rbc_min_separation <= 2.0) {
            p.push(format!(
                "cells.rbc_min_separation must be in (0, 2] (a fraction of the red-cell diameter), got {}",
                c.rbc_min_separation
            ));
        }
        let s = self.skin.detector_input;
        if !(64..=1280).contains(&s) || !s.is_multiple_of(32) {
            p.push(format!(
                "skin.detector_input must be a multiple of 32 in 64..=1280, got {s}"
            ));
        }
        let k = &self.skin_api;
        if k.access_token_secs == 0 || k.refresh_token_secs == 0 || k.upload_url_secs == 0 {
            p.push("skin_api token and upload lifetimes must be positive".into());
        }
        if k.max_image_bytes == 0 || k.retention_sweep_secs == 0 {
            p.push("skin_api.max_image_bytes and retention_sweep_secs must be positive".into());
        }
        if self.batch.max_batch_size == 0 || self.batch.max_batch_size > 256 {
            p.push("batch.max_batch_size must be 1..=256".into());
        }
        if self.batch.gpu_max_batch_size == 0 || self.batch.gpu_max_batch_size > 256 {
            p.push("batch.gpu_max_batch_size must be 1..=256".into());
        }
        if self.batch.queue_depth == 0 {
            p.push("batch.queue_depth must be at least 1".into());
        }
        if self.batch.max_wait_ms > 1000 {
            p.push("batch.max_wait_ms above 1000 would stall every request".into());
        }
        if self.storage.retention_days > 36_500 {
            p.push(
                "storage.retention_days must be at most 36500 (0 keeps images until deleted)"
                    .into(),
            );
        }
        if self.limits.max_in_flight == 0 {
            p.push("limits.max_in_flight must be at least 1".into());
        }
        if let Err(e) = crate::outbound::Policy::new(&self.outbound.allow) {
            p.push(e);
        }
        if self.limits.max_body_bytes < 1024 {
            p.push("limits.max_body_bytes must be at least 1024".into());
        }
        if self.limits.max_pixels < 64 {
            p.push("limits.max_pixels must be at least 64".into());
        }
        let known = ["jpeg", "png", "webp", "bmp", "gif", "tiff"];
        for f in &self.limits.formats {
            if !known.contains(&f.as_str()) {
                p.push(format!(
                    "limits.formats: unknown format {f:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
        if self.limits.formats.is_empty() {
            p.push("limits.formats must list at least one format".into());
        }
        let a = &self.auth;
        if a.detect_per_minute == 0 || a.mask_per_minute == 0 || a.admin_login_per_minute == 0 {
            p.push("auth rate limits must be at least 1 per minute".into());
        }
        if a.session_ttl_secs == 0 {
            p.push("auth.session_ttl_secs must be positive".into());
        }
        if !self.tls.enabled
            && !self.listen.ip().is_loopback()
            && !self.tls.allow_plain_http_off_loopback
        {
            p.push(format!(
                "plain HTTP on {} is refused: set tls.enabled = true, listen on loopback, or set tls.allow_plain_http_off_loopback",
                self.listen
            ));
        }
        if self.tls.cert.as_os_str().is_empty() != self.tls.key.as_os_str().is_empty() {
            p.push("tls.cert and tls.key must be set together".into());
        }
        if !["auto", "json", "text"].contains(&self.log_format.as_str()) {
            p.push(format!(
                "log_format must be auto, json or text, got {:?}",
                self.log_format
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            p.push("state_dir must be set".into());
        }
        for (name, v) in [
            (
                "pbs.native_rbc_diameter_px",
                self.pbs.native_rbc_diameter_px,
            ),
            ("pbs.microns_per_px", self.pbs.microns_per_px),
        ] {
            if !v.is_finite() || v < 0.0 {
                p.push(format!("{name} must be 0 (unset) or positive, got {v}"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// The models directory actually used.
    pub fn resolved_models_dir(&self) -> PathBuf {
        if !self.models_dir.as_os_str().is_empty() {
            return self.models_dir.clone();
        }
        let local = PathBuf::from("models");
        if local.join("manifest.toml").exists() {
            return local;
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
    }

    /// The config as TOML with nothing secret in it (paths to keys are not secret).
    pub fn redacted(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_argus_variables_are_named() {
        let vars: Vec<String> = [
            "ARGUS_LISTEN",
            "ARGUS_TLS",
            "ARGUS_SKIN_API_UPLOAD_URL_SECS",
            "ARGUS_LOG",
            "ARGUS_LISTNE",
            "ARGUS_TLS_ENABLE",
            "PATH",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            Config::unknown_env(&vars),
            vec!["ARGUS_LISTNE", "ARGUS_TLS_ENABLE"]
        );
    }

    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn env_overrides_every_level() {
        let c = Config::load_from(
            None,
            &vars(&[
                ("ARGUS_LISTEN", "127.0.0.1:9000"),
                ("ARGUS_TLS", "false"),
                ("ARGUS_STORAGE_ENABLED", "false"),
                ("ARGUS_STATE_DIR", "/tmp/x"),
                ("ARGUS_BATCH_MAX_WAIT_MS", "7"),
                ("ARGUS_BACKEND", "cpu"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert!(!c.tls.enabled);
        assert!(!c.storage.enabled);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.batch.max_wait_ms, 7);
        assert_eq!(c.backend, BackendKind::Cpu);
    }

    #[test]
    fn the_documented_file_matches_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/argusd.toml"
        ));
        let from_file = Config::load_from(Some(path), &[]).unwrap();
        assert_eq!(
            toml::to_string(&from_file).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "lisen = \"1.2.3.4:1\"\n").unwrap();
        assert!(matches!(
            Config::load_from(Some(&f), &[]),
            Err(ConfigError::Parse { .. })
        ));
        let mut c = Config::default();
        c.detector.input_width = 100;
        c.batch.max_batch_size = 0;
        c.tls.enabled = false;
        c.listen = "0.0.0.0:80".parse().unwrap();
        match c.validate() {
            Err(ConfigError::Invalid(v)) => assert_eq!(v.len(), 3, "{v:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classifier_thresholds_are_probabilities() {
        for bad in [0.0, 70.0, f32::NAN] {
            let mut c = Config::default();
            c.cells.wbc_min_confidence = bad;
            match c.validate() {
                Err(ConfigError::Invalid(v)) => {
                    assert!(v[0].contains("cells.wbc_min_confidence"), "{v:?}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        Config::default().validate().unwrap();
    }
}

/// Tunables of the counter (config `[cells]`), sizes relative to the red-cell
/// diameter `rbc_diameter_px` that images are resampled to.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountParams {
    /// Red-cell diameter, in pixels, the nets see after resampling.
    pub rbc_diameter_px: f32,
    /// Probability above which a map pixel belongs to a cell.
    pub threshold: f32,
    /// Minimum marker area of a red cell, as a fraction of d^2.
    pub rbc_min_area: f32,
    /// Support (mean boundary-map value along the outline, 0-1) a circle
    /// 0.4-0.6 d in radius needs to mark a red cell
    /// ([`crate::imaging::circles`]); this splits clumps of overlapping
    /// cells whose shared boundaries are too faint for the threshold.
    /// 0 turns it off (markers from the threshold alone, as before
    /// 2026-12-02). 0.25 was chosen on BCCD train (models/cbc/MODEL_CARD.md).
    pub rbc_circle_support: f32,
    /// Smallest distance between two circles' centres (above), as a
    /// fraction of d; of two nearer circles the better supported is kept.
    pub rbc_min_separation: f32,
    /// Minimum red-cell area (the watershed region, not its marker), as a
    /// fraction of d^2; a whole red cell is about pi/4.
    pub rbc_min_cell_area: f32,
    /// Minimum white-cell area, as a fraction of d^2.
    pub wbc_min_area: f32,
    /// Minimum platelet area, as a fraction of d^2.
    pub platelet_min_area: f32,
    /// Classifier probability from which a red cell counts as parasitized.
    pub parasite_threshold: f32,
    /// White-cell classifier probability below which a cell of the
    /// differential is left for review instead of given a class
    /// (`model::wbc::decide`). 0.7 left 4.9% of PBC's held-out cells for
    /// review, and 98.7% of the rest were right (models/wbc/MODEL_CARD.md).
    pub wbc_min_confidence: f32,
}

impl Default for CountParams {
    fn default() -> Self {
        Self {
            rbc_diameter_px: 50.0,
            threshold: 0.4,
            rbc_min_area: 0.02,
            rbc_circle_support: 0.25,
            rbc_min_separation: 0.5,
            rbc_min_cell_area: 0.15,
            wbc_min_area: 0.3,
            platelet_min_area: 0.02,
            parasite_threshold: 0.5,
            wbc_min_confidence: 0.7,
        }
    }
}

/// The quality gates of skin analysis (config `[skin]`). A photo that
/// fails one gets no metric that the failure would falsify; each failure
/// has a reason code (`families::skin::quality`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkinParams {
    /// Side of the square the skin family letterboxes photos into for face
    /// detection (a multiple of 32). A selfie's face is large, so a small
    /// input finds it, at a quarter of the default detector's cost.
    pub detector_input: u32,
    /// Detector confidence from which a face counts.
    pub face_confidence: f32,
    /// A second face at least this share of the main face's box area makes
    /// the photo ambiguous (`multiple_faces`).
    pub second_face_area_ratio: f32,
    /// Smallest inter-ocular distance (eye centre to eye centre), pixels.
    pub min_iod_px: f32,
    /// Largest head turn (yaw), nod (pitch) and tilt (roll), degrees.
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    pub max_roll_deg: f32,
    /// Smallest variance of the Laplacian of the face, at 80 px between the eyes.
    pub min_sharpness: f32,
    /// Largest share of face pixels at luma <= 25 (OFIQ's under-exposure range).
    pub max_underexposed_share: f32,
    /// Largest share of face pixels at luma >= 247 (OFIQ's over-exposure range).
    pub max_overexposed_share: f32,
    /// Smallest mean luma (0-255) of the face's skin.
    pub min_mean_luma: f32,
    /// Smallest face-mesh presence score; below it the face is occluded or
    /// not a face.
    pub min_presence: f32,
}

impl Default for SkinParams {
    fn default() -> Self {
        Self {
            detector_input: 320,
            face_confidence: 0.5,
            second_face_area_ratio: 0.4,
            min_iod_px: 80.0,
            max_yaw_deg: 20.0,
            max_pitch_deg: 20.0,
            max_roll_deg: 30.0,
            min_sharpness: 40.0,
            max_underexposed_share: 0.25,
            max_overexposed_share: 0.10,
            min_mean_luma: 40.0,
            min_presence: 0.5,
        }
    }
}

/// The skin family's API (config `[skin_api]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkinApiConfig {
    /// Lifetime of a login's `access_token`, seconds (the reference: 1 h).
    pub access_token_secs: u64,
    /// Lifetime of a login's `refresh_token`, seconds.
    pub refresh_token_secs: u64,
    /// Lifetime of a v3 signed upload URL, seconds.
    pub upload_url_secs: u64,
    /// Largest image upload (b64 decoded, or a signed PUT), bytes (the
    /// reference: 30 MiB).
    pub max_image_bytes: usize,
    /// Delivery attempts per webhook before it is given up.
    pub webhook_max_attempts: u32,
    /// First webhook retry delay, ms; doubles per attempt (max 10 min).
    pub webhook_retry_base_ms: u64,
    /// Largest webhook payload for one image, bytes (the reference: 1 MB);
    /// a payload over it is sent without its parameters, which the
    /// receiver then reads from the results endpoint.
    pub webhook_max_payload_bytes: usize,
    /// Seconds between retention sweeps.
    pub retention_sweep_secs: u64,
}

impl Default for SkinApiConfig {
    fn default() -> Self {
        Self {
            access_token_secs: 3600,
            refresh_token_secs: 30 * 86_400,
            upload_url_secs: 900,
            max_image_bytes: 30 * 1024 * 1024,
            webhook_max_attempts: 12,
            webhook_retry_base_ms: 2000,
            webhook_max_payload_bytes: 1_000_000,
            retention_sweep_secs: 3600,
        }
    }
}

/// The audit log (config `[audit]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Size at which `audit.log` rotates to `audit.log.1`, bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep_files: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 20,
        }
    }
}
