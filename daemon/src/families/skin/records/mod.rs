//! Records of the skin family's HTTP API: companies (tenants), their users
//! and private tokens, datasets with their application run and retention,
//! subjects, image batches, images with their results and auxiliary
//! images, pending signed uploads and per-dataset webhooks. One sled tree
//! per kind in the appliance's database, keyed by UUIDv7 bytes (creation
//! order); image bytes are blobs under `blobs/skin/`.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::store::{dec, enc, StoreError};

mod index;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Company {
    pub id: Uuid,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub company_id: Uuid,
    /// argon2id PHC string.
    pub password_hash: String,
    pub full_name: String,
    pub created_at: String,
}

/// A private token (the reference's long-lived API token): only its
/// sha256 is kept; the token itself is shown once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivateToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// RFC 3339, as the client gave it.
    pub expiration_time: String,
    /// Unix seconds of `expiration_time`.
    pub expires_at: u64,
    pub token_hash: String,
    pub created_at: String,
}

/// The application attached to a dataset (`POST .../applications/{id}/runs/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRun {
    pub id: Uuid,
    pub application_id: Uuid,
    /// Algorithm ids (the face detector is always among them).
    pub enabled_algorithms: Vec<u32>,
    pub creation_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub id: Uuid,
    pub company_id: Uuid,
    pub name: String,
    pub image_type_id: u32,
    pub expire_images_after_days: Option<u32>,
    pub expire_metadata_after_days: Option<u32>,
    pub clean_images_as_soon_as_ready: bool,
    #[serde(default)]
    pub custom_branding: Value,
    pub creation_time: String,
    pub run: Option<AppRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    pub id: Uuid,
    pub company_id: Uuid,
    pub dataset_id: Uuid,
    pub name: String,
    pub birth_date: Option<String>,
    /// 1 female, 2 male, 3 other (the reference's ids).
    pub biological_sex: Option<u32>,
    #[serde(default)]
    pub meta: Value,
    pub author_id: Uuid,
    pub creation_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub id: Uuid,
    pub company_id: Uuid,
    pub dataset_id: Uuid,
    pub subject_id: Uuid,
    pub creation_time: String,
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub app_args: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// A signed upload URL was issued; the bytes have not arrived.
    AwaitingUpload,
    /// Uploaded, waiting for `/compute/` (v3 flow).
    Uploaded,
    /// On the analysis queue.
    Queued,
    Done,
    /// Could not be analysed (bad image); `error` says why.
    Failed,
}

/// One algorithm's stored result for an image (v1 `results/` rows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlgoResult {
    pub id: Uuid,
    pub algorithm_version_id: u32,
    pub result: Value,
    pub is_ok: bool,
    pub creation_time: String,
}

