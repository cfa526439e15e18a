//! Who a PBS request comes from: the `Authorization` token resolved to an
//! organisation, a user and a role, and what each role may do.
//!
//! Roles (the token's `role` must equal the user's registered role):
//! - `admin`: everything below, plus the organisation's users and keys and
//!   deleting studies;
//! - `user`: create, upload, request tasks, read status, reports, search;
//! - `device` (a scanner): create, upload, request tasks, read status; no
//!   reports and no search, so a stolen device token reads no results;
//! - `service` (an integration): read status, reports and search only.

use base64::Engine;

use super::Clinic;
use crate::auth::jwt::{self, Alg, Rejection};
use crate::families::pbs::store::{Role, UserRecord};
use crate::store::unix_now;

#[derive(Debug, Clone)]
pub struct Principal {
    pub org: String,
    pub user: UserRecord,
    pub role: Role,
    /// `"session"` or `"key <kid>"`.
    pub via: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateStudy,
    Upload,
    RequestTasks,
    ReadStatus,
    ReadReport,
    Search,
    ManageOrg,
    DeleteStudy,
}

impl Action {
    pub fn allowed(self, role: Role) -> bool {
        use Action::*;
        match role {
            Role::Admin => true,
            Role::User => !matches!(self, ManageOrg | DeleteStudy),
            // A scanner reads the interpretation of what it digitised; that
            // it created the study is checked with the study in hand.
            Role::Device => matches!(
                self,
                CreateStudy | Upload | RequestTasks | ReadStatus | ReadReport
            ),
            Role::Service => matches!(self, ReadStatus | ReadReport | Search),
        }
    }
}

/// A refused token: 401, with the claim at fault.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    pub rejection: Rejection,
    /// What was learnt before the failure, for /auth/hello.
    pub alg: Option<&'static str>,
    pub kid: Option<String>,
    pub iss: Option<String>,
}

impl AuthFailure {
    fn new(r: Rejection) -> Self {
        Self {
            rejection: r,
            alg: None,
            kid: None,
            iss: None,
        }
    }
}

fn alg_name(a: Alg) -> &'static str {
    match a {
        Alg::Hs256 => "HS256",
        Alg::Rs256 => "RS256",
        Alg::Rs384 => "RS384",
    }
}

