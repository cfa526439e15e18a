//! Callbacks of the PBS family: once a study's report is ready (or failed),
//! a POST of `{pbs_study_id, report_status, progress}` to the study's HTTPS
//! `callback_url`, handed to the platform's webhook delivery (persisted,
//! address-checked, retried with doubling delays across restarts).
//!
//! Each POST carries `X-Argus-Signature: t=<unix seconds>,v1=<hex>`, where
//! `v1 = HMAC-SHA256(key, "<t>.<body>")` and the key is the organisation's
//! callback secret (hex-decoded; `argusd pbs users add` prints it when it
//! creates the organisation, `argusd pbs org-secret ORG` shows it again).

use uuid::Uuid;

use super::Clinic;
use crate::store::{unix_now, StoreError};
use crate::webhooks::Delivery;
pub use crate::webhooks::{sign, SIGNATURE_HEADER};

/// The delivery announcing study `id`'s outcome to `url`, signed with its
/// organisation's secret.
pub fn delivery(
    clinic: &Clinic,
    id: Uuid,
    org: &str,
    url: &str,
    body: String,
) -> Result<Delivery, StoreError> {
    let secret = clinic
        .pbs
        .get_org(org)?
        .and_then(|o| hex::decode(o.callback_secret).ok())
        .unwrap_or_default();
    let cfg = &clinic.config.pbs;
    Ok(Delivery {
        family: "pbs".into(),
        subject: id.to_string(),
        method: "POST".into(),
        url: url.to_string(),
        body,
        secret,
        headers: Vec::new(),
        max_attempts: cfg.callback_max_attempts.max(1),
        retry_base_ms: cfg.callback_retry_base_ms,
        attempts: 0,
        next_at: unix_now(),
        last_error: None,
    })
}

/// Callbacks an older version left pending in the family's own tree move
/// to the platform's delivery queue, keeping their attempts and due times.
pub fn migrate_pending(clinic: &Clinic) -> Result<usize, StoreError> {
    let old = clinic.pbs.callbacks_lossy()?;
    for (id, cb) in &old {
        let org = clinic
            .pbs
            .get_study(*id)?
            .map(|s| s.org)
            .unwrap_or_default();
        let mut d = delivery(clinic, *id, &org, &cb.url, cb.body.clone())?;
        d.attempts = cb.attempts;
        d.next_at = cb.next_at;
        d.last_error = cb.last_error.clone();
        clinic.webhooks.enqueue(&d)?;
        clinic.pbs.remove_callback(*id)?;
    }
    if !old.is_empty() {
        clinic.store.flush()?;
        tracing::info!(
            count = old.len(),
            "moved pending PBS callbacks to the webhook queue"
        );
    }
    Ok(old.len())
}
