//! The machine-readable API: `GET /openapi.json`, one OpenAPI 3.1 document
//! of every route the router serves, and `GET /docs`, Swagger UI over it.
//!
//! Every route is registered through `utoipa_axum`'s `routes!`, which takes
//! the path and methods from the handler's `#[utoipa::path]` attribute and
//! documents it in the same call, so a route cannot be served without being
//! documented (the `every_route_is_registered_through_openapi` test checks
//! that no plain `.route(` call is left). Request and response schemas come
//! from the same structs the handlers (de)serialize.
//!
//! Swagger UI 5.35.0 (npm `swagger-ui-dist`, Apache-2.0, SmartBear) is
//! embedded from `daemon/assets/swagger-ui/` (source and sha256 in its
//! README), so nothing is fetched at build or run time.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContactBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Face API key, header `X-API-Key` (reference 004).
pub const API_KEY: &str = "api_key";
/// The operator's user name and password (HTTP Basic), for admin routes.
pub const ADMIN_BASIC: &str = "admin_basic";
/// The admin console's session cookie (`argus_admin_session`), from
/// `POST /api/v1/admin/auth/login`.
pub const ADMIN_SESSION: &str = "admin_session";
/// The blood-smear family's JWT (`Authorization: Bearer <jwt>`), from
/// `POST /auth/login` or signed by a registered client key.
pub const PBS_JWT: &str = "pbs_jwt";
/// The skin family's access or private token (`Authorization: Bearer <t>`).
pub const SKIN_TOKEN: &str = "skin_token";

/// Tag of each family's routes and of the platform's own.
pub const TAG_FACES: &str = "faces";
pub const TAG_FACES_ADMIN: &str = "faces-admin";
pub const TAG_PBS: &str = "blood-smears";
pub const TAG_SKIN: &str = "skin";
pub const TAG_PLATFORM: &str = "platform";
pub const TAG_CONSOLE: &str = "console";

/// The document's frame: info, tags and security schemes. Paths and
/// schemas are merged in from every family's router.
pub fn base() -> OpenApi {
    let schemes = ComponentsBuilder::new()
        .security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A face API key, created in the admin console or `POST /api/v1/admin/api-keys`.",
            ))),
        )
        .security_scheme(
            ADMIN_BASIC,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        )
        .security_scheme(
            ADMIN_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::http::extract::SESSION_COOKIE,
                "The admin session cookie set by `POST /api/v1/admin/auth/login` \
                 (HttpOnly, Secure, SameSite=Strict).",
            ))),
        )
        .security_scheme(PBS_JWT, {
            let mut h = Http::new(HttpAuthScheme::Bearer);
            h.bearer_format = Some("JWT".into());
            h.description = Some(
                "A session token from `POST /auth/login`, or a JWT the client signs \
                 with a key registered under `/pbs/admin/keys`."
                    .into(),
            );
            SecurityScheme::Http(h)
        })
        .security_scheme(SKIN_TOKEN, {
            let mut h = Http::new(HttpAuthScheme::Bearer);
            h.description = Some(
                "An access token from `POST /api/v1/login/` or a private token \
                 (`POST /api/v1/auth/private_tokens/`)."
                    .into(),
            );
            SecurityScheme::Http(h)
        })
        .build();
    let tag = |name: &str, what: &str| TagBuilder::new().name(name).description(Some(what)).build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("argus")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The argus edge appliance's local API: face detection and masking, \
                     blood-smear studies, selfie skin analysis, and the platform's \
                     health, metrics and documentation. Each family answers errors in \
                     the shape of the cloud service it copies.",
                ))
                .contact(Some(ContactBuilder::new().name(Some("argus")).build()))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .components(Some(schemes))
        .tags(Some(vec![
            tag(TAG_FACES, "Face detection and masking (reference 004)."),
            tag(
                TAG_FACES_ADMIN,
                "The face service's admin API and console back end.",
            ),
            tag(
                TAG_PBS,
                "Blood-smear studies: files, tasks, status, reports.",
            ),
            tag(
                TAG_SKIN,
                "Selfie skin analysis: companies, datasets, subjects, results.",
            ),
            tag(TAG_PLATFORM, "Metrics and this documentation."),
            tag(
                TAG_CONSOLE,
                "The operator's browser console (HTML pages and forms).",
            ),
        ]))
        .build()
}

