//! API keys: `xyl_` + 43 random URL-safe characters, stored only as sha256.

use uuid::Uuid;

use crate::store::{now_rfc3339, sha256_hex, ApiKeyRecord, Store, StoreError};

pub const PREFIX: &str = "xyl_";

/// Create and store a key named `name` (the caller flushes): the one
/// implementation behind `POST /api/v1/admin/api-keys` and `argusd keys
/// create`. Returns the full key (shown once) and its record.
pub fn create(store: &Store, name: &str) -> Result<(String, ApiKeyRecord), StoreError> {
    let (full, rec) = generate(name);
    store.put_key(&rec)?;
    Ok((full, rec))
}

/// A new key and the record to store; the full key exists only in the return value.
pub fn generate(name: &str) -> (String, ApiKeyRecord) {
    let key = format!("{PREFIX}{}", super::random_token());
    let rec = ApiKeyRecord {
        id: Uuid::now_v7(),
        name: name.to_string(),
        key_hash: sha256_hex(key.as_bytes()),
        key_prefix: key[..8].to_string(),
        key_suffix: key[key.len() - 4..].to_string(),
        is_active: true,
        request_count: 0,
        last_used_at: None,
        created_at: now_rfc3339(),
    };
    (key, rec)
}

pub fn preview(rec: &ApiKeyRecord) -> String {
    format!("{}...{}", rec.key_prefix, rec.key_suffix)
}

/// Hash a presented key for lookup; None for something that cannot be a key.
pub fn hash_presented(key: &str) -> Option<String> {
    (key.len() <= 256 && key.starts_with(PREFIX)).then(|| sha256_hex(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_only_the_hash_is_kept() {
        let (k1, r1) = generate("a");
        let (k2, _) = generate("a");
        assert_ne!(k1, k2);
        assert_eq!(k1.len(), 47);
        assert!(!serde_json::to_string(&r1).unwrap().contains(&k1[8..]));
        assert_eq!(hash_presented(&k1).unwrap(), r1.key_hash);
        assert!(hash_presented("nope").is_none());
    }
}
