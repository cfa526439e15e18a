//! The operator console in a real browser: Debian's chromium, headless,
//! driven over the DevTools protocol against the real server. Screenshots
//! go to `target/test-artifacts/console/`. Without a browser the browser
//! test says so and skips (`.ci/run` installs `chromium`); the checks of
//! the console's headers and CSRF refusals run everywhere.

mod common;

use std::path::Path;

use chromiumoxide::cdp::browser_protocol::dom::SetFileInputFilesParams;
use common::browser::{at, browser_base, click, fill, js, shot, until, Chromium};
use common::{start, Server, ROOT};

const PW: &str = "correct-horse-battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_creates_a_key_previews_masking_and_signs_out() {
    let s = start(|_| {}).await;
    s.new_admin("operator", PW).await;
    // localhost, not 127.0.0.1: the browser keeps the console's Secure
    // cookies on plain HTTP only for localhost.
    let base = browser_base(&s.base);
    let Some(chrome) = Chromium::launch(1280, 900).await else {
        return;
    };
    let browser = &chrome.browser;

    // Not signed in: the console sends us to the sign-in page.
    let page = browser.new_page(format!("{base}/console")).await.unwrap();
    until(
        &page,
        "location.pathname === '/console/login' && !!document.getElementById('sign-in')",
        "the sign-in page",
    )
    .await;

    // A wrong password keeps us there with a message.
    fill(&page, "#username", "operator").await;
    fill(&page, "#password", "wrong-password").await;
    click(&page, "#sign-in").await;
    until(&page, "!!document.querySelector('.error')", "the refusal").await;
    assert_eq!(at(&page).await, "/console/login");

    fill(&page, "#password", PW).await;
    click(&page, "#sign-in").await;
    until(
        &page,
        "!!document.getElementById('backend')",
        "the dashboard",
    )
    .await;
    assert_eq!(at(&page).await, "/console");
    assert_eq!(
        js(&page, "document.getElementById('backend').textContent").await,
        "cpu"
    );
    shot(&page, "01-dashboard.png").await;

    // A key: created, shown once, and it really opens the API.
    page.goto(format!("{base}/console/keys")).await.unwrap();
    until(
        &page,
        "!!document.getElementById('create-key')",
        "the keys page",
    )
    .await;
    fill(&page, "#key-name", "kiosk 7").await;
    click(&page, "#create-key").await;
    until(&page, "!!document.getElementById('new-key')", "the new key").await;
    let key = js(&page, "document.getElementById('new-key').textContent").await;
    let key = key.as_str().unwrap().trim().to_string();
    shot(&page, "02-key-created.png").await;
    let detect = s
        .client
        .post(s.url("/api/v1/detect"))
        .header("X-API-Key", &key)
        .multipart(Server::image_form(
            common::fixture("group.jpg"),
            "group.jpg",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(detect.status(), 200, "the key from the console works");
    // Reloading the page does not show it again.
    page.goto(format!("{base}/console/keys")).await.unwrap();
    until(
        &page,
        "!!document.getElementById('create-key')",
        "the keys page",
    )
    .await;
    let html = page.content().await.unwrap();
    assert!(!html.contains(&key), "the key is shown only once");
    assert!(html.contains("kiosk 7"));

    // The test page: a fixture photo masked, shown beside the original
    // with one box per face and the timings.
    page.goto(format!("{base}/console/test")).await.unwrap();
    until(
        &page,
        "!!document.getElementById('run-test')",
        "the test page",
    )
    .await;
    let input = page.find_element("#photo").await.unwrap();
    // Canonical: chromium cannot read a picked file through `..`.
    let photo = Path::new(ROOT)
        .join("tests/fixtures/group.jpg")
        .canonicalize()
        .unwrap();
    page.execute(
        SetFileInputFilesParams::builder()
            .files(vec![photo.to_string_lossy().to_string()])
            .backend_node_id(input.backend_node_id)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    js(
        &page,
        "document.getElementById('method').value = 'pixelate'",
    )
    .await;
    click(&page, "#run-test").await;
    until(
        &page,
        "!document.getElementById('test-result').hidden && document.getElementById('masked').naturalWidth > 0 \
         && document.getElementById('original').naturalWidth > 0",
        "the masked preview",
    )
    .await;
    let status = js(&page, "document.getElementById('test-status').textContent").await;
    let status = status.as_str().unwrap().to_string();
    assert!(status.contains("masked with pixelate"), "{status}");
    let faces: u64 = status.split(' ').next().unwrap().parse().unwrap();
    assert!(faces >= 2, "group.jpg has several faces: {status}");
    let boxes = js(&page, "document.querySelectorAll('#boxes rect').length").await;
    assert_eq!(boxes.as_u64(), Some(faces), "one box drawn per face");
    let rows = js(
        &page,
        "document.querySelectorAll('#timings tbody tr').length",
    )
    .await;
    assert!(rows.as_u64().unwrap() >= 4, "timings shown");
    shot(&page, "03-test-page.png").await;

    // Sign out: back to the sign-in page, and the console is closed again.
    click(&page, "#sign-out").await;
    until(
        &page,
        "location.pathname === '/console/login'",
        "the sign-in page after sign-out",
    )
    .await;
    page.goto(format!("{base}/console/keys")).await.unwrap();
    until(
        &page,
        "location.pathname === '/console/login'",
        "the redirect to sign in",
    )
    .await;
    shot(&page, "04-signed-out.png").await;

    chrome.close().await;
    s.stop().await;
}

/// Without a browser: the console's pages carry a strict CSP, and forms
/// without the session's CSRF token are refused.
#[tokio::test]
async fn console_pages_are_locked_down_and_forms_need_the_csrf_token() {
    let s = start(|_| {}).await;
    s.new_admin("operator", PW).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Not signed in: redirected.
    let r = client.get(s.url("/console/keys")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");

    // The sign-in form's token must match its cookie.
    let form = client.get(s.url("/console/login")).send().await.unwrap();
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(form.headers()["x-frame-options"], "DENY");
    let login_cookie = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = login_cookie.split_once('=').unwrap().1.to_string();
    let forged = client
        .post(s.url("/console/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("username", "operator"),
            ("password", PW),
            ("token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let ok = client
        .post(s.url("/console/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("username", "operator"),
            ("password", PW),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let session = ok.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // Signed in: a key form without the right token changes nothing.
    let bad = client
        .post(s.url("/console/keys"))
        .header("cookie", &session)
        .form(&[("name", "sneaky"), ("csrf", "0000")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let page = client
        .get(s.url("/console/keys"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("sneaky"));
    // A list page refuses a repeated query name as the API does, on a page.
    for path in ["/console/keys", "/console/images", "/console/jobs"] {
        let r = client
            .get(s.url(&format!("{path}?limit=5&limit=50")))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.text().await.unwrap().contains("more than once"), "{path}");
    }
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap()
        .to_string();
    let good = client
        .post(s.url("/console/keys"))
        .header("cookie", &session)
        .form(&[
            ("name", "<script>alert(1)</script>"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 201);
    let body = good.text().await.unwrap();
    assert!(
        !body.contains("<script>alert(1)</script>"),
        "names are escaped"
    );
    assert!(body.contains("&lt;script&gt;") || body.contains("&#60;script&#62;"));

    // The admin JSON API takes the same cookie, but not from another
    // site or another service on this host (cookies ignore the port), over
    // HTTP/1.1 or HTTP/2 (which names the host in `:authority`, not in a
    // Host header).
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for c in [&client, &h2] {
        for (name, value) in [
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:3000"),
            ("origin", "https://evil.example"),
            ("origin", "null"),
        ] {
            let r = c
                .post(s.url("/api/v1/admin/api-keys"))
                .header("cookie", &session)
                .header("content-type", "text/plain")
                .header(name, value)
                .body(r#"{"name":"riding the cookie"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{:?} {name}: {value}", r.version());
        }
    }
    // The appliance's own origin passes on both.
    let own = s.url("").trim_end_matches('/').to_string();
    for c in [&client, &h2] {
        let r = c
            .post(s.url("/api/v1/admin/api-keys"))
            .header("cookie", &session)
            .header("origin", &own)
            .json(&serde_json::json!({"name": "own origin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.version());
    }
    let same = client
        .post(s.url("/api/v1/admin/api-keys"))
        .header("cookie", &session)
        .header("sec-fetch-site", "same-origin")
        .json(&serde_json::json!({"name": "from the console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 201);
    let listed = client
        .get(s.url("/api/v1/admin/api-keys"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("riding the cookie"));
    s.stop().await;
}

/// `/docs` renders the document with the embedded Swagger UI: no request
/// leaves the appliance (the page's CSP would block it) and every family's
/// operations are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_render_in_the_browser() {
    let s = start(|_| {}).await;
    let base = browser_base(&s.base);
    let Some(chrome) = Chromium::launch(1280, 900).await else {
        return;
    };
    let browser = &chrome.browser;
    let page = browser.new_page(format!("{base}/docs")).await.unwrap();
    until(
        &page,
        "!!window.ui && window.ui.specSelectors.operations().size > 40 && \
         document.querySelector('.info .title') !== null && \
         document.querySelector('.info .title').textContent.includes('argus')",
        "Swagger UI listing the operations",
    )
    .await;
    let tags = js(
        &page,
        "window.ui.specSelectors.taggedOperations().keySeq().toArray()",
    )
    .await;
    for tag in ["faces", "blood-smears", "skin", "console", "platform"] {
        assert!(
            tags.as_array().unwrap().iter().any(|t| t == tag),
            "no {tag} section in {tags}"
        );
    }
    // Swagger UI draws the sections progressively; the first are on screen.
    shot(&page, "05-api-docs.png").await;
    let drawn = js(&page, "document.querySelectorAll('.opblock').length").await;
    assert!(drawn.as_u64().unwrap() > 0, "no operation drawn");
    chrome.close().await;
    s.stop().await;
}
