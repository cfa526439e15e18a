//! The face family's records: uploaded images and the jobs run on them
//! (with the detections as answered), in sled trees of the one database.
//! Deleting an image queues its blobs on the platform's cleanup tree in the
//! same transaction.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{dec, enc, now_rfc3339, paginate, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub id: Uuid,
    pub filename: Option<String>,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub size_bytes: u64,
    pub sha256: String,
    /// The original's blob key; None when `storage.keep_originals` is off
    /// (records from before that setting always have one).
    #[serde(default)]
    pub blob: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub id: Uuid,
    pub image_id: Uuid,
    /// "detect" or "mask".
    pub job_type: String,
    /// The mask method, for mask jobs.
    pub method: Option<String>,
    pub status: String,
    pub face_count: usize,
    /// Request parameters as given (thresholds, strength, format ...).
    pub params: serde_json::Value,
    /// The detections array as returned to the client.
    pub detections: serde_json::Value,
    pub processed_blob: Option<String>,
    pub processed_content_type: Option<String>,
    pub processed_size_bytes: Option<u64>,
    pub inference_ms: f64,
    pub total_ms: f64,
    pub api_key_id: Option<Uuid>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub total_images: u64,
    pub total_jobs: u64,
    pub detect_jobs: u64,
    pub mask_jobs: u64,
    pub total_faces: u64,
    pub jobs_by_method: std::collections::BTreeMap<String, u64>,
    pub storage_bytes: u64,
    pub pending_cleanups: u64,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub job_type: Option<String>,
    pub method: Option<String>,
}

#[derive(Clone)]
pub struct FacesStore {
    images: sled::Tree,
    jobs: sled::Tree,
    image_jobs: sled::Tree,
    cleanup: sled::Tree,
    db: sled::Db,
}

