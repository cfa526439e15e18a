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
use serde_json::Value;
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::caller::{access, Caller};
use super::schema;
use super::Pbs;
use crate::audit::{Event, Outcome};
use crate::families::pbs::identity::{AuthFailure, Principal};
use crate::families::pbs::store::{FileRecord, ReportStatus, StudyRecord};
use crate::families::pbs::{self as clinic, Clinic};
use crate::http::extract::ClientIp;
use crate::http::ClientAddr;
use crate::store::{blocking, now_rfc3339, StoreError};

pub use super::envelope::{envelope_error, Envelope, EnvelopeBody, ErrorBody, PbsError};
use super::envelope::{parse_json, Res, VERSION};
use crate::http::openapi::TAG_PBS;

fn clinic(app: &Pbs) -> &Arc<Clinic> {
    &app.clinic
}

/// The study, if it exists and belongs to the caller's organisation (other
/// organisations' studies are indistinguishable from missing ones).
async fn own_study(app: &Pbs, p: &Principal, id: &str) -> Result<StudyRecord, PbsError> {
    let missing = || PbsError::NotFound(format!("no PBS study {id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let pbs = app.clinic.pbs.clone();
    match blocking(move || pbs.get_study(uuid)).await? {
        Some(s) if s.org == p.org => Ok(s),
        _ => Err(missing()),
    }
}

// ---- auth ----

/// `POST /auth/login`: a user name and the hex SHA-256 of the password
/// (never the password itself).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(
    as = pbs::LoginRequest,
    example = json!({
        "user": "ali@example.com",
        "pass_hash": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    })
)]
pub struct LoginBody {
    /// The user's e-mail address (case does not matter).
    #[serde(default)]
    user: String,
    /// The hex SHA-256 of the password: 64 hex digits.
    #[serde(default)]
    pass_hash: String,
}

