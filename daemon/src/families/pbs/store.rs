//! Records of the blood-smear (PBS) family: organisations, users, client
//! signing keys, studies, their files and reports, the analysis queue,
//! pending callbacks, seen token ids, and the cells each file's latest
//! analysis found (for the console's overlays). All in sled trees of the one
//! database; image bytes are blobs under `blobs/pbs/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pipeline::CellBox;
use crate::store::{dec, enc, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    Device,
    Service,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            "device" => Some(Self::Device),
            "service" => Some(Self::Service),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Device => "device",
            Self::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgRecord {
    pub name: String,
    /// HMAC key the organisation verifies callbacks with (hex).
    pub callback_secret: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub org: String,
    pub role: Role,
    pub screen_name: String,
    /// argon2id PHC string of the hex sha256 of the password.
    pub pass_hash: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub org: String,
    /// DER of the PKCS#1 RSAPublicKey.
    pub rsa_der_b64: String,
    pub bits: usize,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Created, files may still be added, no task requested.
    Open,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub file_id: String,
    pub file_name: Option<String>,
    pub content_type: String,
    pub bytes: usize,
    pub width: u32,
    pub height: u32,
    pub blob: String,
    pub uploaded_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyRecord {
    pub id: Uuid,
    pub org: String,
    pub created_by: String,
    pub created_at: String,
    pub tags: BTreeMap<String, String>,
    pub files: Vec<FileRecord>,
    /// Set once tasks were requested: no more uploads.
    pub frozen: bool,
    pub tasks: Vec<String>,
    pub callback_url: Option<String>,
    pub status: ReportStatus,
    pub progress: f32,
    pub progress_message: String,
    /// Task -> report revisions, oldest first (version = index + 1).
    pub reports: BTreeMap<String, Vec<serde_json::Value>>,
    /// Per-file results of the run in progress, so a restart resumes.
    #[serde(default)]
    pub partial: BTreeMap<String, serde_json::Value>,
    pub error: Option<String>,
}

/// What [`PbsStore::remove_study`] did.
#[derive(Debug)]
pub enum StudyRemoval {
    Removed(Box<StudyRecord>),
    /// Not removed: its analysis is queued or running.
    Busy(ReportStatus),
    Missing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackRecord {
    pub study: Uuid,
    pub url: String,
    pub body: String,
    pub attempts: u32,
    pub next_at: u64,
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct PbsStore {
    pub(super) orgs: sled::Tree,
    pub(super) users: sled::Tree,
    pub(super) keys: sled::Tree,
    pub(super) studies: sled::Tree,
    pub(super) callbacks: sled::Tree,
    pub(super) jti: sled::Tree,
    /// Study id ++ file id -> the cells the file's latest analysis found.
    pub(super) cells: sled::Tree,
    pub(super) db: sled::Db,
}

impl PbsStore {
    /// The family's trees in the appliance's database.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let t = |n: &str| db.open_tree(n);
        let s = Self {
            orgs: t("pbs_orgs")?,
            users: t("pbs_users")?,
            keys: t("pbs_keys")?,
            studies: t("pbs_studies")?,
            callbacks: t("pbs_callbacks")?,
            jti: t("pbs_jti")?,
            cells: t("pbs_cells")?,
            db: db.clone(),
        };
        s.scope_old_records()?;
        Ok(s)
    }

    /// The tree key of `name` within organisation `org`: user e-mails and
    /// key ids are per organisation, so one organisation's names say
    /// nothing about, and never collide with, another's.
    fn scoped(org: &str, name: &str) -> Vec<u8> {
        format!("{org}\0{name}").into_bytes()
    }

    /// Users and keys an older version stored under their bare name move
    /// under their organisation.
    fn scope_old_records(&self) -> Result<(), StoreError> {
        for item in self.users.iter() {
            let (k, v) = item?;
            if !k.contains(&0) {
                let u: UserRecord = dec(&v)?;
                self.users.insert(Self::scoped(&u.org, &u.email), v)?;
                self.users.remove(k)?;
            }
        }
        for item in self.keys.iter() {
            let (k, v) = item?;
            if !k.contains(&0) {
                let key: KeyRecord = dec(&v)?;
                self.keys.insert(Self::scoped(&key.org, &key.kid), v)?;
                self.keys.remove(k)?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    // ---- organisations and users ----

    pub fn get_org(&self, name: &str) -> Result<Option<OrgRecord>, StoreError> {
        self.orgs.get(name)?.map(|v| dec(&v)).transpose()
    }

    /// The organisation, created with a fresh callback secret if new.
    pub fn ensure_org(&self, name: &str) -> Result<(OrgRecord, bool), StoreError> {
        if let Some(o) = self.get_org(name)? {
            return Ok((o, false));
        }
        let rec = OrgRecord {
            name: name.to_string(),
            callback_secret: hex::encode(rand::random::<[u8; 32]>()),
            created_at: crate::store::now_rfc3339(),
        };
        self.orgs.insert(name, enc(&rec))?;
        Ok((rec, true))
    }

    pub fn put_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        self.users.insert(Self::scoped(&u.org, &u.email), enc(u))?;
        Ok(())
    }

    /// User `email` of organisation `org`.
    pub fn get_user(&self, org: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .get(Self::scoped(org, email))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every organisation's user named `email` (login names no
    /// organisation), in organisation order.
    pub fn users_named(&self, email: &str) -> Result<Vec<UserRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.users.iter() {
            let u: UserRecord = dec(&item?.1)?;
            if u.email == email {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// A user of `org` by id or e-mail (a token's `sub` may be either).
    pub fn find_user(&self, org: &str, sub: &str) -> Result<Option<UserRecord>, StoreError> {
        if let Some(u) = self.get_user(org, sub)? {
            return Ok(Some(u));
        }
        for item in self.users.iter() {
            let (_, v) = item?;
            let u: UserRecord = dec(&v)?;
            if u.org == org && u.id.to_string() == sub {
                return Ok(Some(u));
            }
        }
        Ok(None)
    }

    pub fn list_users(&self, org: Option<&str>) -> Result<Vec<UserRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.users.iter() {
            let u: UserRecord = dec(&item?.1)?;
            if org.is_none_or(|o| o == u.org) {
                out.push(u);
            }
        }
        Ok(out)
    }

    pub fn remove_user(&self, org: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .remove(Self::scoped(org, email))?
            .map(|v| dec(&v))
            .transpose()
    }

    // ---- client signing keys ----

    pub fn put_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        self.keys.insert(Self::scoped(&k.org, &k.kid), enc(k))?;
        Ok(())
    }

    /// Key `kid` of organisation `org`.
    pub fn get_key(&self, org: &str, kid: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.keys
            .get(Self::scoped(org, kid))?
            .map(|v| dec(&v))
            .transpose()
    }

    pub fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.keys.iter() {
            let k: KeyRecord = dec(&item?.1)?;
            if org.is_none_or(|o| o == k.org) {
                out.push(k);
            }
        }
        Ok(out)
    }

    // ---- token ids ----

    /// Record `jti` of `iss` until `until` (unix seconds). False when it was
    /// already recorded and has not expired: a replay.
    pub fn claim_jti(
        &self,
        iss: &str,
        jti: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = format!("{iss}\n{jti}");
        let fresh = until.to_be_bytes();
        loop {
            let old = self.jti.get(&key)?;
            if let Some(o) = &old {
                let exp = u64::from_be_bytes(o.as_ref().try_into().unwrap_or([0; 8]));
                if exp >= now {
                    return Ok(false);
                }
            }
            if self
                .jti
                .compare_and_swap(&key, old, Some(&fresh[..]))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Whether `jti` of `iss` was used and is still remembered.
    pub fn jti_used(&self, iss: &str, jti: &str, now: u64) -> Result<bool, StoreError> {
        let key = format!("{iss}\n{jti}");
        Ok(self
            .jti
            .get(&key)?
            .is_some_and(|o| u64::from_be_bytes(o.as_ref().try_into().unwrap_or([0; 8])) >= now))
    }

    pub fn purge_jti(&self, now: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.jti.iter() {
            let (k, v) = item?;
            let exp = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            if exp < now {
                self.jti.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- studies ----

    pub fn put_study(&self, s: &StudyRecord) -> Result<(), StoreError> {
        self.studies.insert(s.id.as_bytes(), enc(s))?;
        Ok(())
    }

    pub fn get_study(&self, id: Uuid) -> Result<Option<StudyRecord>, StoreError> {
        self.studies
            .get(id.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Remove study `id` and the cells its analyses found, atomically
    /// against other writers, unless its analysis is queued or running.
    /// Its blobs are the caller's to remove ([`PbsStore::unheld_blobs`]).
    pub fn remove_study(&self, id: Uuid) -> Result<StudyRemoval, StoreError> {
        loop {
            let Some(old) = self.studies.get(id.as_bytes())? else {
                return Ok(StudyRemoval::Missing);
            };
            let rec: StudyRecord = dec(&old)?;
            if matches!(rec.status, ReportStatus::Queued | ReportStatus::Processing) {
                return Ok(StudyRemoval::Busy(rec.status));
            }
            if self
                .studies
                .compare_and_swap(id.as_bytes(), Some(old), None::<Vec<u8>>)?
                .is_ok()
            {
                for k in self.cells.scan_prefix(id.as_bytes()).keys() {
                    self.cells.remove(k?)?;
                }
                return Ok(StudyRemoval::Removed(Box::new(rec)));
            }
        }
    }

    /// Those of `blobs` no study holds any more (blobs of the older layout,
    /// named by content alone, may be shared).
    pub fn unheld_blobs(&self, blobs: Vec<String>) -> Result<Vec<String>, StoreError> {
        let mut left: std::collections::HashSet<String> = blobs.into_iter().collect();
        for item in self.studies.iter() {
            let s: StudyRecord = dec(&item?.1)?;
            for f in &s.files {
                left.remove(&f.blob);
            }
        }
        Ok(left.into_iter().collect())
    }

    /// Ids of studies created before `cutoff` (RFC 3339 UTC strings, as
    /// stored, compare in time order).
    pub fn created_before(&self, cutoff: &str) -> Result<Vec<Uuid>, StoreError> {
        let mut out = Vec::new();
        for item in self.studies.iter() {
            let s: StudyRecord = dec(&item?.1)?;
            if s.created_at.as_str() < cutoff {
                out.push(s.id);
            }
        }
        Ok(out)
    }

    /// Read-modify-write of one study, atomic against other writers.
    pub fn update_study<T>(
        &self,
        id: Uuid,
        mut f: impl FnMut(&mut StudyRecord) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        loop {
            let Some(old) = self.studies.get(id.as_bytes())? else {
                return Ok(None);
            };
            let mut rec: StudyRecord = dec(&old)?;
            let out = f(&mut rec)?;
            if self
                .studies
                .compare_and_swap(id.as_bytes(), Some(old), Some(enc(&rec)))?
                .is_ok()
            {
                return Ok(Some(out));
            }
        }
    }

    /// Studies of `org` whose tags contain every (key, value) of `tags`.
    pub fn find_studies(
        &self,
        org: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<StudyRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.studies.iter() {
            let s: StudyRecord = dec(&item?.1)?;
            if s.org == org && tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Every organisation's studies, newest first: page `page` (from 1) of
    /// `per_page`, and how many there are in all.
    pub fn list_studies(
        &self,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<StudyRecord>, usize), StoreError> {
        let mut all = Vec::new();
        for item in self.studies.iter() {
            all.push(dec::<StudyRecord>(&item?.1)?);
        }
        // By time (RFC 3339 with a varying number of subsecond digits does
        // not sort as text); the id breaks ties.
        let when = |s: &StudyRecord| {
            time::OffsetDateTime::parse(
                &s.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map(|t| t.unix_timestamp_nanos())
            .unwrap_or(0)
        };
        all.sort_by_cached_key(|s| (std::cmp::Reverse(when(s)), s.id));
        let total = all.len();
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let items = all.into_iter().skip(start).take(per_page).collect();
        Ok((items, total))
    }

    fn cells_key(study: Uuid, file_id: &str) -> Vec<u8> {
        let mut k = study.as_bytes().to_vec();
        k.extend_from_slice(file_id.as_bytes());
        k
    }

    /// Keep the cells an analysis of `file_id` found (replacing an older
    /// analysis's).
    pub fn put_cells(
        &self,
        study: Uuid,
        file_id: &str,
        cells: &[CellBox],
    ) -> Result<(), StoreError> {
        self.cells
            .insert(Self::cells_key(study, file_id), enc(&cells))?;
        Ok(())
    }

    /// The cells the latest analysis of `file_id` found; `None` when it was
    /// analysed before these were kept, or not yet.
    pub fn get_cells(
        &self,
        study: Uuid,
        file_id: &str,
    ) -> Result<Option<Vec<CellBox>>, StoreError> {
        self.cells
            .get(Self::cells_key(study, file_id))?
            .map(|v| dec(&v))
            .transpose()
    }

    // ---- callbacks an older version kept here (see callbacks::migrate_pending) ----

    pub fn remove_callback(&self, id: Uuid) -> Result<(), StoreError> {
        self.callbacks.remove(id.as_bytes())?;
        Ok(())
    }

    /// Callbacks an older version left pending; one that does not decode
    /// is logged and dropped.
    pub fn callbacks_lossy(&self) -> Result<Vec<(Uuid, CallbackRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.callbacks.iter() {
            let (k, v) = item?;
            match (Uuid::from_slice(&k), dec::<CallbackRecord>(&v)) {
                (Ok(id), Ok(c)) => out.push((id, c)),
                _ => {
                    tracing::error!("an old pending callback does not decode; dropped");
                    self.callbacks.remove(k)?;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(org: &str, email: &str) -> UserRecord {
        UserRecord {
            id: Uuid::new_v4(),
            email: email.into(),
            org: org.into(),
            role: Role::User,
            screen_name: "lab".into(),
            pass_hash: "x".into(),
            created_at: String::new(),
        }
    }

    /// One user name in two organisations is two users; records an older
    /// version kept under the bare name move under their organisation.
    #[test]
    fn users_and_keys_are_per_organisation_and_old_records_move() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        {
            let s = PbsStore::open(&db).unwrap();
            s.put_user(&user("a", "lab@x.test")).unwrap();
            s.put_user(&user("b", "lab@x.test")).unwrap();
            assert_eq!(s.users_named("lab@x.test").unwrap().len(), 2);
            assert_eq!(s.get_user("b", "lab@x.test").unwrap().unwrap().org, "b");
            assert!(s.get_user("c", "lab@x.test").unwrap().is_none());
            s.remove_user("a", "lab@x.test").unwrap();
            assert_eq!(s.users_named("lab@x.test").unwrap().len(), 1);
            // As an older version stored them.
            let old = user("c", "old@x.test");
            s.users.insert(old.email.as_bytes(), enc(&old)).unwrap();
            let k = KeyRecord {
                kid: "k1".into(),
                org: "c".into(),
                rsa_der_b64: String::new(),
                bits: 2048,
                created_at: String::new(),
                revoked_at: None,
            };
            s.keys.insert(k.kid.as_bytes(), enc(&k)).unwrap();
        }
        let s = PbsStore::open(&db).unwrap();
        assert_eq!(
            s.get_user("c", "old@x.test").unwrap().unwrap().email,
            "old@x.test"
        );
        assert_eq!(s.get_key("c", "k1").unwrap().unwrap().kid, "k1");
        assert!(s.get_key("a", "k1").unwrap().is_none());
        assert!(s.users.iter().keys().all(|k| k.unwrap().contains(&0)));
    }

    fn study(created_at: &str, blob: &str, status: ReportStatus) -> StudyRecord {
        StudyRecord {
            id: Uuid::new_v4(),
            org: "a".into(),
            created_by: "lab@x.test".into(),
            created_at: created_at.into(),
            tags: BTreeMap::new(),
            files: vec![FileRecord {
                file_id: format!("sha224-i-{blob}"),
                file_name: None,
                content_type: "image/png".into(),
                bytes: 1,
                width: 100,
                height: 100,
                blob: blob.into(),
                uploaded_at: created_at.into(),
            }],
            frozen: false,
            tasks: Vec::new(),
            callback_url: None,
            status,
            progress: 0.0,
            progress_message: String::new(),
            reports: BTreeMap::new(),
            partial: BTreeMap::new(),
            error: None,
        }
    }

    /// Removal takes the record and its cells, never a study being
    /// analysed, and names only the blobs no other study holds.
    #[test]
    fn studies_are_removed_with_their_cells_unless_busy() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let s = PbsStore::open(&db).unwrap();
        let old = study(
            "2025-01-01T00:00:00Z",
            "pbs/shared.png",
            ReportStatus::Ready,
        );
        let new = study("2026-12-01T00:00:00Z", "pbs/shared.png", ReportStatus::Open);
        let busy = study(
            "2025-01-02T00:00:00Z",
            "pbs/busy.png",
            ReportStatus::Processing,
        );
        for st in [&old, &new, &busy] {
            s.put_study(st).unwrap();
            s.put_cells(st.id, "f", &[]).unwrap();
        }
        let mut before = s.created_before("2026-01-01T00:00:00Z").unwrap();
        before.sort();
        let mut want = vec![old.id, busy.id];
        want.sort();
        assert_eq!(before, want);
        assert!(matches!(
            s.remove_study(busy.id).unwrap(),
            StudyRemoval::Busy(ReportStatus::Processing)
        ));
        assert!(s.get_study(busy.id).unwrap().is_some());
        assert!(matches!(
            s.remove_study(old.id).unwrap(),
            StudyRemoval::Removed(_)
        ));
        assert!(s.get_study(old.id).unwrap().is_none());
        assert!(s.get_cells(old.id, "f").unwrap().is_none());
        assert!(s.get_cells(new.id, "f").unwrap().is_some());
        assert!(matches!(
            s.remove_study(old.id).unwrap(),
            StudyRemoval::Missing
        ));
        // The shared blob is still the other study's.
        assert!(s
            .unheld_blobs(vec!["pbs/shared.png".into()])
            .unwrap()
            .is_empty());
        s.remove_study(new.id).unwrap();
        assert_eq!(
            s.unheld_blobs(vec!["pbs/shared.png".into()]).unwrap(),
            vec!["pbs/shared.png".to_string()]
        );
    }
}