/// The finished document, served as it was serialized once at start-up.
#[derive(Default)]
pub struct Document(OnceLock<bytes::Bytes>);

impl Document {
    /// Serialize `doc` as the one served from now on.
    pub fn set(&self, doc: &OpenApi) {
        let json = serde_json::to_vec_pretty(doc).expect("an OpenAPI document serializes");
        let _ = self.0.set(json.into());
    }
}

type Docs = Arc<Document>;

/// `/openapi.json`, `/docs` and its assets, documented like every route.
pub fn routes(doc: Docs) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_asset))
        .with_state(doc)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = TAG_PLATFORM,
    responses((status = 200, description = "The OpenAPI 3.1 document of every route.",
               content_type = "application/json", body = Object)),
)]
pub async fn openapi_json(State(doc): State<Docs>) -> Response {
    let body = doc.0.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Swagger UI over `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = TAG_PLATFORM,
    responses((status = 200, description = "An HTML page that renders the document.",
               content_type = "text/html")),
)]
pub async fn docs_page() -> Response {
    with_csp(
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            DOCS_HTML,
        )
            .into_response(),
    )
}

/// The page's script, stylesheet and licence texts.
#[utoipa::path(
    get,
    path = "/docs/{asset}",
    tag = TAG_PLATFORM,
    params(("asset" = String, Path,
            description = "`swagger-ui-bundle.js`, `swagger-ui.css`, `init.js` or `LICENSE`")),
    responses(
        (status = 200, description = "The asset."),
        (status = 404, description = "No such asset.", body = crate::http::error::Detail),
    ),
)]
pub async fn docs_asset(axum::extract::Path(asset): axum::extract::Path<String>) -> Response {
    let (ctype, body): (&str, &'static [u8]) = match asset.as_str() {
        "swagger-ui-bundle.js" => ("text/javascript", SWAGGER_JS),
        "swagger-ui.css" => ("text/css", SWAGGER_CSS),
        "init.js" => ("text/javascript", INIT_JS.as_bytes()),
        "LICENSE" => ("text/plain; charset=utf-8", SWAGGER_LICENSE),
        _ => return crate::http::error::detail(axum::http::StatusCode::NOT_FOUND, "Not Found"),
    };
    let mut resp = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

/// Scripts only from this origin (the page's own start-up is `init.js`, not
/// inline); Swagger UI sets inline styles, so styles allow them.
fn with_csp(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

static SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
static SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");
static SWAGGER_LICENSE: &[u8] = include_bytes!("../../assets/swagger-ui/LICENSE");

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>argus API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"#;

const INIT_JS: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
    validatorUrl: null
  });
});
"##;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Calls that would serve a route the document does not list.
    const UNDOCUMENTED: [&str; 4] = [
        ".route(",
        ".route_service(",
        ".nest_service(",
        "OpenApiRouter::from(",
    ];

    fn scan(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if UNDOCUMENTED.iter().any(|c| code.contains(c)) {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }

    /// A route only reaches the router through `routes!`, which documents
    /// it; this is the "every served route is in the document" half of the
    /// check (`tests/openapi.rs` does the other half against the server).
    #[test]
    fn every_route_is_registered_through_openapi() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        scan(&src, &mut found);
        // This file names the calls it looks for.
        found.retain(|f| !f.contains("http/openapi.rs"));
        assert!(
            found.is_empty(),
            "routes registered without documentation:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_base_document_has_every_security_scheme() {
        let doc = serde_json::to_value(super::base()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        for s in [
            super::API_KEY,
            super::ADMIN_BASIC,
            super::ADMIN_SESSION,
            super::PBS_JWT,
            super::SKIN_TOKEN,
        ] {
            assert!(schemes.get(s).is_some(), "{s}");
        }
    }
}