/// An image the analysis made (aligned face, anonymised photo, redness
/// heat map, area masks), served at `/images/{id}.jpg?token=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuxImage {
    pub id: Uuid,
    /// `aligned_face`, `anonymised`, `redness_heatmap`, `area_masks`.
    pub kind: String,
    pub blob: String,
    pub content_type: String,
    /// Algorithms whose result this image illustrates.
    pub algorithm_version_ids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub id: Uuid,
    pub company_id: Uuid,
    pub dataset_id: Uuid,
    pub subject_id: Uuid,
    pub batch_id: Uuid,
    /// 1 front, 2 right, 3 left.
    pub side_id: u32,
    pub light_id: u32,
    pub name: String,
    pub creation_time: String,
    /// Unix seconds of `creation_time` (retention, history).
    pub created_unix: u64,
    /// The uploaded bytes, until erased by retention or the subject's
    /// "delete photos" action.
    pub blob: Option<String>,
    pub status: ImageStatus,
    pub error: Option<String>,
    /// Algorithms to run (from the dataset's run when queued).
    pub enabled: Vec<u32>,
    pub app_run_id: Option<Uuid>,
    /// The application id the client attached (the appliance's, or the
    /// reference's alias), echoed in results.
    #[serde(default)]
    pub application_id: Option<Uuid>,
    pub results: Vec<AlgoResult>,
    pub aux: Vec<AuxImage>,
    /// Quality reason codes (`NO_FACE`, `BLURRY`, ...).
    pub quality_issues: Vec<String>,
    pub detection_error: Option<String>,
    /// The v3 `parameters` of this image, kept with the results.
    pub parameters: Option<Value>,
    /// The face's geometry and the photo's quality measures
    /// (`present::Presented::face`).
    #[serde(default)]
    pub face: Value,
    /// Area outlines (SVG path data, photo pixels), by area name.
    #[serde(default)]
    pub masks: std::collections::BTreeMap<String, String>,
    pub processed_at: Option<String>,
    pub processed_unix: Option<u64>,
    #[serde(default)]
    pub meta: Value,
    /// Unix seconds when the signed upload URL of an image created without
    /// its bytes stops being accepted (`skin_api.upload_url_secs` after it
    /// was issued).
    #[serde(default)]
    pub upload_expires_unix: Option<u64>,
    /// Unix seconds when its results were cleared (the dataset's
    /// `expire_metadata_after_days`, or the subject's `clear_metadata/`):
    /// the analysis is over, its results deliberately gone.
    #[serde(default)]
    pub results_cleared_unix: Option<u64>,
    /// How many times its results were cleared: an analysis that was
    /// running when they were (read before, stored after) finds the count
    /// changed and stores nothing of what it found.
    #[serde(default)]
    pub clearings: u32,
    /// Unix seconds when it was last put on the analysis queue (retention
    /// lets a queued photo be analysed first, for a while).
    #[serde(default)]
    pub queued_unix: Option<u64>,
}

impl Image {
    /// Still awaiting its bytes, though its upload URL has expired: no PUT
    /// can fill it any more, so its batch goes on without it (a new URL
    /// for the side, `/compute/` on the rest, results complete without it)
    /// and the retention sweep deletes it.
    pub fn upload_lapsed(&self, now: u64) -> bool {
        self.status == ImageStatus::AwaitingUpload
            && self.upload_expires_unix.is_some_and(|e| e < now)
    }

    /// Drop everything its analysis found: results, derived images (whose
    /// files the caller's update queues for deletion), parameters, masks,
    /// quality issues and the face, whose geometry and quality measures are
    /// results too. The photo and the record's state are the caller's.
    pub fn clear_analysis(&mut self) {
        self.results.clear();
        self.aux.clear();
        self.parameters = None;
        self.masks.clear();
        self.quality_issues.clear();
        self.detection_error = None;
        self.face = Value::Null;
    }

    /// The notification's and webhook's `is_ok`: analysed, a face found,
    /// and what was found still kept (not cleared while it was analysed).
    pub fn is_ok(&self) -> bool {
        self.status == ImageStatus::Done
            && self.detection_error.is_none()
            && self.results_cleared_unix.is_none()
    }

    /// Every enabled algorithm has a stored result.
    pub fn all_calculated(&self) -> bool {
        self.status == ImageStatus::Failed
            || self.results_cleared_unix.is_some()
            || self
                .enabled
                .iter()
                .all(|a| self.results.iter().any(|r| r.algorithm_version_id == *a))
    }
}

/// A signed v3 upload URL's state: single use, short-lived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// The image this upload fills.
    pub image_id: Uuid,
    pub expires_at: u64,
    pub used: bool,
}

/// A dataset's webhook (one per dataset; posting again replaces it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub dataset_id: Uuid,
    pub url: String,
    /// `post` or `get`.
    pub method: String,
    /// `query`, `basic`, `bearer` or none.
    pub authorization: Option<String>,
    pub authorization_key: Option<String>,
    pub authorization_value: Option<String>,
    pub enabled: bool,
    /// HMAC key of the `X-Argus-Signature` header (hex).
    pub secret_key: String,
    pub creation_time: String,
}

