//! The PBS family's documented `results` (reference 003), as typed structs;
//! each travels inside the envelope (`envelope::Envelope`). Their OpenAPI
//! schemas are derived from these same structs, named `pbs.<Struct>` so
//! they never collide with another family's.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::scale::RbcScale;
use super::store::{KeyRecord, StudyRecord, UserRecord};

/// An `f32` as its shortest decimal (0.7, not 0.699999988079071), in
/// every answer and in the reports kept as JSON.
pub(crate) use crate::http::decimal as short;

fn ser_f32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(short(*v))
}

/// A fraction to three decimals, as [`short`] writes it.
fn ser_fraction<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(short((v * 1000.0).round() / 1000.0))
}

fn ser_f32_map<S: serde::Serializer>(m: &BTreeMap<String, f32>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, short(*v))))
}

/// A user of an organisation.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::User,
    example = json!({
        "id": "03349841-588d-56b3-b93c-52d0983f9c75",
        "email": "ali@example.com",
        "user_name": "ali@example.com",
        "screen_name": "ali",
        "organisation": "clinic-1",
        "role": "device",
        "created_at": "2025-05-01T09:30:00Z"
    })
)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    /// The e-mail address again (the reference's `user_name`).
    pub user_name: String,
    /// The part of the e-mail address before `@`.
    pub screen_name: String,
    pub organisation: String,
    /// "admin", "user", "device" or "service".
    #[schema(value_type = String)]
    pub role: &'static str,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            user_name: u.email.clone(),
            screen_name: u.screen_name.clone(),
            organisation: u.org.clone(),
            role: u.role.as_str(),
            created_at: u.created_at.clone(),
        }
    }
}

/// `POST /pbs/admin/users` (and `argusd pbs users add`): the user, whether
/// it existed, and the organisation's callback secret when this created it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::UserAdded)]
pub struct UserAdded {
    #[serde(flatten)]
    pub user: UserView,
    /// True when the user existed and its password and role were reset.
    pub updated: bool,
    /// The secret the organisation's report callbacks are signed with;
    /// only present when this call created the organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

/// An organisation's public key for client-signed tokens.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::Key,
    example = json!({
        "kid": "4f1c2a9e0b7d4e6f8a1b2c3d4e5f6a7b",
        "organisation": "clinic-1",
        "bits": 2048,
        "algorithms": ["RS256", "RS384"],
        "created_at": "2025-05-01T09:30:00Z",
        "revoked_at": null,
        "active": true
    })
)]
pub struct KeyView {
    /// The key's id, the `kid` header of tokens it signs.
    pub kid: String,
    pub organisation: String,
    /// The RSA modulus size.
    pub bits: usize,
    /// Always `["RS256", "RS384"]`.
    #[schema(value_type = Vec<String>)]
    pub algorithms: [&'static str; 2],
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// False once revoked: tokens it signs are refused.
    pub active: bool,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> Self {
        Self {
            kid: k.kid.clone(),
            organisation: k.org.clone(),
            bits: k.bits,
            algorithms: ["RS256", "RS384"],
            created_at: k.created_at.clone(),
            revoked_at: k.revoked_at.clone(),
            active: k.revoked_at.is_none(),
        }
    }
}

/// `argusd pbs org-secret`.
#[derive(Debug, Serialize)]
pub struct OrgSecret {
    pub organisation: String,
    pub callback_secret: String,
}

/// The session token, under the reference's name.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::Token)]
pub struct Token {
    /// The session JWT: send it as `Authorization: Bearer <token>` (or bare).
    #[serde(rename = "HY_APP_AUTH_v1")]
    pub hy_app_auth_v1: String,
}

/// The user a login signed in.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::LoginUser)]
pub struct LoginUser {
    pub email: String,
    pub id: Uuid,
    pub screen_name: String,
    pub user_name: String,
    pub organisation: String,
    /// "admin", "user", "device" or "service".
    #[schema(value_type = String)]
    pub role: &'static str,
}

/// `POST /auth/login` (202).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::Login,
    example = json!({
        "login_timestamp": "1682945428455621477",
        "token": {"HY_APP_AUTH_v1": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."},
        "user": {
            "email": "ali@example.com",
            "id": "03349841-588d-56b3-b93c-52d0983f9c75",
            "screen_name": "ali",
            "user_name": "ali@example.com",
            "organisation": "clinic-1",
            "role": "user"
        }
    })
)]
pub struct Login {
    /// Nanoseconds since the Unix epoch, as a string.
    pub login_timestamp: String,
    pub token: Token,
    pub user: LoginUser,
}

