//! Image blobs as files under `state_dir/blobs`, written durably.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        for sub in ["originals", "processed", "pbs", "skin", "tmp"] {
            super::perms::create_dir(&root.join(sub))?;
        }
        Ok(Self { root })
    }

    /// Absolute path of a blob key (`"originals/<id>.jpg"`); None for a key
    /// that could escape the blob directory.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let ok = !key.is_empty()
            && key.split('/').count() == 2
            && key
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        ok.then(|| self.root.join(key))
    }

    /// Write `data` under `key`: temp file, fsync, rename, fsync the directory,
    /// so an acknowledged blob survives a crash or power cut.
    pub fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self
            .path(key)
            .ok_or_else(|| StoreError::Corrupt(format!("bad blob key {key}")))?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let res = (|| {
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(super::perms::FILE_MODE)
                    .open(&tmp)?
            };
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(path.parent().unwrap_or(&self.root))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(res?)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(path) = self.path(key) else {
            return Ok(None);
        };
        match std::fs::read(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a blob; a missing file counts as removed.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self
            .path(key)
            .ok_or_else(|| StoreError::Corrupt(format!("bad blob key {key}")))?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Total bytes of stored blobs.
    pub fn total_bytes(&self) -> u64 {
        ["originals", "processed"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.root.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Leftover partial writes from a crash.
    pub fn clear_tmp(&self) {
        if let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_blob_dir() {
        let d = tempfile::tempdir().unwrap();
        let b = Blobs::open(d.path().to_path_buf()).unwrap();
        for bad in [
            "../x",
            "originals/../../etc",
            "/etc/passwd",
            "originals",
            "a/b/c",
            "originals/..",
            "",
        ] {
            assert!(b.path(bad).is_none(), "{bad}");
        }
        b.put("originals/a.jpg", b"abc").unwrap();
        assert_eq!(b.get("originals/a.jpg").unwrap().unwrap(), b"abc");
        b.delete("originals/a.jpg").unwrap();
        assert!(b.get("originals/a.jpg").unwrap().is_none());
    }
}
