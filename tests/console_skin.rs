//! The skin family's console pages in a real browser: a subject is made
//! and its photos analysed through the skin HTTP API as a client does it
//! (`tests/http_skin/`), then an operator signs in, finds the subject in
//! `/console/skin` and opens its history: one chart line point per
//! analysis, and the analysis' outlines and heat map loaded over the
//! photos. Screenshots go to `target/test-artifacts/console/`. Without a
//! browser the browser test says so and skips; the sign-in check runs
//! everywhere.

mod common;

use std::time::Duration;

use argus::cli::manage::Command;
use argus::families::skin::cli::SkinCommand;
use base64::Engine;
use common::browser::{browser_base, click, js, shot, sign_in, until, Chromium};
use common::{fixture, json, start, Server};
use serde_json::{json, Value};

const PW: &str = "correct-horse-battery";
const FM2: &str = "8b5b3acc-480b-4412-8d2c-ebe6ab4384d7";

// ---- the skin API, as tests/http_skin/ drives it ----

/// One JSON call with a bearer token: (status, body or null).
async fn call(
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

/// A company with a user, a dataset with the application attached, and a
/// subject: (token, `/api/v1/.../subjects/{id}/`, subject id).
async fn subject(s: &Server, company: &str, name: &str) -> (String, String, String) {
    let email = format!("owner@{company}.test");
    s.manage(Command::Skin(SkinCommand::UserAdd {
        company: company.into(),
        email: email.clone(),
        password: "correct horse battery".into(),
    }))
    .await;
    let l = json(
        s.client
            .post(s.url("/api/v1/login/"))
            .json(&json!({"username": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
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
    let (st, v) = call(
        s,
        "POST",
        &format!("/api/v1/companies/{c}/applications/{FM2}/runs/"),
        &token,
        Some(json!({"dataset_id": d})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let base = format!("/api/v1/companies/{c}/datasets/{d}/subjects/");
    let (st, sub) = call(s, "POST", &base, &token, Some(json!({"name": name}))).await;
    assert_eq!(st, 201, "{sub}");
    let sid = sub["id"].as_str().unwrap().to_string();
    (token, format!("{base}{sid}/"), sid)
}

/// A new batch with `photo` in it, analysed: waits for every result.
async fn analyse(s: &Server, token: &str, subject: &str, photo: &[u8]) {
    let (st, b) = call(
        s,
        "POST",
        &format!("{subject}batches/"),
        token,
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let images = format!("{subject}batches/{}/images/", b["id"].as_str().unwrap());
    let b64 = base64::engine::general_purpose::STANDARD.encode(photo);
    let (st, img) = call(
        s,
        "POST",
        &images,
        token,
        Some(json!({"side_id": 1, "light_id": 1, "b64data": b64})),
    )
    .await;
    assert_eq!(st, 201, "{img}");
    let results = format!("{images}{}/results/", img["id"].as_str().unwrap());
    for _ in 0..1200 {
        let (st, v) = call(s, "GET", &results, token, None).await;
        assert_eq!(st, 200, "{v}");
        if v[0]["all_algorithms_calculated"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("results never completed for {results}");
}

/// The fixture selfie with its colours shifted, so that the history moves.
fn tinted(red: i16, light: i16) -> Vec<u8> {
    let mut img = image::load_from_memory(&fixture("skin_lisa1.jpg"))
        .unwrap()
        .to_rgb8();
    for p in img.pixels_mut() {
        for (c, shift) in p.0.iter_mut().zip([red + light, light, light]) {
            *c = (*c as i16 + shift).clamp(0, 255) as u8;
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_a_subjects_skin_history() {
    let s = start(|_| {}).await;
    s.new_admin("operator", PW).await;
    let (token, path, sid) = subject(&s, "clinic-north", "Lisa").await;
    let photos = [fixture("skin_lisa1.jpg"), tinted(10, 0), tinted(4, 12)];
    for p in &photos {
        analyse(&s, &token, &path, p).await;
    }

    // localhost, not 127.0.0.1: the browser keeps the console's Secure
    // cookies on plain HTTP only for localhost.
    let base = browser_base(&s.base);
    let Some(chrome) = Chromium::launch(1024, 768).await else {
        return;
    };
    let browser = &chrome.browser;

    let page = browser
        .new_page(format!("{base}/console/skin"))
        .await
        .unwrap();
    sign_in(&page, "operator", PW).await;
    until(
        &page,
        "!!document.getElementById('backend')",
        "the dashboard",
    )
    .await;

    // The skin pages are in the console's navigation.
    click(&page, "header nav a[href='/console/skin']").await;
    until(
        &page,
        "!!document.getElementById('skin-subjects')",
        "the subject list",
    )
    .await;
    let row = js(
        &page,
        "document.querySelector('#skin-subjects tbody tr').innerText",
    )
    .await;
    let row = row.as_str().unwrap().to_string();
    assert!(
        row.contains("Lisa") && row.contains("clinic-north") && row.contains("kiosk"),
        "{row}"
    );
    assert!(row.contains(&sid), "{row}");
    assert!(row.contains("3 (3)"), "three photos, all analysed: {row}");
    shot(&page, "skin-01-subjects.png").await;

    click(&page, &format!("a[href='/console/skin/subjects/{sid}']")).await;
    until(
        &page,
        "!!document.getElementById('h-history')",
        "the subject page",
    )
    .await;
    for chart in ["ita", "redness", "age"] {
        let n = js(
            &page,
            &format!("document.querySelector('#chart-{chart} polyline').points.numberOfItems"),
        )
        .await;
        assert_eq!(n.as_u64(), Some(3), "{chart}: one point per analysis");
        let title = js(
            &page,
            &format!("document.querySelector('#chart-{chart} title').textContent"),
        )
        .await;
        assert!(title.as_str().unwrap().ends_with("over time"), "{title}");
    }
    assert_eq!(
        js(
            &page,
            "document.querySelectorAll('article.analysis').length"
        )
        .await,
        3
    );
    // Every picture and every layer over it loaded (an SVG has the size it
    // declares).
    until(
        &page,
        "[...document.querySelectorAll('.stack-img img')].every(i => i.complete && i.naturalWidth > 0)",
        "the pictures",
    )
    .await;
    let layers = js(
        &page,
        "document.querySelectorAll('.stack-img img.masks').length",
    )
    .await;
    assert_eq!(layers.as_u64(), Some(3), "the outlines over each photo");
    let heat = js(
        &page,
        "document.querySelectorAll('.stack-img img.heat').length",
    )
    .await;
    assert_eq!(heat.as_u64(), Some(3), "the heat map over each face");
    let values = js(
        &page,
        "document.querySelector('table.values tbody').innerText",
    )
    .await;
    assert!(values.as_str().unwrap().contains("ITA"), "{values}");
    shot(&page, "skin-02-subject.png").await;

    // Dark circles only.
    page.goto(format!(
        "{base}/console/skin/subjects/{sid}?metric=dark_circles"
    ))
    .await
    .unwrap();
    until(
        &page,
        "!!document.getElementById('h-history')",
        "the subject page",
    )
    .await;
    assert_eq!(
        js(&page, "document.querySelectorAll('svg.chart').length").await,
        1
    );
    assert_eq!(
        js(
            &page,
            "document.querySelector('svg.chart polyline').points.numberOfItems"
        )
        .await,
        3
    );

    chrome.close().await;
    s.stop().await;
}

/// Without a session every skin page, picture included, sends the browser
/// to sign in.
#[tokio::test]
async fn skin_console_pages_need_a_session() {
    let s = start(|_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id = "0190f5a5-4e5f-7a6b-9c7d-8e9fa0b1c2d3";
    for path in [
        "/console/skin".to_string(),
        "/console/skin?page=2".to_string(),
        format!("/console/skin/subjects/{id}"),
        format!("/console/skin/images/{id}/photo"),
        format!("/console/skin/images/{id}/{id}"),
    ] {
        let r = client.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/console/login", "{path}");
    }
    // With a bogus session cookie too.
    let r = client
        .get(s.url("/console/skin"))
        .header("cookie", "argus_admin_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    s.stop().await;
}
