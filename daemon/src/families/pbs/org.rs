//! Organisations' users and signing keys: the one implementation behind
//! `argusd pbs users|keys ...` and the `/pbs/admin/...` endpoints.

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

use super::schema::{KeyView, OrgSecret, UserAdded, UserView};
use super::store::PbsStore;
use crate::auth::{jwt, password};
use crate::families::pbs::store::{KeyRecord, Role, UserRecord};
use crate::store::now_rfc3339;

fn valid_org(org: &str) -> Result<(), String> {
    let ok = !org.is_empty()
        && org.len() <= 128
        && org != jwt::SESSION_ISSUER
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "organisation {org:?}: 1 to 128 of A-Z a-z 0-9 - _ . : (and not {:?})",
            jwt::SESSION_ISSUER
        ))
    }
}

pub fn user_json(u: &UserRecord) -> Value {
    json!(UserView::from(u))
}

pub fn key_json(k: &KeyRecord) -> Value {
    json!(KeyView::from(k))
}

/// Add a user, or reset the password and role of an existing one of the
/// same organisation. The password is stored as argon2id of its hex sha256,
/// the form `/auth/login` receives it in.
pub fn add_user(
    store: &PbsStore,
    org: &str,
    email: &str,
    role: &str,
    password: &str,
) -> Result<Value, String> {
    valid_org(org)?;
    let email = email.trim().to_ascii_lowercase();
    if email.len() < 3
        || email.len() > 254
        || !email.contains('@')
        || email.contains(char::is_whitespace)
    {
        return Err(format!("{email:?} is not an e-mail address"));
    }
    let role = Role::parse(role).ok_or("role must be one of admin, user, device, service")?;
    if password.chars().count() < 8 {
        return Err("the password must be at least 8 characters".into());
    }
    let pass_sha = hex::encode(sha2::Sha256::digest(password.as_bytes()));
    // Per organisation: another organisation's user of the same name is
    // another user, and nothing about it is told here.
    let existing = store.get_user(org, &email).map_err(|e| e.to_string())?;
    let (org_rec, new_org) = store.ensure_org(org).map_err(|e| e.to_string())?;
    let rec = UserRecord {
        id: existing
            .as_ref()
            .map(|u| u.id)
            .unwrap_or_else(uuid::Uuid::new_v4),
        email: email.clone(),
        org: org.to_string(),
        role,
        screen_name: email.split('@').next().unwrap_or_default().to_string(),
        pass_hash: password::hash(&pass_sha)?,
        created_at: existing
            .as_ref()
            .map(|u| u.created_at.clone())
            .unwrap_or_else(now_rfc3339),
    };
    store.put_user(&rec).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(json!(UserAdded {
        user: UserView::from(&rec),
        updated: existing.is_some(),
        // Shown once, when the organisation is created.
        callback_secret: new_org.then(|| org_rec.callback_secret.clone()),
    }))
}

/// Remove user `email` of `org`; without an organisation (the local
/// command line, which sees them all) the one organisation that has it.
pub fn remove_user(store: &PbsStore, org: Option<&str>, email: &str) -> Result<Value, String> {
    let email = email.trim().to_ascii_lowercase();
    let e = |e: crate::store::StoreError| e.to_string();
    let user = match org {
        Some(o) => store.get_user(o, &email).map_err(e)?,
        None => one_of(
            store.users_named(&email).map_err(e)?,
            |u| &u.org,
            &email,
            "--org",
        )?,
    };
    let Some(u) = user else {
        return Err(format!("no user {email}"));
    };
    store.remove_user(&u.org, &email).map_err(e)?;
    store.flush().map_err(e)?;
    Ok(user_json(&u))
}

/// The single record of `found`, None when empty; several (one name in
/// several organisations, only seen by the local command line) asks for
/// the organisation.
fn one_of<T>(
    mut found: Vec<T>,
    org: impl Fn(&T) -> &String,
    name: &str,
    flag: &str,
) -> Result<Option<T>, String> {
    if found.len() > 1 {
        let orgs: Vec<&str> = found.iter().map(|x| org(x).as_str()).collect();
        return Err(format!(
            "{name} exists in several organisations ({}); give {flag} ORG",
            orgs.join(", ")
        ));
    }
    Ok(found.pop())
}

pub fn list_users(store: &PbsStore, org: Option<&str>) -> Result<Value, String> {
    Ok(Value::Array(
        store
            .list_users(org)
            .map_err(|e| e.to_string())?
            .iter()
            .map(user_json)
            .collect(),
    ))
}

/// Register an RSA public key (PEM) for `org`. Without `kid`, the key's id is
/// the hex sha256 of its DER, cut to 32 characters.
pub fn add_key(store: &PbsStore, org: &str, pem: &str, kid: Option<&str>) -> Result<Value, String> {
    valid_org(org)?;
    if store.get_org(org).map_err(|e| e.to_string())?.is_none() {
        return Err(format!(
            "organisation {org:?} has no users yet; add one first (argusd pbs users add)"
        ));
    }
    let (der, bits) = jwt::rsa_public_key_from_pem(pem)?;
    let kid = match kid {
        Some(k) => {
            let k = k.trim();
            if k.is_empty() || k.len() > 128 || k.contains(char::is_control) {
                return Err("kid must be 1 to 128 printable characters".into());
            }
            k.to_string()
        }
        None => hex::encode(sha2::Sha256::digest(&der))[..32].to_string(),
    };
    if store
        .get_key(org, &kid)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!("{org} already has a key with kid {kid:?}"));
    }
    let rec = KeyRecord {
        kid,
        org: org.to_string(),
        rsa_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
        bits,
        created_at: now_rfc3339(),
        revoked_at: None,
    };
    store.put_key(&rec).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(key_json(&rec))
}

/// Revoke key `kid` of `org` (without an organisation: the one that has it).
pub fn revoke_key(store: &PbsStore, org: Option<&str>, kid: &str) -> Result<Value, String> {
    let e = |e: crate::store::StoreError| e.to_string();
    let key = match org {
        Some(o) => store.get_key(o, kid).map_err(e)?,
        None => {
            let all: Vec<KeyRecord> = store
                .list_keys(None)
                .map_err(e)?
                .into_iter()
                .filter(|k| k.kid == kid)
                .collect();
            one_of(all, |k| &k.org, kid, "--org")?
        }
    };
    match key {
        Some(mut k) => {
            if k.revoked_at.is_none() {
                k.revoked_at = Some(now_rfc3339());
                store.put_key(&k).map_err(|e| e.to_string())?;
                store.flush().map_err(|e| e.to_string())?;
            }
            Ok(key_json(&k))
        }
        _ => Err(format!("no key {kid:?}")),
    }
}

pub fn list_keys(store: &PbsStore, org: Option<&str>) -> Result<Value, String> {
    Ok(Value::Array(
        store
            .list_keys(org)
            .map_err(|e| e.to_string())?
            .iter()
            .map(key_json)
            .collect(),
    ))
}

pub fn org_secret(store: &PbsStore, org: &str) -> Result<Value, String> {
    match store.get_org(org).map_err(|e| e.to_string())? {
        Some(o) => Ok(json!(OrgSecret {
            organisation: o.name,
            callback_secret: o.callback_secret,
        })),
        None => Err(format!("no organisation {org:?}")),
    }
}
