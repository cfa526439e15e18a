//! JSON Web Tokens of the PBS family.
//!
//! Two kinds are accepted in `Authorization` (raw, or after `Bearer `):
//! - session tokens the appliance mints at `/auth/login`: HS256 with a
//!   secret that never leaves the appliance, issuer [`SESSION_ISSUER`];
//! - client-signed tokens: RS256 (with `kid`) or RS384, verified with the
//!   organisation's registered RSA public key. `alg: none` and HS* are never
//!   accepted for client tokens.
//!
//! Claims checked: `jti`, `iss`, `iat`, `exp`, `aud` (must equal the
//! appliance's public host name), `sub` (a user of the organisation) and
//! `role`. A token issued in the future, older than one hour (whatever its
//! `exp`), expired, or whose `jti` was already used within its lifetime is
//! rejected. Every rejection names the claim or key at fault and never the
//! secret material.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// `iss` of the appliance's own session tokens.
pub const SESSION_ISSUER: &str = "argusd";
/// Longest a client token is honoured after its `iat`.
pub const MAX_AGE_SECS: u64 = 3600;
/// Clock skew tolerated on `iat` and `exp`.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Rs256,
    Rs384,
}

/// Why a token was refused. `claim` names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub claim: &'static str,
    pub reason: String,
}

impl Rejection {
    pub fn new(claim: &'static str, reason: impl Into<String>) -> Self {
        Self {
            claim,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.claim, self.reason)
    }
}

/// A token split and decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub alg: Alg,
    pub kid: Option<String>,
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

/// Claims every token must carry, typed.
#[derive(Debug, Clone)]
pub struct Claims {
    pub jti: String,
    pub iss: String,
    pub sub: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    /// Not before (optional).
    pub nbf: Option<u64>,
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z. Larger values
/// (1e300, 2^64-1) are refused as out of range rather than wrapping.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate claim (RFC 7519 §2): seconds since 1970, an integer or a
/// finite number with a fraction (dropped), 0 to [`MAX_NUMERIC_DATE`].
fn numeric_date(name: &'static str, v: &Value) -> Result<u64, Rejection> {
    let out_of_range = || {
        Rejection::new(
            name,
            format!("out of range: a NumericDate must be from 0 to {MAX_NUMERIC_DATE} (year 9999)"),
        )
    };
    let secs = if let Some(u) = v.as_u64() {
        u
    } else if let Some(f) = v.as_f64() {
        if !f.is_finite() || f < 0.0 {
            return Err(Rejection::new(
                name,
                "must be a NumericDate (seconds since 1970)",
            ));
        }
        if f > MAX_NUMERIC_DATE as f64 {
            return Err(out_of_range());
        }
        f as u64
    } else {
        return Err(Rejection::new(
            name,
            "must be a NumericDate (seconds since 1970)",
        ));
    };
    if secs > MAX_NUMERIC_DATE {
        return Err(out_of_range());
    }
    Ok(secs)
}

/// Strip an optional `Bearer ` prefix.
pub fn token_from_header(h: &str) -> &str {
    let h = h.trim();
    match h.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => h[7..].trim(),
        _ => h,
    }
}

pub fn parse(token: &str) -> Result<Parsed, Rejection> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(Rejection::new(
            "token",
            format!("a JWT has 3 dot-separated parts, this has {}", parts.len()),
        ));
    }
    let json = |i: usize, what: &'static str| -> Result<Value, Rejection> {
        let bytes = URL_SAFE_NO_PAD
            .decode(parts[i].trim_end_matches('='))
            .map_err(|_| Rejection::new(what, "not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| Rejection::new(what, "not a JSON object"))
    };
    let header = json(0, "header")?;
    let claims = json(1, "payload")?;
    if !claims.is_object() {
        return Err(Rejection::new("payload", "not a JSON object"));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => Alg::Hs256,
        Some("RS256") => Alg::Rs256,
        // "RSA384" is how the reference names RS384 (RSASSA-PKCS1-v1_5,
        // SHA-384); a client that copied it signs exactly what RS384 checks.
        Some("RS384" | "RSA384") => Alg::Rs384,
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(Rejection::new(
                "alg",
                "unsigned tokens (alg none) are never accepted",
            ))
        }
        Some(a) => {
            return Err(Rejection::new(
                "alg",
                format!("{a} is not accepted; sign with RS256 (with kid) or RS384"),
            ))
        }
        None => return Err(Rejection::new("alg", "missing from the header")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2].trim_end_matches('='))
        .map_err(|_| Rejection::new("signature", "not base64url"))?;
    Ok(Parsed {
        alg,
        kid: header
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_string),
        header,
        claims,
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature,
    })
}

