//! The JSON bodies of the skin API's records, with the reference's field
//! names (`../shared/reference/skin-api.md`), as the typed structs the
//! handlers answer with and `/openapi.json` documents.
//!
//! Each struct's fields are in alphabetical order: these bodies were
//! first written with `serde_json::json!`, whose maps sort their keys, and
//! the bytes on the wire stay as they were (a test checks the order).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::catalog::{self, Named};
use super::records::{AlgoResult, Batch, Dataset, Image, ImageStatus, Subject};

pub fn side_json(side_id: u32) -> Option<Named> {
    catalog::side(side_id).map(Named::from)
}

/// DRF's page-number page: `count` items in all, `next` and `previous`
/// page links (null at the ends), this page's `results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub count: u64,
    /// This request's URL with `page` one further; null on the last page.
    pub next: Option<String>,
    /// This request's URL with `page` one back; null on the first page.
    pub previous: Option<String>,
    pub results: Vec<T>,
}

/// The application attached to a dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectedApplication {
    pub application_run_id: Uuid,
    pub enabled_algorithms: Vec<u32>,
    pub id: Uuid,
    pub name: String,
}

/// A dataset: a folder of subjects with its retention and application.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"clean_images_as_soon_as_ready": false,
    "company_id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b11", "connected_applications": [],
    "creation_time": "2025-01-31T09:30:00Z", "custom_branding": null,
    "expire_images_after_days": 30, "expire_metadata_after_days": null,
    "id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b",
    "image_type": {"id": 1, "lights": [{"id": 1, "name": "Regular", "tech_name": "regular"}],
        "name": "Selfie", "sides": [{"id": 1, "name": "Front", "tech_name": "front"}], "tech_name": "selfie"},
    "image_type_id": 1, "image_type_name": "Selfie", "image_type_tech_name": "selfie",
    "name": "Spring trial"}))]
pub struct DatasetView {
    /// Photos are erased as soon as their analysis is done.
    pub clean_images_as_soon_as_ready: bool,
    pub company_id: Uuid,
    /// The application attached (`.../applications/{id}/runs/`), if any.
    pub connected_applications: Vec<ConnectedApplication>,
    /// RFC 3339, UTC.
    pub creation_time: String,
    /// Whatever the client stored; echoed.
    pub custom_branding: Value,
    /// Photos are erased this many days (1 to 365) after upload; null: kept.
    pub expire_images_after_days: Option<u32>,
    /// Names, metadata and results are cleared this many days after
    /// creation; null: kept.
    pub expire_metadata_after_days: Option<u32>,
    pub id: Uuid,
    pub image_type: catalog::ImageType,
    pub image_type_id: u32,
    pub image_type_name: String,
    pub image_type_tech_name: String,
    pub name: String,
}

pub fn dataset_view(ds: &Dataset) -> DatasetView {
    let t = catalog::image_type_json();
    DatasetView {
        clean_images_as_soon_as_ready: ds.clean_images_as_soon_as_ready,
        company_id: ds.company_id,
        connected_applications: ds
            .run
            .iter()
            .map(|r| ConnectedApplication {
                application_run_id: r.id,
                enabled_algorithms: r.enabled_algorithms.clone(),
                id: r.application_id,
                name: catalog::APPLICATION_NAME.into(),
            })
            .collect(),
        creation_time: ds.creation_time.clone(),
        custom_branding: ds.custom_branding.clone(),
        expire_images_after_days: ds.expire_images_after_days,
        expire_metadata_after_days: ds.expire_metadata_after_days,
        id: ds.id,
        image_type_id: ds.image_type_id,
        image_type_name: t.name.clone(),
        image_type_tech_name: t.tech_name.clone(),
        image_type: t,
        name: ds.name.clone(),
    }
}

pub fn sex_json(id: Option<u32>) -> Option<Named> {
    let (name, tech) = match id? {
        1 => ("Female", "female"),
        2 => ("Male", "male"),
        3 => ("Other", "other"),
        _ => return None,
    };
    Some(Named {
        id: id?,
        name: name.into(),
        tech_name: tech.into(),
    })
}

/// A reference to a record by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdRef {
    pub id: Uuid,
}

/// A reference to a record by id, with its name.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamedRef {
    pub id: Uuid,
    pub name: String,
}

