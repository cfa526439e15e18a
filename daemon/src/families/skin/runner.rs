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
    let now = now_rfc3339();
    let results: Vec<AlgoResult> = shown
        .results
        .iter()
        .map(|(alg, result, ok)| AlgoResult {
            id: Uuid::now_v7(),
            algorithm_version_id: *alg,
            result: result.clone(),
            is_ok: *ok,
            creation_time: now.clone(),
        })
        .collect();
    let shown2 = shown.clone();
    // The photo (when erased) and any derived images of an earlier,
    // interrupted run are queued for deletion in the same transaction.
    let cleanup = skin.store.cleanup_tree();
    let updated = skin
        .records
        .update_image_dropping_files(cleanup, img.id, |i| {
            i.status = ImageStatus::Done;
            i.processed_at = Some(now.clone());
            i.processed_unix = Some(unix_now());
            i.error = None;
            if clean {
                i.blob = None;
            }
            if i.clearings != img.clearings {
                // Its results were cleared while it was analysed: the
                // subject asked for them gone, these included.
                i.clear_analysis();
                i.results_cleared_unix = Some(unix_now());
                return;
            }
            // The detector's result, stored at detection, stays as it was.
            i.results
                .retain(|r| r.algorithm_version_id == FACE_DETECTOR);
            i.results.extend(results.iter().cloned());
            i.face = shown2.face.clone();
            // A photo erased while it was analysed takes the images made
            // from it along (they are written below, never recorded).
            i.aux = match i.blob {
                Some(_) => aux_records.clone(),
                None => Vec::new(),
            };
            i.quality_issues = shown2.quality_issues.clone();
            i.detection_error = shown2.detection_error.clone();
            i.parameters = Some(shown2.parameters.clone());
            i.masks = a
                .masks
                .iter()
                .map(|(k, v)| (k.name().to_string(), v.clone()))
                .collect();
            i.results_cleared_unix = None;
        })?;
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
    let outcome = if a.face.is_none() {
        "no_face"
    } else {
        "analysed"
    };
    skin.metrics
        .skin_analyses
        .with_label_values(&[outcome])
        .inc();
    tell(skin, &updated, started);
    tracing::info!(image = %img.id, outcome, ms = started.elapsed().as_millis() as u64, "skin image analysed");
    Ok(())
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
        "is_ok": img.status == ImageStatus::Done && img.detection_error.is_none(),
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
            // Cleared since the analysis read it: the detector's row may
            // have been stored after the clearing.
            if i.clearings != img.clearings {
                i.clear_analysis();
            }
            i.processed_at = Some(now_rfc3339());
            i.processed_unix = Some(unix_now());
            i.results_cleared_unix = None;
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
