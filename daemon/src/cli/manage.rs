//! Management commands (the platform's API keys and admin users, and each
//! family's own, e.g. `Pbs(PbsCommand)`), executed against a `Store` either
//! in process (no daemon running) or inside the daemon through the control
//! socket: the same code either way, and the same functions the HTTP
//! admin endpoints call.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{keys, password};
use crate::families::faces::admin::key_view;
use crate::families::faces::schema::CreatedKey;
use crate::families::pbs::manage::{self as pbs_manage, PbsCommand};
use crate::families::skin::cli::{self as skin_cli, SkinCommand};
use crate::store::{now_rfc3339, AdminRecord, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    KeysCreate {
        name: String,
    },
    KeysList,
    /// Revoke by id, or by the key's first characters (`key_prefix`).
    KeysRevoke {
        key: String,
    },
    AdminCreate {
        username: String,
        password: String,
    },
    /// A management action of the PBS family.
    Pbs(PbsCommand),
    /// A management action of the skin family.
    Skin(SkinCommand),
}

/// What a command changes, for the audit trail: (family, action,
/// object); None for the read-only ones. Never the secrets.
fn audited(cmd: &Command) -> Option<(&'static str, &'static str, String)> {
    use crate::families::pbs::manage::PbsCommand as P;
    use crate::families::skin::cli::SkinCommand as S;
    Some(match cmd {
        Command::KeysCreate { name } => ("faces", "key_created", name.clone()),
        Command::KeysRevoke { key } => ("faces", "key_revoked", key.chars().take(8).collect()),
        Command::AdminCreate { username, .. } => ("platform", "admin_user_set", username.clone()),
        Command::Pbs(P::UserAdd { org, user, .. }) => {
            ("pbs", "user_added", format!("{org}/{user}"))
        }
        Command::Pbs(P::UserRemove { user, .. }) => ("pbs", "user_removed", user.clone()),
        Command::Pbs(P::KeyAdd { org, kid, .. }) => (
            "pbs",
            "key_added",
            format!("{org}/{}", kid.clone().unwrap_or_default()),
        ),
        Command::Pbs(P::KeyRevoke { kid, .. }) => ("pbs", "key_revoked", kid.clone()),
        Command::Pbs(P::OrgSecret { org }) => ("pbs", "callback_secret_shown", org.clone()),
        Command::Skin(S::UserAdd { company, email, .. }) => {
            ("skin", "user_added", format!("{company}/{email}"))
        }
        _ => return None,
    })
}

/// Run `cmd` and record it in `audit` (actor `cli`, the local owner of
/// the state directory).
pub fn execute_audited(
    store: &Store,
    cmd: Command,
    audit: &crate::audit::AuditLog,
) -> Result<Value, String> {
    let what = audited(&cmd);
    let r = execute(store, cmd);
    if let Some((family, action, object)) = what {
        let err = r.as_ref().err().cloned();
        audit.record(
            crate::audit::Event {
                family,
                action,
                actor: Some("cli"),
                object: Some(&object),
                detail: err.as_deref(),
                ..Default::default()
            },
            if r.is_ok() {
                crate::audit::Outcome::Ok
            } else {
                crate::audit::Outcome::Failed
            },
        );
    }
    r
}

pub fn execute(store: &Store, cmd: Command) -> Result<Value, String> {
    let r = match cmd {
        Command::KeysCreate { name } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err("the key name must be 1 to 100 characters".into());
            }
            let (full, rec) = keys::create(store, name).map_err(|e| e.to_string())?;
            json!(CreatedKey {
                view: key_view(&rec),
                key: full,
            })
        }
        Command::KeysList => {
            let (all, _) = store.list_keys(1, u64::MAX).map_err(|e| e.to_string())?;
            Value::Array(all.iter().map(|k| json!(key_view(k))).collect())
        }
        Command::KeysRevoke { key } => {
            let (all, _) = store.list_keys(1, u64::MAX).map_err(|e| e.to_string())?;
            let matches: Vec<_> = all
                .into_iter()
                .filter(|k| {
                    k.id.to_string() == key
                        || (key.len() >= 8
                            && key.starts_with(&k.key_prefix)
                            && (key.len() == 8
                                || keys::hash_presented(&key).as_deref() == Some(&k.key_hash)))
                })
                .collect();
            match matches.as_slice() {
                [one] => {
                    let mut rec = one.clone();
                    rec.is_active = false;
                    store.put_key(&rec).map_err(|e| e.to_string())?;
                    json!(key_view(&rec))
                }
                [] => return Err(format!("no API key matches {key:?}")),
                _ => return Err(format!("{key:?} matches several keys; give the key's id")),
            }
        }
        Command::AdminCreate {
            username,
            password: pw,
        } => {
            let username = username.trim().to_string();
            if username.is_empty() || username.len() > 64 || username.contains(':') {
                return Err("the username must be 1 to 64 characters, without ':'".into());
            }
            if pw.chars().count() < 8 {
                return Err("the password must be at least 8 characters".into());
            }
            let hash = password::hash(&pw)?;
            let existed = store
                .get_admin(&username)
                .map_err(|e| e.to_string())?
                .is_some();
            store
                .put_admin(&AdminRecord {
                    username: username.clone(),
                    password_hash: hash,
                    created_at: now_rfc3339(),
                })
                .map_err(|e| e.to_string())?;
            // A new password ends the old one's sessions: a session taken
            // with a leaked password must not outlive the reset.
            let ended = store
                .end_sessions_of(&username)
                .map_err(|e| e.to_string())?;
            json!({"username": username, "updated": existed, "sessions_ended": ended})
        }
        Command::Pbs(cmd) => pbs_manage::execute(store, cmd)?,
        Command::Skin(cmd) => skin_cli::execute(store, cmd)?,
    };
    store.flush().map_err(|e| e.to_string())?;
    Ok(r)
}
