//! The PBS family's management actions, as the command line sends them (in
//! process, or to a running daemon over its control socket): users, signing
//! keys and callback secrets of organisations. Each runs the same `org`
//! function as the organisation admin endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::org;
use super::store::PbsStore;
use crate::store::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PbsCommand {
    UserAdd {
        org: String,
        user: String,
        role: String,
        password: String,
    },
    UserList {
        org: Option<String>,
    },
    UserRemove {
        user: String,
        /// Needed when the user name is in several organisations.
        #[serde(default)]
        org: Option<String>,
    },
    KeyAdd {
        org: String,
        pem: String,
        kid: Option<String>,
    },
    KeyList {
        org: Option<String>,
    },
    KeyRevoke {
        kid: String,
        /// Needed when the key id is in several organisations.
        #[serde(default)]
        org: Option<String>,
    },
    OrgSecret {
        org: String,
    },
}

/// Run `cmd` on the store (the caller flushes).
pub fn execute(store: &Store, cmd: PbsCommand) -> Result<Value, String> {
    let pbs = PbsStore::open(store.db()).map_err(|e| e.to_string())?;
    match cmd {
        PbsCommand::UserAdd {
            org,
            user,
            role,
            password,
        } => org::add_user(&pbs, &org, &user, &role, &password),
        PbsCommand::UserList { org: o } => org::list_users(&pbs, o.as_deref()),
        PbsCommand::UserRemove { user, org: o } => org::remove_user(&pbs, o.as_deref(), &user),
        PbsCommand::KeyAdd { org: o, pem, kid } => org::add_key(&pbs, &o, &pem, kid.as_deref()),
        PbsCommand::KeyList { org: o } => org::list_keys(&pbs, o.as_deref()),
        PbsCommand::KeyRevoke { kid, org: o } => org::revoke_key(&pbs, o.as_deref(), &kid),
        PbsCommand::OrgSecret { org: o } => org::org_secret(&pbs, &o),
    }
}
