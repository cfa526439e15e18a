//! Data retention per dataset, and the erasures a client asks for.
//!
//! - `expire_images_after_days = N`: N days after an image was uploaded,
//!   its photo and every image made from it (aligned face, anonymised
//!   copy, heat map, masks) are erased; the results stay.
//! - `expire_metadata_after_days = M`: M days after upload, its results
//!   (the "metadata") are erased; the record keeps only that it existed.
//! - `clean_images_as_soon_as_ready`: the photos are erased as soon as
//!   their results are stored (by the analysis itself), and a sweep runs
//!   when the setting is turned on for the photos already analysed.
//!
//! A sweep runs at start, every `skin_api.retention_sweep_secs`, and when
//! a dataset's settings change; it works from the records, so days that
//! passed while the appliance was off are caught up at the next start.
//! Blob files are queued for deletion in the same flush as the records
//! (the platform's cleanup queue), so a crash leaves no photo behind.

use std::sync::Arc;
use std::time::Duration;

use super::error::SkinResult;
use super::records::{Dataset, Image, ImageStatus, SkinStore};
use super::service::Skin;
use crate::store::{blocking, unix_now, Store, StoreError};
use uuid::Uuid;

const DAY: u64 = 86_400;
/// How long a photo on the analysis queue is kept past its expiry.
const QUEUED_GRACE_SECS: u64 = DAY;

/// What retention does to one image at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    pub erase_images: bool,
    pub clear_results: bool,
}

/// The retention rule of dataset `ds` applied to `img` at `now` (unix s).
pub fn due(ds: &Dataset, img: &Image, now: u64) -> Due {
    let age = now.saturating_sub(img.created_unix);
    let has_images = img.blob.is_some() || !img.aux.is_empty();
    let finished = matches!(img.status, ImageStatus::Done | ImageStatus::Failed);
    // A photo on the analysis queue is analysed first, however old its
    // `creation_time` says it is: a back-dated upload would otherwise be
    // erased between its arrival and its analysis, and fail; the next
    // sweep after the analysis erases it. For a day at most: a queue that
    // does not move must not keep photos past their time.
    let queued = img.status == ImageStatus::Queued
        && img
            .queued_unix
            .is_some_and(|t| now.saturating_sub(t) < QUEUED_GRACE_SECS);
    Due {
        erase_images: has_images
            && !queued
            && (ds
                .expire_images_after_days
                .is_some_and(|n| age >= n as u64 * DAY)
                || (ds.clean_images_as_soon_as_ready && finished)),
        clear_results: (!img.results.is_empty() || img.parameters.is_some())
            && ds
                .expire_metadata_after_days
                .is_some_and(|m| age >= m as u64 * DAY),
    }
}

/// Queue image `img`'s files for deletion: the photo and the images made
/// from it.
pub fn queue_blob_cleanup(store: &Store, img: &Image, with_aux: bool) -> Result<(), StoreError> {
    let tree = store.cleanup_tree();
    if let Some(b) = &img.blob {
        tree.insert(b.as_bytes(), &[])?;
    }
    if with_aux {
        for a in &img.aux {
            tree.insert(a.blob.as_bytes(), &[])?;
        }
    }
    Ok(())
}

/// Erase image `img`'s photo and derived images (not flushed: the caller
/// flushes with its own writes).
pub fn erase_one(skin: &Skin, img: &Image, keep_aux: bool) -> Result<(), StoreError> {
    let cleanup = skin.store.cleanup_tree();
    skin.records
        .update_image_dropping_files(cleanup, img.id, |i| {
            i.blob = None;
            if !keep_aux {
                i.aux.clear();
            }
        })?;
    Ok(())
}

fn clear_one(skin: &Skin, img: &Image) -> Result<(), StoreError> {
    let cleanup = skin.store.cleanup_tree();
    skin.records
        .update_image_dropping_files(cleanup, img.id, |i| {
            i.clear_analysis();
            i.clearings = i.clearings.wrapping_add(1);
            // Only a finished analysis is over; one still to run is not.
            if matches!(i.status, ImageStatus::Done | ImageStatus::Failed) {
                i.results_cleared_unix = Some(crate::store::unix_now());
            }
        })?;
    Ok(())
}