/// `/auth/hello` with a token that is accepted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::HelloValid,
    example = json!({
        "valid": true,
        "organisation": "clinic-1",
        "user": "scanner-7@clinic-1.example",
        "user_id": "01234567-789d-46b7-b38c-45d4562f5c12",
        "role": "device",
        "verified_with": "key 4f1c2a9e0b7d4e6f8a1b2c3d4e5f6a7b",
        "audience": "argus.clinic-1.example"
    })
)]
pub struct HelloValid {
    /// Always true here.
    pub valid: bool,
    pub organisation: String,
    /// The user's e-mail address.
    pub user: String,
    pub user_id: Uuid,
    /// "admin", "user", "device" or "service".
    #[schema(value_type = String)]
    pub role: &'static str,
    /// "session" or the key id a client-signed token was verified with.
    pub verified_with: String,
    /// The `aud` tokens must carry: the appliance's public host name.
    pub audience: String,
}

/// `/auth/hello` with a token that is refused (401): what was wrong.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::HelloRefused,
    example = json!({
        "valid": false,
        "claim": "aud",
        "reason": "aud must be argus.clinic-1.example",
        "alg": "RS384",
        "kid": null,
        "iss": "clinic-1",
        "expected_audience": "argus.clinic-1.example",
        "accepted_algorithms": ["RS256 (with kid)", "RS384"]
    })
)]
pub struct HelloRefused {
    /// Always false here.
    pub valid: bool,
    /// The claim at fault (see `pbs.AuthRejection`).
    pub claim: String,
    pub reason: String,
    /// What was read from the token before it was refused.
    #[schema(value_type = Option<String>)]
    pub alg: Option<&'static str>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    /// The `aud` tokens must carry.
    pub expected_audience: String,
    #[schema(value_type = Vec<String>)]
    pub accepted_algorithms: [&'static str; 2],
}

/// `GET /heartbeat` (not enveloped).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::Heartbeat,
    example = json!({
        "delta": "59.078µs",
        "heartbeat": "a7ef8fba741237f693c3",
        "request_timestamp": 1680716829,
        "version": "argusd.0.1.0"
    })
)]
pub struct Heartbeat {
    /// Time taken, in Rust's `Duration` notation.
    pub delta: String,
    /// 20 random hex digits, new on every call.
    pub heartbeat: String,
    /// Unix seconds.
    pub request_timestamp: u64,
    /// `argusd.<crate version>`.
    #[schema(value_type = String)]
    pub version: &'static str,
}

/// A study that was deleted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::StudyDeleted)]
pub struct StudyDeleted {
    pub pbs_study_id: Uuid,
    /// Always true: the record, its reports, the cells found and its
    /// photos are gone.
    pub deleted: bool,
    /// How many photos it held.
    pub files: usize,
}

/// `POST /pbs` (201).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::StudyCreated,
    example = json!({
        "pbs_study_id": "c7d453a9-676d-4b9f-a505-8a9021b76dfd",
        "tags": {"patient_proxy_id": "PPID12345"}
    })
)]
pub struct StudyCreated {
    /// The study's id: keep it to upload files, request tasks and read
    /// reports.
    pub pbs_study_id: Uuid,
    /// The tags as stored (numbers and booleans become strings).
    pub tags: BTreeMap<String, String>,
}

