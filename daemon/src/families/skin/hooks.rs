//! A dataset's webhook (`POST .../datasets/{d}/webhooks/`; posting again
//! replaces it): fired when an image of the dataset has its results (or
//! failed), through the platform's webhook delivery: persisted, retried
//! with doubling delays across restarts (`skin_api.webhook_max_attempts`,
//! `webhook_retry_base_ms`), the address checked when configured and on
//! every attempt as for PBS callbacks (HTTPS, no internal address unless
//! `outbound.allow` permits it).
//!
//! The request: `POST` with a JSON body, or `GET` with the ids as query
//! parameters; the receiver's own credentials as configured
//! (`authorization`: `query` adds `authorization_key=authorization_value`
//! to the URL, `basic` sends `Authorization: Basic base64(key:value)`,
//! `bearer` sends `Authorization: Bearer value`); and
//! `X-Argus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret_key,
//! "<t>.<body>")>` (the body is empty for GET).
//!
//! The body: `{event: "image_processed", company_id, dataset_id,
//! subject_id, batch_id, image_id, status, is_ok, results_cleared,
//! quality_issues, detection_error, error, results_url, results}`, where
//! `results` are the v1 result rows; `results_cleared` is true (and
//! `is_ok` false) when the image's results were cleared while it was
//! analysed, so nothing it found was kept. Over
//! `skin_api.webhook_max_payload_bytes` (1 MB, the reference's limit for
//! one image) the rows are left out, `results_truncated` is true, and the
//! receiver reads `results_url`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{SkinError, SkinResult};
use super::records::{Image, ImageStatus, SkinStore, Webhook};
use super::service::Skin;
use crate::store::{blocking, now_rfc3339, unix_now, StoreError};
use crate::webhooks::Delivery;

/// A dataset's webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://crm.clinic.example/hooks/skin", "method": "post",
    "authorization": "bearer", "authorization_value": "s3cret", "enabled": true}))]
pub struct WebhookBody {
    /// Required: HTTPS, not an internal address unless `outbound.allow`
    /// permits it.
    pub url: Option<String>,
    /// `post` (default: the event in a JSON body) or `get` (the ids as
    /// query parameters).
    pub method: Option<String>,
    /// The receiver's credentials: `query` (adds
    /// `authorization_key=authorization_value` to the URL), `basic`,
    /// `bearer`, or none.
    pub authorization: Option<String>,
    /// Required with `query` and `basic`.
    pub authorization_key: Option<String>,
    /// Required with an `authorization`.
    pub authorization_value: Option<String>,
    /// Default true.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub enabled: Option<bool>,
    /// Accepted for compatibility; the appliance has no surveys.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub add_survey_answers: Option<bool>,
    /// Accepted for compatibility; every image gets its own call.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub merge_webhooks: Option<bool>,
}

/// A dataset's webhook as the API shows it (never the
/// `authorization_value`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"authorization": "bearer", "authorization_key": null,
    "creation_time": "2025-01-31T09:40:00Z", "dataset_id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b",
    "enabled": true, "id": "0190f5a6-1a2b-7c3d-8e4f-9a0b1c2d3e4f", "method": "post",
    "secret_key": "9f2c...e81a", "signature_header": "x-argus-signature",
    "url": "https://crm.clinic.example/hooks/skin"}))]
pub struct WebhookView {
    pub authorization: Option<String>,
    pub authorization_key: Option<String>,
    pub creation_time: String,
    pub dataset_id: Uuid,
    pub enabled: bool,
    pub id: Uuid,
    pub method: String,
    /// The HMAC-SHA256 key of the signature header (hex): only in the
    /// answer that set the webhook. The header is `t=<unix
    /// seconds>,v1=<hex HMAC(secret_key, "<t>.<body>")>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    pub signature_header: String,
    pub url: String,
}

/// The webhook as the API shows it (`secret_key` only when it is set).
pub fn view(w: &Webhook, with_secret: bool) -> WebhookView {
    WebhookView {
        authorization: w.authorization.clone(),
        authorization_key: w.authorization_key.clone(),
        creation_time: w.creation_time.clone(),
        dataset_id: w.dataset_id,
        enabled: w.enabled,
        id: w.id,
        method: w.method.clone(),
        secret_key: with_secret.then(|| w.secret_key.clone()),
        signature_header: crate::webhooks::SIGNATURE_HEADER.into(),
        url: w.url.clone(),
    }
}

