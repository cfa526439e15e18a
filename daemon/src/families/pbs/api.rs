//! The blood-smear (PBS) family of `003`: `/auth/login`, `/auth/hello`,
//! `/pbs...`, `/heartbeat`. Every answer but the heartbeat is the envelope
//! `{status, results, error, user_message, debug_info}` with the HTTP status
//! equal to `status`; `PbsError` is this family's one mapping to HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use super::Pbs;
use crate::families::pbs::identity::{Action, AuthFailure, Principal};
use crate::families::pbs::store::{FileRecord, ReportStatus, StudyRecord};
use crate::families::pbs::{self as clinic, org, Clinic};
use crate::http::error::{ErrorKind, FailureReason};
use crate::http::ClientAddr;
use crate::store::{now_rfc3339, StoreError};

const VERSION: &str = concat!("argusd.", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum PbsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.rejection)]
    Unauthorized(Box<AuthFailure>),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many attempts; retry in {0} s")]
    TooMany(u64),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl PbsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::TooMany(_) => ErrorKind::RateLimited,
            Self::Store(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        self.kind().status()
    }

    fn user_message(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "The request could not be used; see error.",
            Self::Unauthorized(_) => "Please sign in again.",
            Self::Forbidden(_) => "Your account may not do this.",
            Self::NotFound(_) => "Not found.",
            Self::Conflict(_) => "This study cannot be changed now.",
            Self::TooLarge(_) => "The file is too large.",
            Self::TooMany(_) => "Too many attempts; please wait a moment.",
            Self::Store(_) | Self::Internal(_) => "Something went wrong on the appliance.",
        }
    }
}

