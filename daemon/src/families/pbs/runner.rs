//! The analysis queue: frozen studies are analysed file by file, the
//! per-file results kept in the study record as they come, so a daemon
//! stopped or killed mid-study resumes after restart where it was.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use super::differential;
use super::schema::{
    CallbackBody, CbcFile, CbcReport, DifferentialCell, FileResult, MalariaFile, MalariaReport,
    WbcDifferentialReport, CBC_MODEL, MALARIA_MODEL,
};
use super::Clinic;
use crate::families::pbs::pipeline as cells;
use crate::families::pbs::store::ReportStatus;
use crate::imaging::budget::Reservation;
use crate::imaging::{self, DecodeLimits};
use crate::store::{now_rfc3339, StoreError};

/// Run queued studies until `shutdown` flips to true. A study whose
/// analysis fails for a store reason stays queued and is retried.
pub async fn run(clinic: Arc<Clinic>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let queue = clinic.queue.clone();
    let stop = shutdown.clone();
    crate::jobs::run(queue, shutdown, move |id| {
        let (clinic, stop) = (clinic.clone(), stop.clone());
        async move { analyse_study(&clinic, id, &stop).await }
    })
    .await
}

fn file_result(a: &cells::SmearAnalysis, params: &cells::CountParams, malaria: bool) -> FileResult {
    let (pos, neg) = cells::malaria_counts(a, params);
    FileResult {
        width: a.width,
        height: a.height,
        scale: a.scale,
        rbc: a.counts.rbc as u64,
        wbc: a.counts.wbc as u64,
        platelets: a.counts.platelets as u64,
        positive_count: malaria.then_some(pos as u64),
        negative_count: malaria.then_some(neg as u64),
        timings_ms: None,
        differential: Some(differential::cells_of(a, params.wbc_min_confidence)),
        rbc_size: a.rbc_size.clone(),
    }
}

/// What became of one file of a study.
enum FileOutcome {
    /// Its results, kept in the study record.
    Analysed(Value),
    /// The study fails with this message.
    Failed(String),
    /// Stop here and leave the study queued with the files finished so far
    /// (shutdown, or no capacity yet): it resumes with this file.
    Later,
}

/// What every file of one study's analysis shares.
struct StudyRun<'a> {
    clinic: &'a Clinic,
    id: Uuid,
    shutdown: &'a tokio::sync::watch::Receiver<bool>,
    params: cells::CountParams,
    sizes: cells::ScaleSettings,
    limits: DecodeLimits,
    malaria: bool,
    /// Files in the study (at least 1, for fractions).
    total: usize,
}

async fn analyse_study(
    clinic: &Clinic,
    id: Uuid,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let pbs = &clinic.pbs;
    let Some(study) = pbs.get_study(id)? else {
        clinic.queue.dequeue(id)?;
        return Ok(());
    };
    let run = StudyRun {
        clinic,
        id,
        shutdown,
        params: clinic.config.cells,
        sizes: cells::ScaleSettings::from_config(&clinic.config.pbs),
        limits: DecodeLimits {
            max_pixels: clinic.config.limits.max_pixels,
            formats: ["jpeg", "png", "webp", "bmp", "tiff", "gif"]
                .map(String::from)
                .to_vec(),
        },
        malaria: study.tasks.iter().any(|t| t == "MALARIA_ANY_ANY"),
        total: study.files.len().max(1),
    };
    let total = run.total;
    let started = std::time::Instant::now();
    pbs.update_study(id, |s| {
        s.status = ReportStatus::Processing;
        s.progress_message = format!("analysing {} file(s)", s.files.len());
        Ok(())
    })?;
    let mut failure = None;
    for (i, f) in study.files.iter().enumerate() {
        if study.partial.contains_key(&f.file_id) {
            continue;
        }
        if *shutdown.borrow() {
            // Left queued with its partial results: resumed after restart.
            return Ok(());
        }
        let result = match run.analyse_file(i, f).await? {
            FileOutcome::Analysed(r) => r,
            FileOutcome::Failed(message) => {
                failure = Some(message);
                break;
            }
            FileOutcome::Later => return Ok(()),
        };
        let done = i + 1;
        pbs.update_study(id, |s| {
            s.partial.insert(f.file_id.clone(), result.clone());
            s.progress = (s.partial.len() as f32 / total as f32).min(0.99);
            s.progress_message = format!("analysed {} of {} file(s)", s.partial.len(), total);
            Ok(())
        })?;
        // Progress is durable before the next file starts.
        clinic.store.flush_async().await?;
        clinic.queue.progress(
            &clinic.events,
            id,
            done,
            total,
            &format!("analysed {done} of {total} file(s)"),
        );
        tracing::debug!(study = %id, done, total, "PBS file analysed");
    }
    finish_study(clinic, id, failure, &run.params, started).await
}

