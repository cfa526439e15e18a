//! The admin API's key endpoints: create, list, read, patch and revoke
//! API keys (reference 004).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::auth::keys;
use crate::families::faces::schema::{self, CreatedKey, KeyView};
use crate::families::faces::Faces;
use crate::http::error::ApiError;
use crate::http::extract::{ClientIp, QueryMap};
use crate::store::{blocking, ApiKeyRecord};

use super::{audit_ok, page, paginated, parse_id, parse_json, Admin};

/// A stored key as the admin API shows it: never the secret, only its
/// prefix, suffix and preview.
pub fn key_view(k: &ApiKeyRecord) -> KeyView {
    KeyView {
        id: k.id,
        name: k.name.clone(),
        key_prefix: k.key_prefix.clone(),
        key_suffix: k.key_suffix.clone(),
        key_preview: keys::preview(k),
        is_active: k.is_active,
        request_count: k.request_count,
        last_used_at: k.last_used_at.clone(),
        created_at: k.created_at.clone(),
    }
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 {
        return Err(ApiError::Invalid("name must be 1 to 100 characters".into()));
    }
    // Names are shown in the console, the CLI's table and the audit log,
    // where a newline or an escape sequence would forge lines.
    if n.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "name must be printable characters (no control characters)".into(),
        ));
    }
    Ok(n.to_string())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateKey {
    name: String,
}

#[utoipa::path(
    post,
    path = "/api-keys",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_create_key",
    request_body(content = CreateKey, content_type = "application/json"),
    responses((status = 201, description = "The new key; `key` is shown this once.", body = CreatedKey), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn create_key(
    State(app): State<Arc<Faces>>,
    a: Admin,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateKey = parse_json(&body)?;
    let created = new_key(&app, &a.0, &ip, &b.name).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Create an API key named `name` (1-100 printable characters), audited
/// as `admin`'s; the full key is in the result this once.
pub(in crate::families::faces) async fn new_key(
    app: &Faces,
    admin: &str,
    ip: &str,
    name: &str,
) -> Result<CreatedKey, ApiError> {
    let name = valid_name(name)?;
    let store = app.store.clone();
    let (full, rec) = blocking(move || keys::create(&store, &name)).await?;
    // The key is shown this once: it must be on disk before it is shown.
    app.store.flush_async().await?;
    audit_ok(app, "key_created", admin, ip, &rec.id.to_string());
    Ok(CreatedKey {
        view: key_view(&rec),
        key: full,
    })
}

#[utoipa::path(
    get,
    path = "/api-keys",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_list_keys",
    params(super::schema::PageQuery),
    responses((status = 200, description = "A page of API keys (previews only, never a key).", body = super::schema::Page<KeyView>), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn list_keys(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    QueryMap(q): QueryMap,
) -> Result<Json<schema::Page<KeyView>>, ApiError> {
    let p = page(&q)?;
    let (store, (pg, per)) = (app.store.clone(), (p.page, p.per_page));
    let (keys, total) = blocking(move || store.list_keys(pg, per)).await?;
    Ok(Json(paginated(
        keys.iter().map(key_view).collect(),
        total,
        &p,
    )))
}

async fn find_key(app: &Faces, id: &str) -> Result<ApiKeyRecord, ApiError> {
    let (store, id) = (app.store.clone(), parse_id(id, "API key")?);
    blocking(move || store.get_key(id))
        .await?
        .ok_or_else(|| ApiError::NotFound("API key not found".into()))
}

#[utoipa::path(
    get,
    path = "/api-keys/{key_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_get_key",
    params(("key_id" = String, Path, description = "The API key's id (UUID).")),
    responses((status = 200, description = "The key (preview only).", body = KeyView), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such API key.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn get_key(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(key_view(&find_key(&app, &id).await?)))
}

/// Rename a key, or deactivate (`false`) / reactivate it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    name: Option<String>,
    is_active: Option<bool>,
}

#[utoipa::path(
    patch,
    path = "/api-keys/{key_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_patch_key",
    params(("key_id" = String, Path, description = "The API key's id (UUID).")),
    request_body(content = PatchKey, content_type = "application/json"),
    responses((status = 200, description = "The key after the change.", body = KeyView), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such API key.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn patch_key(
    State(app): State<Arc<Faces>>,
    a: Admin,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let b: PatchKey = parse_json(&body)?;
    let mut rec = find_key(&app, &id).await?;
    if let Some(n) = b.name {
        rec.name = valid_name(&n)?;
    }
    if let Some(a) = b.is_active {
        rec.is_active = a;
    }
    let store = app.store.clone();
    let rec = blocking(move || store.put_key(&rec).map(|_| rec)).await?;
    app.store.flush_async().await?;
    let action = match b.is_active {
        Some(false) => "key_revoked",
        Some(true) => "key_activated",
        None => "key_renamed",
    };
    audit_ok(&app, action, &a.0, &ip, &rec.id.to_string());
    Ok(Json(key_view(&rec)))
}

#[utoipa::path(
    delete,
    path = "/api-keys/{key_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_delete_key",
    params(("key_id" = String, Path, description = "The API key's id (UUID).")),
    responses((status = 204, description = "Deleted; requests with it are refused at once."), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such API key.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn delete_key(
    State(app): State<Arc<Faces>>,
    a: Admin,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "API key")?;
    let store = app.store.clone();
    if blocking(move || store.delete_key(id)).await? {
        app.store.flush_async().await?;
        audit_ok(&app, "key_deleted", &a.0, &ip, &id.to_string());
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("API key not found".into()))
    }
}
