//! Webhook delivery shared by every family: a family enqueues a
//! [`Delivery`]; it is persisted (one sled tree, flushed with the
//! family's own records), sent through the [`outbound`]
//! client (address checks on every attempt), signed, and retried with
//! doubling delays across restarts until it succeeds or runs out of
//! attempts. Nothing here runs on a request's path.
//!
//! A signed delivery carries `X-Argus-Signature: t=<unix seconds>,v1=<hex>`
//! with `v1 = HMAC-SHA256(secret, "<t>.<body>")`, the scheme Stripe and Svix
//! made common: the receiver recomputes it and rejects old `t`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::metrics::{Metrics, DELIVERY_OUTCOMES};
use crate::outbound::{self, Policy};
use crate::store::{dec, enc, unix_now, Store, StoreError};

pub const SIGNATURE_HEADER: &str = "x-argus-signature";

/// The signature header value for `body`, at time `t`.
pub fn sign(secret: &[u8], t: u64, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

/// Doubling delay after `attempts` failures, capped at ten minutes.
pub fn backoff_ms(base: u64, attempts: u32) -> u64 {
    base.saturating_mul(1u64 << attempts.min(20)).min(600_000)
}

/// One webhook to deliver, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The family that asked for it (metrics, logs).
    pub family: String,
    /// What it is about, unique within the family (a study id): a newer
    /// delivery about the same subject replaces a pending one.
    pub subject: String,
    /// `POST` or `GET`.
    pub method: String,
    pub url: String,
    /// JSON body (sent with `POST` only).
    pub body: String,
    /// HMAC key of the signature header; empty: not signed.
    #[serde(with = "hex_bytes")]
    pub secret: Vec<u8>,
    /// Extra headers (e.g. the receiver's own authorization).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub max_attempts: u32,
    /// First retry delay, doubled after each failure.
    pub retry_base_ms: u64,
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_at: u64,
    pub last_error: Option<String>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// The delivery worker and its queue.
pub struct Webhooks {
    store: Arc<Store>,
    tree: sled::Tree,
    client: reqwest::Client,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    wake: tokio::sync::Notify,
    /// Per-family outcome counters kept for compatibility (e.g.
    /// `argus_pbs_callbacks_total{outcome}`), besides the shared one.
    family_counters: Mutex<HashMap<String, IntCounterVec>>,
    /// Families that send webhooks, exported at zero before their first.
    families: Mutex<BTreeSet<String>>,
}

impl Webhooks {
    pub fn new(
        store: Arc<Store>,
        policy: Arc<Policy>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.db().open_tree("webhooks")?,
            store,
            client,
            policy,
            metrics,
            wake: tokio::sync::Notify::new(),
            family_counters: Mutex::new(HashMap::new()),
            families: Mutex::new(BTreeSet::new()),
        })
    }

    /// The policy every URL is checked against.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `family` sends webhooks: export its delivery outcomes and backlog
    /// at zero from now on.
    pub fn declare_family(&self, family: &str) {
        for outcome in DELIVERY_OUTCOMES {
            self.metrics
                .webhook_deliveries
                .with_label_values(&[family, outcome]);
        }
        self.metrics.webhook_pending.with_label_values(&[family]);
        if let Ok(mut f) = self.families.lock() {
            f.insert(family.to_string());
        }
    }

    /// Also count `family`'s outcomes in `counter` (label: outcome).
    pub fn count_outcomes_in(&self, family: &str, counter: IntCounterVec) {
        self.declare_family(family);
        for outcome in DELIVERY_OUTCOMES {
            counter.with_label_values(&[outcome]);
        }
        if let Ok(mut m) = self.family_counters.lock() {
            m.insert(family.to_string(), counter);
        }
    }

    /// Set `argus_webhook_pending` from the queue as it is now: every
    /// family declared or seen before (zero when it has none left) and any
    /// other that has some.
    pub fn sample_pending(&self) {
        let mut counts: BTreeMap<String, i64> = self
            .families
            .lock()
            .map(|f| f.iter().map(|n| (n.clone(), 0)).collect())
            .unwrap_or_default();
        for key in self.tree.iter().keys() {
            match key {
                Ok(k) => {
                    let k = String::from_utf8_lossy(&k);
                    let family = k.split_once('/').map_or(&*k, |(f, _)| f);
                    *counts.entry(family.to_string()).or_default() += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting pending webhooks failed");
                    return;
                }
            }
        }
        if let Ok(mut f) = self.families.lock() {
            f.extend(counts.keys().cloned());
        }
        for (family, n) in counts {
            self.metrics
                .webhook_pending
                .with_label_values(&[&family])
                .set(n);
        }
    }

    fn key(family: &str, subject: &str) -> Vec<u8> {
        format!("{family}/{subject}").into_bytes()
    }

    /// Queue `d` (replacing a pending delivery about the same subject).
    /// Durable once the store is next flushed; call [`Webhooks::wake`]
    /// after that flush.
    pub fn enqueue(&self, d: &Delivery) -> Result<(), StoreError> {
        self.tree.insert(Self::key(&d.family, &d.subject), enc(d))?;
        Ok(())
    }

    /// Start delivering what is due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Pending deliveries, in key order. A record that does not decode is
    /// logged and left alone, so it cannot stop the others.
    pub fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.pending_raw()?.into_iter().map(|(_, d)| d).collect())
    }

    fn pending_raw(&self) -> Result<Vec<(sled::IVec, Delivery)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            match dec::<Delivery>(&v) {
                Ok(d) => out.push((v, d)),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&k),
                    error = %e,
                    "a pending webhook does not decode; skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Replace `old` (the record as read) with `new`, unless a newer
    /// delivery about the same subject was queued meanwhile: that one stays.
    fn replace(
        &self,
        d: &Delivery,
        old: &sled::IVec,
        new: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let key = Self::key(&d.family, &d.subject);
        if self.tree.compare_and_swap(key, Some(old), new)?.is_err() {
            tracing::debug!(family = %d.family, subject = %d.subject, "a newer webhook replaced this one meanwhile");
        }
        Ok(())
    }

    fn count(&self, family: &str, outcome: &str) {
        self.metrics
            .webhook_deliveries
            .with_label_values(&[family, outcome])
            .inc();
        if let Some(c) = self
            .family_counters
            .lock()
            .ok()
            .and_then(|m| m.get(family).cloned())
        {
            c.with_label_values(&[outcome]).inc();
        }
    }

    async fn attempt(&self, d: &Delivery) -> Result<(), String> {
        // Checked on every attempt: an IP-literal host never reaches the
        // resolver, and the allow list may have changed since.
        let url = self
            .policy
            .check_url(&d.url, false)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = match d.method.as_str() {
            "GET" => self.client.get(url),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(d.body.clone()),
        };
        if !d.secret.is_empty() {
            req = req.header(SIGNATURE_HEADER, sign(&d.secret, unix_now(), &d.body));
        }
        for (k, v) in &d.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the receiver answered HTTP {}", r.status())),
            Err(e) => Err(outbound::describe(&e)),
        }
    }

    /// Record what an attempt on `d` (read as `old`) gave; the next due
    /// time if it stays queued.
    fn settle(
        &self,
        old: &sled::IVec,
        mut d: Delivery,
        outcome: Result<(), String>,
    ) -> Result<Option<u64>, StoreError> {
        match outcome {
            Ok(()) => {
                self.count(&d.family, "delivered");
                tracing::info!(family = %d.family, subject = %d.subject, attempts = d.attempts + 1, "webhook delivered");
                self.replace(&d, old, None)?;
                Ok(None)
            }
            Err(e) => {
                d.attempts += 1;
                d.last_error = Some(e.clone());
                if d.attempts >= d.max_attempts {
                    self.count(&d.family, "abandoned");
                    tracing::warn!(family = %d.family, subject = %d.subject, attempts = d.attempts, error = %e, "webhook abandoned");
                    self.replace(&d, old, None)?;
                    Ok(None)
                } else {
                    self.count(&d.family, "retried");
                    let delay = backoff_ms(d.retry_base_ms, d.attempts - 1);
                    d.next_at = unix_now() + delay.div_ceil(1000);
                    tracing::info!(family = %d.family, subject = %d.subject, attempts = d.attempts, error = %e, retry_in_ms = delay, "webhook failed; will retry");
                    let next = d.next_at;
                    self.replace(&d, old, Some(enc(&d)))?;
                    Ok(Some(next))
                }
            }
        }
    }

    /// Deliver due webhooks until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = unix_now();
            let mut next_due: Option<u64> = None;
            let pending = self.pending_raw().unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading pending webhooks failed");
                Vec::new()
            });
            for (old, d) in pending {
                if *shutdown.borrow() {
                    return;
                }
                if d.next_at > now {
                    next_due = Some(next_due.map_or(d.next_at, |n| n.min(d.next_at)));
                    continue;
                }
                let outcome = self.attempt(&d).await;
                let settled = match self.settle(&old, d, outcome) {
                    Ok(next) => self.store.flush_async().await.map(|_| next),
                    Err(e) => Err(e),
                };
                match settled {
                    Ok(Some(t)) => next_due = Some(next_due.map_or(t, |n| n.min(t))),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "recording a webhook attempt failed"),
                }
            }
            let wait = next_due
                .map(|t| Duration::from_secs(t.saturating_sub(unix_now()).max(1)))
                .unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = self.wake.notified() => {}
                // Err: the sender is gone, which also means stop.
            r = shutdown.changed() => if r.is_err() { return; },
                _ = tokio::time::sleep(wait) => {}
            }
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

    fn delivery(subject: &str) -> Delivery {
        Delivery {
            family: "test".into(),
            subject: subject.into(),
            method: "POST".into(),
            url: "https://127.0.0.1:1/x".into(),
            body: "{}".into(),
            secret: b"k".to_vec(),
            headers: vec![],
            max_attempts: 2,
            retry_base_ms: 1000,
            attempts: 0,
            next_at: 0,
            last_error: None,
        }
    }

    /// Deliveries survive a reopen, a newer one replaces a pending one
    /// about the same subject, a refused address is retried then
    /// abandoned, and the reason is recorded.
    #[tokio::test]
    async fn queue_is_durable_and_refusals_are_retried_then_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Arc::new(Policy::default());
        let client = outbound::client(policy.clone(), None, Duration::from_secs(2)).unwrap();
        let metrics = Arc::new(Metrics::new());
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let w = Webhooks::new(
                store.clone(),
                policy.clone(),
                client.clone(),
                metrics.clone(),
            )
            .unwrap();
            w.enqueue(&delivery("a")).unwrap();
            let mut newer = delivery("a");
            newer.body = "{\"v\":2}".into();
            w.enqueue(&newer).unwrap();
            w.enqueue(&delivery("b")).unwrap();
            store.flush().unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let w = Webhooks::new(store, policy, client, metrics.clone()).unwrap();
        let pending = w.pending_raw().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].1.body, "{\"v\":2}");
        let (old, d) = pending[0].clone();
        let err = w.attempt(&d).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let next = w.settle(&old, d, Err(err)).unwrap();
        assert!(next.is_some(), "first failure is retried");
        let (old, d) = w.pending_raw().unwrap()[0].clone();
        assert_eq!(d.attempts, 1);
        assert!(d.last_error.as_deref().unwrap().contains("outbound.allow"));
        // A newer delivery about the same subject, queued while this one
        // was being sent, survives the old one's outcome.
        let mut newer = delivery("a");
        newer.body = "{\"v\":3}".into();
        w.enqueue(&newer).unwrap();
        assert_eq!(w.settle(&old, d, Err("again".into())).unwrap(), None);
        let left = w.pending().unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].body, "{\"v\":3}", "the newer one stays");
        assert_eq!(left[0].attempts, 0);
        let (old, d) = w.pending_raw().unwrap()[1].clone();
        assert!(w.settle(&old, d, Err("x".into())).unwrap().is_some());
        let (old, d) = w.pending_raw().unwrap()[1].clone();
        assert_eq!(w.settle(&old, d, Err("y".into())).unwrap(), None);
        assert_eq!(
            w.pending().unwrap().len(),
            1,
            "b abandoned after max_attempts"
        );
        let text = metrics.render();
        assert!(
            text.contains(
                "argus_webhook_deliveries_total{family=\"test\",outcome=\"abandoned\"} 2"
            ),
            "{text}"
        );
    }
}