impl Parsed {
    /// `kid` from the header, or from the claims (the reference's example
    /// carries it there).
    pub fn key_id(&self) -> Option<String> {
        self.kid.clone().or_else(|| {
            self.claims
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }

    /// The required claims, present and of the right type.
    pub fn claims(&self) -> Result<Claims, Rejection> {
        let s = |name: &'static str| -> Result<String, Rejection> {
            match self.claims.get(name) {
                Some(Value::String(v)) if !v.is_empty() => Ok(v.clone()),
                Some(_) => Err(Rejection::new(name, "must be a non-empty string")),
                None => Err(Rejection::new(name, "required claim is missing")),
            }
        };
        let t = |name: &'static str| -> Result<u64, Rejection> {
            match self.claims.get(name) {
                Some(v) => numeric_date(name, v),
                None => Err(Rejection::new(name, "required claim is missing")),
            }
        };
        Ok(Claims {
            jti: s("jti")?,
            iss: s("iss")?,
            sub: s("sub")?,
            role: s("role")?,
            iat: t("iat")?,
            exp: t("exp")?,
            nbf: match self.claims.get("nbf") {
                Some(v) => Some(numeric_date("nbf", v)?),
                None => None,
            },
        })
    }

    /// `aud` (a string or an array of strings) must name `host`.
    pub fn check_audience(&self, host: &str) -> Result<(), Rejection> {
        let ok = match self.claims.get("aud") {
            Some(Value::String(a)) => a == host,
            Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(host)),
            Some(_) => {
                return Err(Rejection::new(
                    "aud",
                    "must be a string or an array of strings",
                ))
            }
            None => return Err(Rejection::new("aud", "required claim is missing")),
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::new(
                "aud",
                format!("this appliance is {host:?}; the token is for another audience"),
            ))
        }
    }

    pub fn verify_hs256(&self, secret: &[u8]) -> Result<(), Rejection> {
        if self.alg != Alg::Hs256 {
            return Err(Rejection::new("alg", "expected HS256"));
        }
        let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        m.update(self.signing_input.as_bytes());
        m.verify_slice(&self.signature)
            .map_err(|_| Rejection::new("signature", "does not verify"))
    }

    /// RSA PKCS#1 v1.5 with the header's hash, against a PKCS#1 RSAPublicKey.
    pub fn verify_rsa(&self, rsa_public_der: &[u8]) -> Result<(), Rejection> {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.alg {
            Alg::Rs256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Hs256 => {
                return Err(Rejection::new(
                    "alg",
                    "HS256 is not accepted for client-signed tokens; sign with RS256 or RS384",
                ))
            }
        };
        ring::signature::UnparsedPublicKey::new(alg, rsa_public_der)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| Rejection::new("signature", "does not verify with the registered key"))
    }
}