impl FacesStore {
    /// The family's trees in the appliance's database.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let db = store.db();
        Ok(Self {
            images: db.open_tree("images")?,
            jobs: db.open_tree("jobs")?,
            image_jobs: db.open_tree("image_jobs")?,
            cleanup: store.cleanup_tree().clone(),
            db: db.clone(),
        })
    }

    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        self.images.insert(rec.id.as_bytes(), enc(rec))?;
        Ok(())
    }

    pub fn get_image(&self, id: Uuid) -> Result<Option<ImageRecord>, StoreError> {
        self.images.get(id.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    pub fn list_images(
        &self,
        page: u64,
        per_page: u64,
    ) -> Result<(Vec<ImageRecord>, u64), StoreError> {
        paginate(self.images.iter().rev().map(|r| dec(&r?.1)), page, per_page)
    }

    pub fn put_job(&self, rec: &JobRecord) -> Result<(), StoreError> {
        let mut link = rec.image_id.as_bytes().to_vec();
        link.extend_from_slice(rec.id.as_bytes());
        self.jobs.insert(rec.id.as_bytes(), enc(rec))?;
        self.image_jobs.insert(link, &[])?;
        Ok(())
    }

    pub fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.jobs.get(id.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    pub fn list_jobs(
        &self,
        filter: &JobFilter,
        page: u64,
        per_page: u64,
    ) -> Result<(Vec<JobRecord>, u64), StoreError> {
        let it = self.jobs.iter().rev().filter_map(|r| {
            let job: JobRecord = match r.map_err(StoreError::from).and_then(|(_, v)| dec(&v)) {
                Ok(j) => j,
                Err(e) => return Some(Err(e)),
            };
            let ok = filter.job_type.as_ref().is_none_or(|t| *t == job.job_type)
                && filter
                    .method
                    .as_ref()
                    .is_none_or(|m| Some(m) == job.method.as_ref());
            ok.then_some(Ok(job))
        });
        paginate(it, page, per_page)
    }

    pub fn jobs_for_image(&self, image_id: Uuid) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for r in self.image_jobs.scan_prefix(image_id.as_bytes()) {
            let (k, _) = r?;
            let id = Uuid::from_slice(&k[16..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Some(j) = self.get_job(id)? {
                out.push(j);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Remove an image and its jobs from the database and register their
    /// blobs for cleanup in the same transaction; returns the blob keys.
    pub fn delete_image(&self, id: Uuid) -> Result<Option<Vec<String>>, StoreError> {
        let Some(img) = self.get_image(id)? else {
            return Ok(None);
        };
        let jobs = self.jobs_for_image(id)?;
        let mut blob_keys: Vec<String> = img.blob.iter().cloned().collect();
        blob_keys.extend(jobs.iter().filter_map(|j| j.processed_blob.clone()));
        let mut links = Vec::new();
        for j in &jobs {
            let mut l = id.as_bytes().to_vec();
            l.extend_from_slice(j.id.as_bytes());
            links.push(l);
        }
        use sled::Transactional;
        (&self.images, &self.jobs, &self.image_jobs, &self.cleanup)
            .transaction(|(images, jobs_t, links_t, cleanup)| {
                images.remove(id.as_bytes())?;
                for j in &jobs {
                    jobs_t.remove(j.id.as_bytes())?;
                }
                for l in &links {
                    links_t.remove(l.as_slice())?;
                }
                for k in &blob_keys {
                    cleanup.insert(k.as_bytes(), now_rfc3339().as_bytes())?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Corrupt(format!("delete transaction: {e:?}")))?;
        self.db.flush()?;
        Ok(Some(blob_keys))
    }

    /// Images created before `cutoff`, oldest first (ids are UUIDv7, so the
    /// tree is in creation order and the scan stops at the first newer one).
    pub fn created_before(&self, cutoff: time::OffsetDateTime) -> Result<Vec<Uuid>, StoreError> {
        let mut out = Vec::new();
        for kv in self.images.iter() {
            let (_, v) = kv?;
            let rec: ImageRecord = dec(&v)?;
            let created = time::OffsetDateTime::parse(
                &rec.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| StoreError::Corrupt(format!("image {}: created_at: {e}", rec.id)))?;
            if created >= cutoff {
                break;
            }
            out.push(rec.id);
        }
        Ok(out)
    }

    /// Delete every image older than `days` (the `storage.retention_days`
    /// sweep) with its jobs and blobs; the number deleted.
    pub fn sweep_older_than(&self, store: &Store, days: u32) -> Result<usize, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(days.into());
        let old = self.created_before(cutoff)?;
        for id in &old {
            self.delete_image(*id)?;
        }
        if !old.is_empty() {
            store.run_cleanup()?;
        }
        Ok(old.len())
    }

    /// Counts for the admin API; blob totals from the platform `store`.
    pub fn stats(&self, store: &Store) -> Result<Stats, StoreError> {
        let mut s = Stats {
            total_images: self.images.len() as u64,
            ..Default::default()
        };
        for r in self.jobs.iter() {
            let job: JobRecord = dec(&r?.1)?;
            s.total_jobs += 1;
            s.total_faces += job.face_count as u64;
            match job.job_type.as_str() {
                "detect" => s.detect_jobs += 1,
                "mask" => s.mask_jobs += 1,
                _ => {}
            }
            if let Some(m) = job.method {
                *s.jobs_by_method.entry(m).or_default() += 1;
            }
        }
        s.storage_bytes = store.blobs.total_bytes();
        s.pending_cleanups = store.pending_cleanups() as u64;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: u8) -> ImageRecord {
        ImageRecord {
            id: Uuid::now_v7(),
            filename: Some(format!("{n}.jpg")),
            content_type: "image/jpeg".into(),
            width: 10,
            height: 10,
            channels: 3,
            size_bytes: 3,
            sha256: "x".into(),
            blob: Some(format!("originals/{n}.jpg")),
            created_at: now_rfc3339(),
        }
    }

    #[test]
    fn images_list_newest_first_with_pages() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let s = FacesStore::open(&store).unwrap();
        let ids: Vec<Uuid> = (0..5)
            .map(|i| {
                let r = image(i);
                s.put_image(&r).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
                r.id
            })
            .collect();
        let (page1, total) = s.list_images(1, 2).unwrap();
        assert_eq!(total, 5);
        assert_eq!(
            page1.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let (page3, _) = s.list_images(3, 2).unwrap();
        assert_eq!(page3.len(), 1);
        assert_eq!(page3[0].id, ids[0]);
    }

    #[test]
    fn delete_queues_cleanup_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let rec = image(1);
        let blob = rec.blob.as_deref().unwrap();
        {
            let s = Store::open(d.path()).unwrap();
            let f = FacesStore::open(&s).unwrap();
            s.blobs.put(blob, b"jpegbytes").unwrap();
            f.put_image(&rec).unwrap();
            // Make the blob undeletable: replace it by a non-empty directory.
            std::fs::remove_file(s.blobs.path(blob).unwrap()).unwrap();
            std::fs::create_dir_all(s.blobs.path(blob).unwrap().join("x")).unwrap();
            assert_eq!(
                f.delete_image(rec.id).unwrap().unwrap(),
                vec![blob.to_string()]
            );
            assert!(f.get_image(rec.id).unwrap().is_none());
            assert_eq!(s.run_cleanup().unwrap(), (0, 1));
        }
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.pending_cleanups(), 1);
        std::fs::remove_dir_all(s.blobs.path(blob).unwrap()).unwrap();
        assert_eq!(s.run_cleanup().unwrap(), (1, 0));
        assert_eq!(s.pending_cleanups(), 0);
    }

    #[test]
    fn retention_sweep_deletes_only_older_images_and_their_blobs() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let f = FacesStore::open(&s).unwrap();
        let days_ago = |n: i64| {
            (time::OffsetDateTime::now_utc() - time::Duration::days(n))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let mut recs = Vec::new();
        for (n, age) in [(1u8, 40), (2, 31), (3, 29), (4, 0)] {
            let mut r = image(n);
            r.created_at = days_ago(age);
            s.blobs
                .put(r.blob.as_deref().unwrap(), b"jpegbytes")
                .unwrap();
            f.put_image(&r).unwrap();
            recs.push(r);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // An image kept without its original (keep_originals off).
        let mut no_original = image(5);
        no_original.blob = None;
        no_original.created_at = days_ago(0);
        f.put_image(&no_original).unwrap();
        assert_eq!(f.sweep_older_than(&s, 30).unwrap(), 2);
        for (r, kept) in recs.iter().zip([false, false, true, true]) {
            assert_eq!(
                f.get_image(r.id).unwrap().is_some(),
                kept,
                "{:?}",
                r.filename
            );
            let on_disk = s.blobs.get(r.blob.as_deref().unwrap()).unwrap().is_some();
            assert_eq!(on_disk, kept, "{:?}", r.filename);
        }
        assert!(f.get_image(no_original.id).unwrap().is_some());
        assert_eq!(f.sweep_older_than(&s, 30).unwrap(), 0);
    }
}