/// A subject: the person whose photos are analysed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"author_id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b12",
    "biological_sex": {"id": 1, "name": "Female", "tech_name": "female"},
    "birth_date": "1990-04-12", "company": {"id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b11"},
    "creation_time": "2025-01-31T09:31:00Z",
    "dataset": {"id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b", "name": "Spring trial"},
    "id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f", "meta": {"crm_id": "A-1042"},
    "name": "Jane Roe", "promote_image_id": null}))]
pub struct SubjectView {
    /// The user who created it.
    pub author_id: Uuid,
    /// 1 female, 2 male, 3 other; null when not given.
    pub biological_sex: Option<Named>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub company: IdRef,
    pub creation_time: String,
    pub dataset: NamedRef,
    pub id: Uuid,
    /// Whatever the client stored; echoed.
    pub meta: Value,
    pub name: String,
    /// Always null (the reference's cover photo; not kept).
    pub promote_image_id: Option<Uuid>,
}

pub fn subject_view(s: &Subject, ds: &Dataset) -> SubjectView {
    SubjectView {
        author_id: s.author_id,
        biological_sex: sex_json(s.biological_sex),
        birth_date: s.birth_date.clone(),
        company: IdRef { id: s.company_id },
        creation_time: s.creation_time.clone(),
        dataset: NamedRef {
            id: ds.id,
            name: ds.name.clone(),
        },
        id: s.id,
        meta: s.meta.clone(),
        name: s.name.clone(),
        promote_image_id: None,
    }
}

pub fn status_name(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::AwaitingUpload => "awaiting_upload",
        ImageStatus::Uploaded => "uploaded",
        ImageStatus::Queued => "processing",
        ImageStatus::Done => "done",
        ImageStatus::Failed => "failed",
    }
}

/// Links to an image's files.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageUrls {
    /// `/images/{id}.jpg` (add `?token=`); null once the photo is erased.
    pub original: Option<String>,
}

/// A photo of a batch, with its analysis state.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"all_algorithms_calculated": true,
    "batch_id": "0190f5a5-1b2c-7d3e-8f4a-5b6c7d8e9fa0", "creation_time": "2025-01-31T09:32:00Z",
    "dataset_id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b", "error": null,
    "face": {}, "id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1", "image_erased": false,
    "image_type": {"id": 1, "name": "Selfie", "tech_name": "selfie"},
    "image_type_name": "Selfie", "image_type_tech_name": "selfie",
    "light": "Regular", "light_id": 1, "light_name": "Regular", "light_tech_name": "regular",
    "meta": null, "name": "front", "original_image_id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1",
    "problems": [], "quality_feedback": null, "quality_issues": [], "quality_result": true,
    "quality_score": null, "side": {"id": 1, "name": "Front", "tech_name": "front"},
    "side_id": 1, "side_name": "Front", "side_tech_name": "front", "signed_url": null,
    "stage_number": null, "stage_step_number": null, "status": "done",
    "subject_id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f",
    "urls": {"original": "/images/0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1.jpg"}}))]
pub struct ImageView {
    /// Every enabled algorithm has its result (or the image failed).
    pub all_algorithms_calculated: bool,
    pub batch_id: Uuid,
    pub creation_time: String,
    pub dataset_id: Uuid,
    /// Why the image could not be analysed.
    pub error: Option<String>,
    /// The face's geometry and the photo's quality measures, once analysed.
    pub face: Value,
    pub id: Uuid,
    /// The photo was erased (retention or "delete photos"); results stay.
    pub image_erased: bool,
    pub image_type: Named,
    pub image_type_name: String,
    pub image_type_tech_name: String,
    /// The light's name, as text (the reference lists `light` as a
    /// string next to the `side` object); `light_id` is its id.
    pub light: String,
    pub light_id: u32,
    pub light_name: String,
    pub light_tech_name: String,
    pub meta: Value,
    pub name: String,
    pub original_image_id: Uuid,
    /// The detection error and the error, if any.
    pub problems: Vec<String>,
    /// Always null (not computed).
    pub quality_feedback: Option<String>,
    /// Quality reason codes (`NO_FACE`, `BLURRY`, ...).
    pub quality_issues: Vec<String>,
    /// Once done: whether the photo passed every quality check.
    pub quality_result: Option<bool>,
    /// Always null (not computed).
    pub quality_score: Option<f64>,
    pub side: Option<Named>,
    /// 1 front, 2 right, 3 left.
    pub side_id: u32,
    pub side_name: Option<String>,
    pub side_tech_name: Option<String>,
    /// Always null here (the v3 batch info has signed URLs).
    pub signed_url: Option<String>,
    /// Always null.
    pub stage_number: Option<u32>,
    /// Always null.
    pub stage_step_number: Option<u32>,
    /// `awaiting_upload`, `uploaded`, `processing`, `done` or `failed`.
    pub status: String,
    pub subject_id: Uuid,
    pub urls: ImageUrls,
}

