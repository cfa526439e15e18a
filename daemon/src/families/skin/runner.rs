//! The skin analysis queue, on the platform's job runner: a queued image
//! is analysed (its photo through the shared micro-batchers with every
//! other request's), its results and auxiliary images stored (no images
//! for a dataset that erases photos once analysed), its
//! followers told (notifications and results websockets, the dataset's
//! webhook), and only then taken off the queue, in one flush, so a daemon
//! killed mid-analysis analyses it again after restart.
//!
//! Results are stored and streamed as the pipeline finishes them: the
//! face detector's as soon as the faces are known, then the metrics, which
//! all come out of one pass over the aligned, white-balanced face.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use uuid::Uuid;

use super::analyze::{analyze_with, masks_svg, Analysis, AnalyzeError, Detected, Want};
use super::catalog::FACE_DETECTOR;
use super::present::{present, Presented};
use super::records::{AlgoResult, AuxImage, Dataset, Image, ImageStatus, SkinStore};
use super::service::Skin;
use crate::imaging::budget::BudgetError;
use crate::store::{now_rfc3339, unix_now, StoreError};

/// Event-bus topic of a company's image events.
pub fn company_topic(company: Uuid) -> String {
    format!("skin/companies/{company}")
}

/// Run queued analyses until `shutdown` flips to true.
pub async fn run(skin: Arc<Skin>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let queue = skin.queue.clone();
    let stop = shutdown.clone();
    crate::jobs::run(queue, shutdown, move |id| {
        let (skin, stop) = (skin.clone(), stop.clone());
        async move { analyse_image(&skin, id, &stop).await }
    })
    .await
}

async fn analyse_image(
    skin: &Skin,
    id: Uuid,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let records = skin.records.clone();
    let Some(img) = SkinStore::get::<Image>(&records.images, id)? else {
        skin.queue.dequeue(id)?;
        return Ok(());
    };
    let bytes = match img
        .blob
        .as_deref()
        .map(|k| skin.store.blobs.get(k))
        .transpose()?
    {
        Some(Some(b)) => b,
        _ => {
            return fail(
                skin,
                img,
                "the photo is no longer stored (erased before analysis)",
            )
            .await
        }
    };
    let _reservation = loop {
        match skin.decode_budget.reserve(&bytes).await {
            Ok(r) => break r,
            Err(BudgetError::Busy) if !*shutdown.borrow() => continue,
            Err(BudgetError::Busy) => return Ok(()),
            Err(e) => return fail(skin, img, &e.to_string()).await,
        }
    };
    let started = Instant::now();
    // Derived images that would be erased at once are not made.
    let keeps_images = !SkinStore::get::<Dataset>(&skin.records.datasets, img.dataset_id)?
        .is_some_and(|d| d.clean_images_as_soon_as_ready);
    let outcome = analyze_with(
        &skin.batchers,
        bytes,
        skin.decode_limits.clone(),
        skin.config.skin,
        Want {
            images: keeps_images,
        },
        |d| detected(skin, id, img.clearings, d),
    )
    .await;
    let analysis = match outcome {
        Ok(a) => a,
        Err(AnalyzeError::Submit(e)) => {
            // The interactive APIs come first: try again shortly.
            tracing::info!(image = %id, error = %e, "skin analysis waiting for capacity");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            return Ok(());
        }
        Err(AnalyzeError::Imaging(e)) => return fail(skin, img, &e.to_string()).await,
        Err(AnalyzeError::Inference(e)) => {
            // A backend failure is the appliance's, not the photo's: retried.
            return Err(StoreError::Corrupt(format!("inference failed: {e}")));
        }
    };
    for (stage, ms) in &analysis.timings_ms {
        skin.metrics
            .skin_algorithm_seconds
            .with_label_values(&[stage])
            .observe(ms / 1e3);
    }
    let shown = present(&analysis, &img.enabled);
    finish(skin, img, &analysis, shown, started).await
}