/// A study as searched.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::StudySummary)]
pub struct StudySummary {
    pub pbs_study_id: Uuid,
    pub tags: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// "open", "queued", "processing", "ready" or "failed".
    #[schema(value_type = String)]
    pub report_status: &'static str,
    /// How many files the study holds.
    pub files: usize,
    /// The tasks last requested.
    pub tasks: Vec<String>,
}

impl From<&StudyRecord> for StudySummary {
    fn from(s: &StudyRecord) -> Self {
        Self {
            pbs_study_id: s.id,
            tags: s.tags.clone(),
            created_at: s.created_at.clone(),
            report_status: s.status.as_str(),
            files: s.files.len(),
            tasks: s.tasks.clone(),
        }
    }
}

/// `GET /pbs?tag.KEY=VALUE`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::StudyList,
    example = json!({
        "pbs_studies": [{
            "pbs_study_id": "c7d453a9-676d-4b9f-a505-8a9021b76dfd",
            "tags": {"patient_proxy_id": "PPID12345"},
            "created_at": "2025-05-01T09:30:00Z",
            "report_status": "ready",
            "files": 3,
            "tasks": ["MALARIA_ANY_ANY"]
        }],
        "count": 1
    })
)]
pub struct StudyList {
    /// The caller's organisation's studies that carry every tag asked for.
    pub pbs_studies: Vec<StudySummary>,
    /// How many there are.
    pub count: usize,
}

/// `POST /pbs/{id}/files` (201; `duplicate` when the same bytes were
/// already uploaded, 200).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::FileAdded,
    example = json!({
        "pbs_study_id": "c7d453a9-676d-4b9f-a505-8a9021b76dfd",
        "file_id": "sha224-i-4d58b0cee1e38f75f93e2e605d1e6ad44c24a975d0c3b53367de7c86"
    })
)]
pub struct FileAdded {
    pub pbs_study_id: Uuid,
    /// `sha224-i-` and the hex SHA-224 of the file's bytes.
    pub file_id: String,
    /// Present (true) only when these bytes were already in the study.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub duplicate: bool,
}

/// `POST /pbs/{id}/tasks` (202).
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::TasksAccepted,
    example = json!({
        "pbs_study_id": "48ae6352-d15d-440a-83f3-05a1f68aa11b",
        "tasks": ["MALARIA_ANY_ANY"]
    })
)]
pub struct TasksAccepted {
    pub pbs_study_id: Uuid,
    /// The tasks queued, without repeats.
    pub tasks: Vec<String>,
}

/// `GET /pbs/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::StudyStatus,
    example = json!({
        "pbs_study_id": "62dd0300-880e-4069-bea8-66c9ca73c207",
        "report_status": "ready",
        "progress": 1.0,
        "progress_message": "Reports are ready",
        "files": 3,
        "tasks": ["MALARIA_ANY_ANY"],
        "error": null
    })
)]
pub struct StudyStatus {
    pub pbs_study_id: Uuid,
    /// "open", "queued", "processing", "ready" or "failed".
    #[schema(value_type = String)]
    pub report_status: &'static str,
    /// 0 to 1.
    #[serde(serialize_with = "ser_fraction")]
    pub progress: f32,
    pub progress_message: String,
    /// How many files the study holds.
    pub files: usize,
    /// The tasks requested.
    pub tasks: Vec<String>,
    /// Why the analysis failed, when `report_status` is "failed".
    pub error: Option<String>,
}

/// `GET /pbs/{id}/report/{task}`: revision `version` of `versions`;
/// `report` holds the one task's report under its name.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::ReportView,
    example = json!({
        "pbs_study_id": "4bb7fe9e-b608-4d68-adbe-8655c991f494",
        "version": 1,
        "versions": 1,
        "report": {
            "MALARIA_ANY_ANY": {
                "positive_count": 12,
                "negative_count": 3,
                "files": [{
                    "file_id": "sha224-i-4d58b0cee1e38f75f93e2e605d1e6ad44c24a975d0c3b53367de7c86",
                    "positive_count": 12,
                    "negative_count": 3
                }],
                "model": "malaria_cnn (argus, trained on NIH malaria cell images)",
                "parasite_threshold": 0.5,
                "created_at": "2025-05-01T09:31:12Z"
            }
        }
    })
)]
pub struct ReportView {
    pub pbs_study_id: Uuid,
    /// The revision shown, from 1.
    pub version: usize,
    /// How many revisions exist (each new task request makes one).
    pub versions: usize,
    /// One entry: the task's name and its report.
    #[schema(value_type = BTreeMap<String, TaskReport>)]
    pub report: BTreeMap<String, serde_json::Value>,
}

