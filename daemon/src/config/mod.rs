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

mod families;
mod sections;

pub use families::*;
pub use sections::*;

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
    /// Which other origins' web pages may call the API from a browser.
    pub cors: CorsConfig,
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
            cors: Default::default(),
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
    "ARGUS_TEST_SKIP_CUDA_HOST",
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
        self.inference_problems(&mut p);
        self.api_problems(&mut p);
        self.server_problems(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// The detectors' inputs and the counter's tunables.
    fn inference_problems(&self, p: &mut Vec<String>) {
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
        if !(0.0..=1.0).contains(&c.wbc_min_nucleus) {
            p.push(format!(
                "cells.wbc_min_nucleus must be 0 (off) to 1 d^2, got {}",
                c.wbc_min_nucleus
            ));
        }
        if !(0.0..=1.0).contains(&c.rbc_circle_support) {
            p.push(format!(
                "cells.rbc_circle_support must be 0 (off) to 1, got {}",
                c.rbc_circle_support
            ));
        }
        if !(0.0..1.0).contains(&c.rbc_edge_cut) {
            p.push(format!(
                "cells.rbc_edge_cut must be 0 (off) or a boundary probability under 1, got {}",
                c.rbc_edge_cut
            ));
        }
        if !(c.rbc_min_depth > 0.0 && c.rbc_min_depth <= 0.5) {
            p.push(format!(
                "cells.rbc_min_depth must be in (0, 0.5] (a fraction of the red-cell diameter), got {}",
                c.rbc_min_depth
            ));
        }
        if !(c.rbc_min_separation > 0.0 && c.rbc_min_separation <= 2.0) {
            p.push(format!(
                "cells.rbc_min_separation must be in (0, 2] (a fraction of the red-cell diameter), got {}",
                c.rbc_min_separation
            ));
        }
        if !(1..=9).contains(&c.scale_samples) || c.scale_samples.is_multiple_of(2) {
            p.push(format!(
                "cells.scale_samples must be odd, 1 to 9 (the median of them is kept), got {}",
                c.scale_samples
            ));
        }
        if !(0.0..=0.2).contains(&c.scale_spread) {
            p.push(format!(
                "cells.scale_spread must be 0 to 0.2 (a fraction of the scale), got {}",
                c.scale_spread
            ));
        }
        if !(c.rbc_outline_radius == 0.0 || (0.35..=0.65).contains(&c.rbc_outline_radius)) {
            p.push(format!(
                "cells.rbc_outline_radius must be 0 (off) or 0.35 to 0.65 (a fraction of the red-cell diameter), got {}",
                c.rbc_outline_radius
            ));
        }
        if !(c.scale_gross_above == 0.0 || (1.1..=4.0).contains(&c.scale_gross_above)) {
            p.push(format!(
                "cells.scale_gross_above must be 0 (off) or 1.1 to 4 (a factor), got {}",
                c.scale_gross_above
            ));
        }
        if !(1..=5).contains(&c.outline_looks) || c.outline_looks.is_multiple_of(2) {
            p.push(format!(
                "cells.outline_looks must be odd, 1 to 5, got {}",
                c.outline_looks
            ));
        }
        if !(c.outline_look_step > 0.0 && c.outline_look_step <= 0.1) {
            p.push(format!(
                "cells.outline_look_step must be in (0, 0.1] (a fraction of the scale), got {}",
                c.outline_look_step
            ));
        }
        if !(c.scale_refine_above > 0.0 && c.scale_refine_above <= 0.2) {
            p.push(format!(
                "cells.scale_refine_above must be in (0, 0.2] (a margin in ln of the scale), got {}",
                c.scale_refine_above
            ));
        }
        let s = self.skin.detector_input;
        if !(64..=1280).contains(&s) || !s.is_multiple_of(32) {
            p.push(format!(
                "skin.detector_input must be a multiple of 32 in 64..=1280, got {s}"
            ));
        }
    }

    /// The families' APIs, batching, limits and authentication.
    fn api_problems(&self, p: &mut Vec<String>) {
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
        if self.batch.max_wait_ms > 1000 {
            p.push("batch.max_wait_ms above 1000 would stall every request".into());
        }
        if self.pbs.retention_days > 36_500 {
            p.push(
                "pbs.retention_days must be at most 36500 (0 keeps studies until deleted)".into(),
            );
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
    }

    /// Listening, TLS, logging, state, the smear photos' scale and CORS.
    fn server_problems(&self, p: &mut Vec<String>) {
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
        for o in &self.cors.allow_origins {
            if !sections::is_origin(o) {
                p.push(format!(
                    "cors.allow_origins: {o:?} is not an origin (scheme://host[:port], no path) or \"*\""
                ));
            }
        }
        if self.cors.allow_origins.len() > 1 && self.cors.allow_origins.iter().any(|o| o == "*") {
            p.push("cors.allow_origins: \"*\" stands alone".into());
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
    fn queue_depth_zero_counts_batches_of_the_backend() {
        use crate::backend::Target;
        let mut b = BatchConfig::default();
        assert_eq!(b.queue_depth, 0);
        assert_eq!(b.queue_depth_for(&Target::Cpu), 3 * b.max_batch_size);
        b.max_batch_size = 8;
        assert_eq!(b.queue_depth_for(&Target::Cpu), 24);
        b.queue_depth = 20;
        assert_eq!(b.queue_depth_for(&Target::Cpu), 20);
    }

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

    #[test]
    fn scale_samples_are_an_odd_count_with_a_small_spread() {
        for (samples, spread, field) in [
            (2, 0.02, "cells.scale_samples"),
            (0, 0.02, "cells.scale_samples"),
            (11, 0.02, "cells.scale_samples"),
            (3, 0.5, "cells.scale_spread"),
            (3, f32::NAN, "cells.scale_spread"),
        ] {
            let mut c = Config::default();
            c.cells.scale_samples = samples;
            c.cells.scale_spread = spread;
            match c.validate() {
                Err(ConfigError::Invalid(v)) => assert!(v[0].contains(field), "{v:?}"),
                other => panic!("{samples} {spread}: {other:?}"),
            }
        }
        let mut c = Config::default();
        c.cells.scale_samples = 1;
        c.validate().unwrap();
    }

    #[test]
    fn the_outline_radius_is_off_or_a_cell_sized_fraction() {
        for (radius, above, field) in [
            (0.2, 0.04, "cells.rbc_outline_radius"),
            (0.9, 0.04, "cells.rbc_outline_radius"),
            (f32::NAN, 0.04, "cells.rbc_outline_radius"),
            (0.45, 0.0, "cells.scale_refine_above"),
            (0.45, 0.5, "cells.scale_refine_above"),
        ] {
            let mut c = Config::default();
            c.cells.rbc_outline_radius = radius;
            c.cells.scale_refine_above = above;
            match c.validate() {
                Err(ConfigError::Invalid(v)) => assert!(v[0].contains(field), "{v:?}"),
                other => panic!("{radius} {above}: {other:?}"),
            }
        }
        let mut c = Config::default();
        c.cells.rbc_outline_radius = 0.0;
        c.validate().unwrap();
    }

    #[test]
    fn the_outline_looks_are_odd_and_a_few_per_cent_apart() {
        for (looks, step, field) in [
            (0, 0.04, "cells.outline_looks"),
            (2, 0.04, "cells.outline_looks"),
            (7, 0.04, "cells.outline_looks"),
            (3, 0.0, "cells.outline_look_step"),
            (3, 0.3, "cells.outline_look_step"),
            (3, f32::NAN, "cells.outline_look_step"),
        ] {
            let mut c = Config::default();
            c.cells.outline_looks = looks;
            c.cells.outline_look_step = step;
            match c.validate() {
                Err(ConfigError::Invalid(v)) => assert!(v[0].contains(field), "{v:?}"),
                other => panic!("{looks} {step}: {other:?}"),
            }
        }
        let mut c = Config::default();
        c.cells.outline_looks = 1;
        c.validate().unwrap();
    }
}