impl StudyRun<'_> {
    /// The file's bytes decoded, once its share of the decode memory is
    /// free (a background job waits for it), with that share: it is held
    /// until the analysis of the image is over.
    async fn decode(
        &self,
        f: &super::store::FileRecord,
    ) -> Result<Result<(Arc<image::RgbImage>, Reservation), FileOutcome>, StoreError> {
        let Some(bytes) = self.clinic.store.blobs.get(&f.blob)? else {
            let message = format!("file {} is missing from storage", f.file_id);
            return Ok(Err(FileOutcome::Failed(message)));
        };
        let reservation = loop {
            match self.clinic.decode_budget.reserve(&bytes).await {
                Ok(r) => break r,
                Err(imaging::budget::BudgetError::Busy) if !*self.shutdown.borrow() => continue,
                Err(imaging::budget::BudgetError::Busy) => return Ok(Err(FileOutcome::Later)),
                Err(e) => return Ok(Err(FileOutcome::Failed(format!("file {}: {e}", f.file_id)))),
            }
        };
        let lim = self.limits.clone();
        let decoded = tokio::task::spawn_blocking(move || imaging::decode(&bytes, &lim))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(match decoded {
            Ok(d) => Ok((Arc::new(d.image), reservation)),
            Err(e) => Err(FileOutcome::Failed(format!("file {}: {e}", f.file_id))),
        })
    }

    /// Decode and analyse file `i` of the study, keeping its cells' boxes.
    async fn analyse_file(
        &self,
        i: usize,
        f: &super::store::FileRecord,
    ) -> Result<FileOutcome, StoreError> {
        let (clinic, id, total) = (self.clinic, self.id, self.total);
        let (img, _reservation) = match self.decode(f).await? {
            Ok(decoded) => decoded,
            Err(outcome) => return Ok(outcome),
        };
        // Progress moves with every tile (written at most 4 times a second,
        // not flushed: it is a view, the per-file results are the state).
        let last = std::sync::Mutex::new(std::time::Instant::now());
        let on_tile = |t: usize, n: usize| {
            let mut at = last.lock().unwrap_or_else(|e| e.into_inner());
            if t < n && at.elapsed() < std::time::Duration::from_millis(250) {
                return;
            }
            *at = std::time::Instant::now();
            let fraction = (i as f64 + t as f64 / n.max(1) as f64) / total as f64;
            let message = format!("file {} of {total}: tile {t} (of at most {n})", i + 1);
            let saved = clinic.pbs.update_study(id, |s| {
                s.progress = (fraction as f32).min(0.99);
                s.progress_message = message.clone();
                Ok(())
            });
            if let Err(e) = saved {
                tracing::warn!(study = %id, error = %e, "could not save progress");
            }
            clinic
                .queue
                .progress_fraction(&clinic.events, id, fraction, &message);
        };
        let watch = cells::Watch {
            on_tile: Some(&on_tile),
            stop: Some(self.shutdown.clone()),
        };
        let analysed = cells::analyse(
            &clinic.cells,
            img,
            &self.sizes,
            self.params,
            self.malaria,
            &watch,
        )
        .await;
        match analysed {
            Ok((a, t)) => {
                // The boxes behind the counts, for the console's overlay.
                clinic.pbs.put_cells(id, &f.file_id, &a.cells)?;
                let c = &a.counts;
                for (kind, n) in [("rbc", c.rbc), ("wbc", c.wbc), ("platelet", c.platelets)] {
                    let counter = clinic.metrics.cells_counted.with_label_values(&[kind]);
                    counter.inc_by(n as u64);
                }
                let mut r = file_result(&a, &self.params, self.malaria);
                r.timings_ms = serde_json::to_value(t).ok();
                let r = serde_json::to_value(r).expect("file results serialize");
                Ok(FileOutcome::Analysed(r))
            }
            Err(cells::CellError::Stopped { done, total: tiles }) => {
                // This file starts again after restart.
                tracing::info!(
                    study = %id,
                    file = i + 1,
                    files = total,
                    tiles_done = done,
                    tiles,
                    "PBS analysis stopped for shutdown; it resumes at the next start"
                );
                Ok(FileOutcome::Later)
            }
            Err(cells::CellError::Submit(e)) => {
                // Queue full: the interactive APIs come first; try again soon.
                tracing::info!(study = %id, error = %e, "PBS analysis waiting for capacity");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                Ok(FileOutcome::Later)
            }
            Err(e) => Ok(FileOutcome::Failed(format!("file {}: {e}", f.file_id))),
        }
    }
}