/// Time rules, each with [`LEEWAY_SECS`] of clock skew: not issued in the
/// future, not used before `nbf`, not expired and, for client tokens
/// (`max_age`), not older than an hour. Every date is at most
/// [`MAX_NUMERIC_DATE`], so the sums cannot overflow.
pub fn check_times(c: &Claims, now: u64, max_age: bool) -> Result<(), Rejection> {
    if c.iat > now + LEEWAY_SECS {
        return Err(Rejection::new(
            "iat",
            format!("issued {} s in the future", c.iat - now),
        ));
    }
    if max_age && now > c.iat + MAX_AGE_SECS + LEEWAY_SECS {
        return Err(Rejection::new(
            "iat",
            format!(
                "issued {} s ago; tokens are honoured for {MAX_AGE_SECS} s whatever exp says",
                now - c.iat
            ),
        ));
    }
    if let Some(nbf) = c.nbf {
        if nbf > now + LEEWAY_SECS {
            return Err(Rejection::new(
                "nbf",
                format!("not valid for another {} s", nbf - now),
            ));
        }
    }
    if now > c.exp + LEEWAY_SECS {
        return Err(Rejection::new(
            "exp",
            format!("expired {} s ago", now - c.exp),
        ));
    }
    Ok(())
}

/// Mint an HS256 session token.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

// ---- RSA public keys from PEM ----

fn der_tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (len0 as usize, rest)
    } else {
        let n = (len0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Modulus size in bits of a PKCS#1 RSAPublicKey, None when it is not one.
fn rsa_bits(pkcs1: &[u8]) -> Option<usize> {
    let (tag, seq, _) = der_tlv(pkcs1)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, modulus, rest) = der_tlv(seq)?;
    let (etag, _, _) = der_tlv(rest)?;
    if tag != 0x02 || etag != 0x02 {
        return None;
    }
    let m: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(i) => &modulus[i..],
        None => return None,
    };
    Some(m.len() * 8 - m[0].leading_zeros() as usize)
}