/// An image as the v1 endpoints and the v3 batch list show it.
pub fn image_view(i: &Image) -> ImageView {
    let side = catalog::side(i.side_id);
    let t = catalog::image_type_json();
    ImageView {
        all_algorithms_calculated: i.all_calculated(),
        batch_id: i.batch_id,
        creation_time: i.creation_time.clone(),
        dataset_id: i.dataset_id,
        error: i.error.clone(),
        face: i.face.clone(),
        id: i.id,
        image_erased: i.blob.is_none() && i.status != ImageStatus::AwaitingUpload,
        image_type: t.named(),
        image_type_name: t.name,
        image_type_tech_name: t.tech_name,
        light: "Regular".into(),
        light_id: i.light_id,
        light_name: "Regular".into(),
        light_tech_name: "regular".into(),
        meta: i.meta.clone(),
        name: i.name.clone(),
        original_image_id: i.id,
        problems: i
            .detection_error
            .iter()
            .chain(i.error.iter())
            .cloned()
            .collect(),
        quality_feedback: None,
        quality_issues: i.quality_issues.clone(),
        quality_result: (i.status == ImageStatus::Done).then_some(i.quality_issues.is_empty()),
        quality_score: None,
        side: side_json(i.side_id),
        side_id: i.side_id,
        side_name: side.map(|s| s.name.into()),
        side_tech_name: side.map(|s| s.tech_name.into()),
        signed_url: None,
        stage_number: None,
        stage_step_number: None,
        status: status_name(i.status).into(),
        subject_id: i.subject_id,
        urls: ImageUrls {
            original: i.blob.as_ref().map(|_| format!("/images/{}.jpg", i.id)),
        },
    }
}

/// A batch: the photos of one sitting (front, right, left).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"connected_applications": ["61726775-732d-4000-8000-736b696e0001"],
    "creation_time": "2025-01-31T09:32:00Z", "dataset_id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b",
    "id": "0190f5a5-1b2c-7d3e-8f4a-5b6c7d8e9fa0", "images": [], "meta": null,
    "subject_id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f"}))]
pub struct BatchView {
    /// The application ids its images were sent to for analysis; empty
    /// until one was.
    pub connected_applications: Vec<Uuid>,
    pub creation_time: String,
    pub dataset_id: Uuid,
    pub id: Uuid,
    pub images: Vec<ImageView>,
    pub meta: Value,
    pub subject_id: Uuid,
}

pub fn batch_view(b: &Batch, images: &[Image]) -> BatchView {
    BatchView {
        connected_applications: connected_applications(images),
        creation_time: b.creation_time.clone(),
        dataset_id: b.dataset_id,
        id: b.id,
        images: images.iter().map(image_view).collect(),
        meta: b.meta.clone(),
        subject_id: b.subject_id,
    }
}

/// One algorithm's result for an image (a v1 `results/` row; also each
/// `results_streaming` message and each row of a webhook's `results`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"algorithm_tech_name": "selfie_v2.redness", "algorithm_version_id": 30,
    "all_algorithms_calculated": true,
    "application_description": "Face detection and mesh, ITA and skin-tone class, redness (a*, erythema index), dark circles (ΔL*, ΔE*ab) and perceived age, computed on the appliance; see /api/v1/dicts/algorithms/ for each",
    "application_id": "61726775-732d-4000-8000-736b696e0001", "application_name": "argus Skin Metrics",
    "application_run_id": "0190f5a4-a1b2-7c3d-8e4f-5a6b7c8d9e0f", "creation_time": "2025-01-31T09:32:04Z",
    "id": "0190f5a5-3d4e-7f5a-8b6c-7d8e9fa0b1c2", "image_id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1",
    "is_ok": true, "result": {"a_star": 14.2, "erythema_index": 31.5}}))]
