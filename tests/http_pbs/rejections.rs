//! Rejections in the family's envelope, internal callback URLs, and the
//! tokens' time claims.

use crate::client::*;
use crate::common::pbs::{call, configure, login, new_study, setup_org, study_with_a_photo};
use crate::common::{fixture, json, start, ROOT};
use argus::cli::manage::Command;
use argus::families::pbs::manage::PbsCommand;
use serde_json::{json, Value};

/// Every rejection under the family's paths answers in its envelope, axum's
/// own included (a path segment that is not UTF-8, a duplicated query
/// parameter, a wrong method, an unknown path), and is counted in
/// `argus_failures_total{family="pbs"}`.
#[tokio::test]
async fn every_rejection_answers_in_the_envelope() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = new_study(&s, &token, json!({})).await;
    let cases: Vec<(&str, String, u16)> = vec![
        ("GET", "/pbs/%FF%FE/status".into(), 400),
        (
            "POST",
            format!("/pbs/{id}/files?file_name=a.png&file_name=b.png"),
            400,
        ),
        ("POST", format!("/pbs/{id}/status"), 405),
        ("GET", format!("/pbs/{id}/nope"), 404),
        ("GET", "/pbs/admin/nothing/here".into(), 404),
        ("DELETE", "/heartbeat".into(), 405),
        ("GET", "/auth/unknown".into(), 404),
    ];
    for (method, path, want) in &cases {
        let rb = match *method {
            "GET" => s.client.get(s.url(path)),
            "DELETE" => s.client.delete(s.url(path)),
            _ => s
                .client
                .post(s.url(path))
                .body(fixture("smear_cbc_crop.png")),
        };
        let r = rb.header("Authorization", &token).send().await.unwrap();
        let st = r.status().as_u16();
        assert_eq!(st, *want, "{method} {path}");
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let v = json(r).await;
        assert_eq!(v["status"], *want, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {v}"
        );
        assert!(
            v["debug_info"]["version"].is_string(),
            "{method} {path}: {v}"
        );
        assert!(
            v.get("detail").is_none(),
            "not the face family's shape: {v}"
        );
    }
    let r = s
        .client
        .post(s.url(&format!("/pbs/{id}/status")))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key(reqwest::header::ALLOW),
        "405 keeps Allow"
    );
    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [
        ("not_found", 3),
        ("method_not_allowed", 3),
        ("bad_request", 2),
    ] {
        let line = format!("argus_failures_total{{family=\"pbs\",reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line} in:\n{m}");
    }
}

/// Callback URLs that point inside (loopback, cloud metadata, private
/// ranges, in any notation) are refused when tasks are requested, with the
/// reason, and nothing is queued; a host the operator allowed is taken.
#[tokio::test]
async fn internal_callback_urls_are_refused_at_request_time() {
    let s = start(|c| {
        configure(c);
        c.outbound.allow = vec!["10.9.0.0/16".into()];
    })
    .await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = study_with_a_photo(&s, &token, json!({})).await;
    for url in [
        "https://127.0.0.1:9999/x",
        "https://169.254.169.254/",
        "https://10.0.0.1/",
        "https://localhost/",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fd00::1]/",
        "https://100.64.1.1/",
        "http://93.184.215.14/",
    ] {
        let (st, v) = call(
            &s,
            "POST",
            &format!("/pbs/{id}/tasks"),
            &token,
            Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": url})),
        )
        .await;
        assert_eq!(st, 400, "{url}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("callback_url refused"), "{url}: {e}");
    }
    let (_, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
    assert!(
        v["results"]["tasks"].as_array().unwrap().is_empty(),
        "nothing was requested: {v}"
    );
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": "https://10.9.3.4/lis"})),
    )
    .await;
    assert_eq!(st, 202, "an allowed network is taken: {v}");
}

/// Time claims: a token not valid before tomorrow is refused naming `nbf`;
/// `exp` of 1e300 or 2^64-1 is refused as out of range (not "expired ...
/// ago"); `/auth/hello` reports a spent `jti` as the real endpoints do.
#[tokio::test]
async fn token_time_claims_and_hello_agree_with_the_endpoints() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/client.pub.pem")).unwrap();
    s.manage(Command::Pbs(PbsCommand::KeyAdd {
        org: "clinic-a".into(),
        pem,
        kid: Some("scanner-1".into()),
    }))
    .await;
    let user = "lab@clinic-a.test";
    let ok = |c: &Value| sign("RS256", Some("scanner-1"), c, "client_pkcs8.pem");
    let mut tomorrow = claims("clinic-a", user, "user");
    tomorrow["nbf"] = json!(now() + 86400);
    let (st, v) = call(&s, "POST", "/pbs", &ok(&tomorrow), None).await;
    assert_eq!(
        (st, v["results"]["claim"].clone()),
        (401, json!("nbf")),
        "{v}"
    );
    for exp in [json!(1e300), json!(u64::MAX)] {
        let mut c = claims("clinic-a", user, "user");
        c["exp"] = exp.clone();
        let (st, v) = call(&s, "POST", "/pbs", &ok(&c), None).await;
        assert_eq!(
            (st, v["results"]["claim"].clone()),
            (401, json!("exp")),
            "{v}"
        );
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("out of range") && !e.contains("ago"),
            "{exp}: {e}"
        );
    }
    let t = ok(&claims("clinic-a", user, "user"));
    let (st, v) = call(&s, "POST", "/auth/hello", &t, None).await;
    assert_eq!(
        (st, v["results"]["valid"].clone()),
        (200, json!(true)),
        "{v}"
    );
    let (st, _) = call(&s, "POST", "/pbs", &t, None).await;
    assert_eq!(st, 201, "hello did not spend the token");
    let (st, v) = call(&s, "POST", "/auth/hello", &t, None).await;
    assert_eq!(
        (st, v["results"]["claim"].clone()),
        (401, json!("jti")),
        "{v}"
    );
}