/// Write the reports (or the failure), queue the callback, and take the
/// study off the queue, all in one flush.
async fn finish_study(
    clinic: &Clinic,
    id: Uuid,
    failure: Option<String>,
    params: &cells::CountParams,
    started: std::time::Instant,
) -> Result<(), StoreError> {
    let pbs = &clinic.pbs;
    let finished = pbs
        .update_study(id, |s| {
            if let Some(err) = &failure {
                s.status = ReportStatus::Failed;
                s.error = Some(err.clone());
                s.progress_message = format!("analysis failed: {err}");
                s.partial.clear();
                return Ok(s.clone());
            }
            let version_time = now_rfc3339();
            for task in s.tasks.clone() {
                let report = build_report(&task, s, params, &version_time);
                s.reports.entry(task).or_default().push(report);
            }
            s.partial.clear();
            s.status = ReportStatus::Ready;
            s.progress = 1.0;
            s.error = None;
            s.progress_message = "Reports are ready".into();
            Ok(s.clone())
        })?
        .ok_or_else(|| StoreError::Corrupt(format!("study {id} vanished")))?;
    if let Some(url) = &finished.callback_url {
        let body = serde_json::to_string(&CallbackBody {
            pbs_study_id: id,
            pbs_stody_id: id,
            report_status: finished.status.as_str(),
            progress: finished.progress,
        })
        .expect("callback bodies serialize");
        let d = super::callbacks::delivery(clinic, id, &finished.org, url, body)?;
        clinic.webhooks.enqueue(&d)?;
    }
    clinic.queue.dequeue(id)?;
    // Tasks asked for again between the update above and the dequeue: the
    // study is queued once more, so it stays on the queue.
    if pbs
        .get_study(id)?
        .is_some_and(|s| matches!(s.status, ReportStatus::Queued))
    {
        clinic.queue.enqueue(id)?;
    }
    clinic.store.flush_async().await?;
    clinic
        .metrics
        .pbs_studies
        .with_label_values(&[finished.status.as_str()])
        .inc();
    clinic
        .metrics
        .pbs_study_seconds
        .observe(started.elapsed().as_secs_f64());
    clinic.webhooks.wake();
    clinic.events.publish(
        &clinic.queue.topic(id),
        "finished",
        json!({"pbs_study_id": id, "report_status": finished.status.as_str()}),
    );
    tracing::info!(study = %id, status = finished.status.as_str(), "PBS study finished");
    Ok(())
}

fn build_report(
    task: &str,
    s: &crate::families::pbs::store::StudyRecord,
    params: &cells::CountParams,
    created_at: &str,
) -> Value {
    // Results kept by any version of the runner parse; a field one lacks
    // counts as 0 (or null per file).
    let per_file: Vec<(&String, FileResult)> = s
        .files
        .iter()
        .filter_map(|f| {
            let v = s.partial.get(&f.file_id)?;
            Some((
                &f.file_id,
                serde_json::from_value(v.clone()).unwrap_or_default(),
            ))
        })
        .collect();
    let sum = |k: fn(&FileResult) -> u64| -> u64 { per_file.iter().map(|(_, r)| k(r)).sum() };
    // Files analysed before the differential existed have no cells: the
    // differential covers only the files that have them.
    // Classes are decided again from the kept probabilities, so the whole
    // report follows the threshold it names even if it changed mid-study.
    let min_confidence = params.wbc_min_confidence;
    let cells: Vec<(String, Vec<DifferentialCell>)> = per_file
        .iter()
        .filter_map(|(id, r)| {
            let cells = r.differential.as_ref()?;
            let cells = cells
                .iter()
                .map(|c| differential::redecide(c, min_confidence))
                .collect();
            Some((id.to_string(), cells))
        })
        .collect();
    let every_file = !per_file.is_empty() && cells.len() == per_file.len();
    let mut differential = differential::summarise(&cells, min_confidence);
    differential.mark_unlike_smear(|id| {
        per_file
            .iter()
            .any(|(f, r)| f.as_str() == id && r.unlike_smear())
    });
    let report = match task {
        "MALARIA_ANY_ANY" => serde_json::to_value(MalariaReport {
            positive_count: sum(|r| r.positive_count.unwrap_or(0)),
            negative_count: sum(|r| r.negative_count.unwrap_or(0)),
            files: per_file
                .iter()
                .map(|(id, r)| MalariaFile {
                    file_id: id.to_string(),
                    positive_count: r.positive_count,
                    negative_count: r.negative_count,
                    unlike_smear: r.unlike_smear(),
                })
                .collect(),
            model: MALARIA_MODEL,
            parasite_threshold: params.parasite_threshold,
            created_at: created_at.to_string(),
        }),
        "WBC_DIFFERENTIAL" => serde_json::to_value(WbcDifferentialReport {
            differential,
            created_at: created_at.to_string(),
        }),
        _ => serde_json::to_value(CbcReport {
            rbc: sum(|r| r.rbc),
            wbc: sum(|r| r.wbc),
            platelets: sum(|r| r.platelets),
            files: per_file
                .iter()
                .map(|(id, r)| CbcFile {
                    file_id: id.to_string(),
                    rbc: r.rbc,
                    wbc: r.wbc,
                    platelets: r.platelets,
                    rbc_size: r.rbc_size.clone(),
                })
                .collect(),
            model: CBC_MODEL,
            differential: every_file.then_some(differential),
            created_at: created_at.to_string(),
        }),
    };
    report.expect("reports serialize")
}