/// The faces are known: store the face detector's result now (replacing
/// one from an earlier, interrupted try) and stream it, ahead of the
/// metrics, unless its results were cleared since the analysis read the
/// image (`clearings` then). Not flushed on its own: a crash before the
/// pass ends runs the whole photo again.
fn detected(skin: &Skin, id: Uuid, clearings: u32, d: &Detected) {
    let (result, ok) = super::present::detector_result(d);
    let row = AlgoResult {
        id: Uuid::now_v7(),
        algorithm_version_id: FACE_DETECTOR,
        result,
        is_ok: ok,
        creation_time: now_rfc3339(),
    };
    let error = d
        .issue
        .as_ref()
        .map(|i| format!("{}: {}", i.code, i.message));
    let updated = skin.records.update_image(id, |i| {
        if i.clearings != clearings {
            return;
        }
        i.results
            .retain(|r| r.algorithm_version_id != FACE_DETECTOR);
        i.results.insert(0, row.clone());
        i.detection_error = error.clone();
    });
    match updated {
        Ok(Some(img)) => {
            let topic = company_topic(img.company_id);
            for r in super::views::result_rows(&img).into_iter().take(1) {
                skin.events.publish(&topic, "result", serde_json::json!(r));
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(image = %id, error = %e, "storing the face detector's result failed")
        }
    }
}

/// Store the analysis's auxiliary images (aligned face, anonymised photo,
/// redness heatmap, area masks) as blobs, each with the algorithms it
/// illustrates.
fn store_aux_images(
    skin: &Skin,
    a: &Analysis,
    shown: &Presented,
) -> Result<Vec<AuxImage>, StoreError> {
    let mut aux = Vec::new();
    let redness = 30;
    if let Some(images) = &a.images {
        for (kind, bytes, ct, algs) in [
            (
                "aligned_face",
                &images.aligned_face_jpeg,
                "image/jpeg",
                vec![31, 32, 33, 34],
            ),
            ("anonymised", &images.anonymised_jpeg, "image/jpeg", vec![]),
            (
                "redness_heatmap",
                &images.redness_png,
                "image/png",
                vec![redness],
            ),
        ] {
            aux.push((kind, bytes.clone(), ct, algs));
        }
    }
    if !a.masks.is_empty() {
        aux.push((
            "area_masks",
            masks_svg(a.width, a.height, &a.masks).into_bytes(),
            "image/svg+xml",
            shown.results.iter().map(|r| r.0).collect(),
        ));
    }
    let mut aux_records = Vec::new();
    for (kind, bytes, ct, algs) in aux {
        let aid = Uuid::now_v7();
        let key = format!("skin/{aid}.{}", super::views::extension(ct));
        skin.store.blobs.put(&key, &bytes)?;
        aux_records.push(AuxImage {
            id: aid,
            kind: kind.to_string(),
            blob: key,
            content_type: ct.to_string(),
            algorithm_version_ids: algs,
        });
    }
    Ok(aux_records)
}

/// Store the auxiliary images (none for a dataset that erases photos once
/// analysed), then the results, dequeue, and tell.
async fn finish(
    skin: &Skin,
    img: Image,
    a: &Analysis,
    shown: Presented,
    started: Instant,
) -> Result<(), StoreError> {
    // Read again, not taken from the analysis's start: the setting may
    // have changed while the photo was analysed.
    let clean = SkinStore::get::<Dataset>(&skin.records.datasets, img.dataset_id)?
        .is_some_and(|d| d.clean_images_as_soon_as_ready);
    // Derived photos that would be erased at once are not written at all.
    let aux_records = if clean {
        Vec::new()
    } else {
        store_aux_images(skin, a, &shown)?
    };
    let found = Found::new(a, shown, aux_records);
    // The photo (when erased) and any derived images of an earlier,
    // interrupted run are queued for deletion in the same transaction.
    let cleanup = skin.store.cleanup_tree();
    let updated = skin
        .records
        .update_image_dropping_files(cleanup, img.id, |i| {
            record_analysis(i, &found, img.clearings, clean)
        })?;
    let aux_records = found.aux;
    let Some(updated) = updated else {
        // Deleted while it was analysed: drop what was made for it.
        for a in &aux_records {
            skin.store.blobs.delete(&a.blob)?;
        }
        skin.queue.dequeue(img.id)?;
        return skin.store.flush_async().await;
    };
    if updated.aux.is_empty() {
        // Erased or cleared while it was analysed: never recorded, so no
        // cleanup queue names them.
        for a in &aux_records {
            skin.store.blobs.delete(&a.blob)?;
        }
    }
    let delivery = super::hooks::delivery_for(skin, &updated)?;
    if let Some(d) = &delivery {
        skin.webhooks.enqueue(d)?;
    }
    skin.queue.dequeue(img.id)?;
    skin.store.flush_async().await?;
    if clean {
        // The erased files' names are durable in the cleanup queue now.
        skin.store.run_cleanup()?;
    }
    if delivery.is_some() {
        skin.webhooks.wake();
    }
    let outcome = outcome(img.clearings, &updated, a.face.is_some());
    skin.metrics
        .skin_analyses
        .with_label_values(&[outcome])
        .inc();
    tell(skin, &updated, started);
    tracing::info!(image = %img.id, outcome, ms = started.elapsed().as_millis() as u64, "skin image analysed");
    Ok(())
}

/// What one analysis of an image found, as it is stored.
struct Found {
    results: Vec<AlgoResult>,
    aux: Vec<AuxImage>,
    shown: Presented,
    masks: std::collections::BTreeMap<String, String>,
    /// When the analysis ended: RFC 3339 and unix seconds.
    at: (String, u64),
}

impl Found {
    fn new(a: &Analysis, shown: Presented, aux: Vec<AuxImage>) -> Self {
        let at = (now_rfc3339(), unix_now());
        let results = shown
            .results
            .iter()
            .map(|(alg, result, ok)| AlgoResult {
                id: Uuid::now_v7(),
                algorithm_version_id: *alg,
                result: result.clone(),
                is_ok: *ok,
                creation_time: at.0.clone(),
            })
            .collect();
        let masks = a
            .masks
            .iter()
            .map(|(k, v)| (k.name().to_string(), v.clone()))
            .collect();
        Self {
            results,
            aux,
            shown,
            masks,
            at,
        }
    }
}

/// Write analysis `found` into image `i`, the record as it is now; the
/// analysis read it when its clearings counted `clearings`. Done either
/// way; `clean` drops the photo (a dataset that erases photos once
/// analysed). Stores nothing found when its results were cleared since
/// (the subject asked for them gone, these included), and no derived
/// images when its photo was erased since (the caller deletes their
/// files). Runs again if the transaction retries.
fn record_analysis(i: &mut Image, found: &Found, clearings: u32, clean: bool) {
    i.status = ImageStatus::Done;
    i.processed_at = Some(found.at.0.clone());
    i.processed_unix = Some(found.at.1);
    i.error = None;
    if clean {
        i.blob = None;
    }
    if i.clearings != clearings {
        i.clear_analysis();
        i.results_cleared_unix = Some(found.at.1);
        return;
    }
    // The detector's result, stored at detection, stays as it was.
    i.results
        .retain(|r| r.algorithm_version_id == FACE_DETECTOR);
    i.results.extend(found.results.iter().cloned());
    i.face = found.shown.face.clone();
    i.aux = match i.blob {
        Some(_) => found.aux.clone(),
        None => Vec::new(),
    };
    i.quality_issues = found.shown.quality_issues.clone();
    i.detection_error = found.shown.detection_error.clone();
    i.parameters = Some(found.shown.parameters.clone());
    i.masks = found.masks.clone();
    i.results_cleared_unix = None;
}

/// The `argus_skin_analyses_total` outcome of an analysis that read the
/// image when its clearings counted `clearings`, found a face or not, and
/// left the record `updated`.
fn outcome(clearings: u32, updated: &Image, face: bool) -> &'static str {
    if updated.clearings != clearings {
        "cleared"
    } else if !face {
        "no_face"
    } else {
        "analysed"
    }
}

