//! The skin family's HTTP service: its state, its routes (the reference's
//! `/api/v1/...` and `/api/v3/...`, each with and without the trailing
//! slash the reference writes), its background work (the analysis queue
//! and the retention sweep) and its stop.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{request::Parts, StatusCode};
use axum::response::Response;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::records::SkinStore;
use super::work::SkinBatchers;
use super::{accounts, console, report, streams, v1, v3};
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
    pub fn page<T>(
        &self,
        parts: &Parts,
        items: Vec<T>,
        page: &Option<String>,
        size: &Option<String>,
    ) -> super::error::SkinResult<axum::Json<super::views::Page<T>>> {
        let origin = self.origin(parts);
        super::paging::page(&origin, parts, items, page.as_deref(), size.as_deref()).map(axum::Json)
    }

    /// `scheme://host` of the appliance as this request reached it.
    pub fn origin(&self, parts: &Parts) -> String {
        crate::http::extract::origin(parts, &self.config)
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
    records
        .date_old_uploads(app.config.skin_api.upload_url_secs)
        .map_err(|e| store_error(app, e))?;
    let queue = JobQueue::open(&app.store, "skin").map_err(|e| store_error(app, e))?;
    // Dataset webhooks (hooks.rs) go through the platform's delivery queue.
    app.webhooks.declare_family("skin");
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

type Routes = UtoipaMethodRouter<Arc<Skin>>;

/// The operations of a path item, by method.
fn operations(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 8] {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
}

/// `routes` served at each path with its trailing slash and without (the
/// reference writes the slash; clients drop it). The slash-less copy of
/// each operation is documented too, with `_noslash` after its
/// operationId. A handler bound to several methods (`method(put, post,
/// patch)`) has one operation per method, each id followed by the method.
fn both((schemas, mut paths, handler): Routes) -> Routes {
    let mut copies = Vec::new();
    for (path, item) in paths.paths.iter_mut() {
        let mut seen = std::collections::HashMap::new();
        for (_, op) in operations(item).into_iter() {
            if let Some(id) = op.as_ref().and_then(|o| o.operation_id.clone()) {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        for (method, op) in operations(item) {
            if let Some(op) = op {
                if let Some(id) = op.operation_id.as_mut().filter(|id| seen[id.as_str()] > 1) {
                    id.push('_');
                    id.push_str(method);
                }
            }
        }
        let bare = path.trim_end_matches('/');
        if bare == path {
            continue;
        }
        let mut copy = item.clone();
        for (_, op) in operations(&mut copy) {
            if let Some(op) = op {
                if let Some(id) = op.operation_id.as_mut() {
                    id.push_str("_noslash");
                }
                let same = format!("The same operation as `{path}` (with the trailing slash).");
                op.description = Some(match op.description.take() {
                    Some(d) => format!("{d}\n\n{same}"),
                    None => same,
                });
            }
        }
        copies.push((bare.to_string(), copy));
    }
    paths.paths.extend(copies);
    (schemas, paths, handler)
}

fn routes() -> OpenApiRouter<Arc<Skin>> {
    let all: Vec<Routes> = vec![
        routes!(accounts::login),
        routes!(accounts::auth_login),
        routes!(accounts::refresh),
        routes!(accounts::refresh_alias),
        routes!(accounts::create_token, accounts::list_tokens),
        routes!(accounts::delete_token),
        routes!(accounts::admin_list_users, accounts::admin_add_user),
        routes!(v1::image_types),
        routes!(v1::algorithms),
        routes!(streams::notifications),
        routes!(v1::applications),
        routes!(v1::attach_application),
        routes!(streams::results),
        routes!(v1::create_dataset, v1::list_datasets),
        routes!(v1::get_dataset, v1::update_dataset),
        routes!(v1::set_webhook, v1::get_webhook, v1::delete_webhook),
        routes!(v1::create_subject, v1::list_subjects, v1::delete_subjects),
        routes!(v1::get_subject, v1::patch_subject, v1::delete_subject),
        routes!(v1::erase_subject_photos),
        routes!(v1::clear_subject_metadata),
        routes!(v1::all_results),
        routes!(v1::create_batch, v1::list_subject_batches),
        routes!(v1::upload_image, v1::list_batch_images),
        routes!(v1::get_image),
        routes!(v1::image_results),
        routes!(v1::image_aux),
        routes!(v1::smoothed_results),
        routes!(v3::signed_upload_url_v1),
        routes!(v3::start_upload),
        routes!(v3::parameters),
        routes!(v3::list_batches),
        routes!(v3::batch_info),
        routes!(v3::compute),
        routes!(v3::batch_results),
        routes!(v3::put_upload),
        routes!(v1::image_file),
        routes!(report::pdf),
    ];
    // The console's pages need no trailing-slash twins.
    let pages = OpenApiRouter::new()
        .routes(routes!(console::subjects))
        .routes(routes!(console::subject))
        .routes(routes!(console::image_file));
    all.into_iter().fold(pages, |r, m| r.routes(both(m)))
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

    fn console_pages(&self) -> &'static [(&'static str, &'static str)] {
        &[("Skin subjects", "/console/skin")]
    }

    fn router(self: Arc<Self>) -> OpenApiRouter {
        // A b64 image is 4/3 of its bytes, plus the JSON around it.
        let limit = self.config.skin_api.max_image_bytes / 3 * 4 + 64 * 1024;
        routes()
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Response {
        // axum refuses a body or query that does not deserialize with 422;
        // the reference (Django REST framework) answers 400.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        if let Some((field, why)) = super::error::json_field_error(message) {
            return super::error::SkinErrorBody::Fields([(field, vec![why])].into())
                .into_response(status);
        }
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
