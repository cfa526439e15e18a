//! Helpers of the blood-smear (PBS) tests: an organisation with a user of
//! every role, login, enveloped calls, uploads, and waiting for a study.

use std::time::Duration;

use argus::cli::manage::Command;
use argus::families::pbs::manage::PbsCommand;
use serde_json::{json, Value};
use sha2::Digest;

use super::{json, Server};

pub const HOST: &str = "argus.test";

pub fn configure(c: &mut argus::config::Config) {
    c.pbs.public_host = HOST.into();
    // Smear fixtures are ~100 px red cells: analyse them at the tuned scale.
    c.pbs.native_rbc_diameter_px = 100.0;
    c.pbs.callback_retry_base_ms = 200;
}

pub struct Org {
    pub secret: String,
}

pub async fn add_user(s: &Server, org: &str, user: &str, role: &str) -> Value {
    s.manage(Command::Pbs(PbsCommand::UserAdd {
        org: org.into(),
        user: user.into(),
        role: role.into(),
        password: "correct horse battery".into(),
    }))
    .await
}

pub async fn setup_org(s: &Server, org: &str) -> Org {
    let v = add_user(s, org, &format!("lab@{org}.test"), "user").await;
    let secret = v["callback_secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for role in ["admin", "device", "service"] {
        add_user(s, org, &format!("{role}@{org}.test"), role).await;
    }
    Org { secret }
}

pub async fn login(s: &Server, user: &str) -> String {
    let hash = hex::encode(sha2::Sha256::digest(b"correct horse battery"));
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"user": user, "pass_hash": hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v = json(r).await;
    assert_eq!(v["status"], 202);
    assert_eq!(v["results"]["user"]["email"], user);
    v["results"]["token"]["HY_APP_AUTH_v1"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = match method {
        "GET" => s.client.get(s.url(path)),
        "DELETE" => s.client.delete(s.url(path)),
        _ => s.client.post(s.url(path)),
    }
    .header("Authorization", token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let st = r.status().as_u16();
    let v = json(r).await;
    assert_eq!(v["status"], st, "envelope status equals HTTP status: {v}");
    (st, v)
}

pub async fn upload(s: &Server, id: &str, query: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(&format!("/pbs/{id}/files?{query}")))
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, json(r).await)
}

pub async fn new_study(s: &Server, token: &str, tags: Value) -> String {
    let (st, v) = call(s, "POST", "/pbs", token, Some(json!({ "tags": tags }))).await;
    assert_eq!(st, 201, "{v}");
    v["results"]["pbs_study_id"].as_str().unwrap().to_string()
}

/// A new study of `token`'s organisation holding one photo (the smear
/// crop fixture); its id.
pub async fn study_with_a_photo(s: &Server, token: &str, tags: Value) -> String {
    let id = new_study(s, token, tags).await;
    let photo = super::fixture("smear_cbc_crop.png");
    let (st, v) = upload(s, &id, "file_name=a.png", token, photo).await;
    assert_eq!(st, 201, "{v}");
    id
}

pub async fn wait_ready(s: &Server, id: &str, token: &str) -> Value {
    // Stuck, not slow, fails: a study on a loaded 2-core machine takes
    // minutes, and its progress (fraction and message) keeps moving.
    let mut last = Value::Null;
    let mut moved = std::time::Instant::now();
    loop {
        let (st, v) = call(s, "GET", &format!("/pbs/{id}/status"), token, None).await;
        assert_eq!(st, 200, "{v}");
        let r = &v["results"];
        if matches!(r["report_status"].as_str(), Some("ready" | "failed")) {
            return v;
        }
        let now = (r["progress"].clone(), r["progress_message"].clone());
        if now != (last["progress"].clone(), last["progress_message"].clone()) {
            moved = std::time::Instant::now();
            last = r.clone();
        }
        assert!(
            moved.elapsed() < Duration::from_secs(120),
            "study {id} made no progress for 120 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
