//! The admin API over real HTTP: sessions, Basic auth, images, jobs,
//! downloads, deletion, API keys, preview, storage switched off, restart.

mod common;

use base64::Engine;
use common::{fixture, json, start, start_in, Server};
use serde_json::json;

const PW: &str = "correct-horse-battery";

fn session_cookie(resp: &reqwest::Response) -> String {
    let sc = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
        assert!(sc.contains(attr), "cookie lacks {attr}: {sc}");
    }
    sc.split(';').next().unwrap().to_string()
}

async fn login(s: &Server, user: &str, pw: &str) -> reqwest::Response {
    s.client
        .post(s.url("/api/v1/admin/auth/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn session_login_logout_and_expiry() {
    let s = start(|c| c.auth.session_ttl_secs = 2).await;
    s.new_admin("admin", PW).await;
    assert_eq!(
        s.client
            .get(s.url("/api/v1/admin/auth/session"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = login(&s, "admin", "wrong-password").await;
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["detail"], "Invalid credentials");
    let r = login(&s, "nobody", PW).await;
    assert_eq!(r.status(), 401);
    let r = login(&s, "admin", PW).await;
    assert_eq!(r.status(), 204);
    let cookie = session_cookie(&r);
    let get_session = || {
        s.client
            .get(s.url("/api/v1/admin/auth/session"))
            .header("cookie", cookie.clone())
            .send()
    };
    let r = get_session().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await,
        json!({"authenticated": true, "username": "admin"})
    );
    // Expiry: the TTL here is 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(get_session().await.unwrap().status(), 401);
    // Logout ends a live session at once.
    let cookie2 = session_cookie(&login(&s, "admin", PW).await);
    let r = s
        .client
        .post(s.url("/api/v1/admin/auth/logout"))
        .header("cookie", cookie2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = s
        .client
        .get(s.url("/api/v1/admin/auth/session"))
        .header("cookie", cookie2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn a_password_reset_ends_the_admins_sessions() {
    // `admin create` again for an existing admin: its sessions end, another
    // admin's stay.
    let s = start(|_| {}).await;
    s.new_admin("admin", PW).await;
    s.new_admin("other", PW).await;
    let mine = session_cookie(&login(&s, "admin", PW).await);
    let theirs = session_cookie(&login(&s, "other", PW).await);
    s.new_admin("admin", "a-brand-new-password").await;
    for (cookie, want) in [(mine, 401), (theirs, 200)] {
        let r = s
            .client
            .get(s.url("/api/v1/admin/auth/session"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    s.stop().await;
}

#[tokio::test]
async fn basic_auth_and_login_rate_limit() {
    let s = start(|c| c.auth.admin_login_per_minute = 3).await;
    s.new_admin("ops", PW).await;
    let r = s
        .client
        .get(s.url("/api/v1/admin/auth/session"))
        .basic_auth("ops", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["username"], "ops");
    let r = s
        .client
        .get(s.url("/api/v1/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(login(&s, "ops", "guess").await.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
    let r = login(&s, "ops", PW).await;
    assert_eq!(r.status(), 429, "the limit applies to good passwords too");
    assert!(r.headers().contains_key("retry-after"));
    s.stop().await;
}

#[tokio::test]
async fn images_jobs_downloads_and_delete() {
    let s = start(|_| {}).await;
    s.new_admin("admin", PW).await;
    let key = s.new_key("cam").await;
    let admin = |path: &str| s.client.get(s.url(path)).basic_auth("admin", Some(PW));
    // Three uploads: two detects and one mask.
    let det = json(
        s.post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
            .await,
    )
    .await;
    let image_id = det["image_id"].as_str().unwrap().to_string();
    let detect_job = det["job_id"].as_str().unwrap().to_string();
    json(
        s.post_image("/api/v1/detect", Some(&key), fixture("coffee.jpg"))
            .await,
    )
    .await;
    let r = s
        .client
        .post(s.url("/api/v1/mask?method=solid&confidence=0.6"))
        .header("X-API-Key", &key)
        .multipart(Server::image_form(fixture("group.jpg"), "group.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mask_job = r.headers()["x-job-id"].to_str().unwrap().to_string();
    let mask_image = r.headers()["x-image-id"].to_str().unwrap().to_string();
    let masked_bytes = r.bytes().await.unwrap();

    let v = json(
        admin("/api/v1/admin/images?per_page=2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (
            v["total"].as_u64(),
            v["page"].as_u64(),
            v["per_page"].as_u64(),
            v["pages"].as_u64()
        ),
        (Some(3), Some(1), Some(2), Some(2))
    );
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["items"][0]["id"], mask_image.as_str(), "newest first");
    assert_eq!(v["items"][0]["filename"], "group.jpg");
    // An absolute URL a client fetches as it is.
    let processed = v["items"][0]["processed_url"].as_str().unwrap().to_string();
    assert!(processed.starts_with(&s.url("/blobs/")), "{processed}");
    let r = s.client.get(&processed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        v["items"][1]["processed_url"].is_null(),
        "a detect-only image has no processed output"
    );
    let v = json(
        admin("/api/v1/admin/images?page=2&per_page=2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["items"][0]["id"], image_id.as_str());
    assert_eq!(
        admin("/api/v1/admin/images?per_page=500")
            .send()
            .await
            .unwrap()
            .status(),
        422
    );

    let v = json(
        admin(&format!("/api/v1/admin/images/{image_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["width"], 512);
    assert_eq!(v["job_count"], 1);
    assert_eq!(v["jobs"][0]["id"], detect_job.as_str());

    // Download: 302 to a signed URL that serves the exact original bytes.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(s.url(&format!("/api/v1/admin/images/{image_id}/download")))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = s.client.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), fixture("astronaut.jpg"));
    assert_eq!(
        s.client
            .get(s.url(&loc.replace("signature=", "signature=0")))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The processed output of the mask job is what the client received.
    let r = admin(&format!("/api/v1/admin/jobs/{mask_job}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "redirect followed");
    assert_eq!(r.bytes().await.unwrap(), masked_bytes);
    assert_eq!(
        admin(&format!("/api/v1/admin/jobs/{detect_job}/download"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let v = json(
        admin("/api/v1/admin/jobs?job_type=mask")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["method"], "solid");
    assert_eq!(
        json(
            admin("/api/v1/admin/jobs?method=gaussian")
                .send()
                .await
                .unwrap()
        )
        .await["total"],
        0
    );
    assert_eq!(
        json(admin("/api/v1/admin/jobs").send().await.unwrap()).await["total"],
        3
    );
    let v = json(
        admin(&format!("/api/v1/admin/jobs/{mask_job}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["face_count"], 3);
    assert_eq!(v["detections"].as_array().unwrap().len(), 3);
    assert_eq!(v["params"]["method"], "solid");
    // Parameters are kept as the client wrote them, not as f32 noise.
    assert_eq!(v["params"]["confidence"], json!(0.6), "{}", v["params"]);

    let v = json(admin("/api/v1/admin/stats").send().await.unwrap()).await;
    assert_eq!(
        (
            v["total_images"].as_u64(),
            v["total_jobs"].as_u64(),
            v["total_faces"].as_u64()
        ),
        (Some(3), Some(3), Some(4))
    );
    assert_eq!(v["jobs_by_type"], json!({"detect": 2, "mask": 1}));

    // Delete: records gone, blobs gone, 404 afterwards.
    let blob_dir = s.dir.join("blobs/originals");
    let before = std::fs::read_dir(&blob_dir).unwrap().count();
    let r = s
        .client
        .delete(s.url(&format!("/api/v1/admin/images/{mask_image}")))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(std::fs::read_dir(&blob_dir).unwrap().count(), before - 1);
    assert_eq!(
        std::fs::read_dir(s.dir.join("blobs/processed"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        admin(&format!("/api/v1/admin/images/{mask_image}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        admin(&format!("/api/v1/admin/jobs/{mask_job}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = s
        .client
        .delete(s.url(&format!("/api/v1/admin/images/{mask_image}")))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        admin("/api/v1/admin/images/not-a-uuid")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn api_key_crud_shows_the_key_once() {
    let s = start(|_| {}).await;
    s.new_admin("admin", PW).await;
    let c =
        |m: reqwest::Method, p: &str| s.client.request(m, s.url(p)).basic_auth("admin", Some(PW));
    let r = c(reqwest::Method::POST, "/api/v1/admin/api-keys")
        .json(&json!({"name": "Production App"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created = json(r).await;
    let full = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(full.starts_with("xyl_"));
    assert_eq!(created["key_prefix"], &full[..8]);
    assert_eq!(
        created["key_preview"],
        format!("{}...{}", &full[..8], &full[full.len() - 4..]).as_str()
    );
    let list = json(
        c(reqwest::Method::GET, "/api/v1/admin/api-keys")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 1);
    assert!(
        !list.to_string().contains(&full[8..]),
        "the full key is never shown again"
    );
    for k in [
        "id",
        "name",
        "key_prefix",
        "key_suffix",
        "key_preview",
        "is_active",
        "request_count",
        "last_used_at",
        "created_at",
    ] {
        assert!(list["items"][0].get(k).is_some(), "field {k}");
    }
    // Use it, then the counters move.
    assert_eq!(
        s.post_image("/api/v1/detect", Some(&full), fixture("coffee.jpg"))
            .await
            .status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let one = json(
        c(
            reqwest::Method::GET,
            &format!("/api/v1/admin/api-keys/{id}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(one["request_count"], 1);
    assert!(one["last_used_at"].is_string());
    // Rename and deactivate: takes effect at once.
    let r = c(
        reqwest::Method::PATCH,
        &format!("/api/v1/admin/api-keys/{id}"),
    )
    .json(&json!({"name": "Renamed App", "is_active": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(
        (v["name"].as_str(), v["is_active"].as_bool()),
        (Some("Renamed App"), Some(false))
    );
    assert_eq!(
        s.post_image("/api/v1/detect", Some(&full), fixture("coffee.jpg"))
            .await
            .status(),
        401
    );
    for bad in ["", "line\nforged: key_created", "esc\u{1b}[2J"] {
        assert_eq!(
            c(reqwest::Method::POST, "/api/v1/admin/api-keys")
                .json(&json!({ "name": bad }))
                .send()
                .await
                .unwrap()
                .status(),
            422,
            "{bad:?}"
        );
    }
    assert_eq!(
        c(reqwest::Method::POST, "/api/v1/admin/api-keys")
            .body("{not json")
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        c(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/api-keys/{id}")
        )
        .send()
        .await
        .unwrap()
        .status(),
        204
    );
    assert_eq!(
        c(
            reqwest::Method::GET,
            &format!("/api/v1/admin/api-keys/{id}")
        )
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        c(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/api-keys/{id}")
        )
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn mask_preview_returns_json_with_the_image() {
    let s = start(|_| {}).await;
    s.new_admin("admin", PW).await;
    let preview = |query: &str| {
        s.client
            .post(s.url(&format!("/api/v1/admin/test/mask?{query}")))
            .basic_auth("admin", Some(PW))
            .multipart(Server::image_form(fixture("group.jpg"), "g.jpg"))
            .send()
    };
    let r = preview("method=pixelate&strength=32&format=png")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["summary"]["face_count"], 3);
    assert_eq!(
        v["masking"],
        json!({"method": "pixelate", "strength": 32, "padding": 0.15, "regions_masked": 3})
    );
    assert_eq!(v["output"]["format"], "png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["output"]["image_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        png.len() as u64,
        v["output"]["size_bytes"].as_u64().unwrap()
    );
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 1200);
    assert!(v["profiling"]["mask_ms"].is_number() && v["profiling"]["encode_ms"].is_number());
    // Pixelate's default block size is no `strength` a client could send
    // back (1-999): it reads null, not 0.
    let r = preview("method=pixelate&confidence=0.6").await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert!(v["masking"]["strength"].is_null(), "{}", v["masking"]);
    s.stop().await;
}

#[tokio::test]
async fn storage_off_answers_501_and_writes_nothing() {
    let s = start(|c| c.storage.enabled = false).await;
    s.new_admin("admin", PW).await;
    let key = s.new_key("k").await;
    let v = json(
        s.post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
            .await,
    )
    .await;
    assert!(v["image_id"].is_null() && v["job_id"].is_null());
    for p in [
        "/api/v1/admin/stats",
        "/api/v1/admin/images",
        "/api/v1/admin/jobs",
    ] {
        let r = s
            .client
            .get(s.url(p))
            .basic_auth("admin", Some(PW))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 501, "{p}");
        // Says why, not "Internal server error".
        let v = json(r).await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("Storage is disabled"),
            "{p}: {v}"
        );
    }
    assert_eq!(
        std::fs::read_dir(s.dir.join("blobs/originals"))
            .unwrap()
            .count(),
        0
    );
    // Keys still work: they are not "storage".
    assert_eq!(
        s.client
            .get(s.url("/api/v1/admin/api-keys"))
            .basic_auth("admin", Some(PW))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop().await;
}

/// `storage.keep_originals = false`: the masked output and the record are
/// kept, the unmasked original never reaches the disk.
#[tokio::test]
async fn originals_are_not_kept_when_configured_so() {
    let s = start(|c| c.storage.keep_originals = false).await;
    s.new_admin("admin", PW).await;
    let key = s.new_key("k").await;
    let r = s
        .post_image("/api/v1/mask", Some(&key), fixture("astronaut.jpg"))
        .await;
    assert_eq!(r.status(), 200);
    let image_id = r.headers()["x-image-id"].to_str().unwrap().to_string();
    let job_id = r.headers()["x-job-id"].to_str().unwrap().to_string();
    let get = |p: String| s.client.get(s.url(&p)).basic_auth("admin", Some(PW)).send();
    let img = json(
        get(format!("/api/v1/admin/images/{image_id}"))
            .await
            .unwrap(),
    )
    .await;
    assert!(img["original_url"].is_null(), "{img}");
    assert!(img["processed_url"].is_string(), "{img}");
    let r = get(format!("/api/v1/admin/images/{image_id}/download"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(json(r).await["detail"]
        .as_str()
        .unwrap()
        .contains("keep_originals"));
    let r = get(format!("/api/v1/admin/jobs/{job_id}/download"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the masked output is kept");
    assert_eq!(
        std::fs::read_dir(s.dir.join("blobs/originals"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    // Deleting such an image works too.
    let r = s
        .client
        .delete(s.url(&format!("/api/v1/admin/images/{image_id}")))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_keys_admins_images_and_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, image_id) = {
        let s = start_in(tmp.path(), |_| {}).await;
        s.new_admin("admin", PW).await;
        let key = s.new_key("persist").await;
        let v = json(
            s.post_image("/api/v1/detect", Some(&key), fixture("group.jpg"))
                .await,
        )
        .await;
        s.stop().await;
        (key, v["image_id"].as_str().unwrap().to_string())
    };
    let s = start_in(tmp.path(), |_| {}).await;
    assert_eq!(
        s.post_image("/api/v1/detect", Some(&key), fixture("coffee.jpg"))
            .await
            .status(),
        200
    );
    let v = json(
        s.client
            .get(s.url(&format!("/api/v1/admin/images/{image_id}")))
            .basic_auth("admin", Some(PW))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["id"], image_id.as_str());
    assert_eq!(v["jobs"][0]["face_count"], 3);
    let r = s
        .client
        .get(s.url(&format!("/api/v1/admin/images/{image_id}/download")))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), fixture("group.jpg"));
    s.stop().await;
}

/// HTTP Basic goes through the same login limit as the login form, checked
/// before the password: once wrong guesses used it up, the right password
/// gets 429 too, from any address, and so does the form.
#[tokio::test]
async fn basic_auth_cannot_get_around_the_login_limit() {
    let s = start(|c| c.auth.admin_login_per_minute = 3).await;
    s.new_admin("ops", PW).await;
    let basic = |pw: &'static str| {
        s.client
            .get(s.url("/api/v1/admin/stats"))
            .basic_auth("ops", Some(pw))
            .send()
    };
    assert_eq!(
        basic(PW).await.unwrap().status(),
        200,
        "successes are not counted"
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(basic("guess").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
    let r = basic(PW).await.unwrap();
    assert_eq!(r.status(), 429, "the right password is limited too");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(login(&s, "ops", PW).await.status(), 429, "and the form");
    s.stop().await;
}

/// The audit trail records logins (good, bad, limited), refused
/// credentials, keys created and revoked, users added from the command
/// line, across families; an admin reads it, the chain verifies, and no
/// secret is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_records_security_events_without_secrets() {
    use argus::cli::manage::Command;
    use argus::families::skin::cli::SkinCommand;
    let s = start(|_| {}).await;
    s.new_admin("admin", PW).await;
    let key = s.new_key("audited").await;
    assert_eq!(login(&s, "admin", "wrong-password-xyz").await.status(), 401);
    assert_eq!(login(&s, "admin", PW).await.status(), 204);
    let r = s
        .post_image(
            "/api/v1/detect",
            Some("xyl_not_a_real_key_0000000000000000000000000000"),
            fixture("group.jpg"),
        )
        .await;
    assert_eq!(r.status(), 401);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{PW}"))
    );
    let created = json(
        s.client
            .post(s.url("/api/v1/admin/api-keys"))
            .header("Authorization", &basic)
            .json(&json!({"name": "second"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kid = created["id"].as_str().unwrap().to_string();
    let r = s
        .client
        .patch(s.url(&format!("/api/v1/admin/api-keys/{kid}")))
        .header("Authorization", &basic)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.manage(Command::Skin(SkinCommand::UserAdd {
        company: "Acme".into(),
        email: "dev@acme.test".into(),
        password: "skin-password-123".into(),
    }))
    .await;
    let r = s
        .client
        .post(s.url("/api/v1/login/"))
        .json(&json!({"username": "dev@acme.test", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .get(s.url("/api/v1/companies/00000000-0000-0000-0000-000000000000/datasets/"))
        .header("Authorization", "Bearer forged.token.value")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = s
        .client
        .get(s.url("/api/v1/admin/audit?limit=1000"))
        .header("Authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let recs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let has = |family: &str, action: &str, outcome: &str| {
        recs.iter()
            .any(|r| r["family"] == family && r["action"] == action && r["outcome"] == outcome)
    };
    assert!(has("faces", "key_created", "ok"), "{text}");
    assert!(has("platform", "admin_login", "denied"));
    assert!(has("platform", "admin_login", "ok"));
    assert!(has("faces", "credential_refused", "denied"));
    assert!(has("faces", "key_revoked", "ok"));
    assert!(has("skin", "user_added", "ok"));
    assert!(has("skin", "login", "denied"));
    assert!(has("skin", "credential_refused", "denied"));
    let login_ok = recs
        .iter()
        .find(|r| r["action"] == "admin_login" && r["outcome"] == "ok")
        .unwrap();
    assert_eq!(login_ok["actor"], "admin");
    assert_eq!(login_ok["address"], "127.0.0.1");
    for secret in [
        PW,
        "wrong-password-xyz",
        key.as_str(),
        "skin-password-123",
        "not-the-password",
        "forged.token.value",
    ] {
        assert!(
            !text.contains(secret),
            "the audit trail holds a secret: {secret}"
        );
    }
    // Only admins read it.
    let r = s
        .client
        .get(s.url("/api/v1/admin/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let log = argus::audit::AuditLog::new(&s.dir, 10 << 20, 20);
    assert_eq!(
        log.verify_chain().unwrap(),
        log.read(0, None, usize::MAX).unwrap().len()
    );
    s.stop().await;
}
