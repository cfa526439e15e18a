//! Photos coming in (v1 b64 bodies, v3 signed PUTs): checked before they
//! are stored, stored before they are acknowledged, and queued for
//! analysis when their dataset runs the application (v1) or when the
//! client calls `/compute/` (v3).
//!
//! Checks, each with the family's error shape: the side is one of the
//! selfie type's (1 front, 2 right, 3 left) and not already in the batch;
//! the light is 1 (regular); the photo is 1 byte to
//! `skin_api.max_image_bytes`; its header names an accepted still-image
//! format within `limits.max_pixels`. A photo that passes and still cannot
//! be decoded, or shows no face, is reported in its results.

use serde_json::Value;
use uuid::Uuid;

use super::catalog;
use super::error::{SkinError, SkinResult};
use super::records::{Batch, Dataset, Image, ImageStatus, SkinStore};
use super::service::Skin;
use crate::store::{blocking, now_rfc3339, unix_now};

pub struct NewImage {
    pub side_id: u32,
    pub light_id: u32,
    pub name: String,
    pub meta: Value,
    /// None: the bytes come later through a signed upload URL.
    pub bytes: Option<Vec<u8>>,
    /// When the photo was taken, if the client says (RFC 3339 and unix
    /// seconds); else now. History and smoothing go by it.
    pub taken_at: Option<(String, u64)>,
}

/// A client's `creation_time`: RFC 3339, or a date and time without an
/// offset (taken as UTC), at most a day ahead of the appliance's clock.
pub fn taken_at(field: &'static str, v: Option<&str>) -> SkinResult<Option<(String, u64)>> {
    use time::format_description::well_known::Rfc3339;
    let Some(s) = v.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        SkinError::Field(
            field,
            "Datetime has wrong format. Use RFC 3339, e.g. 2026-11-30T09:15:00Z.".into(),
        )
    };
    let t = time::OffsetDateTime::parse(s, &Rfc3339).or_else(|_| {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        time::PrimitiveDateTime::parse(s, &fmt)
            .map(|p| p.assume_utc())
            .map_err(|_| bad())
    })?;
    let unix = t.unix_timestamp();
    if unix < 0 {
        return Err(bad());
    }
    if unix as u64 > unix_now() + 86_400 {
        return Err(SkinError::Field(field, "Must not be in the future.".into()));
    }
    let text = t
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|_| bad())?;
    Ok(Some((text, unix as u64)))
}

/// The blob key of image `id`'s photo.
pub fn blob_key(id: Uuid) -> String {
    format!("skin/{id}.img")
}

/// Check a photo's bytes: size, then what its header says.
pub fn check_bytes(skin: &Skin, bytes: &[u8]) -> SkinResult<()> {
    let max = skin.config.skin_api.max_image_bytes;
    if bytes.is_empty() {
        return Err(SkinError::BadRequest(
            "The image is empty (0 bytes).".into(),
        ));
    }
    if bytes.len() > max {
        return Err(SkinError::PayloadTooLarge(format!(
            "The image is {} bytes; the largest accepted is {max} bytes.",
            bytes.len()
        )));
    }
    crate::imaging::decode::probe(bytes, &skin.decode_limits)?;
    Ok(())
}

/// The side of a new image, once its side, light, name and bytes (when
/// given) are valid; else the field at fault.
fn check_new_image(skin: &Skin, new: &NewImage) -> SkinResult<catalog::Side> {
    let side = catalog::side(new.side_id).ok_or_else(|| {
        SkinError::Field(
            "side_id",
            format!(
                "Side {} is not a side of image type selfie (1 front, 2 right, 3 left).",
                new.side_id
            ),
        )
    })?;
    if new.light_id != catalog::LIGHT_REGULAR {
        return Err(SkinError::Field(
            "light_id",
            format!(
                "Light {} is not a light of image type selfie (1 regular).",
                new.light_id
            ),
        ));
    }
    if new.name.trim().is_empty() || new.name.chars().count() > 255 {
        return Err(SkinError::Field(
            "name",
            "Must be 1 to 255 characters.".into(),
        ));
    }
    if new.name.contains('\0') {
        return Err(SkinError::Field(
            "name",
            "Null characters are not allowed.".into(),
        ));
    }
    if let Some(b) = &new.bytes {
        check_bytes(skin, b)?;
    }
    Ok(side)
}

