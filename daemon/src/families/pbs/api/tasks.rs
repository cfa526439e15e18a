//! A study's analyses: request tasks, follow their status, read reports
//! (envelope or FHIR).

use super::*;

/// `POST /pbs/{id}/tasks`: the analyses to run, and where to announce the
/// reports.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = pbs::TasksRequest,
    example = json!({
        "diagnostic_tasks": ["MALARIA_ANY_ANY", "CBC_COUNTS"],
        "callback_url": "https://lis.example.com/pbs_report_is_ready/c7d453a9"
    })
)]
pub struct TasksBody {
    /// One or more of `MALARIA_ANY_ANY` (malaria parasites in red cells),
    /// `CBC_COUNTS` (red cell, white cell and platelet counts, with the
    /// white-cell differential) and `WBC_DIFFERENTIAL` (white cells by
    /// class, each cell's box and probabilities, unsure cells left for
    /// review); `pbs_v1` asks for all three. The answer lists the tasks by
    /// these names.
    #[serde(default)]
    diagnostic_tasks: Vec<String>,
    /// An `https://` URL with a valid certificate, POSTed a signed
    /// `{pbs_study_id, report_status, progress}` when the reports are
    /// ready. Private and loopback addresses are refused. Absent: the
    /// study's callback stays as it was; `null`: it is removed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    callback_url: Option<Option<String>>,
}

/// A field that is there, `null` or not: `Some(None)` for `null`, so an
/// absent field (`None`, by `default`) and `null` differ.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The tasks to run, in the order first asked, each once; `pbs_v1` (the
/// name the reference's own examples send) stands for every task. `Err`
/// names the first unknown task.
fn requested_tasks(asked: &[String]) -> Result<Vec<String>, String> {
    let mut tasks: Vec<String> = Vec::new();
    for t in asked {
        let names: Vec<&str> = if t == clinic::ALL_TASKS {
            clinic::TASKS.iter().map(|(n, _)| *n).collect()
        } else if clinic::is_known_task(t) {
            vec![t.as_str()]
        } else {
            return Err(t.clone());
        };
        for n in names {
            if !tasks.iter().any(|have| have == n) {
                tasks.push(n.to_string());
            }
        }
    }
    Ok(tasks)
}

