//! Who is calling the PBS family: a token (the appliance's session token or
//! a client-signed JWT, see `identity`) whose role may take the route's
//! action, as an axum extractor, one access level per marker type in
//! [`access`]: `Caller<access::ReadReport>`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::api::PbsError;
use super::identity::{Action, Principal};
use super::Pbs;
use crate::audit::{Event, Outcome};

/// An access level: the action a route takes.
pub trait Access: Send + Sync + 'static {
    const ACTION: Action;
    /// What the action is, for the 403 message.
    const WHAT: &'static str;
}

/// The access levels of the family's routes.
pub mod access {
    use super::{Access, Action};

    macro_rules! levels {
        ($($name:ident: $what:literal),* $(,)?) => {
            $(
                pub struct $name;
                impl Access for $name {
                    const ACTION: Action = Action::$name;
                    const WHAT: &'static str = $what;
                }
            )*
        };
    }

    levels!(
        CreateStudy: "create studies",
        Upload: "upload files",
        RequestTasks: "request tasks",
        ReadStatus: "read study status",
        ReadReport: "read reports",
        Search: "search studies",
        ManageOrg: "manage the organisation's users and keys",
        DeleteStudy: "delete studies",
    );
}

/// An authenticated caller whose role may take action `A`. A client-signed
/// token is good for this one request (its `jti` is spent).
pub struct Caller<A: Access>(pub Principal, PhantomData<A>);

impl<A: Access> FromRequestParts<Arc<Pbs>> for Caller<A> {
    type Rejection = PbsError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<Pbs>) -> Result<Self, PbsError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let clinic = app.clinic.clone();
        let ip = crate::http::extract::client_ip(parts);
        // Verifying reads and writes the store (keys, spent token ids).
        let p = tokio::task::spawn_blocking(move || clinic.authenticate(header.as_deref(), true))
            .await
            .map_err(|e| PbsError::Internal(e.to_string()))?
            .map_err(|f| {
                let why = format!("{}: {}", f.rejection.claim, f.rejection.reason);
                app.audit.record(
                    Event {
                        family: "pbs",
                        action: "credential_refused",
                        actor: f.kid.as_deref(),
                        address: Some(&ip),
                        object: Some(parts.uri.path()),
                        detail: Some(&why),
                    },
                    Outcome::Denied,
                );
                PbsError::Unauthorized(Box::new(f))
            })?;
        if !A::ACTION.allowed(p.role) {
            app.audit.record(
                Event {
                    family: "pbs",
                    action: "forbidden",
                    actor: Some(&p.user.email),
                    address: Some(&ip),
                    object: Some(parts.uri.path()),
                    detail: Some(A::WHAT),
                },
                Outcome::Denied,
            );
            return Err(PbsError::Forbidden(format!(
                "role {:?} may not {}",
                p.role.as_str(),
                A::WHAT
            )));
        }
        Ok(Caller(p, PhantomData))
    }
}
