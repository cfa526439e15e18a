//! The skin family's HTTP service: its state, its routes (the reference's
//! `/api/v1/...` and `/api/v3/...`, each with and without the trailing
//! slash the reference writes), its background work (the analysis queue
//! and the retention sweep) and its stop.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{request::Parts, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use super::records::SkinStore;
use super::work::SkinBatchers;
use super::{accounts, report, streams, v1, v3};
use crate::app::{App, Family};
use crate::families::Startup;
use crate::jobs::JobQueue;
use crate::RunError;

/// The skin family's state: the platform's, its models' batchers, its
/// records and its analysis queue.
pub struct Skin {
    pub app: Arc<App>,
    pub batchers: Arc<SkinBatchers>,
    pub records: Arc<SkinStore>,
    pub queue: Arc<JobQueue>,
    /// HMAC key of login and refresh tokens.
    pub token_key: Vec<u8>,
    /// HMAC key of signed upload URLs.
    pub upload_key: Vec<u8>,
}

impl Deref for Skin {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl Skin {
    /// Store `v` under `id` in the tree `tree` picks, and flush, off the
    /// async workers.
    pub async fn save<T: serde::Serialize>(
        &self,
        tree: fn(&SkinStore) -> &sled::Tree,
        id: uuid::Uuid,
        v: &T,
    ) -> super::error::SkinResult<()> {
        let bytes = crate::store::enc(v);
        let (records, store) = (self.records.clone(), self.store.clone());
        crate::store::blocking(move || {
            tree(&records).insert(id.as_bytes(), bytes)?;
            store.flush()
        })
        .await?;
        Ok(())
    }

    /// Page `page` of `items`, DRF-style, with links back to this request.
    pub fn page(
        &self,
        parts: &Parts,
        items: Vec<serde_json::Value>,
        page: &Option<String>,
        size: &Option<String>,
    ) -> super::error::SkinResult<axum::Json<serde_json::Value>> {
        let origin = self.origin(parts);
        super::paging::page(&origin, parts, items, page.as_deref(), size.as_deref()).map(axum::Json)
    }

