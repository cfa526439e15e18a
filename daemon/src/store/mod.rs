//! Persistent state: sled trees for records, files for image blobs.
//!
//! Record ids are UUIDv7, stored as their 16 big-endian bytes, so a tree's
//! key order is creation order and listings walk it backwards for newest-first.

pub mod blobs;
pub mod perms;

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use blobs::Blobs;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("blob file: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the state directory is in use by another argusd process")]
    Locked,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub name: String,
    /// sha256 of the full key: keys are 256-bit random, so a fast hash is enough.
    pub key_hash: String,
    pub key_prefix: String,
    pub key_suffix: String,
    pub is_active: bool,
    pub request_count: u64,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRecord {
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub username: String,
    pub expires_at: u64,
    /// `auth::password::tag` of the admin's password hash at login: the
    /// session ends when the password is set again. Empty in sessions
    /// stored before this was kept, which therefore end at the upgrade.
    #[serde(default)]
    pub password_tag: String,
}

pub struct Store {
    db: sled::Db,
    keys: sled::Tree,
    key_hashes: sled::Tree,
    /// Every API key by its hash, kept in step with the trees by the key
    /// methods below (the only writers of `keys`). A presented key is then
    /// checked with a map lookup on the request's own thread instead of a
    /// sled read handed to the blocking pool: under overload most requests
    /// are refused, and that hand-off was a quarter of a refusal's CPU.
    key_cache: RwLock<HashMap<String, ApiKeyRecord>>,
    admins: sled::Tree,
    sessions: sled::Tree,
    cleanup: sled::Tree,
    meta: sled::Tree,
    pub blobs: Blobs,
}

pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize infallibly")
}

pub fn dec<T: DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Page `page` (1-based) of `per_page` items from an iterator, plus the total.
pub fn paginate<T>(
    it: impl Iterator<Item = Result<T, StoreError>>,
    page: u64,
    per_page: u64,
) -> Result<(Vec<T>, u64), StoreError> {
    let skip = (page.saturating_sub(1)).saturating_mul(per_page);
    let mut out = Vec::new();
    let mut total = 0u64;
    for item in it {
        let item = item?;
        if total >= skip && (out.len() as u64) < per_page {
            out.push(item);
        }
        total += 1;
    }
    Ok((out, total))
}

/// Run store work (sled reads, writes and their I/O) off the async
/// runtime's worker threads: every handler's store access goes through
/// this, or through `spawn_blocking` of its own around a larger step.
pub async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
}