pub struct ResultRow {
    pub algorithm_tech_name: Option<String>,
    /// The algorithm's id (`/api/v1/dicts/algorithms/`).
    pub algorithm_version_id: u32,
    /// Every enabled algorithm of the image has its result.
    pub all_algorithms_calculated: bool,
    pub application_description: String,
    pub application_id: Uuid,
    pub application_name: String,
    pub application_run_id: Option<Uuid>,
    pub creation_time: String,
    pub id: Uuid,
    pub image_id: Uuid,
    /// The algorithm could measure the photo (a face was found, the
    /// quality was enough).
    pub is_ok: bool,
    /// The algorithm's output; its fields are described with the
    /// algorithm (`/api/v1/dicts/algorithms/`).
    pub result: Value,
}

fn row(i: &Image, r: &AlgoResult) -> ResultRow {
    ResultRow {
        algorithm_tech_name: catalog::algorithm(r.algorithm_version_id).map(|a| a.tech_name.into()),
        algorithm_version_id: r.algorithm_version_id,
        all_algorithms_calculated: i.all_calculated(),
        application_description: catalog::APPLICATION_DESCRIPTION.into(),
        application_id: app_id(Some(i)),
        application_name: catalog::APPLICATION_NAME.into(),
        application_run_id: i.app_run_id,
        creation_time: r.creation_time.clone(),
        id: r.id,
        image_id: i.id,
        is_ok: r.is_ok,
        result: r.result.clone(),
    }
}

/// The v1 `results/` rows of an image.
pub fn result_rows(i: &Image) -> Vec<ResultRow> {
    i.results.iter().map(|r| row(i, r)).collect()
}

/// An auxiliary image's type.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuxImageType {
    pub name: String,
    pub tech_name: String,
}

/// A result an auxiliary image illustrates.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuxResult {
    pub algorithm_version_id: u32,
    pub result: Value,
}

/// An image the analysis made (a v1 `aux/` row).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"aux_image_type": {"name": "redness_heatmap", "tech_name": "redness_heatmap"},
    "content_type": "image/jpeg", "id": "0190f5a5-4e5f-7a6b-9c7d-8e9fa0b1c2d3",
    "results": [{"algorithm_version_id": 30, "result": {"a_star": 14.2}}],
    "url": "/images/0190f5a5-4e5f-7a6b-9c7d-8e9fa0b1c2d3.jpg"}))]
pub struct AuxRow {
    /// `aligned_face`, `anonymised`, `redness_heatmap` or `area_masks`.
    pub aux_image_type: AuxImageType,
    pub content_type: String,
    pub id: Uuid,
    pub results: Vec<AuxResult>,
    /// `/images/{id}.{ext}` (add `?token=`).
    pub url: String,
}