/// An RSA public key in PEM (`BEGIN PUBLIC KEY`, as `openssl rsa -pubout`
/// writes, or `BEGIN RSA PUBLIC KEY`) -> (PKCS#1 DER, modulus bits).
pub fn rsa_public_key_from_pem(pem: &str) -> Result<(Vec<u8>, usize), String> {
    let begin = pem
        .find("-----BEGIN ")
        .ok_or("not a PEM document (no BEGIN line)")?;
    let label_end = pem[begin + 11..]
        .find("-----")
        .ok_or("malformed BEGIN line")?;
    let label = &pem[begin + 11..begin + 11 + label_end];
    let body_start = begin + 11 + label_end + 5;
    let end = pem[body_start..].find("-----END ").ok_or("no END line")?;
    let b64: String = pem[body_start..body_start + end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| "the PEM body is not base64")?;
    let pkcs1 = match label {
        "RSA PUBLIC KEY" => der,
        "PUBLIC KEY" => {
            let (tag, spki, _) = der_tlv(&der).ok_or("malformed SubjectPublicKeyInfo")?;
            let (atag, alg, rest) = der_tlv(spki).ok_or("malformed SubjectPublicKeyInfo")?;
            let (otag, oid, _) = der_tlv(alg).ok_or("malformed algorithm identifier")?;
            if tag != 0x30 || atag != 0x30 || otag != 0x06 {
                return Err("malformed SubjectPublicKeyInfo".into());
            }
            if oid != RSA_OID {
                return Err("not an RSA key (only RSA keys sign RS256/RS384)".into());
            }
            let (btag, bits, _) = der_tlv(rest).ok_or("malformed key bit string")?;
            if btag != 0x03 || bits.first() != Some(&0) {
                return Err("malformed key bit string".into());
            }
            bits[1..].to_vec()
        }
        l if l.contains("PRIVATE") => {
            return Err("this is a private key; register the public key only".into())
        }
        other => {
            return Err(format!(
                "unexpected PEM type {other:?}; expected PUBLIC KEY"
            ))
        }
    };
    let bits = rsa_bits(&pkcs1).ok_or("not an RSA public key")?;
    if bits < 2048 {
        return Err(format!(
            "RSA key of {bits} bits; at least 2048 are required"
        ));
    }
    Ok((pkcs1, bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_tokens_round_trip_and_tampering_fails() {
        let t = sign_hs256(&json!({"sub": "u", "n": 1}), b"k");
        let p = parse(&t).unwrap();
        assert_eq!(p.alg, Alg::Hs256);
        p.verify_hs256(b"k").unwrap();
        assert!(p.verify_hs256(b"other").is_err());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "n": 1}).to_string());
        assert!(parse(&parts.join(".")).unwrap().verify_hs256(b"k").is_err());
        // An HS256 token is never checked against an RSA key.
        assert_eq!(p.verify_rsa(&[]).unwrap_err().claim, "alg");
    }

    #[test]
    fn alg_none_and_other_algs_are_refused() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let b = URL_SAFE_NO_PAD.encode("{}");
        assert_eq!(parse(&format!("{h}.{b}.")).unwrap_err().claim, "alg");
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512"}"#);
        assert_eq!(parse(&format!("{h}.{b}.")).unwrap_err().claim, "alg");
        assert_eq!(parse("a.b").unwrap_err().claim, "token");
    }

    #[test]
    fn time_rules() {
        let c = |iat, exp| Claims {
            jti: "j".into(),
            iss: "o".into(),
            sub: "s".into(),
            role: "user".into(),
            iat,
            exp,
            nbf: None,
        };
        let now = 1_000_000;
        assert!(check_times(&c(now - 10, now + 600), now, true).is_ok());
        assert_eq!(
            check_times(&c(now + 600, now + 900), now, true)
                .unwrap_err()
                .claim,
            "iat"
        );
        assert_eq!(
            check_times(&c(now - 7200, now + 86400), now, true)
                .unwrap_err()
                .claim,
            "iat"
        );
        assert_eq!(
            check_times(&c(now - 600, now - 300), now, true)
                .unwrap_err()
                .claim,
            "exp"
        );
        // Session tokens may live longer than an hour.
        assert!(check_times(&c(now - 7200, now + 86400), now, false).is_ok());
        // Not before: a day ahead is refused, within the leeway is fine.
        let mut ahead = c(now, now + 600);
        ahead.nbf = Some(now + 86400);
        let r = check_times(&ahead, now, true).unwrap_err();
        assert_eq!(r.claim, "nbf");
        assert!(r.reason.contains("86400"), "{}", r.reason);
        ahead.nbf = Some(now + LEEWAY_SECS);
        assert!(check_times(&ahead, now, true).is_ok());
    }

    #[test]
    fn numeric_dates_out_of_range_are_refused_not_wrapped() {
        for (v, reason) in [
            (json!(1e300), "out of range"),
            (json!(u64::MAX), "out of range"),
            (json!(MAX_NUMERIC_DATE + 1), "out of range"),
            (json!(-5), "NumericDate"),
            (json!(-1.5), "NumericDate"),
            (json!("1700000000"), "NumericDate"),
        ] {
            let r = numeric_date("exp", &v).unwrap_err();
            assert_eq!(r.claim, "exp");
            assert!(r.reason.contains(reason), "{v}: {}", r.reason);
        }
        assert_eq!(
            numeric_date("exp", &json!(1700000000.9)).unwrap(),
            1700000000
        );
        assert_eq!(
            numeric_date("exp", &json!(MAX_NUMERIC_DATE)).unwrap(),
            MAX_NUMERIC_DATE
        );
    }

    #[test]
    fn audience_as_string_or_array() {
        let p = |aud: Value| Parsed {
            alg: Alg::Rs256,
            kid: None,
            header: json!({}),
            claims: json!({ "aud": aud }),
            signing_input: String::new(),
            signature: Vec::new(),
        };
        assert!(p(json!("argus.local"))
            .check_audience("argus.local")
            .is_ok());
        assert!(p(json!(["x", "argus.local"]))
            .check_audience("argus.local")
            .is_ok());
        assert!(p(json!("us.api.hemato.ai"))
            .check_audience("argus.local")
            .is_err());
    }

    #[test]
    fn bearer_prefix_is_optional() {
        assert_eq!(token_from_header("Bearer abc"), "abc");
        assert_eq!(token_from_header("bearer  abc "), "abc");
        assert_eq!(token_from_header("abc"), "abc");
    }
}
