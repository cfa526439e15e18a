//! The client's side of the skin API: users, tenants, subjects, batches,
//! uploads, polling and websockets, as the reference's clients do them.

use std::time::Duration;

use crate::common::{fixture, json, Server, ROOT};
use argus::cli::manage::Command;
use argus::families::skin::cli::SkinCommand;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) const FM2: &str = "8b5b3acc-480b-4412-8d2c-ebe6ab4384d7";

/// A frontal selfie: the first Canada face where the data is present.
pub(crate) fn selfie(n: usize) -> Vec<u8> {
    let dir = format!("{ROOT}/../shared/data/faces/canada");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.get(n) {
        Some(p) => std::fs::read(p).unwrap(),
        None => fixture("skin_lisa1.jpg"),
    }
}

pub(crate) async fn add_user(s: &Server, company: &str, email: &str) {
    s.manage(Command::Skin(SkinCommand::UserAdd {
        company: company.into(),
        email: email.into(),
        password: "correct horse battery".into(),
    }))
    .await;
}

pub(crate) async fn login(s: &Server, email: &str) -> Value {
    let r = s
        .client
        .post(s.url("/api/v1/login/"))
        .json(&json!({"username": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

/// One JSON call with a bearer token: (status, body or null).
pub(crate) async fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = s
        .client
        .request(method.parse().unwrap(), s.url(path))
        .header("Authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) struct Tenant {
    pub(crate) token: String,
    pub(crate) company: String,
    pub(crate) user: String,
    pub(crate) dataset: String,
}

/// A company with a user, a dataset and the application attached.
pub(crate) async fn tenant(s: &Server, company: &str, algorithms: Option<Value>) -> Tenant {
    let email = format!("owner@{company}.test");
    add_user(s, company, &email).await;
    let l = login(s, &email).await;
    let token = l["access_token"].as_str().unwrap().to_string();
    let c = l["company_id"].as_str().unwrap().to_string();
    let (st, ds) = call(
        s,
        "POST",
        &format!("/api/v1/companies/{c}/datasets/"),
        &token,
        Some(json!({"name": "kiosk", "image_type_id": 1})),
    )
    .await;
    assert_eq!(st, 201, "{ds}");
    let d = ds["id"].as_str().unwrap().to_string();
    let mut run = json!({"dataset_id": d});
    if let Some(a) = algorithms {
        run["enabled_algorithms"] = a;
    }
    let (st, v) = call(
        s,
        "POST",
        &format!("/api/v1/companies/{c}/applications/{FM2}/runs/"),
        &token,
        Some(run),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    Tenant {
        token,
        company: c,
        user: l["id"].as_str().unwrap().to_string(),
        dataset: d,
    }
}

/// Subject and batch; returns (subject, batch).
pub(crate) async fn subject_and_batch(s: &Server, t: &Tenant, name: &str) -> (String, String) {
    let base = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/",
        t.company, t.dataset
    );
    let (st, sub) = call(s, "POST", &base, &t.token, Some(json!({"name": name}))).await;
    assert_eq!(st, 201, "{sub}");
    let sid = sub["id"].as_str().unwrap().to_string();
    let (st, b) = call(
        s,
        "POST",
        &format!("{base}{sid}/batches/"),
        &t.token,
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    (sid, b["id"].as_str().unwrap().to_string())
}

/// Another batch of subject `sid`; returns its id.
pub(crate) async fn new_batch(s: &Server, t: &Tenant, sid: &str) -> String {
    let (st, b) = call(
        s,
        "POST",
        &format!(
            "/api/v1/companies/{}/datasets/{}/subjects/{sid}/batches/",
            t.company, t.dataset
        ),
        &t.token,
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

pub(crate) fn image_path(t: &Tenant, sid: &str, bid: &str) -> String {
    format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/batches/{bid}/images/",
        t.company, t.dataset
    )
}

pub(crate) async fn upload_b64(
    s: &Server,
    t: &Tenant,
    sid: &str,
    bid: &str,
    side: u32,
    bytes: &[u8],
) -> (u16, Value) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    call(
        s,
        "POST",
        &image_path(t, sid, bid),
        &t.token,
        Some(json!({"side_id": side, "light_id": 1, "b64data": b64})),
    )
    .await
}

/// Poll an image's results until every algorithm has one.
pub(crate) async fn results_when_done(s: &Server, t: &Tenant, path: &str) -> Vec<Value> {
    for _ in 0..600 {
        let (st, v) = call(s, "GET", &format!("{path}results/"), &t.token, None).await;
        assert_eq!(st, 200, "{v}");
        let rows = v.as_array().unwrap().clone();
        if rows
            .first()
            .is_some_and(|r| r["all_algorithms_calculated"] == true)
        {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("results never completed for {path}");
}

pub(crate) async fn ws(
    s: &Server,
    path: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = s.url(path).replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    // The quick-start's streaming client sends the bare token.
    req.headers_mut()
        .insert("Authorization", token.parse().unwrap());
    let (sock, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket opens");
    sock
}

pub(crate) async fn next_json<S>(sock: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), sock.next())
            .await
            .expect("a message within 2 minutes")
            .expect("socket open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}