/// The v1 `aux/` rows of an image.
pub fn aux_rows(i: &Image) -> Vec<AuxRow> {
    i.aux
        .iter()
        .map(|a| AuxRow {
            aux_image_type: AuxImageType {
                name: a.kind.clone(),
                tech_name: a.kind.clone(),
            },
            content_type: a.content_type.clone(),
            id: a.id,
            results: i
                .results
                .iter()
                .filter(|r| a.algorithm_version_ids.contains(&r.algorithm_version_id))
                .map(|r| AuxResult {
                    algorithm_version_id: r.algorithm_version_id,
                    result: r.result.clone(),
                })
                .collect(),
            url: format!("/images/{}.{}", a.id, extension(&a.content_type)),
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

/// The applications a batch's images were sent to for analysis (queued,
/// done or failed), each once: none while no image was.
pub fn connected_applications(images: &[Image]) -> Vec<uuid::Uuid> {
    let mut out: Vec<uuid::Uuid> = Vec::new();
    for i in images {
        let sent = matches!(
            i.status,
            ImageStatus::Queued | ImageStatus::Done | ImageStatus::Failed
        );
        let a = app_id(Some(i));
        if sent && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
pub mod tests {
    use serde::Serialize;
    use serde_json::Value;

    use super::*;

    /// `v`'s JSON has its keys in the order `serde_json::json!` wrote
    /// them (sorted, at every level), so the bytes on the wire are those
    /// the hand-built bodies had.
    pub fn assert_sorted<T: Serialize>(v: &T) {
        let typed = serde_json::to_string(v).unwrap();
        let sorted = serde_json::to_value(v).unwrap().to_string();
        assert_eq!(typed, sorted);
    }

    /// An analysed image with an auxiliary image and a result, in an
    /// attached dataset.
    pub fn records() -> (Dataset, Subject, Batch, Image) {
        use super::super::records::{AlgoResult, AppRun, AuxImage};
        let id = uuid::Uuid::now_v7;
        let t = "2025-01-31T09:30:00Z".to_string();
        let ds = Dataset {
            id: id(),
            company_id: id(),
            name: "trial".into(),
            image_type_id: 1,
            expire_images_after_days: Some(30),
            expire_metadata_after_days: None,
            clean_images_as_soon_as_ready: false,
            custom_branding: serde_json::json!({"b": 1, "a": 2}),
            creation_time: t.clone(),
            run: Some(AppRun {
                id: id(),
                application_id: catalog::APPLICATION_ID,
                enabled_algorithms: vec![30, 40],
                creation_time: t.clone(),
            }),
        };
        let sub = Subject {
            id: id(),
            company_id: ds.company_id,
            dataset_id: ds.id,
            name: "Jane".into(),
            birth_date: Some("1990-04-12".into()),
            biological_sex: Some(1),
            meta: serde_json::json!({"z": 1, "k": [1]}),
            author_id: id(),
            creation_time: t.clone(),
        };
        let b = Batch {
            id: id(),
            company_id: ds.company_id,
            dataset_id: ds.id,
            subject_id: sub.id,
            creation_time: t.clone(),
            meta: Value::Null,
            app_args: Value::Null,
        };
        let img = Image {
            id: id(),
            company_id: ds.company_id,
            dataset_id: ds.id,
            subject_id: sub.id,
            batch_id: b.id,
            side_id: 1,
            light_id: 1,
            name: "front".into(),
            creation_time: t.clone(),
            created_unix: 1_738_315_800,
            blob: Some("skin/x".into()),
            status: ImageStatus::Done,
            error: None,
            enabled: vec![30, 40],
            app_run_id: ds.run.as_ref().map(|r| r.id),
            application_id: None,
            results: vec![AlgoResult {
                id: id(),
                algorithm_version_id: 30,
                result: serde_json::json!({"a_star": 14.2}),
                is_ok: true,
                creation_time: t.clone(),
            }],
            aux: vec![AuxImage {
                id: id(),
                kind: "redness_heatmap".into(),
                blob: "skin/y".into(),
                content_type: "image/jpeg".into(),
                algorithm_version_ids: vec![30],
            }],
            quality_issues: vec![],
            detection_error: Some("NO_FACE".into()),
            parameters: None,
            face: serde_json::json!({"box": [1, 2, 3, 4]}),
            masks: Default::default(),
            processed_at: Some(t),
            processed_unix: Some(1_738_315_804),
            meta: Value::Null,
            upload_expires_unix: None,
            results_cleared_unix: None,
            clearings: 0,
            queued_unix: None,
        };
        (ds, sub, b, img)
    }

    #[test]
    fn the_typed_bodies_keep_their_key_order() {
        let (ds, sub, b, img) = records();
        assert_sorted(&catalog::image_type_json());
        assert_sorted(&catalog::application_json());
        assert_sorted(&dataset_view(&ds));
        assert_sorted(&subject_view(&sub, &ds));
        assert_sorted(&image_view(&img));
        assert_sorted(&batch_view(&b, std::slice::from_ref(&img)));
        assert_sorted(&result_rows(&img));
        assert_sorted(&aux_rows(&img));
    }

    #[test]
    fn a_batch_is_connected_once_an_image_was_sent_for_analysis() {
        let (_, _, _, img) = records();
        let waiting = Image {
            status: ImageStatus::Uploaded,
            ..img.clone()
        };
        assert!(connected_applications(std::slice::from_ref(&waiting)).is_empty());
        let done = Image {
            status: ImageStatus::Done,
            ..img
        };
        assert_eq!(
            connected_applications(&[waiting, done.clone(), done.clone()]),
            vec![app_id(Some(&done))]
        );
    }
}
