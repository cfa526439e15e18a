//! The PBS family's documented `results` (reference 003), as typed structs;
//! each travels inside the envelope (`envelope::Envelope`).

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::store::{KeyRecord, StudyRecord, UserRecord};

/// A user of an organisation.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub user_name: String,
    pub screen_name: String,
    pub organisation: String,
    /// "admin", "user", "device" or "service".
    pub role: &'static str,
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
#[derive(Debug, Serialize)]
pub struct UserAdded {
    #[serde(flatten)]
    pub user: UserView,
    pub updated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

/// An organisation's public key for client-signed tokens.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub organisation: String,
    pub bits: usize,
    pub algorithms: [&'static str; 2],
    pub created_at: String,
    pub revoked_at: Option<String>,
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

#[derive(Debug, Serialize)]
pub struct Token {
    #[serde(rename = "HY_APP_AUTH_v1")]
    pub hy_app_auth_v1: String,
}

#[derive(Debug, Serialize)]
pub struct LoginUser {
    pub email: String,
    pub id: Uuid,
    pub screen_name: String,
    pub user_name: String,
    pub organisation: String,
    pub role: &'static str,
}

/// `POST /auth/login` (202).
#[derive(Debug, Serialize)]
pub struct Login {
    /// Nanoseconds since the Unix epoch, as a string.
    pub login_timestamp: String,
    pub token: Token,
    pub user: LoginUser,
}

/// `/auth/hello` with a token that is accepted.
#[derive(Debug, Serialize)]
pub struct HelloValid {
    pub valid: bool,
    pub organisation: String,
    pub user: String,
    pub user_id: Uuid,
    pub role: &'static str,
    /// "session" or the key id a client-signed token was verified with.
    pub verified_with: String,
    pub audience: String,
}

/// `/auth/hello` with a token that is refused (401): what was wrong.
#[derive(Debug, Serialize)]
pub struct HelloRefused {
    pub valid: bool,
    pub claim: String,
    pub reason: String,
    pub alg: Option<&'static str>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub expected_audience: String,
    pub accepted_algorithms: [&'static str; 2],
}

/// `GET /heartbeat` (not enveloped).
#[derive(Debug, Serialize)]
pub struct Heartbeat {
    pub delta: String,
    pub heartbeat: String,
    /// Unix seconds.
    pub request_timestamp: u64,
    pub version: &'static str,
}

/// `POST /pbs` (201).
#[derive(Debug, Serialize)]
pub struct StudyCreated {
    pub pbs_study_id: Uuid,
    pub tags: BTreeMap<String, String>,
}

/// A study as searched.
#[derive(Debug, Serialize)]
pub struct StudySummary {
    pub pbs_study_id: Uuid,
    pub tags: BTreeMap<String, String>,
    pub created_at: String,
    pub report_status: &'static str,
    pub files: usize,
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
#[derive(Debug, Serialize)]
pub struct StudyList {
    pub pbs_studies: Vec<StudySummary>,
    pub count: usize,
}

/// `POST /pbs/{id}/files` (201; `duplicate` when the same bytes were
/// already uploaded, 200).
#[derive(Debug, Serialize)]
pub struct FileAdded {
    pub pbs_study_id: Uuid,
    pub file_id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// `POST /pbs/{id}/tasks` (202).
#[derive(Debug, Serialize)]
pub struct TasksAccepted {
    pub pbs_study_id: Uuid,
    pub tasks: Vec<String>,
}

/// `GET /pbs/{id}/status`.
#[derive(Debug, Serialize)]
pub struct StudyStatus {
    pub pbs_study_id: Uuid,
    /// "open", "queued", "processing", "ready" or "failed".
    pub report_status: &'static str,
    /// 0 to 1.
    pub progress: f32,
    pub progress_message: String,
    pub files: usize,
    pub tasks: Vec<String>,
    pub error: Option<String>,
}

/// `GET /pbs/{id}/report/{task}`: revision `version` of `versions`;
/// `report` holds the one task's report under its name.
#[derive(Debug, Serialize)]
pub struct ReportView {
    pub pbs_study_id: Uuid,
    pub version: usize,
    pub versions: usize,
    pub report: BTreeMap<String, serde_json::Value>,
}

/// What one file gave, kept in the study as it comes (so a restart resumes
/// after it) and summed into the reports.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FileResult {
    pub width: u32,
    pub height: u32,
    /// The factor the photo was resampled by.
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
}

#[derive(Debug, Serialize)]
pub struct CbcFile {
    pub file_id: String,
    pub rbc: u64,
    pub wbc: u64,
    pub platelets: u64,
}

/// The `CBC_COUNTS` report: counts in total and per file.
#[derive(Debug, Serialize)]
pub struct CbcReport {
    pub rbc: u64,
    pub wbc: u64,
    pub platelets: u64,
    pub files: Vec<CbcFile>,
    pub model: &'static str,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct MalariaFile {
    pub file_id: String,
    pub positive_count: Option<u64>,
    pub negative_count: Option<u64>,
}

/// The `MALARIA_ANY_ANY` report: parasitized (positive) and uninfected
/// (negative) whole red cells, in total and per file.
#[derive(Debug, Serialize)]
pub struct MalariaReport {
    pub positive_count: u64,
    pub negative_count: u64,
    pub files: Vec<MalariaFile>,
    pub model: &'static str,
    pub parasite_threshold: f32,
    pub created_at: String,
}

/// The body of a report callback.
#[derive(Debug, Serialize)]
pub struct CallbackBody {
    pub pbs_study_id: Uuid,
    pub report_status: &'static str,
    pub progress: f32,
}
