//! Client-signed JWTs (the test keys in `tests/fixtures/jwt`) and their claims.

use crate::common::pbs::HOST;
use crate::common::ROOT;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

pub(crate) fn pem_der(path: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/{path}")).unwrap();
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Sign `claims` with a test private key (PKCS#8 PEM in tests/fixtures/jwt).
pub(crate) fn sign(alg: &str, kid: Option<&str>, claims: &Value, key_file: &str) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::signature::RsaKeyPair::from_pkcs8(&pem_der(key_file)).unwrap();
    let enc: &'static dyn ring::signature::RsaEncoding = if alg == "RS384" || alg == "RSA384" {
        &ring::signature::RSA_PKCS1_SHA384
    } else {
        &ring::signature::RSA_PKCS1_SHA256
    };
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        enc,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn claims(org: &str, sub: &str, role: &str) -> Value {
    let t = now();
    json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": org, "sub": sub, "role": role, "aud": [HOST],
        "iat": t, "exp": t + 600,
    })
}