/// The family's trees.
pub struct SkinStore {
    pub companies: sled::Tree,
    pub company_names: sled::Tree,
    pub users: sled::Tree,
    pub user_emails: sled::Tree,
    pub tokens: sled::Tree,
    pub token_hashes: sled::Tree,
    pub datasets: sled::Tree,
    pub subjects: sled::Tree,
    pub batches: sled::Tree,
    pub images: sled::Tree,
    /// Each image's key under its batch: batch id ++ image id, no value
    /// ([`SkinStore::batch_images`]). Written before the image; an entry
    /// whose image is gone is skipped.
    batch_index: sled::Tree,
    /// Each image's key under its subject: subject id ++ image id, no
    /// value ([`SkinStore::subject_images`]); kept as the batch index is.
    subject_index: sled::Tree,
    /// The family's store-format markers ([`index::INDEXES_BUILT`]).
    meta: sled::Tree,
    pub uploads: sled::Tree,
    pub webhooks: sled::Tree,
    /// Locks held while an image joins a batch or its upload fills it
    /// ([`SkinStore::intake_lock`]).
    intake: Vec<std::sync::Mutex<()>>,
}

/// How many intake locks batches share: enough that uploads to different
/// batches seldom wait on each other, few enough to cost nothing.
const INTAKE_STRIPES: usize = 64;