/// Apply every dataset's rules at `now`; returns (images erased, results
/// cleared).
pub fn sweep(skin: &Skin, now: u64) -> Result<(usize, usize), StoreError> {
    let datasets = SkinStore::scan(&skin.records.datasets, |d: &Dataset| {
        d.expire_images_after_days.is_some()
            || d.expire_metadata_after_days.is_some()
            || d.clean_images_as_soon_as_ready
    })?;
    let (mut erased, mut cleared) = (0, 0);
    // Records of uploads that can no longer come: nothing to erase but the
    // record, which no view shows (`SkinStore::batch_images`).
    let lapsed = SkinStore::scan(&skin.records.images, |i: &Image| i.upload_lapsed(now))?;
    for img in &lapsed {
        skin.records.remove_if_lapsed(img, now)?;
    }
    if !lapsed.is_empty() {
        skin.store.flush()?;
        tracing::info!(count = lapsed.len(), "skin: lapsed uploads removed");
    }
    for ds in &datasets {
        for img in SkinStore::scan(&skin.records.images, |i: &Image| i.dataset_id == ds.id)? {
            let d = due(ds, &img, now);
            if d.erase_images {
                erase_one(skin, &img, false)?;
                erased += 1;
            }
            if d.clear_results {
                clear_one(skin, &img)?;
                cleared += 1;
            }
        }
    }
    if erased + cleared > 0 {
        skin.store.flush()?;
        skin.store.run_cleanup()?;
        tracing::info!(erased, cleared, "skin retention sweep");
        let detail = format!("{erased} image(s) erased, {cleared} result set(s) cleared");
        skin.audit.record(
            crate::audit::Event {
                family: "skin",
                action: "retention_sweep",
                actor: Some("retention"),
                detail: Some(&detail),
                ..Default::default()
            },
            crate::audit::Outcome::Ok,
        );
    }
    Ok((erased, cleared))
}

/// A sweep now, off the async workers; failures are logged.
pub async fn sweep_now(skin: &Arc<Skin>) {
    let s = skin.clone();
    if let Err(e) = blocking(move || sweep(&s, unix_now())).await {
        tracing::error!(error = %e, "skin retention sweep failed");
    }
}

/// Sweep at start and every `skin_api.retention_sweep_secs` until `shutdown`.
pub async fn run(skin: Arc<Skin>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_secs(skin.config.skin_api.retention_sweep_secs.max(1));
    loop {
        sweep_now(&skin).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return; },
        }
    }
}

/// Erase the photos (and, `with_aux`, derived images) of subject
/// `subject`'s images. Returns how many images had any.
pub async fn erase_subject_images(
    skin: &Arc<Skin>,
    subject: Uuid,
    with_aux: bool,
) -> SkinResult<usize> {
    let s = skin.clone();
    Ok(blocking(move || {
        let imgs = s
            .records
            .subject_images(subject, |i: &Image| i.blob.is_some() || !i.aux.is_empty())?;
        for img in &imgs {
            erase_one(&s, img, !with_aux)?;
        }
        s.store.flush()?;
        s.store.run_cleanup()?;
        Ok(imgs.len())
    })
    .await?)
}

/// Clear the results of subject `subject`'s images. Returns how many.
pub async fn clear_subject_results(skin: &Arc<Skin>, subject: Uuid) -> SkinResult<usize> {
    let s = skin.clone();
    Ok(blocking(move || {
        let imgs = s.records.subject_images(subject, |_| true)?;
        for img in &imgs {
            clear_one(&s, img)?;
        }
        s.store.flush()?;
        s.store.run_cleanup()?;
        Ok(imgs.len())
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use uuid::Uuid;

    fn ds() -> Dataset {
        Dataset {
            id: Uuid::now_v7(),
            company_id: Uuid::now_v7(),
            name: "d".into(),
            image_type_id: 1,
            expire_images_after_days: Some(7),
            expire_metadata_after_days: Some(30),
            clean_images_as_soon_as_ready: false,
            custom_branding: Value::Null,
            creation_time: String::new(),
            run: None,
        }
    }

    fn img(created: u64, status: ImageStatus) -> Image {
        Image {
            created_unix: created,
            results: vec![super::super::records::AlgoResult {
                id: Uuid::now_v7(),
                algorithm_version_id: 40,
                result: Value::Null,
                is_ok: true,
                creation_time: String::new(),
            }],
            ..Image::sample(status)
        }
    }

    /// The clock advanced past each limit erases what it should, and not
    /// a second before.
    #[test]
    fn retention_falls_due_on_the_day() {
        let t0 = 1_800_000_000;
        let d = ds();
        let i = img(t0, ImageStatus::Done);
        assert_eq!(due(&d, &i, t0 + 7 * DAY - 1), Due::default());
        assert_eq!(
            due(&d, &i, t0 + 7 * DAY),
            Due {
                erase_images: true,
                clear_results: false
            }
        );
        assert_eq!(
            due(&d, &i, t0 + 30 * DAY),
            Due {
                erase_images: true,
                clear_results: true
            }
        );
        let erased = Image {
            blob: None,
            ..i.clone()
        };
        assert!(!due(&d, &erased, t0 + 8 * DAY).erase_images);
        let mut now = ds();
        now.expire_images_after_days = None;
        now.expire_metadata_after_days = None;
        now.clean_images_as_soon_as_ready = true;
        assert!(due(&now, &i, t0).erase_images);
        // Not before its results exist.
        assert!(!due(&now, &img(t0, ImageStatus::Queued), t0 + 99 * DAY).erase_images);
        // A back-dated photo put on the queue is analysed first, for a day.
        let mut queued = img(t0, ImageStatus::Queued);
        queued.queued_unix = Some(t0 + 99 * DAY);
        assert!(!due(&d, &queued, t0 + 99 * DAY + 3600).erase_images);
        assert!(due(&d, &queued, t0 + 100 * DAY).erase_images);
    }
}