/// Sign in with a user name and password hash.
///
/// Answers 202 with a session token (`results.token.HY_APP_AUTH_v1`) to
/// send as `Authorization: Bearer <token>`. The password is sent as its
/// hex SHA-256; a raw password is refused (400). Unknown users and wrong
/// passwords are one 401. Attempts are limited per client address and per
/// user name (429 with `Retry-After`, in seconds).
#[utoipa::path(
    post,
    path = "/auth/login",
    operation_id = "pbs_login",
    tag = TAG_PBS,
    request_body(content = LoginBody, content_type = "application/json",
                 description = "The user and the hex SHA-256 of the password."),
    responses(
        (status = 202, description = "Signed in: the session token and the user.",
         body = EnvelopeBody<schema::Login>),
        (status = 400, description = "The body is not the expected JSON, `user` is missing, \
         or `pass_hash` is not 64 hex digits.", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password (`results.claim` is \
         `user`).", body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this user.",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn login(State(app): State<Arc<Pbs>>, parts: Parts, body: Bytes) -> Res {
    let started = Instant::now();
    let ip = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let b: LoginBody = parse_json(&body)?;
    let user = b.user.trim().to_ascii_lowercase();
    let ev = Event {
        family: "pbs",
        action: "login",
        actor: Some(&user),
        address: Some(&ip),
        ..Default::default()
    };
    // Before any password is verified: per address and per user name.
    if let Err(l) = app.limiters.login.gate("pbs", &ip, &user) {
        app.audit.record(
            Event {
                detail: Some("rate limited"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(PbsError::TooMany(l.retry_after_secs));
    }
    let hash = b.pass_hash.trim().to_ascii_lowercase();
    if user.is_empty() {
        return Err(PbsError::BadRequest("user is required".into()));
    }
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(PbsError::BadRequest(
            "pass_hash must be the hex sha256 of the password (64 hex digits); raw passwords are not accepted".into(),
        ));
    }
    let (store, who, lookup) = (app.clinic.clone(), user.clone(), user.clone());
    // The login names no organisation: the user whose password it is,
    // among the organisations that have this user name.
    let found = tokio::task::spawn_blocking(move || -> Result<Option<_>, StoreError> {
        let users = store.pbs.users_named(&lookup)?;
        if users.is_empty() {
            crate::auth::password::burn_time(&hash);
        }
        Ok(users
            .into_iter()
            .find(|u| crate::auth::password::verify(&hash, &u.pass_hash)))
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))??;
    let Some(u) = found else {
        app.audit.record(
            Event {
                detail: Some("unknown user or wrong password"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(PbsError::Unauthorized(Box::new(AuthFailure {
            rejection: crate::auth::jwt::Rejection::new("user", "unknown user or wrong password"),
            alg: None,
            kid: None,
            iss: None,
        })));
    };
    app.audit.record(ev, Outcome::Ok);
    app.limiters.login.refund("pbs", &ip, &who);
    let token = clinic(&app).session_token(&u);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(Envelope::ok(
        StatusCode::ACCEPTED,
        schema::Login {
            login_timestamp: nanos.to_string(),
            token: schema::Token {
                hy_app_auth_v1: token,
            },
            user: schema::LoginUser {
                email: u.email.clone(),
                id: u.id,
                screen_name: u.screen_name.clone(),
                user_name: u.email.clone(),
                organisation: u.org.clone(),
                role: u.role.as_str(),
            },
        },
        started,
    ))
}

/// Check a token: what is right or wrong with it.
///
/// Verifies the `Authorization` token as every authenticated route does,
/// without spending it (a client-signed token's `jti` stays usable).
/// Answers 200 with who the token speaks for, or 401 with the claim at
/// fault and what the appliance expects (`aud`, algorithms).
#[utoipa::path(
    post,
    path = "/auth/hello",
    operation_id = "pbs_hello",
    tag = TAG_PBS,
    security((), ("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The token is accepted.",
         body = EnvelopeBody<schema::HelloValid>),
        (status = 401, description = "The token is missing or refused; `results` says why.",
         body = EnvelopeBody<schema::HelloRefused>),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn hello(State(app): State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    let started = Instant::now();
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let c = app.clinic.clone();
    // Verifying reads the store (keys, spent token ids).
    let verdict = tokio::task::spawn_blocking(move || c.authenticate(h.as_deref(), false))
        .await
        .map_err(|e| PbsError::Internal(e.to_string()))?;
    match verdict {
        Ok(p) => Ok(Envelope::ok(
            StatusCode::OK,
            schema::HelloValid {
                valid: true,
                organisation: p.org,
                user: p.user.email,
                user_id: p.user.id,
                role: p.role.as_str(),
                verified_with: p.via,
                audience: app.config.pbs.public_host.clone(),
            },
            started,
        )),
        Err(f) => {
            let mut e = Envelope::ok(
                StatusCode::UNAUTHORIZED,
                schema::HelloRefused {
                    valid: false,
                    claim: f.rejection.claim.to_string(),
                    reason: f.rejection.reason.clone(),
                    alg: f.alg,
                    kid: f.kid.clone(),
                    iss: f.iss.clone(),
                    expected_audience: app.config.pbs.public_host.clone(),
                    accepted_algorithms: ["RS256 (with kid)", "RS384"],
                },
                started,
            );
            e.error = f.rejection.to_string();
            e.user_message = "The token was not accepted; see results for why.".into();
            Ok(e)
        }
    }
}

/// Check a token: what is right or wrong with it (as `POST /auth/hello`).
#[utoipa::path(
    get,
    path = "/auth/hello",
    operation_id = "pbs_hello_get",
    tag = TAG_PBS,
    security((), ("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The token is accepted.",
         body = EnvelopeBody<schema::HelloValid>),
        (status = 401, description = "The token is missing or refused; `results` says why.",
         body = EnvelopeBody<schema::HelloRefused>),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn hello_get(app: State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    hello(app, headers).await
}

/// Is the blood-smear service up? Not enveloped, and needs no token.
///
/// 200 when the cell models' batchers are running, 503 (same body) when
/// they are not.
#[utoipa::path(
    get,
    path = "/heartbeat",
    operation_id = "pbs_heartbeat",
    tag = TAG_PBS,
    responses(
        (status = 200, description = "The service is up.", body = schema::Heartbeat),
        (status = 503, description = "The analysis is not running.", body = schema::Heartbeat),
    ),
)]
pub async fn heartbeat(State(app): State<Arc<Pbs>>) -> Response {
    let started = Instant::now();
    let beat = hex::encode(rand::random::<[u8; 10]>());
    let ok = app.clinic.healthy();
    let body = schema::Heartbeat {
        delta: format!("{:?}", started.elapsed()),
        heartbeat: beat,
        request_timestamp: crate::store::unix_now(),
        version: VERSION,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

// ---- studies ----

/// `POST /pbs`: optional tags to find the study by later. No personal
/// data (PII, PHI) in tags.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = pbs::CreateStudy, example = json!({"tags": {"patient_proxy_id": "PPID12345"}}))]
pub struct CreateBody {
    /// At most 64; keys 1 to 128 bytes, values at most 512 bytes. Values
    /// are strings (numbers and booleans are stored as strings).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
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

/// Create a study (a PBS id) to upload a smear's photos into.
///
/// The body is optional (empty means no tags). Answers 201 with
/// `results.pbs_study_id`. Roles: admin, user, device.
#[utoipa::path(
    post,
    path = "/pbs",
    operation_id = "pbs_create_study",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    request_body(content = Option<CreateBody>, content_type = "application/json",
                 description = "Tags; the body may be empty."),
    responses(
        (status = 201, description = "The study was created.",
         body = EnvelopeBody<schema::StudyCreated>),
        (status = 400, description = "The body is not the expected JSON, or a tag breaks \
         the limits.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not create studies.",
         body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn create_study(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::CreateStudy>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
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
    let pbs = app.clinic.pbs.clone();
    let rec = blocking(move || pbs.put_study(&rec).map(|_| rec)).await?;
    app.store.flush_async().await?;
    Ok(Envelope::ok(
        StatusCode::CREATED,
        schema::StudyCreated {
            pbs_study_id: rec.id,
            tags: rec.tags.clone(),
        },
        started,
    ))
}

/// Find the organisation's studies by tags.
///
/// Every query parameter is a tag filter `tag.KEY=VALUE`; a study must
/// carry all of them. No parameter lists every study of the caller's
/// organisation. Roles: admin, user, service.
#[utoipa::path(
    get,
    path = "/pbs",
    operation_id = "pbs_find_studies",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("tags" = Option<BTreeMap<String, String>>, Query, style = Form, explode,
         description = "Tag filters, each written `tag.KEY=VALUE` \
         (`?tag.patient_proxy_id=PPID12345`). Any other parameter is a 400.",
         example = json!({"tag.patient_proxy_id": "PPID12345"})),
    ),
    responses(
        (status = 200, description = "The studies that carry every tag asked for.",
         body = EnvelopeBody<schema::StudyList>),
        (status = 400, description = "A query parameter that is not `tag.KEY`.",
         body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not search studies.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn find_studies(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::Search>,
    ClientIp(ip): ClientIp,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    app.audit.record(
        Event {
            family: "pbs",
            action: "studies_searched",
            actor: Some(&p.user.email),
            address: Some(&ip),
            detail: Some(&format!("{q:?}")),
            ..Default::default()
        },
        Outcome::Ok,
    );
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
    let (pbs, org) = (app.clinic.pbs.clone(), p.org.clone());
    let found = blocking(move || pbs.find_studies(&org, &tags)).await?;
    Ok(Envelope::ok(
        StatusCode::OK,
        schema::StudyList {
            pbs_studies: found.iter().map(schema::StudySummary::from).collect(),
            count: found.len(),
        },
        started,
    ))
}

/// How the type of an uploaded file is told: one of the two is needed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name; its extension gives the type (`.jpg`, `.jpeg`,
    /// `.png`, `.tif`, `.tiff`, `.bmp`, `.webp`).
    #[param(example = "MS12_12.jpg")]
    file_name: Option<String>,
    /// The file's type (`image/jpeg`, `image/png`, `image/tiff`,
    /// `image/bmp`, `image/webp`); wins over `file_name`.
    #[param(example = "image/jpeg")]
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

/// Add a photo of the smear to a study.
///
/// The whole body is the image (not multipart, not a form); its type comes
/// from the `content_type` or `file_name` query parameter, not from the
/// `Content-Type` header. At most `pbs.max_file_bytes` per file and
/// `pbs.max_files_per_study` files. The image is decoded on arrival, so a
/// file the analysis could not read is refused here. Idempotent: the same
/// bytes again answer 200 with `duplicate: true`. No more files once tasks
/// were requested (409). Roles: admin, user, device.
#[utoipa::path(
    post,
    path = "/pbs/{id}/files",
    operation_id = "pbs_upload_file",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("id" = Uuid, Path, description = "The study's `pbs_study_id`."),
        UploadQuery,
    ),
    request_body(
        description = "The image file's bytes, as the whole body.",
        content(
            ("image/jpeg"),
            ("image/png"),
            ("image/tiff"),
            ("image/bmp"),
            ("image/webp"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 201, description = "The file was added.",
         body = EnvelopeBody<schema::FileAdded>),
        (status = 200, description = "These bytes were already in the study \
         (`duplicate: true`); nothing changed.", body = EnvelopeBody<schema::FileAdded>),
        (status = 400, description = "No usable `file_name` or `content_type`, an empty \
         body, or a file that is not a usable image.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not upload files.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 409, description = "Tasks were already requested for the study, or it \
         holds the most files allowed.", body = ErrorBody),
        (status = 413, description = "The file is over `pbs.max_file_bytes`, or too large \
         to decode.", body = ErrorBody),
        (status = 503, description = "The appliance's decode memory is in use; try again.",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn upload_file(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    caller: Caller<access::Upload>,
    body: axum::body::Body,
) -> Res {
    let started = Instant::now();
    let limit = app.config.pbs.max_file_bytes;
    let checked = async {
        let p = caller.0;
        let study = own_study(&app, &p, &id).await?;
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
    }
    .await;
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
            schema::FileAdded {
                pbs_study_id: study.id,
                file_id,
                duplicate: true,
            },
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
    let _reservation = app.decode_budget.reserve(&body).await?;
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
    let (pbs, sid) = (app.clinic.pbs.clone(), study.id);
    let outcome = blocking(move || {
        pbs.update_study(sid, |s| {
            if s.frozen {
                return Ok(Err(()));
            }
            if !s.files.iter().any(|f| f.file_id == rec.file_id) {
                s.files.push(rec.clone());
            }
            Ok(Ok(()))
        })
    })
    .await?;
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
        schema::FileAdded {
            pbs_study_id: study.id,
            file_id,
            duplicate: false,
        },
        started,
    ))
}

/// `POST /pbs/{id}/tasks`: the analyses to run, and where to announce the
/// reports.
#[derive(Debug, Default, Deserialize, ToSchema)]
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
    /// review).
    #[serde(default)]
    diagnostic_tasks: Vec<String>,
    /// An `https://` URL with a valid certificate, POSTed a signed
    /// `{pbs_study_id, report_status, progress}` when the reports are
    /// ready. Private and loopback addresses are refused.
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
            if callback_url.is_some() {
                s.callback_url = callback_url.clone();
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
/// concentrations. Roles: admin, user, service (not device).
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
        (status = 403, description = "The token's role may not read reports.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation, the task \
         was not requested for it, or no such version.", body = ErrorBody),
        (status = 409, description = "The task was requested but its report is not ready \
         yet.", body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn study_report(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    Path((id, task)): Path<(String, String)>,
    Query(q): Query<ReportQuery>,
    caller: Caller<access::ReadReport>,
) -> Result<Response, PbsError> {
    let started = Instant::now();
    let p = caller.0;
    let s = own_study(&app, &p, &id).await?;
    app.audit.record(
        Event {
            family: "pbs",
            action: "report_read",
            actor: Some(&p.user.email),
            address: Some(&ip),
            object: Some(&format!("{id}/{task}")),
            ..Default::default()
        },
        Outcome::Ok,
    );
    if !clinic::is_known_task(&task) {
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
    if fhir {
        let src = super::fhir::Source::study(&s, &task, n);
        let report = super::fhir::diagnostic_report(&task, &versions[n - 1], &src)
            .map_err(|e| PbsError::Internal(e.to_string()))?;
        let body = serde_json::to_vec(&report).map_err(|e| PbsError::Internal(e.to_string()))?;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, super::fhir::CONTENT_TYPE)],
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
            report: BTreeMap::from([(task.clone(), versions[n - 1].clone())]),
        },
        started,
    )
    .into_response())
}
