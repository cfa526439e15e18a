//! Private tokens (reference 000): create, list and delete a company's
//! long-lived API tokens.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{audit_ok, Caller};
use crate::auth::random_token;
use crate::families::skin::error::{SkinError, SkinErrorBody, SkinResult};
use crate::families::skin::records::{PrivateToken, SkinStore};
use crate::families::skin::service::Skin;
use crate::families::skin::views::Page;
use crate::store::{blocking, now_rfc3339, sha256_hex, unix_now};

/// A private token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "kiosk 3", "expiration_time": "2026-01-01T00:00:00Z"}))]
pub struct NewToken {
    /// 1 to 255 characters.
    pub name: Option<String>,
    /// When it stops working: RFC 3339, in the future.
    pub expiration_time: Option<String>,
}

/// A private token (its secret only in the answer that created it).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"created_at": "2025-01-31T09:30:00Z",
    "data": "skn_4f9c0d6e2b7a41c5a8e3f1d2c6b9a7e0", "expiration_time": "2026-01-01T00:00:00Z",
    "id": "0190f5a4-c1d2-7e3f-8a4b-5c6d7e8f9a0b", "name": "kiosk 3"}))]
pub struct TokenView {
    pub created_at: String,
    /// The token itself (`Authorization: Bearer <data>`): shown once, at
    /// creation; only its sha256 is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// RFC 3339, as given.
    pub expiration_time: String,
    pub id: Uuid,
    pub name: String,
}

fn token_view(t: &PrivateToken) -> TokenView {
    TokenView {
        created_at: t.created_at.clone(),
        data: None,
        expiration_time: t.expiration_time.clone(),
        id: t.id,
        name: t.name.clone(),
    }
}

/// Create a private token (a long-lived API token) for the caller.
///
/// The answer's `data` is the token; it is shown this once (only its
/// sha256 is kept).
#[utoipa::path(
    post,
    path = "/api/v1/auth/private_tokens/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_create_private_token",
    request_body = NewToken,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Created; `data` is the token.", body = TokenView),
        (status = 400, description = "Not JSON, or a field is missing or invalid (name length, expiration in the past or not RFC 3339).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn create_token(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Json(b): Json<NewToken>,
) -> SkinResult<Response> {
    let name = b.name.unwrap_or_default().trim().to_string();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(SkinError::Field(
            "name",
            "Must be 1 to 255 characters.".into(),
        ));
    }
    let exp_s = b
        .expiration_time
        .ok_or_else(|| SkinError::Field("expiration_time", "This field is required.".into()))?;
    let exp = time::OffsetDateTime::parse(&exp_s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        SkinError::Field(
            "expiration_time",
            "Datetime has wrong format. Use RFC 3339.".into(),
        )
    })?;
    let expires_at = exp.unix_timestamp();
    if expires_at <= unix_now() as i64 {
        return Err(SkinError::Field(
            "expiration_time",
            "Must be in the future.".into(),
        ));
    }
    let data = format!("skn_{}", random_token());
    let rec = PrivateToken {
        id: Uuid::now_v7(),
        user_id: caller.user.id,
        name,
        expiration_time: exp_s,
        expires_at: expires_at as u64,
        token_hash: sha256_hex(data.as_bytes()),
        created_at: now_rfc3339(),
    };
    let (records, store, r) = (skin.records.clone(), skin.store.clone(), rec.clone());
    blocking(move || {
        SkinStore::put(&records.tokens, r.id, &r)?;
        records
            .token_hashes
            .insert(r.token_hash.as_bytes(), r.id.as_bytes())?;
        store.flush()
    })
    .await?;
    audit_ok(
        &skin,
        "private_token_created",
        &caller.user.email,
        &rec.id.to_string(),
    );
    let mut v = token_view(&rec);
    v.data = Some(data);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// DRF page-number pagination.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number, or `last`; past the last page: 404.
    pub page: Option<String>,
    /// Items per page: default 20, at most 100; not a positive number
    /// means the default.
    pub page_size: Option<String>,
}

/// The caller's private tokens, newest first, paginated (never their
/// secrets).
#[utoipa::path(
    get,
    path = "/api/v1/auth/private_tokens/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_private_tokens",
    params(PageQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of tokens.", body = Page<TokenView>),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "`page` is past the last page or not a number (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_tokens(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Query(q): Query<PageQuery>,
) -> SkinResult<Json<Page<TokenView>>> {
    let records = skin.records.clone();
    let me = caller.user.id;
    let all =
        blocking(move || SkinStore::scan(&records.tokens, |t: &PrivateToken| t.user_id == me))
            .await?;
    let views: Vec<TokenView> = all.iter().rev().map(token_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// Delete one of the caller's private tokens; it is refused from then on.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/private_tokens/{token_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_delete_private_token",
    params(("token_id" = Uuid, Path, description = "The token's id.")),
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`token_id` is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such token of the caller's.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_token(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> SkinResult<StatusCode> {
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let me = caller.user.id;
    let found = blocking(move || {
        let t: Option<PrivateToken> = SkinStore::get(&records.tokens, id)?;
        match t {
            Some(t) if t.user_id == me => {
                records.delete_token(&t)?;
                store.flush()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await?;
    if found {
        audit_ok(
            &skin,
            "private_token_deleted",
            &caller.user.email,
            &id.to_string(),
        );
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SkinError::not_found("Token"))
    }
}
