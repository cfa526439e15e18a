//! The JSON bodies of the skin API's records, with the reference's field
//! names (`../shared/reference/skin-api.md`).

use serde_json::{json, Value};

use super::catalog;
use super::records::{AlgoResult, Batch, Dataset, Image, ImageStatus, Subject};

pub fn side_json(side_id: u32) -> Value {
    match catalog::side(side_id) {
        Some(s) => json!({"id": s.id, "name": s.name, "tech_name": s.tech_name}),
        None => Value::Null,
    }
}

fn connected(ds: &Dataset) -> Value {
    match &ds.run {
        Some(r) => json!([{"id": r.application_id, "name": catalog::APPLICATION_NAME,
            "application_run_id": r.id, "enabled_algorithms": r.enabled_algorithms}]),
        None => json!([]),
    }
}

pub fn dataset_view(ds: &Dataset) -> Value {
    let t = catalog::image_type_json();
    json!({
        "id": ds.id, "company_id": ds.company_id, "name": ds.name,
        "image_type": t, "image_type_id": ds.image_type_id,
        "image_type_name": t["name"], "image_type_tech_name": t["tech_name"],
        "connected_applications": connected(ds),
        "expire_images_after_days": ds.expire_images_after_days,
        "expire_metadata_after_days": ds.expire_metadata_after_days,
        "clean_images_as_soon_as_ready": ds.clean_images_as_soon_as_ready,
        "custom_branding": ds.custom_branding,
        "creation_time": ds.creation_time,
    })
}

pub fn sex_json(id: Option<u32>) -> Value {
    let (name, tech) = match id {
        Some(1) => ("Female", "female"),
        Some(2) => ("Male", "male"),
        Some(3) => ("Other", "other"),
        _ => return Value::Null,
    };
    json!({"id": id, "name": name, "tech_name": tech})
}

pub fn subject_view(s: &Subject, ds: &Dataset) -> Value {
    json!({
        "id": s.id, "name": s.name, "birth_date": s.birth_date,
        "biological_sex": sex_json(s.biological_sex), "meta": s.meta,
        "author_id": s.author_id, "creation_time": s.creation_time,
        "company": {"id": s.company_id}, "dataset": {"id": ds.id, "name": ds.name},
        "promote_image_id": null,
    })
}

fn status_name(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::AwaitingUpload => "awaiting_upload",
        ImageStatus::Uploaded => "uploaded",
        ImageStatus::Queued => "processing",
        ImageStatus::Done => "done",
        ImageStatus::Failed => "failed",
    }
}

/// An image as the v1 endpoints and the v3 batch list show it.
pub fn image_view(i: &Image) -> Value {
    let side = catalog::side(i.side_id);
    let t = catalog::image_type_json();
    json!({
        "id": i.id, "name": i.name, "batch_id": i.batch_id, "subject_id": i.subject_id,
        "dataset_id": i.dataset_id,
        "side": side_json(i.side_id), "side_id": i.side_id,
        "side_name": side.map(|s| s.name), "side_tech_name": side.map(|s| s.tech_name),
        "light": i.light_id, "light_id": i.light_id, "light_name": "Regular", "light_tech_name": "regular",
        "image_type": {"id": t["id"], "name": t["name"], "tech_name": t["tech_name"]},
        "image_type_name": t["name"], "image_type_tech_name": t["tech_name"],
        "creation_time": i.creation_time,
        "status": status_name(i.status), "error": i.error,
        "quality_score": null, "quality_feedback": null,
        "quality_result": if i.status == ImageStatus::Done { json!(i.quality_issues.is_empty()) } else { Value::Null },
        "quality_issues": i.quality_issues,
        "problems": i.detection_error.iter().chain(i.error.iter()).collect::<Vec<_>>(),
        "stage_step_number": null, "stage_number": null,
        "urls": {"original": i.blob.as_ref().map(|_| format!("/images/{}.jpg", i.id))},
        "signed_url": null, "original_image_id": i.id,
        "image_erased": i.blob.is_none() && i.status != ImageStatus::AwaitingUpload,
        "all_algorithms_calculated": i.all_calculated(),
        "face": i.face,
        "meta": i.meta,
    })
}

pub fn batch_view(b: &Batch, images: &[Image]) -> Value {
    json!({
        "id": b.id, "creation_time": b.creation_time, "subject_id": b.subject_id,
        "dataset_id": b.dataset_id, "meta": b.meta,
        "images": images.iter().map(image_view).collect::<Vec<_>>(),
        "connected_applications": [app_id(images.first())],
    })
}

fn row(i: &Image, r: &AlgoResult) -> Value {
    json!({
        "id": r.id, "result": r.result, "is_ok": r.is_ok, "image_id": i.id,
        "algorithm_version_id": r.algorithm_version_id,
        "algorithm_tech_name": catalog::algorithm(r.algorithm_version_id).map(|a| a.tech_name),
        "creation_time": r.creation_time,
        "application_id": app_id(Some(i)),
        "application_name": catalog::APPLICATION_NAME,
        "application_description": catalog::APPLICATION_DESCRIPTION,
        "application_run_id": i.app_run_id,
        "all_algorithms_calculated": i.all_calculated(),
    })
}

/// The v1 `results/` rows of an image.
pub fn result_rows(i: &Image) -> Vec<Value> {
    i.results.iter().map(|r| row(i, r)).collect()
}

/// The v1 `aux/` rows of an image.
pub fn aux_rows(i: &Image) -> Vec<Value> {
    i.aux
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "aux_image_type": {"name": a.kind, "tech_name": a.kind},
                "content_type": a.content_type,
                "url": format!("/images/{}.{}", a.id, extension(&a.content_type)),
                "results": i.results.iter()
                    .filter(|r| a.algorithm_version_ids.contains(&r.algorithm_version_id))
                    .map(|r| json!({"algorithm_version_id": r.algorithm_version_id, "result": r.result}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/svg+xml" => "svg",
        _ => "jpg",
    }
}

/// The application id an image was analysed under, as the client named it.
pub fn app_id(i: Option<&Image>) -> uuid::Uuid {
    i.and_then(|i| i.application_id)
        .unwrap_or(catalog::APPLICATION_ID)
}
