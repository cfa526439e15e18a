//! Everything a request handler needs, built once at start-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::auth::ratelimit::RateLimiter;
use crate::batch::Batcher;
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
    pub batcher: Arc<Batcher>,
    pub clinic: Arc<crate::clinic::Clinic>,
    pub metrics: Arc<Metrics>,
    pub limiters: Limiters,
    /// Requests past admission (decode, queue, inference, encode).
    pub in_flight: Arc<Semaphore>,
    pub decode_limits: DecodeLimits,
    pub signer: Signer,
    pub model_name: &'static str,
    ready: AtomicBool,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<Store>,
        batcher: Arc<Batcher>,
        clinic: Arc<crate::clinic::Clinic>,
        metrics: Arc<Metrics>,
        signing_key: Vec<u8>,
    ) -> Self {
        let a = &config.auth;
        Self {
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
            signer: Signer::new(signing_key),
            model_name: "centerface",
            ready: AtomicBool::new(true),
            config,
            store,
            batcher,
            clinic,
            metrics,
        }
    }

    pub fn storage_enabled(&self) -> bool {
        self.config.storage.enabled
    }

    /// Model loaded and warmed up, backend answering, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.batcher.healthy() && self.clinic.healthy()
    }

    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
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