impl SkinStore {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let t = |n: &str| db.open_tree(format!("skin_{n}"));
        let s = Self {
            companies: t("companies")?,
            company_names: t("company_names")?,
            users: t("users")?,
            user_emails: t("user_emails")?,
            tokens: t("tokens")?,
            token_hashes: t("token_hashes")?,
            datasets: t("datasets")?,
            subjects: t("subjects")?,
            batches: t("batches")?,
            images: t("images")?,
            batch_index: t("batch_images")?,
            subject_index: t("subject_images")?,
            meta: t("meta")?,
            uploads: t("uploads")?,
            webhooks: t("webhooks")?,
            intake: (0..INTAKE_STRIPES)
                .map(|_| std::sync::Mutex::new(()))
                .collect(),
        };
        s.build_indexes()?;
        Ok(s)
    }

    /// The lock of batch `batch`'s intake. "One image per side per batch"
    /// is a scan of the batch's images and then a put, two steps that sled
    /// does not make one, so two uploads of a side at once could both pass
    /// the scan; and a PUT in its URL's last second could fill an image
    /// that a new upload of the side has just seen as lapsed. Both hold
    /// this lock across check and write. One daemon owns the database, so
    /// a process lock suffices; it is striped by batch so that one
    /// company's uploads do not wait on another's. Hold it only for sled
    /// reads and writes, never for a photo's blob or a flush.
    pub fn intake_lock(&self, batch: Uuid) -> std::sync::MutexGuard<'_, ()> {
        let stripe = batch.as_u128() as usize % self.intake.len();
        // A poisoned lock guards nothing but a check: take it anyway.
        self.intake[stripe]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get<T: DeserializeOwned>(tree: &sled::Tree, id: Uuid) -> Result<Option<T>, StoreError> {
        tree.get(id.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    pub fn put<T: Serialize>(tree: &sled::Tree, id: Uuid, v: &T) -> Result<(), StoreError> {
        tree.insert(id.as_bytes(), enc(v))?;
        Ok(())
    }

    /// Every record of `tree` that `keep` accepts, oldest first. The
    /// appliance holds one site's data: scans are cheap at that scale.
    pub fn scan<T: DeserializeOwned>(
        tree: &sled::Tree,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in tree.iter() {
            let (_, v) = item?;
            let r: T = dec(&v)?;
            if keep(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Read-modify-write image `id` and queue the files the change drops
    /// (its photo, derived images) in `cleanup` (the platform's cleanup
    /// queue), in one transaction: no crash leaves a record naming a file
    /// already queued for deletion, nor a dropped file that is never
    /// queued. None when the image is gone. Errors: the store's, or a
    /// record that does not parse.
    pub fn update_image_dropping_files(
        &self,
        cleanup: &sled::Tree,
        id: Uuid,
        // `Fn`: a transaction that meets a conflict runs again.
        f: impl Fn(&mut Image),
    ) -> Result<Option<Image>, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let files = |i: &Image| -> Vec<String> {
            i.blob
                .iter()
                .cloned()
                .chain(i.aux.iter().map(|a| a.blob.clone()))
                .collect()
        };
        let res = (&self.images, cleanup).transaction(|(images, cleanup)| {
            let Some(old) = images.get(id.as_bytes())? else {
                return Ok(None);
            };
            let before: Image = serde_json::from_slice(&old)
                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
            let mut img = before.clone();
            f(&mut img);
            let kept = files(&img);
            for key in files(&before).iter().filter(|k| !kept.contains(k)) {
                cleanup.insert(key.as_bytes(), &[])?;
            }
            images.insert(id.as_bytes(), enc(&img))?;
            Ok(Some(img))
        });
        res.map_err(|e| match e {
            TransactionError::Abort(why) => StoreError::Corrupt(format!("image {id}: {why}")),
            TransactionError::Storage(e) => StoreError::from(e),
        })
    }

    /// Read-modify-write image `id` atomically; None when it is gone.
    pub fn update_image(
        &self,
        id: Uuid,
        mut f: impl FnMut(&mut Image),
    ) -> Result<Option<Image>, StoreError> {
        let mut out = None;
        self.images.fetch_and_update(id.as_bytes(), |old| {
            let mut img: Image = serde_json::from_slice(old?).ok()?;
            f(&mut img);
            let bytes = enc(&img);
            out = Some(img);
            Some(bytes)
        })?;
        Ok(out)
    }

    pub fn company_by_name(&self, name: &str) -> Result<Option<Company>, StoreError> {
        match self.company_names.get(name.to_lowercase().as_bytes())? {
            Some(id) => Self::get(
                &self.companies,
                Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => Ok(None),
        }
    }

    pub fn put_company(&self, c: &Company) -> Result<(), StoreError> {
        Self::put(&self.companies, c.id, c)?;
        self.company_names
            .insert(c.name.to_lowercase().as_bytes(), c.id.as_bytes())?;
        Ok(())
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        match self.user_emails.get(email.to_lowercase().as_bytes())? {
            Some(id) => Self::get(
                &self.users,
                Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => Ok(None),
        }
    }

    pub fn put_user(&self, u: &User) -> Result<(), StoreError> {
        Self::put(&self.users, u.id, u)?;
        self.user_emails
            .insert(u.email.to_lowercase().as_bytes(), u.id.as_bytes())?;
        Ok(())
    }

    pub fn token_by_hash(&self, hash: &str) -> Result<Option<PrivateToken>, StoreError> {
        match self.token_hashes.get(hash.as_bytes())? {
            Some(id) => Self::get(
                &self.tokens,
                Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => Ok(None),
        }
    }

    pub fn delete_token(&self, t: &PrivateToken) -> Result<(), StoreError> {
        self.tokens.remove(t.id.as_bytes())?;
        self.token_hashes.remove(t.token_hash.as_bytes())?;
        Ok(())
    }

    /// Give uploads stored before their expiry was recorded one: the time
    /// their id was made (a v7 UUID, when the URL was issued) plus `ttl`
    /// seconds, so that they too lapse. Returns how many were dated.
    pub fn date_old_uploads(&self, ttl: u64) -> Result<usize, StoreError> {
        let old = Self::scan(&self.images, |i: &Image| {
            i.status == ImageStatus::AwaitingUpload && i.upload_expires_unix.is_none()
        })?;
        for img in &old {
            let issued = img.id.get_timestamp().map_or(0, |t| t.to_unix().0);
            self.update_image(img.id, |i| {
                if i.upload_expires_unix.is_none() {
                    i.upload_expires_unix = Some(issued + ttl);
                }
            })?;
        }
        Ok(old.len())
    }
}

#[cfg(test)]
impl Image {
    /// A front selfie of fresh ids, uploaded with a photo at `skin/x.img`,
    /// nothing analysed yet: for unit tests to change what they test.
    pub fn sample(status: ImageStatus) -> Self {
        Image {
            id: Uuid::now_v7(),
            company_id: Uuid::now_v7(),
            dataset_id: Uuid::now_v7(),
            subject_id: Uuid::now_v7(),
            batch_id: Uuid::now_v7(),
            side_id: 1,
            light_id: 1,
            name: "front".into(),
            creation_time: String::new(),
            created_unix: 0,
            blob: Some("skin/x.img".into()),
            status,
            error: None,
            enabled: vec![40],
            app_run_id: None,
            application_id: None,
            results: vec![],
            aux: vec![],
            quality_issues: vec![],
            detection_error: None,
            parameters: None,
            masks: Default::default(),
            face: Value::Null,
            processed_at: None,
            processed_unix: None,
            meta: Value::Null,
            upload_expires_unix: None,
            results_cleared_unix: None,
            clearings: 0,
            queued_unix: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_update_is_read_modify_write_and_names_are_case_blind() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let s = SkinStore::open(&db).unwrap();
        let c = Company {
            id: Uuid::now_v7(),
            name: "Clinic North".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        s.put_company(&c).unwrap();
        assert_eq!(s.company_by_name("clinic north").unwrap().unwrap().id, c.id);
        let img = Image {
            company_id: c.id,
            blob: None,
            enabled: vec![40, 30],
            ..Image::sample(ImageStatus::Queued)
        };
        let id = img.id;
        SkinStore::put(&s.images, id, &img).unwrap();
        assert!(!img.all_calculated());
        let after = s
            .update_image(id, |i| {
                for a in [40, 30] {
                    i.results.push(AlgoResult {
                        id: Uuid::now_v7(),
                        algorithm_version_id: a,
                        result: Value::Null,
                        is_ok: true,
                        creation_time: String::new(),
                    })
                }
            })
            .unwrap()
            .unwrap();
        assert!(after.all_calculated());
        let stored: Image = SkinStore::get(&s.images, id).unwrap().unwrap();
        assert_eq!(stored.results.len(), 2);
        assert!(s.update_image(Uuid::now_v7(), |_| {}).unwrap().is_none());

        // The files an update drops are queued for deletion with it; the
        // ones it keeps or adds are not.
        let cleanup = db.open_tree("cleanup").unwrap();
        let aux = |key: &str| AuxImage {
            id: Uuid::now_v7(),
            kind: "anonymised".into(),
            blob: key.into(),
            content_type: "image/jpeg".into(),
            algorithm_version_ids: vec![],
        };
        s.update_image(id, |i| {
            i.blob = Some("skin/photo.jpg".into());
            i.aux = vec![aux("skin/old.jpg")];
        })
        .unwrap();
        let after = s
            .update_image_dropping_files(&cleanup, id, |i| {
                i.blob = None;
                i.aux = vec![aux("skin/new.jpg")];
            })
            .unwrap()
            .unwrap();
        assert_eq!((after.blob, after.aux.len()), (None, 1));
        let queued: Vec<String> = cleanup
            .iter()
            .keys()
            .map(|k| String::from_utf8(k.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(queued, ["skin/old.jpg", "skin/photo.jpg"]);
        let gone = s.update_image_dropping_files(&cleanup, Uuid::now_v7(), |_| {});
        assert!(gone.unwrap().is_none());
    }
}