fn known_tasks() -> String {
    clinic::TASKS
        .iter()
        .map(|(n, what)| format!("{n} ({what})"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Close a study to new files and queue its analysis.
///
/// Answers 202 at once; the analysis runs in the background (poll
/// `/pbs/{id}/status` or wait for the callback). Asking again once the
/// reports are ready runs a new revision. Roles: admin, user, device.
#[utoipa::path(
    post,
    path = "/pbs/{id}/tasks",
    operation_id = "pbs_request_tasks",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(("id" = Uuid, Path, description = "The study's `pbs_study_id`.")),
    request_body(content = TasksBody, content_type = "application/json",
                 description = "The tasks and an optional callback URL."),
    responses(
        (status = 202, description = "The analysis is queued.",
         body = EnvelopeBody<schema::TasksAccepted>),
        (status = 400, description = "The body is not the expected JSON, no or an unknown \
         task, a refused `callback_url`, or a study without files.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not request tasks.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 409, description = "The study is already queued or processing.",
         body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn request_tasks(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    caller: Caller<access::RequestTasks>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let study = own_study(&app, &p, &id).await?;
    let b: TasksBody = parse_json(&body)?;
    if b.diagnostic_tasks.is_empty() {
        return Err(PbsError::BadRequest(format!(
            "diagnostic_tasks is empty; known tasks: {}",
            known_tasks()
        )));
    }
    let tasks = requested_tasks(&b.diagnostic_tasks).map_err(|t| {
        PbsError::BadRequest(format!(
            "unknown task {t:?}; known tasks: {} (or {}, all of them)",
            known_tasks(),
            clinic::ALL_TASKS
        ))
    })?;
    if let Some(Some(url)) = &b.callback_url {
        // The same check runs before every delivery attempt, on the
        // address actually connected to.
        if let Err(why) = app.webhooks.policy().check_url(url, false).await {
            return Err(PbsError::BadRequest(format!(
                "callback_url refused: {why} (it must be an https:// URL with a valid certificate)"
            )));
        }
    }
    if study.files.is_empty() {
        return Err(PbsError::BadRequest(
            "the study has no files; upload at least one before requesting tasks".into(),
        ));
    }
    let (pbs, sid) = (app.clinic.pbs.clone(), study.id);
    let (new_tasks, callback_url) = (tasks.clone(), b.callback_url.clone());
    let res = blocking(move || {
        pbs.update_study(sid, |s| {
            if matches!(s.status, ReportStatus::Queued | ReportStatus::Processing) {
                return Ok(Err(s.status));
            }
            // Asking again once the reports exist runs a new revision.
            s.frozen = true;
            s.tasks = new_tasks.clone();
            if let Some(url) = &callback_url {
                s.callback_url = url.clone();
            }
            s.status = ReportStatus::Queued;
            s.progress = 0.0;
            s.progress_message = "queued for analysis".into();
            s.partial.clear();
            s.error = None;
            Ok(Ok(()))
        })
    })
    .await?;
    match res {
        Some(Ok(())) => {}
        Some(Err(st)) => {
            return Err(PbsError::Conflict(format!(
                "the study is already {}; wait until its reports are ready",
                st.as_str()
            )))
        }
        None => return Err(PbsError::NotFound(format!("no PBS study {id}"))),
    }
    let queue = app.clinic.queue.clone();
    blocking(move || queue.enqueue(sid)).await?;
    app.store.flush_async().await?;
    app.clinic.queue.wake();
    Ok(Envelope::ok(
        StatusCode::ACCEPTED,
        schema::TasksAccepted {
            pbs_study_id: study.id,
            tasks,
        },
        started,
    ))
}

/// Delete a study: its record, reports, the cells found and its photos.
///
/// Not in the cloud API: the appliance keeps a clinic's photos on its own
/// disk, and a clinic must be able to remove them (also done for every
/// study by `pbs.retention_days`). Refused with 409 while the study's
/// analysis is queued or running. Roles: admin.
#[utoipa::path(
    delete,
    path = "/pbs/{id}",
    operation_id = "pbs_delete_study",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(("id" = Uuid, Path, description = "The study's `pbs_study_id`.")),
    responses(
        (status = 200, description = "The study was deleted.",
         body = EnvelopeBody<schema::StudyDeleted>),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not delete studies.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 409, description = "The study's analysis is queued or running.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn delete_study(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    caller: Caller<access::DeleteStudy>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let s = own_study(&app, &p, &id).await?;
    let clinic = app.clinic.clone();
    let sid = s.id;
    let removal = blocking(move || clinic.delete_study(sid)).await?;
    let files = match removal {
        StudyRemoval::Removed(s) => s.files.len(),
        StudyRemoval::Busy(status) => {
            return Err(PbsError::Conflict(format!(
                "the study's analysis is {}; delete it once it is ready or failed",
                status.as_str()
            )))
        }
        StudyRemoval::Missing => return Err(PbsError::NotFound(format!("no PBS study {id}"))),
    };
    app.audit.record(
        Event {
            family: "pbs",
            action: "study_deleted",
            actor: Some(&p.user.email),
            address: Some(&ip),
            object: Some(&id),
            ..Default::default()
        },
        Outcome::Ok,
    );
    Ok(Envelope::ok(
        StatusCode::OK,
        schema::StudyDeleted {
            pbs_study_id: sid,
            deleted: true,
            files,
        },
        started,
    ))
}

/// A study's analysis status and progress.
///
/// `report_status` is `open` (taking files), `queued`, `processing`,
/// `ready` or `failed`; `progress` runs from 0 to 1. Roles: all.
#[utoipa::path(
    get,
    path = "/pbs/{id}/status",
    operation_id = "pbs_study_status",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(("id" = Uuid, Path, description = "The study's `pbs_study_id`.")),
    responses(
        (status = 200, description = "The study's status.",
         body = EnvelopeBody<schema::StudyStatus>),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not read study status.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn study_status(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    caller: Caller<access::ReadStatus>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let s = own_study(&app, &p, &id).await?;
    Ok(Envelope::ok(
        StatusCode::OK,
        schema::StudyStatus {
            pbs_study_id: s.id,
            report_status: s.status.as_str(),
            progress: s.progress,
            progress_message: s.progress_message.clone(),
            files: s.files.len(),
            tasks: s.tasks.clone(),
            error: s.error.clone(),
        },
        started,
    ))
}

/// Which revision of a report to read, and in which form.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// A revision number from 1, or `latest` (the default).
    #[param(example = "latest")]
    version: Option<String>,
    /// `json` (the default: the envelope) or `fhir`: the report alone as an
    /// HL7 FHIR R4 `DiagnosticReport` (`application/fhir+json`) with its
    /// observations, specimen and device contained.
    #[param(example = "fhir")]
    format: Option<String>,
}

/// A task's report on a study: the latest revision, or `version`.
///
/// `results.report` holds the one report under the task's name. With
/// `format=fhir` the answer is the report alone as an HL7 FHIR R4
/// `DiagnosticReport` (`application/fhir+json`, not enveloped; errors stay
/// in the envelope). Counts are of cells seen in the uploaded fields, not
/// concentrations. Roles: admin, user, service, and a device for the
/// studies it created.
#[utoipa::path(
    get,
    path = "/pbs/{id}/report/{task}",
    operation_id = "pbs_study_report",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("id" = Uuid, Path, description = "The study's `pbs_study_id`."),
        ("task" = String, Path, description = "`MALARIA_ANY_ANY`, `CBC_COUNTS` or `WBC_DIFFERENTIAL`.",
         example = "MALARIA_ANY_ANY"),
        ReportQuery,
    ),
    responses(
        (status = 200, description = "The report: the envelope, or with `format=fhir` a FHIR R4 \
         `DiagnosticReport` (https://hl7.org/fhir/R4/diagnosticreport.html) with contained \
         `Observation`s, `Specimen` and `Device`.",
         content((EnvelopeBody<schema::ReportView> = "application/json"),
                 (Value = "application/fhir+json"))),
        (status = 400, description = "An unknown task or `format`, or a query that does not \
         parse.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not read reports, or a device's \
         token asks for a study another user created.", body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation, the task \
         was not requested for it, or no such version.", body = ErrorBody),
        (status = 409, description = "The task was requested but its report is not ready \
         yet, or the analysis failed (the error says why).", body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn study_report(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    Path((id, task)): Path<(String, String)>,
    q: Result<Query<ReportQuery>, QueryRejection>,
    caller: Caller<access::ReadReport>,
) -> Result<Response, PbsError> {
    let started = Instant::now();
    let p = caller.0;
    let s = own_study(&app, &p, &id).await?;
    let answer = if p.role == Role::Device && s.created_by != p.user.email {
        Err(PbsError::Forbidden(
            "a device reads the reports of the studies it created, not of others".into(),
        ))
    } else {
        q.map_err(|e| PbsError::BadRequest(e.body_text()))
            .and_then(|Query(q)| report_of(&s, &task, &q, started))
    };
    // Recorded once the outcome is known: a refused read is no read.
    app.audit.record(
        Event {
            family: "pbs",
            action: "report_read",
            actor: Some(&p.user.email),
            address: Some(&ip),
            object: Some(&format!("{id}/{task}")),
            ..Default::default()
        },
        if answer.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
    );
    answer
}

/// The answer of [`study_report`] for a study the caller may read.
fn report_of(
    s: &StudyRecord,
    task: &str,
    q: &ReportQuery,
    started: Instant,
) -> Result<Response, PbsError> {
    if !clinic::is_known_task(task) {
        return Err(PbsError::BadRequest(format!(
            "unknown task {task:?}; known tasks: {}",
            known_tasks()
        )));
    }
    let fhir = match q.format.as_deref() {
        None | Some("") | Some("json") => false,
        Some("fhir") => true,
        Some(f) => {
            return Err(PbsError::BadRequest(format!(
                "unknown format {f:?}; formats: json (the default), fhir"
            )))
        }
    };
    let versions = s.reports.get(task).map(Vec::as_slice).unwrap_or(&[]);
    if versions.is_empty() {
        return Err(if !s.tasks.iter().any(|t| t == task) {
            PbsError::NotFound(format!("{task} was not requested for this study"))
        } else if matches!(s.status, ReportStatus::Failed) {
            // It will never be ready: say why, not "not ready yet".
            PbsError::AnalysisFailed(format!(
                "the {task} report could not be made: the analysis failed ({})",
                s.error.as_deref().unwrap_or("no reason recorded")
            ))
        } else {
            PbsError::NotReady(format!(
                "the {task} report is not ready yet (status {})",
                s.status.as_str()
            ))
        });
    }
    let n = match q.version.as_deref() {
        None | Some("") | Some("latest") => versions.len(),
        Some(v) => {
            let n = v.parse::<usize>().map_err(|_| {
                PbsError::BadRequest(format!(
                    "version {v:?} is not a revision number (1, 2, ...) or latest"
                ))
            })?;
            if !(1..=versions.len()).contains(&n) {
                return Err(PbsError::NotFound(format!(
                    "version {n} does not exist; versions 1 to {}",
                    versions.len()
                )));
            }
            n
        }
    };
    if fhir {
        let src = super::super::fhir::Source::study(s, task, n);
        let report = super::super::fhir::diagnostic_report(task, &versions[n - 1], &src)
            .map_err(|e| PbsError::Internal(e.to_string()))?;
        let body = serde_json::to_vec(&report).map_err(|e| PbsError::Internal(e.to_string()))?;
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                super::super::fhir::CONTENT_TYPE,
            )],
            body,
        )
            .into_response());
    }
    Ok(Envelope::ok(
        StatusCode::OK,
        schema::ReportView {
            pbs_study_id: s.id,
            version: n,
            versions: versions.len(),
            report: BTreeMap::from([(task.to_string(), versions[n - 1].clone())]),
        },
        started,
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::requested_tasks;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pbs_v1_asks_for_every_task_once_in_order() {
        let all = requested_tasks(&names(&["pbs_v1"])).unwrap();
        assert_eq!(
            all,
            names(&["MALARIA_ANY_ANY", "CBC_COUNTS", "WBC_DIFFERENTIAL"])
        );
        let mixed = requested_tasks(&names(&["CBC_COUNTS", "pbs_v1", "CBC_COUNTS"])).unwrap();
        assert_eq!(
            mixed,
            names(&["CBC_COUNTS", "MALARIA_ANY_ANY", "WBC_DIFFERENTIAL"])
        );
    }

    #[test]
    fn an_unknown_task_is_named() {
        let err = requested_tasks(&names(&["CBC_COUNTS", "PBS_V1", "x"])).unwrap_err();
        assert_eq!(err, "PBS_V1");
    }
}