    /// `scheme://host` of the appliance as this request reached it.
    pub fn origin(&self, parts: &Parts) -> String {
        let host = parts
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_string)
            .unwrap_or_else(|| self.config.listen.to_string());
        let scheme = if self.config.tls.enabled {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    }
}

fn store_error(app: &App, source: crate::store::StoreError) -> RunError {
    RunError::Store {
        dir: app.config.state_dir.display().to_string(),
        source,
    }
}

/// Load the detector and the skin models, open the records. Blocking.
pub fn start(ctx: &Startup) -> Result<Arc<dyn Family>, RunError> {
    let app = &ctx.app;
    let batchers = SkinBatchers::start(&app.config, &ctx.target, &ctx.models, app.metrics.clone())?;
    let db = app.store.db();
    let records = SkinStore::open(db).map_err(|e| store_error(app, e))?;
    let queue = JobQueue::open(&app.store, "skin").map_err(|e| store_error(app, e))?;
    let token_key = app
        .store
        .secret("skin_token_key")
        .map_err(|e| store_error(app, e))?;
    let upload_key = app
        .store
        .secret("skin_upload_key")
        .map_err(|e| store_error(app, e))?;
    Ok(Arc::new(Skin {
        app: app.clone(),
        batchers: Arc::new(batchers),
        records: Arc::new(records),
        queue: Arc::new(queue),
        token_key,
        upload_key,
    }))
}

type R = Router<Arc<Skin>>;

/// `path` with its trailing slash and without.
fn both(r: R, path: &str, m: MethodRouter<Arc<Skin>>) -> R {
    let bare = path.trim_end_matches('/');
    if bare == path {
        return r.route(path, m);
    }
    r.route(path, m.clone()).route(bare, m)
}

fn routes() -> R {
    let c = "/api/v1/companies/{company_id}";
    let d = format!("{c}/datasets/{{dataset_id}}");
    let s = format!("{d}/subjects/{{subject_id}}");
    let b = format!("{s}/batches/{{batch_id}}");
    let i = format!("{b}/images/{{image_id}}");
    let v3c = "/api/v3/companies/{company_id}";
    let mut r = Router::new();
    for (path, m) in [
        ("/api/v1/login/", post(accounts::login)),
        ("/api/v1/auth/login/", post(accounts::login)),
        ("/api/v1/auth/refresh/", post(accounts::refresh)),
        ("/api/v1/refresh/", post(accounts::refresh)),
        (
            "/api/v1/auth/private_tokens/",
            post(accounts::create_token).get(accounts::list_tokens),
        ),
        (
            "/api/v1/auth/private_tokens/{token_id}/",
            delete(accounts::delete_token),
        ),
        (
            "/api/v1/appliance/skin/users/",
            get(accounts::admin_list_users).post(accounts::admin_add_user),
        ),
        ("/api/v1/dicts/image_types/", get(v1::image_types)),
        ("/api/v1/dicts/algorithms/", get(v1::algorithms)),
        ("/notifications/", get(streams::notifications)),
    ] {
        r = both(r, path, m);
    }
    let owned: Vec<(String, MethodRouter<Arc<Skin>>)> = vec![
        (format!("{c}/applications/"), get(v1::applications)),
        (
            format!("{c}/applications/{{app_id}}/runs/"),
            post(v1::attach_application),
        ),
        (format!("{c}/results_streaming/"), get(streams::results)),
        (
            format!("{c}/datasets/"),
            post(v1::create_dataset).get(v1::list_datasets),
        ),
        (
            format!("{d}/"),
            get(v1::get_dataset)
                .put(v1::update_dataset)
                .post(v1::update_dataset)
                .patch(v1::update_dataset),
        ),
        (
            format!("{d}/webhooks/"),
            post(v1::set_webhook)
                .get(v1::get_webhook)
                .delete(v1::delete_webhook),
        ),
        (
            format!("{d}/subjects/"),
            post(v1::create_subject).get(v1::list_subjects),
        ),
        (
            format!("{s}/"),
            get(v1::get_subject)
                .patch(v1::patch_subject)
                .delete(v1::delete_subject),
        ),
        (
            format!("{s}/delete_photos/"),
            post(v1::erase_subject_photos),
        ),
        (
            format!("{s}/clear_metadata/"),
            post(v1::clear_subject_metadata),
        ),
        (format!("{s}/all_results/"), get(v1::all_results)),
        (
            format!("{s}/batches/"),
            post(v1::create_batch).get(v1::list_subject_batches),
        ),
        (
            format!("{b}/images/"),
            post(v1::upload_image).get(v1::list_batch_images),
        ),
        (format!("{i}/"), get(v1::get_image)),
        (format!("{i}/results/"), get(v1::image_results)),
        (format!("{i}/aux/"), get(v1::image_aux)),
        (format!("{i}/smoothed_results/"), get(v1::smoothed_results)),
        (
            format!("{c}/subjects/{{subject_id}}/signed_upload_url/"),
            post(v3::signed_upload_url_v1),
        ),
        (
            format!("{v3c}/subjects/{{subject_id}}/upload/"),
            post(v3::start_upload),
        ),
        (
            format!("{v3c}/subjects/{{subject_id}}/parameters/"),
            get(v3::parameters),
        ),
        (format!("{v3c}/batches/"), get(v3::list_batches)),
        (format!("{v3c}/batches/{{batch_id}}/"), get(v3::batch_info)),
        (
            format!("{v3c}/batches/{{batch_id}}/compute/"),
            post(v3::compute),
        ),
        (
            format!("{v3c}/batches/{{batch_id}}/results/"),
            get(v3::batch_results),
        ),
        (
            "/api/v3/uploads/{upload_id}/".to_string(),
            put(v3::put_upload),
        ),
        ("/images/{file}".to_string(), get(v1::image_file)),
        (
            "/service/pdf-generator/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/pdf/".to_string(),
            post(report::pdf).get(report::pdf),
        ),
    ];
    for (path, m) in owned {
        r = both(r, &path, m);
    }
    r
}

impl Family for Skin {
    fn name(&self) -> &'static str {
        "skin"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &[
            "/api/v1/login",
            "/api/v1/auth/",
            "/api/v1/refresh",
            "/api/v1/companies/",
            "/api/v1/dicts/",
            "/api/v1/appliance/skin/",
            "/api/v3/",
            "/images/",
            "/notifications",
            "/service/pdf-generator/",
        ]
    }

    fn entry_points(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("login", "/api/v1/login/"),
            ("algorithms", "/api/v1/dicts/algorithms/"),
        ]
    }

    fn router(self: Arc<Self>) -> utoipa_axum::router::OpenApiRouter {
        // A b64 image is 4/3 of its bytes, plus the JSON around it.
        let limit = self.config.skin_api.max_image_bytes / 3 * 4 + 64 * 1024;
        utoipa_axum::router::OpenApiRouter::from(
            routes()
                .layer(DefaultBodyLimit::max(limit))
                .with_state(self),
        )
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Response {
        // axum refuses a body or query that does not deserialize with 422;
        // the reference (Django REST framework) answers 400.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        super::error::body(status, message)
    }

    fn healthy(&self) -> bool {
        self.batchers.healthy()
    }

    fn spawn_background(
        self: Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(super::runner::run(self.clone(), shutdown.clone())),
            tokio::spawn(super::retention::run(self, shutdown)),
        ]
    }

    fn stop(&self) {
        self.batchers.shutdown();
    }
}
