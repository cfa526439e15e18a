//! The skin store's image indexes: each image's key under its batch and
//! under its subject (owner id ++ image id, no value), so a batch's or a
//! subject's images are read without decoding every image in the store.
//! Entries are written before their image and removed after it, so an
//! entry without its image (skipped) is the only inconsistency a crash can
//! leave.

use serde::Deserialize;
use uuid::Uuid;

use super::{Image, SkinStore};
use crate::store::StoreError;

/// The index key of image `image` under `owner` (its batch or subject).
fn index_key(owner: Uuid, image: Uuid) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(owner.as_bytes());
    k[16..].copy_from_slice(image.as_bytes());
    k
}

/// Keys in `skin_meta`, each set once every image stored before that index
/// existed has its entry: from then on [`SkinStore::put_image`] writes the
/// entries before the image, so opening the store need not read the images
/// again. (A daemon older than an index, run on the store afterwards,
/// would add images without entries: downgrades are not supported.)
const INDEXES_BUILT: [&[u8]; 2] = [b"batch_index_v1", b"subject_index_v1"];

impl SkinStore {
    /// Give every image of a store from before the batch or subject index
    /// its entries, once: the pass ends by setting [`INDEXES_BUILT`], and a
    /// store that has them (or a new one) is not read at all. One record at a
    /// time, reading only the ids; idempotent, so a pass cut short is
    /// run again at the next start. A record that cannot be read is left
    /// to the views that read it (logged), rather than keeping the daemon
    /// from starting.
    pub(super) fn build_indexes(&self) -> Result<(), StoreError> {
        let mut built = true;
        for m in INDEXES_BUILT {
            built &= self.meta.contains_key(m)?;
        }
        if built {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Ids {
            id: Uuid,
            batch_id: Uuid,
            subject_id: Uuid,
        }
        for item in self.images.iter() {
            let (key, v) = item?;
            match serde_json::from_slice::<Ids>(&v) {
                Ok(i) => {
                    self.batch_index.insert(index_key(i.batch_id, i.id), &[])?;
                    self.subject_index
                        .insert(index_key(i.subject_id, i.id), &[])?;
                }
                Err(e) => tracing::warn!(key = ?key, error = %e, "skin: image record not indexed"),
            }
        }
        // Entries first: a marker must not outlive them in a crash.
        self.batch_index.flush()?;
        self.subject_index.flush()?;
        for m in INDEXES_BUILT {
            self.meta.insert(m, &[])?;
        }
        Ok(())
    }

    /// Store new image `img` with its batch and subject index entries.
    pub fn put_image(&self, img: &Image) -> Result<(), StoreError> {
        self.batch_index
            .insert(index_key(img.batch_id, img.id), &[])?;
        self.subject_index
            .insert(index_key(img.subject_id, img.id), &[])?;
        Self::put(&self.images, img.id, img)
    }

    /// Remove image `img` and its index entries if its upload has
    /// lapsed by `now` ([`Image::upload_lapsed`]) as it is stored now: a
    /// PUT that found its URL valid just before the caller read the clock
    /// may have filled it since (it checks again under the batch's intake
    /// lock). Returns whether it was removed.
    pub fn remove_if_lapsed(&self, img: &Image, now: u64) -> Result<bool, StoreError> {
        let mut removed = false;
        self.images.fetch_and_update(img.id.as_bytes(), |old| {
            let old = old?;
            // Decided afresh if the update retries.
            removed =
                matches!(serde_json::from_slice::<Image>(old), Ok(cur) if cur.upload_lapsed(now));
            (!removed).then(|| old.to_vec())
        })?;
        if removed {
            self.remove_entries(img)?;
        }
        Ok(removed)
    }

    /// Remove image `img` and its index entries.
    pub fn remove_image(&self, img: &Image) -> Result<(), StoreError> {
        self.images.remove(img.id.as_bytes())?;
        self.remove_entries(img)
    }

    /// Remove image `img`'s batch and subject index entries (after the
    /// image: an entry without its image is skipped, never the reverse).
    fn remove_entries(&self, img: &Image) -> Result<(), StoreError> {
        self.batch_index.remove(index_key(img.batch_id, img.id))?;
        self.subject_index
            .remove(index_key(img.subject_id, img.id))?;
        Ok(())
    }

    /// The images of batch `batch`, by side, without those whose upload
    /// lapsed ([`Image::upload_lapsed`]). Reads the batch's own images
    /// through the index, not the whole store.
    pub fn batch_images(&self, batch: Uuid) -> Result<Vec<Image>, StoreError> {
        let now = crate::store::unix_now();
        let mut v = self.indexed(&self.batch_index, batch, |i| {
            i.batch_id == batch && !i.upload_lapsed(now)
        })?;
        v.sort_by_key(|i| i.side_id);
        Ok(v)
    }

    /// The images of subject `subject` that `keep` accepts, oldest first
    /// (as [`SkinStore::scan`] gives them: image ids are v7 UUIDs), read
    /// through the subject index, not the whole store.
    pub fn subject_images(
        &self,
        subject: Uuid,
        mut keep: impl FnMut(&Image) -> bool,
    ) -> Result<Vec<Image>, StoreError> {
        self.indexed(&self.subject_index, subject, |i| {
            i.subject_id == subject && keep(i)
        })
    }

    /// The images `keep` accepts among those under `owner` in `index`,
    /// in image id order. An entry whose image is gone is skipped.
    fn indexed(
        &self,
        index: &sled::Tree,
        owner: Uuid,
        mut keep: impl FnMut(&Image) -> bool,
    ) -> Result<Vec<Image>, StoreError> {
        let mut v = Vec::new();
        for entry in index.scan_prefix(owner.as_bytes()) {
            let (key, _) = entry?;
            let id = Uuid::from_slice(&key[16..])
                .map_err(|e| StoreError::Corrupt(format!("image index: {e}")))?;
            if let Some(i) = Self::get::<Image>(&self.images, id)? {
                if keep(&i) {
                    v.push(i);
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::skin::records::ImageStatus;

    /// A batch's and a subject's images come from their indexes, which a
    /// store from before them gets once at open, and which removals keep.
    #[test]
    fn batches_and_subjects_read_their_images_through_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let (batch, subject) = (Uuid::now_v7(), Uuid::now_v7());
        let side = |side_id| Image {
            batch_id: batch,
            subject_id: subject,
            side_id,
            ..Image::sample(ImageStatus::Uploaded)
        };
        // A store from before the indexes (or with the batch index only,
        // as the first release of the index, batch_index_v1, left it):
        // images with no entries,
        // one record that cannot be read (it must not keep the store
        // closed).
        db.open_tree("skin_meta")
            .unwrap()
            .insert(INDEXES_BUILT[0], &[])
            .unwrap();
        let old = side(2);
        let images = db.open_tree("skin_images").unwrap();
        SkinStore::put(&images, old.id, &old).unwrap();
        images
            .insert(Uuid::now_v7().as_bytes(), &b"{not json"[..])
            .unwrap();
        let s = SkinStore::open(&db).unwrap();
        let sides = |s: &SkinStore| -> Vec<u32> {
            s.batch_images(batch)
                .unwrap()
                .iter()
                .map(|i| i.side_id)
                .collect()
        };
        assert_eq!(sides(&s), [2]);
        let (left, front) = (side(3), side(1));
        s.put_image(&left).unwrap();
        s.put_image(&front).unwrap();
        s.put_image(&Image::sample(ImageStatus::Uploaded)).unwrap();
        assert_eq!(sides(&s), [1, 2, 3]);
        // The subject's, oldest first, as `keep` filters them.
        let of_subject = |s: &SkinStore, keep: fn(&Image) -> bool| -> Vec<u32> {
            s.subject_images(subject, keep)
                .unwrap()
                .iter()
                .map(|i| i.side_id)
                .collect()
        };
        assert_eq!(of_subject(&s, |_| true), [2, 3, 1]);
        assert_eq!(of_subject(&s, |i| i.side_id != 3), [2, 1]);
        // Built once: the next open does not read the images again.
        let unindexed = side(4);
        SkinStore::put(&s.images, unindexed.id, &unindexed).unwrap();
        drop(s);
        let s = SkinStore::open(&db).unwrap();
        assert_eq!(sides(&s), [1, 2, 3]);
        assert_eq!(of_subject(&s, |_| true), [2, 3, 1]);
        s.remove_image(&unindexed).unwrap();
        s.remove_image(&left).unwrap();
        assert_eq!(sides(&s), [1, 2]);
        assert_eq!(of_subject(&s, |_| true), [2, 1]);
        // A lapsed upload is not listed, and its removal takes its entry.
        let lapsed = Image {
            status: ImageStatus::AwaitingUpload,
            upload_expires_unix: Some(10),
            ..side(3)
        };
        s.put_image(&lapsed).unwrap();
        assert_eq!(sides(&s), [1, 2]);
        assert!(!s.remove_if_lapsed(&front, 20).unwrap(), "not awaiting");
        assert!(s.remove_if_lapsed(&lapsed, 20).unwrap());
        assert_eq!(s.batch_index.scan_prefix(batch.as_bytes()).count(), 2);
        assert_eq!(s.subject_index.scan_prefix(subject.as_bytes()).count(), 2);
    }
}