/// Publish each metric's result (the detector's went out at detection),
/// then the image's notification. The results are stored together, but a
/// stream client reads them one at a time and may stop at the first that
/// says all are calculated: only the last one says so.
fn tell(skin: &Skin, img: &Image, started: Instant) {
    let topic = company_topic(img.company_id);
    let mut rows: Vec<_> = super::views::result_rows(img)
        .into_iter()
        .filter(|r| r.algorithm_version_id != FACE_DETECTOR)
        .collect();
    let last = rows.len().saturating_sub(1);
    for (k, row) in rows.iter_mut().enumerate() {
        row.all_algorithms_calculated &= k == last;
        skin.events
            .publish(&topic, "result", serde_json::json!(row));
    }
    skin.events
        .publish(&topic, "image", notification(img, started));
}

/// The notification message of a processed image.
pub fn notification(img: &Image, started: Instant) -> Value {
    json!({
        "event": "image_processed",
        "image_id": img.id, "batch_id": img.batch_id, "subject_id": img.subject_id,
        "dataset_id": img.dataset_id, "company_id": img.company_id,
        "status": if img.status == ImageStatus::Done { "done" } else { "failed" },
        "is_ok": img.is_ok(),
        "results_cleared": img.results_cleared_unix.is_some(),
        "quality_issues": img.quality_issues, "detection_error": img.detection_error,
        "error": img.error,
        "algorithms": img.results.iter().map(|r| r.algorithm_version_id).collect::<Vec<_>>(),
        "processing_seconds": started.elapsed().as_secs_f64(),
    })
}

