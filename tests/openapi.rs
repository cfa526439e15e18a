//! `/openapi.json` and `/docs` on the real server: the document is valid
//! OpenAPI 3.1, every operation in it is a route the router really serves,
//! and the documentation page and its assets come from the binary.
//!
//! That every served route is in the document is structural (routes are
//! only registered through `utoipa_axum::routes!`) and checked by the unit
//! test `http::openapi::tests::every_route_is_registered_through_openapi`.

mod common;

use std::collections::BTreeSet;

use common::{json, start};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// (METHOD, path template) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let s = start(|_| {}).await;
    let resp = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc = json(resp).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "argus");

    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for name in [
        "api_key",
        "admin_basic",
        "admin_session",
        "pbs_jwt",
        "skin_token",
    ] {
        assert!(schemes.contains_key(name), "no security scheme {name}");
    }

    let mut problems = Vec::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        if op["responses"].as_object().is_none_or(|r| r.is_empty()) {
            problems.push(format!("{method} {path}: no responses"));
        }
        if op["tags"].as_array().is_none_or(|t| t.is_empty()) {
            problems.push(format!("{method} {path}: no tag"));
        }
        for sec in op["security"].as_array().into_iter().flatten() {
            for name in sec.as_object().into_iter().flat_map(|o| o.keys()) {
                if !schemes.contains_key(name) {
                    problems.push(format!("{method} {path}: unknown scheme {name}"));
                }
            }
        }
        // Every `{param}` of the template is declared as a path parameter.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                if !declared.contains(name) {
                    problems.push(format!("{method} {path}: path parameter {name} undeclared"));
                }
            }
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let target = r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(&doc, |v, k| &v[k]));
        if target.is_none_or(Value::is_null) {
            problems.push(format!("dangling $ref {r}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The reference validator, where CI installed it (`.ci/run` does).
    // Kept as a test artefact for a look (and for clients' generators).
    let dir = std::path::Path::new(common::ROOT).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    match std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            eprintln!("skipped the openapi-spec-validator check: the module is not installed (pip install openapi-spec-validator)");
        }
        Ok(out) => panic!(
            "openapi-spec-validator refused the document:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("skipped the openapi-spec-validator check: no python3 ({e})"),
    }
    s.stop().await;
}

/// Each operation is requested (no credentials, no body) and must reach a
/// route: the request metrics carry the matched route template, and an
/// unmatched request is counted as `route="unmatched"`.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let s = start(|_| {}).await;
    let doc = json(s.client.get(s.url("/openapi.json")).send().await.unwrap()).await;
    let ops = operations(&doc);
    assert!(ops.len() > 40, "only {} operations documented", ops.len());
    for (method, path) in &ops {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = s
            .client
            .request(m, s.url(&concrete))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {concrete}: {e}"));
        assert_ne!(
            resp.status(),
            405,
            "{method} {path} is documented but the route does not take {method}"
        );
    }
    let metrics = s.metrics().await;
    let mut missing = Vec::new();
    for (method, path) in &ops {
        let line = format!("route=\"{path}\"");
        let meth = format!("method=\"{method}\"");
        if !metrics.lines().any(|l| {
            l.starts_with("argus_http_requests_total{") && l.contains(&line) && l.contains(&meth)
        }) {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not served:\n{}",
        missing.join("\n")
    );
    assert!(
        !metrics.contains("route=\"unmatched\""),
        "a documented path matched no route"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_docs_page_and_its_assets_come_from_the_binary() {
    let s = start(|_| {}).await;
    let page = s.client.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    // Every script and stylesheet is local: no CDN.
    for src in html
        .split(['"', '\''])
        .filter(|x| x.ends_with(".js") || x.ends_with(".css"))
    {
        assert!(src.starts_with("/docs/"), "asset not served locally: {src}");
        let r = s.client.get(s.url(src)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{src}");
        assert!(r.bytes().await.unwrap().len() > 100, "{src} is empty");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    let missing = s.client.get(s.url("/docs/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    s.stop().await;
}