/// How long [`Store::open`] waits for a lock held by a closing store.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open_waiting(state_dir, LOCK_WAIT)
    }

    /// Open, waiting up to `wait` for a lock that is being let go. sled's
    /// own I/O threads finish their last log writes after the final handle
    /// is dropped and hold the file lock until then, so a restart on the
    /// same directory (in process, or right after the old process exited)
    /// can briefly find it held. A directory held for longer really is in
    /// use by another daemon, and that is still refused.
    pub fn open_waiting(state_dir: &Path, wait: std::time::Duration) -> Result<Self, StoreError> {
        perms::owner_only_umask();
        perms::create_dir(state_dir)?;
        let deadline = std::time::Instant::now() + wait;
        let db = loop {
            match sled::Config::new().path(state_dir.join("db")).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(ref io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked);
                    }
                    tracing::debug!(dir = %state_dir.display(), "state directory locked; waiting");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(other) => return Err(StoreError::Db(other)),
            }
        };
        let t = |n: &str| db.open_tree(n);
        let store = Self {
            keys: t("api_keys")?,
            key_hashes: t("api_key_hashes")?,
            key_cache: RwLock::default(),
            admins: t("admins")?,
            sessions: t("sessions")?,
            cleanup: t("cleanup")?,
            meta: t("meta")?,
            blobs: Blobs::open(state_dir.join("blobs"))?,
            db,
        };
        store.blobs.clear_tmp();
        store.fill_key_cache()?;
        for (path, old) in perms::repair(state_dir)? {
            tracing::warn!(
                path = %path.display(),
                old_mode = format!("{old:o}"),
                "state readable by other users; made owner-only"
            );
        }
        Ok(store)
    }

    /// The database, for a family's own trees (see `families/*/store.rs`).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Make every acknowledged write durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// [`flush`](Self::flush) on a blocking thread. Not sled's own
    /// `flush_async`: in sled 0.34.7 (the latest stable release)
    /// concurrent calls of it can wait forever, its flushes waiting on
    /// writes queued behind them on sled's own pool (sled issues 1241 and
    /// 1308). A server answering about 270 requests/s stopped answering
    /// that way, and `concurrent_flushes_all_complete` locks up with it.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(drop).map_err(StoreError::from),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(e) => Err(sled::Error::Io(std::io::Error::other(e)).into()),
        }
    }

    /// A 32-byte secret kept in the database, created on first use.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if let Some(v) = self.meta.get(name)? {
            return Ok(v.to_vec());
        }
        let fresh: [u8; 32] = rand::random();
        // Another thread may have raced us; keep whichever landed first.
        let _ = self
            .meta
            .compare_and_swap(name, None as Option<&[u8]>, Some(&fresh[..]))?;
        self.db.flush()?;
        Ok(self
            .meta
            .get(name)?
            .map(|v| v.to_vec())
            .unwrap_or_else(|| fresh.to_vec()))
    }

    /// Try to delete every blob queued for cleanup; the ones that fail stay
    /// queued. Returns (deleted, still pending).
    pub fn run_cleanup(&self) -> Result<(usize, usize), StoreError> {
        let (mut done, mut left) = (0, 0);
        for r in self.cleanup.iter() {
            let (k, _) = r?;
            let key = String::from_utf8_lossy(&k).to_string();
            match self.blobs.delete(&key) {
                Ok(()) => {
                    self.cleanup.remove(&k)?;
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(blob = %key, error = %e, "blob cleanup failed; kept for a later run");
                    left += 1;
                }
            }
        }
        self.db.flush()?;
        Ok((done, left))
    }

    /// The tree of blob keys waiting to be deleted (a family's deletions
    /// queue theirs here, in the same transaction as the records).
    pub fn cleanup_tree(&self) -> &sled::Tree {
        &self.cleanup
    }

    pub fn pending_cleanups(&self) -> usize {
        self.cleanup.len()
    }

    // ---- API keys ----

    fn fill_key_cache(&self) -> Result<(), StoreError> {
        let mut cache = HashMap::new();
        for kv in self.keys.iter() {
            let (id, v) = kv?;
            match dec::<ApiKeyRecord>(&v) {
                Ok(rec) => {
                    cache.insert(rec.key_hash.clone(), rec);
                }
                // Such a key cannot be checked; the others still work.
                Err(e) => {
                    tracing::warn!(error = %e, id = %hex::encode(&id), "API key record unreadable; skipped")
                }
            }
        }
        *self.key_cache.write().expect("key cache lock") = cache;
        Ok(())
    }

    /// The cache, locked for a change. Writers hold it across their sled
    /// write too, so two changes to one key (a use counted while the key is
    /// deleted) reach the cache in the order they reached the trees.
    fn key_cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ApiKeyRecord>> {
        self.key_cache.write().expect("key cache lock")
    }

    fn cache_key(cache: &mut HashMap<String, ApiKeyRecord>, rec: &ApiKeyRecord) {
        cache.retain(|_, r| r.id != rec.id);
        cache.insert(rec.key_hash.clone(), rec.clone());
    }

    pub fn put_key(&self, rec: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut cache = self.key_cache_mut();
        self.keys.insert(rec.id.as_bytes(), enc(rec))?;
        self.key_hashes
            .insert(rec.key_hash.as_bytes(), rec.id.as_bytes())?;
        Self::cache_key(&mut cache, rec);
        Ok(())
    }

    pub fn get_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.keys.get(id.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    /// The key whose sha256 is `hash`, from memory: cheap enough to call on
    /// an async worker. Its `request_count` and `last_used_at` are those of
    /// the last [`Store::touch_key`].
    pub fn key_by_hash(&self, hash: &str) -> Option<ApiKeyRecord> {
        self.key_cache
            .read()
            .expect("key cache lock")
            .get(hash)
            .cloned()
    }

    pub fn list_keys(
        &self,
        page: u64,
        per_page: u64,
    ) -> Result<(Vec<ApiKeyRecord>, u64), StoreError> {
        paginate(self.keys.iter().rev().map(|r| dec(&r?.1)), page, per_page)
    }

    pub fn delete_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut cache = self.key_cache_mut();
        let Some(rec) = self.get_key(id)? else {
            return Ok(false);
        };
        self.key_hashes.remove(rec.key_hash.as_bytes())?;
        self.keys.remove(id.as_bytes())?;
        cache.retain(|_, r| r.id != id);
        Ok(true)
    }

    /// Count a use of key `id` (not flushed: counters may lag a crash).
    pub fn touch_key(&self, id: Uuid) -> Result<(), StoreError> {
        let mut cache = self.key_cache_mut();
        let new = self.keys.update_and_fetch(id.as_bytes(), |old| {
            let mut rec: ApiKeyRecord = serde_json::from_slice(old?).ok()?;
            rec.request_count += 1;
            rec.last_used_at = Some(now_rfc3339());
            Some(enc(&rec))
        })?;
        if let Some(rec) = new.as_deref().map(dec::<ApiKeyRecord>).transpose()? {
            Self::cache_key(&mut cache, &rec);
        }
        Ok(())
    }

    // ---- admin users and sessions ----

    pub fn put_admin(&self, rec: &AdminRecord) -> Result<(), StoreError> {
        self.admins.insert(rec.username.as_bytes(), enc(rec))?;
        Ok(())
    }

    pub fn get_admin(&self, username: &str) -> Result<Option<AdminRecord>, StoreError> {
        self.admins
            .get(username.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    pub fn admin_count(&self) -> usize {
        self.admins.len()
    }

    pub fn put_session(&self, token_hash: &str, rec: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(token_hash.as_bytes(), enc(rec))?;
        Ok(())
    }

    pub fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions
            .get(token_hash.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    pub fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.sessions.remove(token_hash.as_bytes())?;
        Ok(())
    }

    /// End every session of admin `username` (its password was set
    /// again); returns how many.
    pub fn end_sessions_of(&self, username: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.sessions.iter() {
            let (k, v) = r?;
            if dec::<SessionRecord>(&v).is_ok_and(|s| s.username == username) {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drop sessions past their expiry.
    pub fn purge_sessions(&self, now: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.sessions.iter() {
            let (k, v) = r?;
            if dec::<SessionRecord>(&v)
                .map(|s| s.expires_at <= now)
                .unwrap_or(true)
            {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many requests acknowledging their writes at once, as a fast backend
    /// makes them: every flush completes. sled 0.34's own `flush_async`
    /// left concurrent callers waiting forever (sled issues 1241 and 1308;
    /// seen here as a CUDA server that stopped answering at 32 clients).
    #[test]
    fn concurrent_flushes_all_complete() {
        let d = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(d.path()).unwrap());
        // On a thread of its own: a lockup leaves `block_on` waiting for
        // ever (and dropping the runtime would wait on the stuck flushes),
        // so the test waits from outside and fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(16)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..64u32 {
                    let store = store.clone();
                    tasks.spawn(async move {
                        for j in 0..20u32 {
                            let key = format!("k{i}-{j}");
                            store.meta.insert(key, &[0u8; 64][..]).unwrap();
                            store.flush_async().await.unwrap();
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            });
            let _ = tx.send(());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(()) => {}
            // A task panicked: its panic is the failure.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(p) = worker.join() {
                    std::panic::resume_unwind(p);
                }
            }
            // sled's pool is process-wide: a lockup there would also stop
            // every later test of this binary that flushes, so end it.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("concurrent_flushes_all_complete: flushes still waiting after 120 s");
                std::process::exit(101);
            }
        }
    }

    #[test]
    fn open_waits_for_a_closing_store_and_refuses_a_held_one() {
        let d = tempfile::tempdir().unwrap();
        let held = Store::open(d.path()).unwrap();
        let short = std::time::Duration::from_millis(200);
        let t = std::time::Instant::now();
        assert!(matches!(
            Store::open_waiting(d.path(), short),
            Err(StoreError::Locked)
        ));
        assert!(t.elapsed() >= short);
        // Let go of the lock while the second open is waiting for it.
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let reopened = Store::open_waiting(d.path(), std::time::Duration::from_secs(10));
        closer.join().unwrap();
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _s = Store::open(d.path()).unwrap();
        assert!(Store::open(d.path()).is_err());
    }

    #[test]
    fn the_key_cache_follows_every_change_and_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        // Records as `auth::keys` makes them (store must not import auth).
        let key = |name: &str| {
            let k = format!("xyl_{}", Uuid::new_v4().simple());
            let rec = ApiKeyRecord {
                id: Uuid::now_v7(),
                name: name.into(),
                key_hash: sha256_hex(k.as_bytes()),
                key_prefix: k[..8].into(),
                key_suffix: k[k.len() - 4..].into(),
                is_active: true,
                request_count: 0,
                last_used_at: None,
                created_at: now_rfc3339(),
            };
            (k, rec)
        };
        let (k1, mut r1) = key("one");
        let (k2, r2) = key("two");
        let h = |k: &str| sha256_hex(k.as_bytes());
        {
            let s = Store::open(d.path()).unwrap();
            s.put_key(&r1).unwrap();
            s.put_key(&r2).unwrap();
            s.touch_key(r1.id).unwrap();
            s.touch_key(r1.id).unwrap();
            assert_eq!(s.key_by_hash(&h(&k1)).unwrap().request_count, 2);
            r1.is_active = false;
            r1.request_count = 2;
            s.put_key(&r1).unwrap();
            assert!(!s.key_by_hash(&h(&k1)).unwrap().is_active);
            assert!(s.delete_key(r2.id).unwrap());
            assert_eq!(s.key_by_hash(&h(&k2)), None);
            // A use counted after the delete must not bring the key back.
            s.touch_key(r2.id).unwrap();
            assert_eq!(s.key_by_hash(&h(&k2)), None);
            assert_eq!(s.key_by_hash(&h("xyl_never_issued")), None);
        }
        let s = Store::open(d.path()).unwrap();
        let back = s.key_by_hash(&h(&k1)).unwrap();
        assert_eq!(
            (back.id, back.is_active, back.request_count),
            (r1.id, false, 2)
        );
        assert_eq!(s.key_by_hash(&h(&k2)), None);
    }
}
