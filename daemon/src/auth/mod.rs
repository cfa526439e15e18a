//! Credentials: API keys, admin passwords and sessions, rate limits.

pub mod jwt;
pub mod keys;
pub mod password;
pub mod ratelimit;

use base64::Engine;

/// 256 random bits, URL-safe base64 without padding (43 characters).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time comparison for secrets of equal length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