/// A task's report as stored (`CBC_COUNTS`, `MALARIA_ANY_ANY` or
/// `WBC_DIFFERENTIAL`); the runner serializes one of these structs into the
/// study.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(as = pbs::TaskReport)]
pub enum TaskReport {
    Cbc(CbcReport),
    Malaria(MalariaReport),
    Differential(WbcDifferentialReport),
}

/// What one file gave, kept in the study as it comes (so a restart resumes
/// after it) and summed into the reports.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FileResult {
    pub width: u32,
    pub height: u32,
    /// The factor the photo was resampled by (the kept scale sample's).
    #[serde(serialize_with = "ser_f32")]
    pub scale: f32,
    pub rbc: u64,
    pub wbc: u64,
    pub platelets: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<serde_json::Value>,
    /// Every white cell found, classified (absent: the file was analysed
    /// before the differential existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential: Option<Vec<DifferentialCell>>,
    /// The red-cell size the photo was analysed at (absent in results kept
    /// before it was measured per photo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_size: Option<RbcScale>,
}

impl FileResult {
    /// The photo was marked unlike a smear's monolayer
    /// ([`RbcScale::unlike_smear`]).
    pub fn unlike_smear(&self) -> bool {
        self.rbc_size.as_ref().is_some_and(|s| s.unlike_smear)
    }
}

/// One file's counts in a `CBC_COUNTS` report.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::CbcFile)]
pub struct CbcFile {
    pub file_id: String,
    pub rbc: u64,
    pub wbc: u64,
    pub platelets: u64,
    /// The photo's red-cell size, measured from the photo, that it was
    /// resampled from before counting, and any warning about it (null for
    /// files analysed before sizes were measured per photo).
    pub rbc_size: Option<RbcScale>,
}

/// The model named in `CBC_COUNTS` reports.
pub const CBC_MODEL: &str = "cbc_unet (cbc 1.1.0 rbc/wbc/plt UNets)";
/// The model named in `MALARIA_ANY_ANY` reports.
pub const MALARIA_MODEL: &str = "malaria_cnn (argus, trained on NIH malaria cell images)";

/// The `CBC_COUNTS` report: counts in total and per file.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::CbcReport)]
pub struct CbcReport {
    /// Red blood cells counted.
    pub rbc: u64,
    /// White blood cells counted.
    pub wbc: u64,
    pub platelets: u64,
    pub files: Vec<CbcFile>,
    /// The model that counted them.
    #[schema(value_type = String)]
    pub model: &'static str,
    /// The white-cell differential of the same cells (absent when any file
    /// was analysed before the differential existed; `WBC_DIFFERENTIAL`
    /// then covers the files that have one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differential: Option<WbcDifferential>,
    /// RFC 3339.
    pub created_at: String,
}

/// The classes of the white-cell differential, in report order: the
/// leukocyte classes, then `erythroblast` (nucleated red cells, reported
/// per 100 leukocytes as labs do, not as a share of them).
pub const DIFFERENTIAL_CLASSES: [&str; 8] = {
    // The classifier's classes less its last, `platelet`.
    let c = crate::model::wbc::CLASSES;
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
};

/// One class of a differential.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = pbs::DifferentialClass)]
pub struct DifferentialClass {
    /// One of [`DIFFERENTIAL_CLASSES`].
    #[schema(example = "lymphocyte")]
    pub class: String,
    /// Cells classified as this class.
    pub count: u64,
    /// Percent of the classified leukocytes (for `erythroblast`: per 100
    /// classified leukocytes). 0 when no leukocyte was classified.
    pub percent: f64,
}

