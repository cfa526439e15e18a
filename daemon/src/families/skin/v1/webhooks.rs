//! The dataset's webhook: set, read, delete.
use super::*;

/// Set the dataset's webhook (posting again replaces it): called when
/// each image of the dataset has its results or failed, signed with
/// `X-Argus-Signature` (its `secret_key` is in this answer only).
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_set_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    request_body = WebhookBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Set; `secret_key` signs the calls.", body = WebhookView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (the URL must be HTTPS and not an internal address unless `outbound.allow` permits it).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too).", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn set_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<WebhookBody>,
) -> SkinResult<Response> {
    dataset(&skin, &caller, c, d).await?;
    let w = super::super::hooks::configure(&skin, d, b).await?;
    Ok((
        StatusCode::CREATED,
        Json(super::super::hooks::view(&w, true)),
    )
        .into_response())
}

/// The dataset's webhook (without its secret).
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_get_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The webhook.", body = WebhookView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company, or it has no webhook.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn get_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<WebhookView>> {
    dataset(&skin, &caller, c, d).await?;
    let records = skin.records.clone();
    let w = blocking(move || SkinStore::get::<Webhook>(&records.webhooks, d))
        .await?
        .ok_or_else(|| SkinError::not_found("Webhook"))?;
    Ok(Json(super::super::hooks::view(&w, false)))
}

/// Remove the dataset's webhook.
#[utoipa::path(
    delete,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_delete_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company, or it has no webhook.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<StatusCode> {
    dataset(&skin, &caller, c, d).await?;
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let had = blocking(move || {
        let had = records.webhooks.remove(d.as_bytes())?.is_some();
        store.flush()?;
        Ok(had)
    })
    .await?;
    if had {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SkinError::not_found("Webhook"))
    }
}