impl Clinic {
    /// Resolve the `Authorization` header. `consume_jti` records a client
    /// token's `jti` (every real request); /auth/hello only looks.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        consume_jti: bool,
    ) -> Result<Principal, AuthFailure> {
        let raw = header.ok_or_else(|| {
            AuthFailure::new(Rejection::new(
                "Authorization",
                "missing: send the token in the Authorization header",
            ))
        })?;
        let parsed = jwt::parse(jwt::token_from_header(raw)).map_err(AuthFailure::new)?;
        let mut kid = parsed.key_id();
        self.check_token(&parsed, consume_jti, &mut kid)
            .map_err(|rejection| AuthFailure {
                rejection,
                alg: Some(alg_name(parsed.alg)),
                kid,
                iss: parsed
                    .claims
                    .get("iss")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            })
    }

    /// Every check of a parsed token, in order: signature, audience,
    /// times, role, user, then the session's password tag or the client
    /// token's `jti`. `kid` becomes the key that verified a client token,
    /// so a later failure names it.
    fn check_token(
        &self,
        parsed: &jwt::Parsed,
        consume_jti: bool,
        kid: &mut Option<String>,
    ) -> Result<Principal, Rejection> {
        let claims = parsed.claims()?;
        let now = unix_now();
        let session = parsed.alg == Alg::Hs256;
        if session {
            if claims.iss != jwt::SESSION_ISSUER {
                return Err(Rejection::new(
                    "alg",
                    "HS256 is only valid for this appliance's own session tokens; \
                     sign client tokens with RS256 (with kid) or RS384",
                ));
            }
            parsed.verify_hs256(&self.session_key)?;
        } else {
            *kid = Some(self.verify_client_signature(parsed, &claims)?);
        }
        parsed.check_audience(&self.config.pbs.public_host)?;
        jwt::check_times(&claims, now, !session)?;
        let org = if session {
            parsed
                .claims
                .get("org")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        } else {
            claims.iss.clone()
        };
        let role = Role::parse(&claims.role)
            .ok_or_else(|| Rejection::new("role", "must be one of admin, user, device, service"))?;
        let user = self.registered_user(&org, &claims.sub, role)?;
        if session {
            // A session carries the tag of the password hash it was opened
            // with: setting the password again (a new salted hash) ends it.
            let tag = parsed.claims.get("pws").and_then(|v| v.as_str());
            if tag != Some(crate::auth::password::tag(&user.pass_hash).as_str()) {
                return Err(Rejection::new(
                    "pws",
                    "the user's password was set again after this session began; log in again",
                ));
            }
        } else {
            self.check_jti(&claims, now, consume_jti)?;
        }
        Ok(Principal {
            org,
            user,
            role,
            via: if session {
                "session".into()
            } else {
                format!("key {}", kid.clone().unwrap_or_default())
            },
        })
    }

    /// Verify a client token (RS256 or RS384) against its organisation's
    /// registered keys: the one `kid` names (required with RS256), else
    /// every active one. Returns the kid of the key that verified it.
    fn verify_client_signature(
        &self,
        parsed: &jwt::Parsed,
        claims: &jwt::Claims,
    ) -> Result<String, Rejection> {
        let keys = match (parsed.alg, parsed.key_id()) {
            // Key ids are per organisation: the token's `iss` names it.
            (_, Some(k)) => match self.pbs.get_key(&claims.iss, &k) {
                Ok(Some(key)) => vec![key],
                Ok(None) => {
                    return Err(Rejection::new(
                        "kid",
                        format!("organisation {:?} has no key {k:?}", claims.iss),
                    ))
                }
                Err(e) => return Err(Rejection::new("kid", e.to_string())),
            },
            (Alg::Rs256, None) => {
                return Err(Rejection::new(
                    "kid",
                    "required with RS256: name the registered key",
                ))
            }
            _ => self
                .pbs
                .list_keys(Some(&claims.iss))
                .unwrap_or_default()
                .into_iter()
                .filter(|k| k.revoked_at.is_none())
                .collect(),
        };
        if keys.is_empty() {
            return Err(Rejection::new(
                "iss",
                format!("organisation {:?} has no active signing key", claims.iss),
            ));
        }
        let mut last = None;
        for key in &keys {
            if key.org != claims.iss {
                last = Some(Rejection::new(
                    "iss",
                    format!(
                        "key {:?} belongs to another organisation than {:?}",
                        key.kid, claims.iss
                    ),
                ));
                continue;
            }
            if let Some(at) = &key.revoked_at {
                last = Some(Rejection::new(
                    "kid",
                    format!("key {:?} was revoked at {at}", key.kid),
                ));
                continue;
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(&key.rsa_der_b64)
                .unwrap_or_default();
            match parsed.verify_rsa(&der) {
                Ok(()) => return Ok(key.kid.clone()),
                Err(r) => last = Some(r),
            }
        }
        Err(last.unwrap_or_else(|| Rejection::new("signature", "does not verify")))
    }

    /// The user `sub` of `org`, registered with the role the token claims.
    fn registered_user(&self, org: &str, sub: &str, role: Role) -> Result<UserRecord, Rejection> {
        let user = match self.pbs.find_user(org, sub) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Err(Rejection::new(
                    "sub",
                    format!("{sub:?} is not a user of organisation {org:?}"),
                ))
            }
            Err(e) => return Err(Rejection::new("sub", e.to_string())),
        };
        if user.role != role {
            return Err(Rejection::new(
                "role",
                format!(
                    "the token claims {:?} but the user is registered as {:?}",
                    role.as_str(),
                    user.role.as_str()
                ),
            ));
        }
        Ok(user)
    }

    /// A client token's `jti` must not have been used: `consume` records it
    /// for as long as the token could be honoured (every real request);
    /// otherwise (/auth/hello) it is only looked up, so a spent id is
    /// reported as the real endpoints would.
    fn check_jti(&self, claims: &jwt::Claims, now: u64, consume: bool) -> Result<(), Rejection> {
        let fresh = if consume {
            let until = claims.exp.min(claims.iat + jwt::MAX_AGE_SECS) + jwt::LEEWAY_SECS;
            self.pbs.claim_jti(&claims.iss, &claims.jti, until, now)
        } else {
            self.pbs
                .jti_used(&claims.iss, &claims.jti, now)
                .map(|used| !used)
        };
        match fresh {
            Ok(true) => Ok(()),
            Ok(false) => Err(Rejection::new(
                "jti",
                "this token id was already used; sign a new token per request",
            )),
            Err(e) => Err(Rejection::new("jti", e.to_string())),
        }
    }

    /// Mint a session token for a user who logged in.
    pub fn session_token(&self, user: &UserRecord) -> String {
        let now = unix_now();
        let claims = serde_json::json!({
            "iss": jwt::SESSION_ISSUER,
            "aud": self.config.pbs.public_host,
            "sub": user.id.to_string(),
            "org": user.org,
            "role": user.role.as_str(),
            "iat": now,
            "pws": crate::auth::password::tag(&user.pass_hash),
            "exp": now + self.config.pbs.session_ttl_secs.min(jwt::MAX_AGE_SECS * 12),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jwt::sign_hs256(&claims, &self.session_key)
    }
}