/// One white cell of a differential, for review by a technologist.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = pbs::DifferentialCell)]
pub struct DifferentialCell {
    /// Bounding box in the original photo's pixels.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// The class, or absent when the classifier was not confident enough
    /// (or called it something that is not a white cell): the cell is
    /// counted under `review`, never forced into a class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The classifier's probability per class (the differential classes
    /// plus `platelet`), summing to 1.
    #[serde(serialize_with = "ser_f32_map")]
    pub probabilities: BTreeMap<String, f32>,
}

/// One file's part of a differential.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = pbs::DifferentialFile)]
pub struct DifferentialFile {
    pub file_id: String,
    pub classes: Vec<DifferentialClass>,
    /// White cells left for review.
    pub review: u64,
    pub cells: Vec<DifferentialCell>,
    /// The photo was marked unlike a smear's monolayer (its
    /// `rbc_size.unlike_smear`): review it before relying on its cells.
    /// Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub unlike_smear: bool,
}

/// A white-cell differential: counts and percentages per class over the
/// cells seen in the uploaded fields, plus the cells left for review.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = pbs::WbcDifferential)]
pub struct WbcDifferential {
    /// Leukocytes given a class (erythroblasts not included).
    pub leukocytes_classified: u64,
    /// White cells the classifier left for review.
    pub review: u64,
    pub classes: Vec<DifferentialClass>,
    pub files: Vec<DifferentialFile>,
    /// The classifier.
    #[schema(value_type = String)]
    pub model: &'static str,
    /// The top class's probability below which a cell is left for review.
    #[serde(serialize_with = "ser_f32")]
    pub min_confidence: f32,
}

impl WbcDifferential {
    /// Mark the files whose photo `unlike` says was unlike a smear's
    /// monolayer.
    pub fn mark_unlike_smear(&mut self, unlike: impl Fn(&str) -> bool) {
        for f in &mut self.files {
            f.unlike_smear = unlike(&f.file_id);
        }
    }
}

/// The `WBC_DIFFERENTIAL` report.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::WbcDifferentialReport)]
pub struct WbcDifferentialReport {
    #[serde(flatten)]
    pub differential: WbcDifferential,
    /// RFC 3339.
    pub created_at: String,
}

/// One file's cells in a `MALARIA_ANY_ANY` report (absent counts: the
/// file gave none).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::MalariaFile)]
pub struct MalariaFile {
    pub file_id: String,
    pub positive_count: Option<u64>,
    pub negative_count: Option<u64>,
    /// The photo was marked unlike a smear's monolayer (see `CbcFile`'s
    /// `rbc_size.unlike_smear`): its cells may be no red cells at all.
    /// Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub unlike_smear: bool,
}

/// The `MALARIA_ANY_ANY` report: parasitized (positive) and uninfected
/// (negative) whole red cells, in total and per file.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::MalariaReport)]
pub struct MalariaReport {
    /// Parasitized red cells.
    pub positive_count: u64,
    /// Uninfected red cells.
    pub negative_count: u64,
    pub files: Vec<MalariaFile>,
    /// The classifier that judged them.
    #[schema(value_type = String)]
    pub model: &'static str,
    /// The classifier's probability at or above which a cell is positive.
    #[serde(serialize_with = "ser_f32")]
    pub parasite_threshold: f32,
    /// RFC 3339.
    pub created_at: String,
}

/// The body of a report callback: `{pbs_study_id, pbs_stody_id,
/// report_status, progress}`.
#[derive(Debug, Serialize)]
pub struct CallbackBody {
    pub pbs_study_id: Uuid,
    /// The same id under the key the reference documents the callback with
    /// (its spelling, `{"pbs_stody_id": ..., "report_status": "ready",
    /// "progress": 1.0}`), so a receiver written to that text finds it.
    pub pbs_stody_id: Uuid,
    pub report_status: &'static str,
    #[serde(serialize_with = "ser_fraction")]
    pub progress: f32,
}