/// The record of a new image of batch `bt`: awaiting its upload without
/// bytes, else queued when the dataset runs the application, else uploaded.
fn new_record(skin: &Skin, ds: &Dataset, bt: &Batch, new: &NewImage, side: catalog::Side) -> Image {
    let id = Uuid::now_v7();
    let queued = new.bytes.is_some() && ds.run.is_some();
    Image {
        id,
        company_id: bt.company_id,
        dataset_id: bt.dataset_id,
        subject_id: bt.subject_id,
        batch_id: bt.id,
        side_id: side.id,
        light_id: new.light_id,
        name: new.name.trim().to_string(),
        creation_time: new
            .taken_at
            .as_ref()
            .map(|t| t.0.clone())
            .unwrap_or_else(now_rfc3339),
        created_unix: new.taken_at.as_ref().map(|t| t.1).unwrap_or_else(unix_now),
        blob: new.bytes.as_ref().map(|_| blob_key(id)),
        status: match (&new.bytes, queued) {
            (None, _) => ImageStatus::AwaitingUpload,
            (Some(_), true) => ImageStatus::Queued,
            (Some(_), false) => ImageStatus::Uploaded,
        },
        error: None,
        enabled: enabled_for(ds),
        app_run_id: ds.run.as_ref().map(|r| r.id),
        application_id: ds.run.as_ref().map(|r| r.application_id),
        results: Vec::new(),
        aux: Vec::new(),
        quality_issues: Vec::new(),
        detection_error: None,
        parameters: None,
        masks: Default::default(),
        face: Value::Null,
        processed_at: None,
        processed_unix: None,
        meta: new.meta.clone(),
        upload_expires_unix: new
            .bytes
            .is_none()
            .then(|| crate::store::unix_now() + skin.config.skin_api.upload_url_secs),
        results_cleared_unix: None,
        clearings: 0,
        queued_unix: None,
    }
}

/// Add an image to batch `bt` of dataset `ds`; with bytes, stored and
/// (when the dataset runs the application) queued at once.
pub async fn add_image(skin: &Skin, ds: &Dataset, bt: &Batch, new: NewImage) -> SkinResult<Image> {
    let side = check_new_image(skin, &new)?;
    let img = new_record(skin, ds, bt, &new, side);
    let (records, store, queue, x) = (
        skin.records.clone(),
        skin.store.clone(),
        skin.queue.clone(),
        img.clone(),
    );
    let bytes = new.bytes;
    let stored = blocking(move || {
        // The photo's file first, outside the batch's lock: its key is the
        // new image's own, so no one else reads or writes it, and a refusal
        // deletes it again.
        if let (Some(b), Some(key)) = (&bytes, &x.blob) {
            store.blobs.put(key, b)?;
        }
        let added = add_record(&records, &queue, &x);
        // Refused, or failed before its record was stored: the file is no
        // one's. (Failed after: the record names it, so it stays; and when
        // that cannot be read.)
        let orphan = !matches!(added, Ok(true))
            && matches!(SkinStore::get::<Image>(&records.images, x.id), Ok(None));
        if orphan {
            if let Some(key) = &x.blob {
                if let Err(e) = store.blobs.delete(key) {
                    tracing::warn!(%key, error = %e, "skin: refused photo's file not deleted");
                }
            }
        }
        let added = added?;
        if added {
            store.flush()?;
        }
        Ok(added)
    })
    .await?;
    if !stored {
        return Err(SkinError::Field(
            "side_id",
            format!(
                "The batch already has a {} image; use a new batch.",
                side.tech_name
            ),
        ));
    }
    if img.blob.is_some() {
        skin.queue.wake();
    }
    Ok(img)
}

/// Store the record of new image `x` and queue it when it is, under its
/// batch's intake lock; false, storing nothing, when the batch already has
/// an image of its side.
fn add_record(
    records: &SkinStore,
    queue: &crate::jobs::JobQueue,
    x: &Image,
) -> Result<bool, crate::store::StoreError> {
    let _intake = records.intake_lock(x.batch_id);
    if records
        .batch_images(x.batch_id)?
        .iter()
        .any(|i| i.side_id == x.side_id)
    {
        return Ok(false);
    }
    records.put_image(x)?;
    if x.status == ImageStatus::Queued {
        queue.enqueue(x.id)?;
    } else if x.status == ImageStatus::Uploaded {
        // The application may have been attached since the request read
        // its dataset; the attachment's scan may then have missed this
        // image, so look again now that it is stored.
        let ds: Option<Dataset> = SkinStore::get(&records.datasets, x.dataset_id)?;
        if let Some(ds) = ds.filter(|d| d.run.is_some()) {
            if queue_if_uploaded(records, x.id, Some(&ds))? {
                queue.enqueue(x.id)?;
            }
        }
    }
    Ok(true)
}

/// Mark image `id` queued with `ds`'s run, if it is still only uploaded:
/// the check is inside the atomic update, so of two paths queueing it at
/// once (an attachment and a `/compute/`, or two attachments) one does.
/// Returns whether this call queued it; the caller then enqueues it.
pub fn queue_if_uploaded(
    records: &super::records::SkinStore,
    id: Uuid,
    ds: Option<&Dataset>,
) -> Result<bool, crate::store::StoreError> {
    let mut changed = false;
    records.update_image(id, |i| {
        // Called again when the update retries: decided afresh each time.
        changed = i.status == ImageStatus::Uploaded;
        if !changed {
            return;
        }
        i.status = ImageStatus::Queued;
        i.results_cleared_unix = None;
        i.queued_unix = Some(unix_now());
        if let Some(ds) = ds {
            i.enabled = enabled_for(ds);
            i.app_run_id = ds.run.as_ref().map(|r| r.id);
            i.application_id = ds.run.as_ref().map(|r| r.application_id);
        }
    })?;
    Ok(changed)
}

/// The algorithms an image of `ds` runs: its run's, or every computed one.
pub fn enabled_for(ds: &Dataset) -> Vec<u32> {
    ds.run
        .as_ref()
        .map(|r| r.enabled_algorithms.clone())
        .unwrap_or_else(catalog::computed_ids)
}
