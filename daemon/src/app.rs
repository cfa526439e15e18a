//! The platform's shared state, built once at start-up, and the [`Family`]
//! trait through which each API family plugs into it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::auth::ratelimit::RateLimiter;
use crate::config::Config;
use crate::imaging::DecodeLimits;
use crate::metrics::Metrics;
use crate::store::{unix_now, Store};

pub struct Limiters {
    pub detect: RateLimiter,
    pub mask: RateLimiter,
    pub login: RateLimiter,
}

/// Signs short-lived download URLs for blobs (the appliance's stand-in for
/// the cloud service's presigned object-store URLs).
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, blob: &str, expires: u64) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(blob.as_bytes());
        m.update(b"\n");
        m.update(expires.to_string().as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// `/blobs/<key>?expires=..&signature=..`, valid for `ttl` seconds.
    pub fn url(&self, blob: &str, ttl: u64) -> String {
        let expires = unix_now() + ttl;
        format!(
            "/blobs/{blob}?expires={expires}&signature={}",
            self.mac(blob, expires)
        )
    }

    pub fn verify(&self, blob: &str, expires: u64, signature: &str) -> bool {
        expires >= unix_now()
            && crate::auth::ct_eq(self.mac(blob, expires).as_bytes(), signature.as_bytes())
    }
}

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Durable, signed, retried webhook delivery (every outgoing call).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Progress events for websocket and SSE handlers.
    pub events: Arc<crate::events::EventBus>,
    pub limiters: Limiters,
    /// Requests past admission (decode, queue, inference, encode).
    pub in_flight: Arc<Semaphore>,
    pub decode_limits: DecodeLimits,
    /// Memory for decoded pixels, shared by every request and job.
    pub decode_budget: crate::imaging::budget::PixelBudget,
    pub signer: Signer,
    /// The audit trail of security events.
    pub audit: Arc<crate::audit::AuditLog>,
    ready: AtomicBool,
    /// When the process started serving (uptime, average rates).
    pub started: std::time::Instant,
    /// The families serving, once they have started; emptied at stop, since
    /// each family holds the `App` too.
    families: RwLock<Vec<Arc<dyn Family>>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        webhooks: Arc<crate::webhooks::Webhooks>,
        signing_key: Vec<u8>,
    ) -> Self {
        let a = &config.auth;
        Self {
            started: std::time::Instant::now(),
            limiters: Limiters {
                detect: RateLimiter::new(a.detect_per_minute),
                mask: RateLimiter::new(a.mask_per_minute),
                login: RateLimiter::new(a.admin_login_per_minute),
            },
            in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
            decode_limits: DecodeLimits {
                max_pixels: config.limits.max_pixels,
                formats: config.limits.formats.clone(),
            },
            decode_budget: crate::imaging::budget::PixelBudget::new(
                config.limits.decode_budget(),
                std::time::Duration::from_millis(config.limits.decode_wait_ms),
            ),
            signer: Signer::new(signing_key),
            audit: Arc::new(crate::audit::AuditLog::new(
                &config.state_dir,
                config.audit.max_file_bytes,
                config.audit.keep_files,
            )),
            ready: AtomicBool::new(true),
            families: RwLock::new(Vec::new()),
            config,
            store,
            metrics,
            webhooks,
            events: Arc::new(crate::events::EventBus::new()),
        }
    }

    pub fn storage_enabled(&self) -> bool {
        self.config.storage.enabled
    }

    /// Every family's models loaded and warmed up, their backends
    /// answering, and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && {
            let fs = self.families();
            !fs.is_empty() && fs.iter().all(|f| f.healthy())
        }
    }

    /// Record the started families.
    pub fn set_families(&self, families: Vec<Arc<dyn Family>>) {
        *self.families.write().unwrap_or_else(|p| p.into_inner()) = families;
    }

    /// The families serving (none before start and after stop).
    pub fn families(&self) -> Vec<Arc<dyn Family>> {
        self.families
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Let go of the families (they hold this `App`), after they stopped.
    pub fn take_families(&self) -> Vec<Arc<dyn Family>> {
        std::mem::take(&mut *self.families.write().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}

/// Why a family's command-line command failed: bad usage (exit code 2) or
/// a failure while running (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// A password for the command line, read from standard input (its first
/// line); `from_stdin` false means a person types it, so ask first.
pub fn read_password(from_stdin: bool) -> Result<String, CommandError> {
    use std::io::Read;
    let mut s = String::new();
    if !from_stdin {
        eprint!("Password (input is read from standard input): ");
    }
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    let pw = s.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(CommandError::Usage(
            "no password given on standard input".into(),
        ));
    }
    Ok(pw)
}

/// An API family as the platform sees it: its routes, its error shape, its
/// health, its background work and its stop. Each family's folder under
/// `families/` implements this once; `families::start_all` lists them.
pub trait Family: Send + Sync + 'static {
    /// Short stable name, the `family` label of `argus_failures_total`.
    fn name(&self) -> &'static str;
    /// Path prefixes the family owns: a request under one that matches no
    /// route is answered in this family's error shape.
    fn prefixes(&self) -> &'static [&'static str];
    /// Where a new user starts with this family: (what, path) pairs the
    /// start-up log turns into URLs.
    fn entry_points(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Its pages in the operator console: (label, path) pairs of the
    /// console's navigation, in order.
    fn console_pages(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Its routes, with its state applied, each registered through
    /// `utoipa_axum::routes!` so that it is documented in `/openapi.json`.
    fn router(self: Arc<Self>) -> utoipa_axum::router::OpenApiRouter;
    /// An error in this family's body shape (axum's own rejections, the
    /// router's 404 and 405 included). `message` is safe to show.
    fn error_body(&self, status: axum::http::StatusCode, message: &str)
        -> axum::response::Response;
    /// False while a model it needs is not answering.
    fn healthy(&self) -> bool {
        true
    }
    /// Background work (job runners, webhook senders), stopped by `shutdown`.
    fn spawn_background(
        self: Arc<Self>,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
    /// Blocking: stop its batchers once the listener has drained.
    fn stop(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_blob_and_expiry() {
        let s = Signer::new(b"k".to_vec());
        let url = s.url("originals/a.jpg", 60);
        let q: std::collections::HashMap<_, _> = url
            .split('?')
            .nth(1)
            .unwrap()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let exp: u64 = q["expires"].parse().unwrap();
        assert!(s.verify("originals/a.jpg", exp, q["signature"]));
        assert!(!s.verify("originals/b.jpg", exp, q["signature"]));
        assert!(!s.verify("originals/a.jpg", exp + 1, q["signature"]));
        assert!(!s.verify("originals/a.jpg", 1, &s.mac("originals/a.jpg", 1)));
    }
}