/// The photo cannot be analysed: say why, dequeue, tell.
async fn fail(skin: &Skin, img: Image, why: &str) -> Result<(), StoreError> {
    let why = why.to_string();
    // The photo (when erased) and any derived images of an earlier,
    // interrupted run are queued for deletion in the same transaction.
    let cleanup = skin.store.cleanup_tree();
    let updated = skin
        .records
        .update_image_dropping_files(cleanup, img.id, |i| {
            i.status = ImageStatus::Failed;
            i.error = Some(why.clone());
            i.processed_at = Some(now_rfc3339());
            i.processed_unix = Some(unix_now());
            i.results_cleared_unix = None;
            // Cleared since the analysis read it: the detector's row may
            // have been stored after the clearing.
            if i.clearings != img.clearings {
                i.clear_analysis();
                i.results_cleared_unix = i.processed_unix;
            }
        })?;
    let delivery = match &updated {
        Some(u) => super::hooks::delivery_for(skin, u)?,
        None => None,
    };
    if let Some(d) = &delivery {
        skin.webhooks.enqueue(d)?;
    }
    skin.queue.dequeue(img.id)?;
    skin.store.flush_async().await?;
    if delivery.is_some() {
        skin.webhooks.wake();
    }
    skin.metrics
        .skin_analyses
        .with_label_values(&["failed"])
        .inc();
    if let Some(u) = updated {
        tell(skin, &u, Instant::now());
    }
    tracing::info!(image = %img.id, error = %why, "skin image not analysable");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(alg: u32) -> AlgoResult {
        AlgoResult {
            id: Uuid::now_v7(),
            algorithm_version_id: alg,
            result: json!({"value": alg}),
            is_ok: true,
            creation_time: String::new(),
        }
    }

    /// What an analysis found: the redness metric, its heatmap, a face.
    fn found() -> Found {
        Found {
            results: vec![row(30)],
            aux: vec![AuxImage {
                id: Uuid::now_v7(),
                kind: "redness_heatmap".into(),
                blob: "skin/heat.png".into(),
                content_type: "image/png".into(),
                algorithm_version_ids: vec![30],
            }],
            shown: Presented {
                results: vec![(30, json!({"value": 30}), true)],
                parameters: json!({"redness": 30}),
                quality_issues: vec!["blur".into()],
                detection_error: None,
                face: json!({"box": [1, 2, 3, 4]}),
            },
            masks: [("cheeks".to_string(), "M0 0".to_string())].into(),
            at: ("2026-12-07T00:00:00Z".into(), 1_796_601_600),
        }
    }

    /// The record as the runner reads it: queued, the detector's row
    /// already stored at detection.
    fn analysing() -> Image {
        Image {
            enabled: vec![FACE_DETECTOR, 30],
            results: vec![row(FACE_DETECTOR)],
            ..Image::sample(ImageStatus::Queued)
        }
    }

    #[test]
    fn an_analysis_is_stored_beside_the_detectors_row() {
        let mut i = analysing();
        record_analysis(&mut i, &found(), 0, false);
        assert_eq!(i.status, ImageStatus::Done);
        let algs: Vec<u32> = i.results.iter().map(|r| r.algorithm_version_id).collect();
        assert_eq!(algs, [FACE_DETECTOR, 30]);
        assert_eq!(i.aux.len(), 1);
        assert_eq!(i.face["box"], json!([1, 2, 3, 4]));
        assert_eq!(i.masks.len(), 1);
        assert_eq!(i.quality_issues, ["blur"]);
        assert_eq!(i.processed_unix, Some(1_796_601_600));
        assert!(i.is_ok() && i.all_calculated());
        // Applied again to what it wrote, it stores the same, once.
        record_analysis(&mut i, &found(), 0, false);
        assert_eq!(i.results.len(), 2);
        assert_eq!(outcome(0, &i, true), "analysed");
        assert_eq!(outcome(0, &i, false), "no_face");
    }

    /// `clear_metadata/` or retention ran while the photo was analysed
    /// (clearings 0 when read, 1 now): nothing found is kept, not even a
    /// detector row that landed first, and the notification says so.
    #[test]
    fn an_analysis_of_an_image_cleared_meanwhile_keeps_nothing() {
        let mut i = Image {
            clearings: 1,
            ..analysing()
        };
        record_analysis(&mut i, &found(), 0, false);
        assert_eq!(i.status, ImageStatus::Done);
        assert!(i.results.is_empty() && i.aux.is_empty() && i.masks.is_empty());
        assert!(i.parameters.is_none() && i.face.is_null() && i.quality_issues.is_empty());
        assert_eq!(i.results_cleared_unix, Some(1_796_601_600));
        assert!(!i.is_ok());
        let note = notification(&i, Instant::now());
        assert_eq!(note["is_ok"], false);
        assert_eq!(note["results_cleared"], true);
        assert_eq!(note["algorithms"], json!([]));
        assert_eq!(outcome(0, &i, true), "cleared");
        // The photo itself stays: clearing results is not erasing it.
        assert!(i.blob.is_some());
    }

    /// `delete_photos/` ran while it was analysed: the results stay, the
    /// images derived from the erased photo are not recorded.
    #[test]
    fn an_analysis_of_a_photo_erased_meanwhile_records_no_derived_image() {
        let mut i = Image {
            blob: None,
            ..analysing()
        };
        record_analysis(&mut i, &found(), 0, false);
        assert_eq!(i.results.len(), 2);
        assert!(i.aux.is_empty());
        assert!(i.is_ok());
    }

    /// A dataset that erases photos once analysed: the photo goes, the
    /// results stay.
    #[test]
    fn a_clean_as_soon_as_ready_dataset_drops_the_photo() {
        let mut i = analysing();
        let mut f = found();
        f.aux.clear();
        record_analysis(&mut i, &f, 0, true);
        assert!(i.blob.is_none());
        assert_eq!(i.results.len(), 2);
    }
}
