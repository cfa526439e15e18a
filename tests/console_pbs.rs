//! The blood-smear pages of the operator console in a real browser: a
//! study made through the PBS API (login, upload, `CBC_COUNTS`, wait), then
//! Debian's chromium, headless, at a tablet's width: sign in, the study
//! list, the study with its status, counts and one mark per counted cell
//! drawn over the photo. Screenshots go to
//! `target/test-artifacts/console/`. Without a browser the browser test
//! says so and skips; the checks that the pages are closed without a
//! session run everywhere.

mod common;

use std::time::Duration;

use argus::cli::manage::Command;
use argus::families::pbs::manage::PbsCommand;
use common::browser::{browser_base, click, js, shot, sign_in, until, Chromium};
use common::{fixture, json, start, Server};
use serde_json::{json, Value};
use sha2::Digest;

const PW: &str = "correct-horse-battery";

fn configure(c: &mut argus::config::Config) {
    c.pbs.public_host = "argus.test".into();
    // The smear fixture's red cells are ~100 px: analyse at the tuned scale.
    c.pbs.native_rbc_diameter_px = 100.0;
}

// ---- the PBS API, as tests/http_pbs/ calls it ----

async fn pbs_login(s: &Server, user: &str) -> String {
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
    v["results"]["token"]["HY_APP_AUTH_v1"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn call(s: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let mut rb = match method {
        "GET" => s.client.get(s.url(path)),
        _ => s.client.post(s.url(path)),
    }
    .header("Authorization", token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    json(rb.send().await.unwrap()).await
}

/// A study of `org` with smear_cbc.jpg, counted (`CBC_COUNTS`): its id
/// and the CBC report.
async fn counted_study(s: &Server, org: &str) -> (String, Value) {
    let user = format!("lab@{org}.test");
    s.manage(Command::Pbs(PbsCommand::UserAdd {
        org: org.into(),
        user: user.clone(),
        role: "user".into(),
        password: "correct horse battery".into(),
    }))
    .await;
    let token = pbs_login(s, &user).await;
    let v = call(
        s,
        "POST",
        "/pbs",
        &token,
        Some(json!({"tags": {"slide": "S-1"}})),
    )
    .await;
    assert_eq!(v["status"], 201, "{v}");
    let id = v["results"]["pbs_study_id"].as_str().unwrap().to_string();
    let r = s
        .client
        .post(s.url(&format!("/pbs/{id}/files?file_name=smear_cbc.jpg")))
        .header("Authorization", &token)
        .body(fixture("smear_cbc.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let tasks = json!({"diagnostic_tasks": ["CBC_COUNTS"]});
    let v = call(s, "POST", &format!("/pbs/{id}/tasks"), &token, Some(tasks)).await;
    assert_eq!(v["status"], 202, "{v}");
    let mut state = String::new();
    for _ in 0..1200 {
        let v = call(s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
        state = v["results"]["report_status"].as_str().unwrap().to_string();
        if state == "ready" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "ready");
    let v = call(
        s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    (id, v["results"]["report"]["CBC_COUNTS"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_study_and_sees_its_counts_and_cells() {
    let s = start(configure).await;
    s.new_admin("operator", PW).await;
    let (id, cbc) = counted_study(&s, "clinic-a").await;
    let n = |k: &str| cbc[k].as_u64().unwrap();
    let (rbc, wbc, plt) = (n("rbc"), n("wbc"), n("platelets"));
    assert!(rbc > 0, "{cbc}");

    // localhost, not 127.0.0.1: the browser keeps the console's Secure
    // cookies on plain HTTP only for localhost. A tablet's width.
    let base = browser_base(&s.base);
    let Some(chrome) = Chromium::launch(820, 1180).await else {
        return;
    };
    let browser = &chrome.browser;

    let page = browser
        .new_page(format!("{base}/console/studies"))
        .await
        .unwrap();
    sign_in(&page, "operator", PW).await;
    until(&page, "location.pathname === '/console'", "the dashboard").await;

    // The list: the study, its organisation and state, and the navigation.
    page.goto(format!("{base}/console/studies")).await.unwrap();
    until(
        &page,
        "!!document.getElementById('studies')",
        "the study list",
    )
    .await;
    let row = js(
        &page,
        &format!(
            "document.querySelector('a[href=\"/console/studies/{id}\"]').closest('tr').textContent"
        ),
    )
    .await;
    let row = row.as_str().unwrap().to_string();
    assert!(
        row.contains("clinic-a") && row.contains("ready") && row.contains("CBC_COUNTS"),
        "{row}"
    );
    let current = js(
        &page,
        "document.querySelector('nav a[aria-current=\"page\"]').textContent",
    )
    .await;
    assert_eq!(current, "Studies");
    let fits = "document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(js(&page, fits).await, true, "no sideways scrolling");
    shot(&page, "10-pbs-studies.png").await;

    // The study: status, counts, and one mark per counted cell over the
    // photo.
    click(&page, &format!("a[href=\"/console/studies/{id}\"]")).await;
    until(
        &page,
        "!!document.getElementById('study-state') && document.querySelector('#file-1 img').complete \
         && document.querySelector('#file-1 img').naturalWidth > 0",
        "the study page with its photo",
    )
    .await;
    let text = |sel: &str| format!("document.querySelector('{sel}').textContent.trim()");
    assert_eq!(js(&page, &text("#study-state")).await, "ready");
    assert_eq!(js(&page, &text("#study-org")).await, "clinic-a");
    assert_eq!(
        js(&page, "document.getElementById('study-progress').value").await,
        100
    );
    for (sel, want) in [
        ("#cbc-rbc", rbc),
        ("#cbc-wbc", wbc),
        ("#cbc-platelets", plt),
    ] {
        assert_eq!(js(&page, &text(sel)).await, want.to_string(), "{sel}");
    }
    let marks = js(
        &page,
        "document.querySelectorAll('#file-1 svg.cells .cell').length",
    )
    .await;
    assert_eq!(marks.as_u64(), Some(rbc + wbc + plt), "one mark per cell");
    let red = js(
        &page,
        "document.querySelectorAll('#file-1 svg.cells rect.rbc').length",
    )
    .await;
    assert_eq!(red.as_u64(), Some(rbc));
    // The differential inside CBC_COUNTS: a row per class plus review, and
    // each white cell's mark says what the classifier made of it.
    let rows = js(
        &page,
        "document.querySelectorAll('#differential tbody tr').length",
    )
    .await;
    assert_eq!(rows.as_u64(), Some(9), "8 classes and review");
    let titles = js(
        &page,
        "Array.from(document.querySelectorAll('#file-1 svg.cells rect.wbc title')).map(t => t.textContent)",
    )
    .await;
    let titles = titles.as_array().unwrap();
    assert_eq!(titles.len() as u64, wbc);
    for t in titles {
        let t = t.as_str().unwrap();
        assert!(t.starts_with("White cell: "), "{t}");
    }
    // The overlay covers the photo exactly.
    let same = js(
        &page,
        "(() => { const i = document.querySelector('#file-1 img').getBoundingClientRect(); \
         const s = document.querySelector('#file-1 svg.cells').getBoundingClientRect(); \
         return Math.abs(i.width - s.width) < 1 && Math.abs(i.height - s.height) < 1 \
         && Math.abs(i.top - s.top) < 1 && Math.abs(i.left - s.left) < 1; })()",
    )
    .await;
    assert_eq!(same, true, "the overlay lies on the photo");
    assert_eq!(js(&page, fits).await, true, "no sideways scrolling");
    let alt = js(&page, "document.querySelector('#file-1 img').alt").await;
    assert!(alt.as_str().unwrap().contains("cells marked"), "{alt}");
    shot(&page, "11-pbs-study.png").await;

    chrome.close().await;
    s.stop().await;
}

/// Without a browser: the pages and the photos are the operator's only.
#[tokio::test]
async fn study_pages_and_photos_need_a_signed_in_operator() {
    let s = start(configure).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id = uuid::Uuid::new_v4();
    for path in [
        "/console/studies".to_string(),
        format!("/console/studies/{id}"),
        format!("/console/studies/{id}/files/1"),
    ] {
        let r = client.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/console/login", "{path}");
    }
    s.stop().await;
}