/// Check and store dataset `d`'s webhook.
pub async fn configure(skin: &Skin, d: Uuid, b: WebhookBody) -> SkinResult<Webhook> {
    let url = b
        .url
        .ok_or_else(|| SkinError::Field("url", "This field is required.".into()))?;
    skin.webhooks
        .policy()
        .check_url(&url, false)
        .await
        .map_err(|e| SkinError::Field("url", e.to_string()))?;
    let method = b.method.unwrap_or_else(|| "post".into()).to_lowercase();
    if method != "post" && method != "get" {
        return Err(SkinError::Field("method", "Use post or get.".into()));
    }
    let auth = b
        .authorization
        .map(|a| a.to_lowercase())
        .filter(|a| !a.is_empty() && a != "none");
    if let Some(a) = &auth {
        if !["query", "basic", "bearer"].contains(&a.as_str()) {
            return Err(SkinError::Field(
                "authorization",
                "Use query, basic or bearer.".into(),
            ));
        }
        if b.authorization_value
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(SkinError::Field(
                "authorization_value",
                "Required with authorization.".into(),
            ));
        }
        if a != "bearer"
            && b.authorization_key
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        {
            return Err(SkinError::Field(
                "authorization_key",
                "Required with query and basic authorization.".into(),
            ));
        }
    }
    let (records, store) = (skin.records.clone(), skin.store.clone());
    blocking(move || {
        let old: Option<Webhook> = SkinStore::get(&records.webhooks, d)?;
        let w = Webhook {
            id: old.as_ref().map(|o| o.id).unwrap_or_else(Uuid::now_v7),
            dataset_id: d,
            url,
            method,
            authorization: auth,
            authorization_key: b.authorization_key,
            authorization_value: b.authorization_value,
            enabled: b.enabled.unwrap_or(true),
            secret_key: old
                .map(|o| o.secret_key)
                .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>())),
            creation_time: now_rfc3339(),
        };
        SkinStore::put(&records.webhooks, d, &w)?;
        store.flush()?;
        Ok(w)
    })
    .await
    .map_err(Into::into)
}

/// The body of image `img`'s webhook, within `max` bytes.
pub fn payload(img: &Image, results_url: &str, max: usize) -> String {
    let mut v = json!({
        "event": "image_processed",
        "company_id": img.company_id, "dataset_id": img.dataset_id, "subject_id": img.subject_id,
        "batch_id": img.batch_id, "image_id": img.id,
        "status": if img.status == ImageStatus::Done { "done" } else { "failed" },
        "is_ok": img.is_ok(), "results_cleared": img.results_cleared_unix.is_some(),
        "quality_issues": img.quality_issues, "detection_error": img.detection_error, "error": img.error,
        "results_url": results_url,
        "results": super::views::result_rows(img),
        "results_truncated": false,
    });
    let s = v.to_string();
    if s.len() <= max {
        return s;
    }
    v["results"] = json!([]);
    v["results_truncated"] = true.into();
    v.to_string()
}

/// The delivery of image `img`'s webhook, if its dataset has one enabled.
pub fn delivery_for(skin: &Skin, img: &Image) -> Result<Option<Delivery>, StoreError> {
    let Some(w) = SkinStore::get::<Webhook>(&skin.records.webhooks, img.dataset_id)? else {
        return Ok(None);
    };
    if !w.enabled {
        return Ok(None);
    }
    let results_url = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{}/batches/{}/images/{}/results/",
        img.company_id, img.dataset_id, img.subject_id, img.batch_id, img.id
    );
    let cfg = &skin.config.skin_api;
    let mut url = match url::Url::parse(&w.url) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(dataset = %w.dataset_id, error = %e, "stored webhook URL does not parse; skipped");
            return Ok(None);
        }
    };
    let mut headers = Vec::new();
    let (key, value) = (
        w.authorization_key.clone().unwrap_or_default(),
        w.authorization_value.clone().unwrap_or_default(),
    );
    match w.authorization.as_deref() {
        Some("query") => {
            url.query_pairs_mut().append_pair(&key, &value);
        }
        Some("basic") => {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{value}"));
            headers.push(("authorization".into(), format!("Basic {b}")));
        }
        Some("bearer") => headers.push(("authorization".into(), format!("Bearer {value}"))),
        _ => {}
    }
    let get = w.method == "get";
    if get {
        let status = if img.status == ImageStatus::Done {
            "done"
        } else {
            "failed"
        };
        url.query_pairs_mut()
            .append_pair("event", "image_processed")
            .append_pair("company_id", &img.company_id.to_string())
            .append_pair("dataset_id", &img.dataset_id.to_string())
            .append_pair("subject_id", &img.subject_id.to_string())
            .append_pair("batch_id", &img.batch_id.to_string())
            .append_pair("image_id", &img.id.to_string())
            .append_pair("status", status);
    }
    Ok(Some(Delivery {
        family: "skin".into(),
        subject: img.id.to_string(),
        method: if get { "GET" } else { "POST" }.into(),
        url: url.to_string(),
        body: if get {
            String::new()
        } else {
            payload(img, &results_url, cfg.webhook_max_payload_bytes)
        },
        secret: hex::decode(&w.secret_key).unwrap_or_default(),
        headers,
        max_attempts: cfg.webhook_max_attempts.max(1),
        retry_base_ms: cfg.webhook_retry_base_ms,
        attempts: 0,
        next_at: unix_now(),
        last_error: None,
    }))
}
