//! Skin users: `add_user` (the CLI and the appliance admin endpoint) and
//! the admin's user list.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit_ok;
use crate::auth::password;
use crate::families::skin::error::{SkinError, SkinErrorBody, SkinResult};
use crate::families::skin::records::{Company, SkinStore, User};
use crate::families::skin::service::Skin;
use crate::store::{blocking, now_rfc3339};

/// Add a user to company `company` (created when new); the command line's
/// `argusd skin users add` and the appliance admin endpoint both call it.
pub fn add_user(
    records: &SkinStore,
    company: &str,
    email: &str,
    pw: &str,
) -> Result<AddedUser, String> {
    let company = company.trim();
    let email = email.trim().to_lowercase();
    if company.is_empty() || company.chars().count() > 255 {
        return Err("the company name must be 1 to 255 characters".into());
    }
    if !email.contains('@') || email.len() > 254 {
        return Err(format!("{email:?} is not an e-mail address"));
    }
    if pw.chars().count() < 8 {
        return Err("the password must be at least 8 characters".into());
    }
    let e = |e: crate::store::StoreError| e.to_string();
    let c = match records.company_by_name(company).map_err(e)? {
        Some(c) => c,
        None => {
            let c = Company {
                id: Uuid::now_v7(),
                name: company.to_string(),
                created_at: now_rfc3339(),
            };
            records.put_company(&c).map_err(e)?;
            c
        }
    };
    if let Some(u) = records.user_by_email(&email).map_err(e)? {
        if u.company_id != c.id {
            return Err(format!("{email} already belongs to another company"));
        }
    }
    let existing = records.user_by_email(&email).map_err(e)?;
    let u = User {
        id: existing.as_ref().map(|u| u.id).unwrap_or_else(Uuid::now_v7),
        email: email.clone(),
        company_id: c.id,
        password_hash: password::hash(pw)?,
        full_name: existing.map(|u| u.full_name).unwrap_or_default(),
        created_at: now_rfc3339(),
    };
    records.put_user(&u).map_err(e)?;
    Ok(AddedUser {
        company: c.name,
        company_id: c.id,
        email: u.email,
        id: u.id,
    })
}

/// A user added (or whose password was set) and their company.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"company": "Clinic A", "company_id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b11",
    "email": "jane@clinic.example", "id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b12"}))]
pub struct AddedUser {
    /// The company's name.
    pub company: String,
    pub company_id: Uuid,
    pub email: String,
    pub id: Uuid,
}

/// A user of the skin API, as the appliance's admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub company_id: Uuid,
    pub email: String,
    pub id: Uuid,
}

/// Every skin API user of every company (the appliance's administrator).
///
/// Authenticated as the platform's admin routes are: the admin console's
/// session cookie, or the operator's user name and password (HTTP Basic;
/// attempts are rate limited).
#[utoipa::path(
    get,
    path = "/api/v1/appliance/skin/users/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_admin_list_users",
    security(("admin_session" = []), ("admin_basic" = [])),
    responses(
        (status = 200, description = "Every user.", body = [UserView]),
        (status = 401, description = "Not the appliance's administrator.", body = SkinErrorBody),
        (status = 429, description = "Too many Basic attempts; `Retry-After` says when to try again.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn admin_list_users(
    State(skin): State<Arc<Skin>>,
    _admin: crate::http::extract::AdminUser,
) -> SkinResult<Json<Vec<UserView>>> {
    let records = skin.records.clone();
    let users = blocking(move || SkinStore::scan(&records.users, |_: &User| true)).await?;
    Ok(Json(
        users
            .iter()
            .map(|u| UserView {
                company_id: u.company_id,
                email: u.email.clone(),
                id: u.id,
            })
            .collect(),
    ))
}

/// A user to add to a company (created when new).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"company": "Clinic A", "email": "jane@clinic.example", "password": "correct horse battery"}))]
pub struct NewUser {
    /// The company's name, 1 to 255 characters; created when new.
    pub company: String,
    /// The user's e-mail address (their login name); an existing user of
    /// the same company gets the new password.
    pub email: String,
    /// At least 8 characters.
    pub password: String,
}

/// Add a skin API user (the appliance's administrator), as `argusd skin
/// users add` does.
#[utoipa::path(
    post,
    path = "/api/v1/appliance/skin/users/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_admin_add_user",
    request_body = NewUser,
    security(("admin_session" = []), ("admin_basic" = [])),
    responses(
        (status = 201, description = "Added (or the password set).", body = AddedUser),
        (status = 400, description = "Not JSON, a field missing, or invalid (company name, e-mail, password under 8 characters, e-mail of another company).", body = SkinErrorBody),
        (status = 401, description = "Not the appliance's administrator.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 429, description = "Too many Basic attempts; `Retry-After` says when to try again.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn admin_add_user(
    State(skin): State<Arc<Skin>>,
    admin: crate::http::extract::AdminUser,
    Json(b): Json<NewUser>,
) -> SkinResult<Response> {
    let email = b.email.clone();
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let out = blocking(move || {
        let r = add_user(&records, &b.company, &b.email, &b.password);
        store.flush()?;
        Ok(r)
    })
    .await?
    .map_err(SkinError::BadRequest)?;
    audit_ok(&skin, "user_added", &admin.0, &email);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
