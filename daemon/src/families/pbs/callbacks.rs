//! Callback delivery: a POST of `{pbs_study_id, report_status, progress}`
//! to the study's HTTPS `callback_url` once its report is ready (or failed),
//! retried with exponential backoff. Pending callbacks live in sled, so a
//! restart carries on with them. Nothing here runs on a request's path.
//!
//! Each POST carries `X-Argus-Signature: t=<unix seconds>,v1=<hex>`, where
//! v1 = HMAC-SHA256(key, "<t>.<body>") and the key is the organisation's
//! callback secret (hex-decoded; `argusd pbs users add` prints it when it
//! creates the organisation, `argusd pbs org-secret ORG` shows it again).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Clinic;
use crate::store::unix_now;

pub const SIGNATURE_HEADER: &str = "x-argus-signature";

/// The signature header value for `body`, at time `t`.
pub fn sign(secret: &[u8], t: u64, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

pub fn client(clinic: &Clinic) -> Result<reqwest::Client, String> {
    let cfg = &clinic.config.pbs;
    let mut b = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(cfg.callback_timeout_secs.max(1)))
        .user_agent(concat!("argusd/", env!("CARGO_PKG_VERSION")));
    if !cfg.callback_ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&cfg.callback_ca_file)
            .map_err(|e| format!("{}: {e}", cfg.callback_ca_file.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", cfg.callback_ca_file.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

fn backoff_ms(base: u64, attempts: u32) -> u64 {
    base.saturating_mul(1u64 << attempts.min(20)).min(600_000)
}

/// Deliver due callbacks until `shutdown`.
pub async fn run(
    clinic: Arc<Clinic>,
    http: reqwest::Client,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now_ms = unix_now() * 1000;
        let mut next_due: Option<u64> = None;
        let pending = clinic.pbs.callbacks().unwrap_or_default();
        for (id, mut cb) in pending {
            if cb.next_at * 1000 > now_ms {
                next_due = Some(next_due.map_or(cb.next_at, |n| n.min(cb.next_at)));
                continue;
            }
            let secret = clinic
                .pbs
                .get_study(id)
                .ok()
                .flatten()
                .and_then(|s| clinic.pbs.get_org(&s.org).ok().flatten())
                .and_then(|o| hex::decode(o.callback_secret).ok())
                .unwrap_or_default();
            let t = unix_now();
            let sent = http
                .post(&cb.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, sign(&secret, t, &cb.body))
                .body(cb.body.clone())
                .send()
                .await;
            let outcome = match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            let result = match outcome {
                Ok(()) => {
                    clinic
                        .metrics
                        .pbs_callbacks
                        .with_label_values(&["delivered"])
                        .inc();
                    tracing::info!(study = %id, attempts = cb.attempts + 1, "callback delivered");
                    clinic.pbs.remove_callback(id)
                }
                Err(e) => {
                    cb.attempts += 1;
                    cb.last_error = Some(e.clone());
                    if cb.attempts >= clinic.config.pbs.callback_max_attempts {
                        clinic
                            .metrics
                            .pbs_callbacks
                            .with_label_values(&["abandoned"])
                            .inc();
                        tracing::warn!(study = %id, attempts = cb.attempts, error = %e, "callback abandoned");
                        clinic.pbs.remove_callback(id)
                    } else {
                        clinic
                            .metrics
                            .pbs_callbacks
                            .with_label_values(&["retried"])
                            .inc();
                        let delay =
                            backoff_ms(clinic.config.pbs.callback_retry_base_ms, cb.attempts - 1);
                        cb.next_at = unix_now() + delay.div_ceil(1000);
                        tracing::info!(study = %id, attempts = cb.attempts, error = %e, retry_in_ms = delay, "callback failed; will retry");
                        next_due = Some(next_due.map_or(cb.next_at, |n| n.min(cb.next_at)));
                        clinic.pbs.put_callback(id, &cb)
                    }
                }
            };
            if let Err(e) = result.and_then(|_| clinic.pbs.flush()) {
                tracing::error!(error = %e, "recording a callback attempt failed");
            }
        }
        let wait = next_due
            .map(|t| Duration::from_secs(t.saturating_sub(unix_now()).max(1)))
            .unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = clinic.wake_callbacks.notified() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_time_and_body() {
        let s = sign(b"secret", 1700000000, r#"{"a":1}"#);
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, sign(b"other", 1700000000, r#"{"a":1}"#));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(2000, 0), 2000);
        assert_eq!(backoff_ms(2000, 3), 16000);
        assert_eq!(backoff_ms(2000, 30), 600_000);
    }
}