/// The envelope, with `debug_info` timings.
pub struct Envelope {
    status: StatusCode,
    results: Value,
    error: String,
    user_message: String,
    started: Instant,
    extra: Vec<(&'static str, String)>,
}

impl Envelope {
    pub fn ok(status: StatusCode, results: Value, started: Instant) -> Self {
        Self {
            status,
            results,
            error: String::new(),
            user_message: String::new(),
            started,
            extra: Vec::new(),
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "results": self.results,
            "error": self.error,
            "user_message": self.user_message,
            "debug_info": {
                "delta": format!("{:?}", self.started.elapsed()),
                "version": VERSION,
            },
        });
        let mut r = (self.status, Json(body)).into_response();
        for (k, v) in self.extra {
            if let Ok(v) = v.parse() {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// An error the router or an extractor produced (unknown path, wrong
/// method, a path or query that does not parse), as an envelope.
pub fn envelope_error(status: StatusCode, message: &str) -> Response {
    let mut e = Envelope::ok(status, Value::Null, Instant::now());
    e.error = message.to_string();
    e.user_message = match status {
        StatusCode::NOT_FOUND => "Not found.",
        StatusCode::METHOD_NOT_ALLOWED => "This address does not take that method.",
        s if s.is_server_error() => "Something went wrong on the appliance.",
        _ => "The request could not be used; see error.",
    }
    .into();
    e.into_response()
}

/// An error as an envelope; `started` is unknown here, so delta is ~0.
impl IntoResponse for PbsError {
    fn into_response(self) -> Response {
        let mut e = Envelope::ok(self.status(), Value::Null, Instant::now());
        e.error = self.to_string();
        e.user_message = self.user_message().into();
        match &self {
            Self::Unauthorized(f) => {
                e.results = json!({
                    "claim": f.rejection.claim,
                    "reason": f.rejection.reason,
                });
                e.extra.push(("www-authenticate", "Bearer".into()));
            }
            Self::TooMany(secs) => e.extra.push(("retry-after", secs.to_string())),
            Self::Store(err) => tracing::error!(error = %err, "PBS store error"),
            Self::Internal(err) => tracing::error!(error = %err, "PBS internal error"),
            _ => {}
        }
        let mut r = e.into_response();
        r.extensions_mut()
            .insert(FailureReason(self.kind().reason()));
        r
    }
}

type Res = Result<Envelope, PbsError>;

fn clinic(app: &Pbs) -> &Arc<Clinic> {
    &app.clinic
}

fn principal(app: &Pbs, headers: &HeaderMap, action: Action) -> Result<Principal, PbsError> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let p = clinic(app)
        .authenticate(h, true)
        .map_err(|f| PbsError::Unauthorized(Box::new(f)))?;
    if !action.allowed(p.role) {
        return Err(PbsError::Forbidden(format!(
            "role {:?} may not {}",
            p.role.as_str(),
            match action {
                Action::CreateStudy => "create studies",
                Action::Upload => "upload files",
                Action::RequestTasks => "request tasks",
                Action::ReadStatus => "read study status",
                Action::ReadReport => "read reports",
                Action::Search => "search studies",
                Action::ManageOrg => "manage the organisation's users and keys",
            }
        )));
    }
    Ok(p)
}

/// The study, if it exists and belongs to the caller's organisation (other
/// organisations' studies are indistinguishable from missing ones).
fn own_study(app: &Pbs, p: &Principal, id: &str) -> Result<StudyRecord, PbsError> {
    let missing = || PbsError::NotFound(format!("no PBS study {id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    match app.clinic.pbs.get_study(uuid)? {
        Some(s) if s.org == p.org => Ok(s),
        _ => Err(missing()),
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, PbsError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| PbsError::BadRequest(format!("body is not the expected JSON: {e}")))
}

// ---- auth ----

#[derive(Debug, Default, Deserialize)]
pub struct LoginBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    pass_hash: String,
}

pub async fn login(State(app): State<Arc<Pbs>>, parts: Parts, body: Bytes) -> Res {
    let started = Instant::now();
    let ip = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    if let Err(l) = app.limiters.login.check(&format!("pbs:{ip}")) {
        return Err(PbsError::TooMany(l.retry_after_secs));
    }
    let b: LoginBody = parse_json(&body)?;
    let user = b.user.trim().to_ascii_lowercase();
    let hash = b.pass_hash.trim().to_ascii_lowercase();
    if user.is_empty() {
        return Err(PbsError::BadRequest("user is required".into()));
    }
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(PbsError::BadRequest(
            "pass_hash must be the hex sha256 of the password (64 hex digits); raw passwords are not accepted".into(),
        ));
    }
    let store = app.clinic.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<_>, StoreError> {
        match store.pbs.get_user(&user)? {
            Some(u) if crate::auth::password::verify(&hash, &u.pass_hash) => Ok(Some(u)),
            Some(_) => Ok(None),
            None => {
                crate::auth::password::burn_time(&hash);
                Ok(None)
            }
        }
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))??;
    let Some(u) = found else {
        return Err(PbsError::Unauthorized(Box::new(AuthFailure {
            rejection: crate::auth::jwt::Rejection::new("user", "unknown user or wrong password"),
            alg: None,
            kid: None,
            iss: None,
        })));
    };
    let token = clinic(&app).session_token(&u);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(Envelope::ok(
        StatusCode::ACCEPTED,
        json!({
            "login_timestamp": nanos.to_string(),
            "token": {"HY_APP_AUTH_v1": token},
            "user": {
                "email": u.email,
                "id": u.id,
                "screen_name": u.screen_name,
                "user_name": u.email,
                "organisation": u.org,
                "role": u.role.as_str(),
            },
        }),
        started,
    ))
}

/// What is right or wrong with the presented token. Looks only: the token's
/// `jti` is not used up.
pub async fn hello(State(app): State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    let started = Instant::now();
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match clinic(&app).authenticate(h, false) {
        Ok(p) => Ok(Envelope::ok(
            StatusCode::OK,
            json!({
                "valid": true,
                "organisation": p.org,
                "user": p.user.email,
                "user_id": p.user.id,
                "role": p.role.as_str(),
                "verified_with": p.via,
                "audience": app.config.pbs.public_host,
            }),
            started,
        )),
        Err(f) => {
            let mut e = Envelope::ok(
                StatusCode::UNAUTHORIZED,
                json!({
                    "valid": false,
                    "claim": f.rejection.claim,
                    "reason": f.rejection.reason,
                    "alg": f.alg,
                    "kid": f.kid,
                    "iss": f.iss,
                    "expected_audience": app.config.pbs.public_host,
                    "accepted_algorithms": ["RS256 (with kid)", "RS384"],
                }),
                started,
            );
            e.error = f.rejection.to_string();
            e.user_message = "The token was not accepted; see results for why.".into();
            Ok(e)
        }
    }
}

pub async fn heartbeat(State(app): State<Arc<Pbs>>) -> Response {
    let started = Instant::now();
    let beat = hex::encode(rand::random::<[u8; 10]>());
    let ok = app.clinic.healthy();
    let body = json!({
        "delta": format!("{:?}", started.elapsed()),
        "heartbeat": beat,
        "request_timestamp": crate::store::unix_now(),
        "version": VERSION,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

// ---- studies ----

#[derive(Debug, Default, Deserialize)]
pub struct CreateBody {
    #[serde(default)]
    tags: BTreeMap<String, Value>,
}

fn check_tags(tags: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, PbsError> {
    if tags.len() > 64 {
        return Err(PbsError::BadRequest("at most 64 tags per study".into()));
    }
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(PbsError::BadRequest(format!(
                    "tag {k:?}: values are strings"
                )))
            }
        };
        if k.is_empty() || k.len() > 128 || v.len() > 512 {
            return Err(PbsError::BadRequest(format!(
                "tag {k:?}: keys are 1 to 128 bytes, values at most 512"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

pub async fn create_study(State(app): State<Arc<Pbs>>, headers: HeaderMap, body: Bytes) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::CreateStudy)?;
    let b: CreateBody = parse_json(&body)?;
    let tags = check_tags(b.tags)?;
    let rec = StudyRecord {
        id: Uuid::new_v4(),
        org: p.org.clone(),
        created_by: p.user.email.clone(),
        created_at: now_rfc3339(),
        tags,
        files: Vec::new(),
        frozen: false,
        tasks: Vec::new(),
        callback_url: None,
        status: ReportStatus::Open,
        progress: 0.0,
        progress_message: "waiting for files".into(),
        reports: BTreeMap::new(),
        partial: BTreeMap::new(),
        error: None,
    };
    app.clinic.pbs.put_study(&rec)?;
    app.store.flush_async().await?;
    Ok(Envelope::ok(
        StatusCode::CREATED,
        json!({"pbs_study_id": rec.id, "tags": rec.tags}),
        started,
    ))
}

fn study_summary(s: &StudyRecord) -> Value {
    json!({
        "pbs_study_id": s.id,
        "tags": s.tags,
        "created_at": s.created_at,
        "report_status": s.status.as_str(),
        "files": s.files.len(),
        "tasks": s.tasks,
    })
}

pub async fn find_studies(
    State(app): State<Arc<Pbs>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::Search)?;
    let mut tags = Vec::new();
    for (k, v) in q {
        match k.strip_prefix("tag.") {
            Some(t) if !t.is_empty() => tags.push((t.to_string(), v)),
            _ => {
                return Err(PbsError::BadRequest(format!(
                    "unknown query parameter {k:?}; search with tag.KEY=VALUE"
                )))
            }
        }
    }
    let found = app.clinic.pbs.find_studies(&p.org, &tags)?;
    Ok(Envelope::ok(
        StatusCode::OK,
        json!({"pbs_studies": found.iter().map(study_summary).collect::<Vec<_>>(), "count": found.len()}),
        started,
    ))
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    file_name: Option<String>,
    content_type: Option<String>,
}

/// The declared type: from `content_type`, else `file_name`'s extension.
fn declared_type(q: &UploadQuery) -> Option<&'static str> {
    let by_mime = |m: &str| match m.trim().to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" => Some("image/jpeg"),
        "image/png" => Some("image/png"),
        "image/tiff" => Some("image/tiff"),
        "image/bmp" => Some("image/bmp"),
        "image/webp" => Some("image/webp"),
        _ => None,
    };
    if let Some(ct) = q.content_type.as_deref().filter(|c| !c.is_empty()) {
        return by_mime(ct);
    }
    let name = q.file_name.as_deref()?;
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "tif" | "tiff" => Some("image/tiff"),
        "bmp" => Some("image/bmp"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

pub async fn upload_file(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<UploadQuery>,
    body: axum::body::Body,
) -> Res {
    let started = Instant::now();
    let limit = app.config.pbs.max_file_bytes;
    let checked = (|| {
        let p = principal(&app, &headers, Action::Upload)?;
        let study = own_study(&app, &p, &id)?;
        let Some(content_type) = declared_type(&q) else {
            return Err(PbsError::BadRequest(match (&q.file_name, &q.content_type) {
                (None, None) => "give file_name (e.g. MS12_12.jpg) or content_type (e.g. image/jpeg) so the file type can be determined".into(),
                _ => "the file type could not be determined; accepted: JPEG, PNG, TIFF, BMP, WebP (by file_name extension or content_type)".into(),
            }));
        };
        if study.frozen {
            return Err(PbsError::Conflict(
                "tasks were already requested for this study; no more files can be added".into(),
            ));
        }
        Ok((study, content_type))
    })();
    // A refused upload's body is read to the end by http::linger.
    let (study, content_type) = checked?;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        PbsError::TooLarge(format!(
            "the body is over the limit of {limit} bytes (or the upload broke off)"
        ))
    })?;
    if body.is_empty() {
        return Err(PbsError::BadRequest(
            "the body is empty; send the image bytes as the body".into(),
        ));
    }
    let file_id = format!("sha224-i-{}", hex::encode(sha2::Sha224::digest(&body)));
    if study.files.iter().any(|f| f.file_id == file_id) {
        return Ok(Envelope::ok(
            StatusCode::OK,
            json!({"pbs_study_id": study.id, "file_id": file_id, "duplicate": true}),
            started,
        ));
    }
    if study.files.len() >= app.config.pbs.max_files_per_study {
        return Err(PbsError::Conflict(format!(
            "the study already holds {} files, the most allowed",
            study.files.len()
        )));
    }
    // Decode now, so a file the analysis could not read is refused here.
    let limits = crate::imaging::DecodeLimits {
        max_pixels: app.config.limits.max_pixels,
        formats: ["jpeg", "png", "webp", "bmp", "tiff"]
            .map(String::from)
            .to_vec(),
    };
    let data = body.clone();
    let (w, h) = tokio::task::spawn_blocking(move || {
        crate::imaging::decode(&data, &limits).map(|d| (d.image.width(), d.image.height()))
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))?
    .map_err(|e| PbsError::BadRequest(format!("the file is not a usable image: {e}")))?;
    let ext = content_type.rsplit('/').next().unwrap_or("bin");
    let blob = format!("pbs/{}.{ext}", &file_id["sha224-i-".len()..]);
    {
        let (store, blob, data) = (app.store.clone(), blob.clone(), body.clone());
        tokio::task::spawn_blocking(move || store.blobs.put(&blob, &data))
            .await
            .map_err(|e| PbsError::Internal(e.to_string()))??;
    }
    let rec = FileRecord {
        file_id: file_id.clone(),
        file_name: q.file_name.clone(),
        content_type: content_type.into(),
        bytes: body.len(),
        width: w,
        height: h,
        blob,
        uploaded_at: now_rfc3339(),
    };
    let outcome = app.clinic.pbs.update_study(study.id, |s| {
        if s.frozen {
            return Ok(Err(()));
        }
        if !s.files.iter().any(|f| f.file_id == rec.file_id) {
            s.files.push(rec.clone());
        }
        Ok(Ok(()))
    })?;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(())) => {
            return Err(PbsError::Conflict(
                "tasks were requested for this study meanwhile; the file was not added".into(),
            ))
        }
        None => return Err(PbsError::NotFound(format!("no PBS study {id}"))),
    }
    app.store.flush_async().await?;
    Ok(Envelope::ok(
        StatusCode::CREATED,
        json!({"pbs_study_id": study.id, "file_id": file_id}),
        started,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct TasksBody {
    #[serde(default)]
    diagnostic_tasks: Vec<String>,
    #[serde(default)]
    callback_url: Option<String>,
}

fn known_tasks() -> String {
    clinic::TASKS
        .iter()
        .map(|(n, what)| format!("{n} ({what})"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn request_tasks(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::RequestTasks)?;
    let study = own_study(&app, &p, &id)?;
    let b: TasksBody = parse_json(&body)?;
    if b.diagnostic_tasks.is_empty() {
        return Err(PbsError::BadRequest(format!(
            "diagnostic_tasks is empty; known tasks: {}",
            known_tasks()
        )));
    }
    let mut tasks: Vec<String> = Vec::new();
    for t in &b.diagnostic_tasks {
        if !clinic::is_known_task(t) {
            return Err(PbsError::BadRequest(format!(
                "unknown task {t:?}; known tasks: {}",
                known_tasks()
            )));
        }
        if !tasks.contains(t) {
            tasks.push(t.clone());
        }
    }
    if let Some(url) = &b.callback_url {
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
    let res = app.clinic.pbs.update_study(study.id, |s| {
        if matches!(s.status, ReportStatus::Queued | ReportStatus::Processing) {
            return Ok(Err(s.status));
        }
        // Asking again once the reports exist runs a new revision.
        s.frozen = true;
        s.tasks = tasks.clone();
        if b.callback_url.is_some() {
            s.callback_url = b.callback_url.clone();
        }
        s.status = ReportStatus::Queued;
        s.progress = 0.0;
        s.progress_message = "queued for analysis".into();
        s.partial.clear();
        s.error = None;
        Ok(Ok(()))
    })?;
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
    app.clinic.queue.enqueue(study.id)?;
    app.store.flush_async().await?;
    app.clinic.queue.wake();
    Ok(Envelope::ok(
        StatusCode::ACCEPTED,
        json!({"pbs_study_id": study.id, "tasks": tasks}),
        started,
    ))
}

pub async fn study_status(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ReadStatus)?;
    let s = own_study(&app, &p, &id)?;
    Ok(Envelope::ok(
        StatusCode::OK,
        json!({
            "pbs_study_id": s.id,
            "report_status": s.status.as_str(),
            "progress": s.progress,
            "progress_message": s.progress_message,
            "files": s.files.len(),
            "tasks": s.tasks,
            "error": s.error,
        }),
        started,
    ))
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    version: Option<String>,
}

pub async fn study_report(
    State(app): State<Arc<Pbs>>,
    Path((id, task)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ReadReport)?;
    let s = own_study(&app, &p, &id)?;
    if !clinic::is_known_task(&task) {
        return Err(PbsError::BadRequest(format!(
            "unknown task {task:?}; known tasks: {}",
            known_tasks()
        )));
    }
    let versions = s.reports.get(&task).map(Vec::as_slice).unwrap_or(&[]);
    if versions.is_empty() {
        return Err(if s.tasks.contains(&task) {
            PbsError::Conflict(format!(
                "the {task} report is not ready yet (status {})",
                s.status.as_str()
            ))
        } else {
            PbsError::NotFound(format!("{task} was not requested for this study"))
        });
    }
    let n = match q.version.as_deref() {
        None | Some("") | Some("latest") => versions.len(),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=versions.len()).contains(n))
            .ok_or_else(|| {
                PbsError::NotFound(format!(
                    "version {v:?} does not exist; versions 1 to {}",
                    versions.len()
                ))
            })?,
    };
    Ok(Envelope::ok(
        StatusCode::OK,
        json!({
            "pbs_study_id": s.id,
            "version": n,
            "versions": versions.len(),
            "report": { task: versions[n - 1] },
        }),
        started,
    ))
}

// ---- organisation admin ----

#[derive(Debug, Default, Deserialize)]
pub struct AddUserBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

fn admin_result(started: Instant, status: StatusCode, r: Result<Value, String>) -> Res {
    r.map(|v| Envelope::ok(status, v, started))
        .map_err(PbsError::BadRequest)
}

pub async fn list_users(State(app): State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    admin_result(
        started,
        StatusCode::OK,
        org::list_users(&app.clinic.pbs, Some(&p.org)),
    )
}

pub async fn add_user(State(app): State<Arc<Pbs>>, headers: HeaderMap, body: Bytes) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    let b: AddUserBody = parse_json(&body)?;
    let store = app.clinic.pbs.clone();
    let r = tokio::task::spawn_blocking(move || {
        org::add_user(&store, &p.org, &b.user, &b.role, &b.password)
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))?;
    admin_result(started, StatusCode::CREATED, r)
}

pub async fn remove_user(
    State(app): State<Arc<Pbs>>,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    org::remove_user(&app.clinic.pbs, Some(&p.org), &email)
        .map(|v| Envelope::ok(StatusCode::OK, v, started))
        .map_err(PbsError::NotFound)
}

#[derive(Debug, Default, Deserialize)]
pub struct AddKeyBody {
    #[serde(default)]
    public_key_pem: String,
    #[serde(default)]
    kid: Option<String>,
}

pub async fn list_keys(State(app): State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    admin_result(
        started,
        StatusCode::OK,
        org::list_keys(&app.clinic.pbs, Some(&p.org)),
    )
}

pub async fn add_key(State(app): State<Arc<Pbs>>, headers: HeaderMap, body: Bytes) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    let b: AddKeyBody = parse_json(&body)?;
    admin_result(
        started,
        StatusCode::CREATED,
        org::add_key(&app.clinic.pbs, &p.org, &b.public_key_pem, b.kid.as_deref()),
    )
}

pub async fn revoke_key(
    State(app): State<Arc<Pbs>>,
    Path(kid): Path<String>,
    headers: HeaderMap,
) -> Res {
    let started = Instant::now();
    let p = principal(&app, &headers, Action::ManageOrg)?;
    org::revoke_key(&app.clinic.pbs, Some(&p.org), &kid)
        .map(|v| Envelope::ok(StatusCode::OK, v, started))
        .map_err(PbsError::NotFound)
}
