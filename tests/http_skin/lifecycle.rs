//! Retention and erasure, a restart mid-analysis, and what trying the API
//! as a client found.

use crate::client::*;
use crate::common::{fixture, start, start_in, Server};
use serde_json::{json, Value};
use std::time::Duration;

/// Retention: with `clean_images_as_soon_as_ready` the photo is erased
/// once analysed and the results stay; erasing a subject's photos and
/// deleting the subject leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_erasure() {
    let s = start(|_| {}).await;
    let t = tenant(&s, "acme-gdpr", None).await;
    let (st, _) = call(
        &s,
        "PUT",
        &format!("/api/v1/companies/{}/datasets/{}/", t.company, t.dataset),
        &t.token,
        Some(json!({"clean_images_as_soon_as_ready": true, "expire_metadata_after_days": 30})),
    )
    .await;
    assert_eq!(st, 200);
    let (sid, bid) = subject_and_batch(&s, &t, "erase me").await;
    let (_, img) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(4)).await;
    let iid = img["id"].as_str().unwrap().to_string();
    let path = format!("{}{iid}/", image_path(&t, &sid, &bid));
    let rows = results_when_done(&s, &t, &path).await;
    assert!(rows.len() >= 2);
    let (_, view) = call(&s, "GET", &path, &t.token, None).await;
    assert_eq!(view["image_erased"], true, "{view}");
    let r = s
        .client
        .get(s.url(&format!("/images/{iid}.jpg?token={}", t.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the photo is gone");
    let (st, aux) = call(&s, "GET", &format!("{path}aux/"), &t.token, None).await;
    assert_eq!(
        (st, aux.as_array().unwrap().len()),
        (200, 0),
        "derived photos are gone too"
    );
    // The files go once the erasure is durable (the flush after the
    // results are stored): moments after, not in the same instant.
    let blobs = s.dir.join("blobs/skin");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = std::fs::read_dir(&blobs).unwrap().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "no file left in {}", blobs.display());
    // Deleting the subject removes its records.
    let subj = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/",
        t.company, t.dataset
    );
    assert_eq!(call(&s, "DELETE", &subj, &t.token, None).await.0, 204);
    assert_eq!(
        call(&s, "GET", &format!("{path}results/"), &t.token, None)
            .await
            .0,
        404
    );
    // Bulk delete: all or none.
    let list = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/",
        t.company, t.dataset
    );
    let (a, _) = subject_and_batch(&s, &t, "bulk a").await;
    let (b, _) = subject_and_batch(&s, &t, "Bulk b").await;
    // DRF ordering: newest first by default, by name (any case) when asked.
    let names = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    for (ordering, want) in [
        ("", ["Bulk b", "bulk a"]),
        ("?ordering=name", ["bulk a", "Bulk b"]),
        ("?ordering=-creation_time", ["Bulk b", "bulk a"]),
        ("?ordering=creation_time,colour", ["bulk a", "Bulk b"]),
    ] {
        let (st, v) = call(&s, "GET", &format!("{list}{ordering}"), &t.token, None).await;
        assert_eq!(
            (st, names(&v)),
            (200, want.map(String::from).to_vec()),
            "{ordering}"
        );
    }
    let gone = sid.clone();
    let (st, v) = call(
        &s,
        "DELETE",
        &list,
        &t.token,
        Some(json!({"ids": [a, gone]})),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    assert!(v["detail"].as_str().unwrap().contains(&sid), "{v}");
    assert_eq!(
        call(&s, "GET", &format!("{list}{a}/"), &t.token, None)
            .await
            .0,
        200,
        "kept"
    );
    let (st, v) = call(&s, "DELETE", &list, &t.token, Some(json!({"ids": []}))).await;
    assert_eq!((st, v["ids"].is_array()), (400, true), "{v}");
    let (st, _) = call(&s, "DELETE", &list, &t.token, Some(json!({"ids": [a, b]}))).await;
    assert_eq!(st, 204);
    for x in [&a, &b] {
        assert_eq!(
            call(&s, "GET", &format!("{list}{x}/"), &t.token, None)
                .await
                .0,
            404
        );
    }
    s.stop().await;
}

/// An image accepted just before a stop is analysed after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let s = start_in(&dir, |_| {}).await;
    let t = tenant(&s, "acme-restart", None).await;
    let (sid, bid) = subject_and_batch(&s, &t, "restart").await;
    let (st, img) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(5)).await;
    assert_eq!(st, 201);
    s.stop().await;
    let s = start_in(&dir, |_| {}).await;
    let l = login(&s, "owner@acme-restart.test").await;
    let t = Tenant {
        token: l["access_token"].as_str().unwrap().to_string(),
        ..t
    };
    let path = format!(
        "{}{}/",
        image_path(&t, &sid, &bid),
        img["id"].as_str().unwrap()
    );
    let rows = results_when_done(&s, &t, &path).await;
    assert!(
        rows.iter()
            .any(|r| r["algorithm_version_id"] == 40 && r["is_ok"] == true),
        "{rows:?}"
    );
    s.stop().await;
}

/// What trying the API as a client found (2026-12-03), each against the
/// reference: a stream's results say "all calculated" only on the last;
/// an upload URL left to expire does not hold its batch back; history and
/// the v3 batch list follow when the photos were taken, not when they were
/// uploaded; images uploaded before the application was attached are
/// analysed once it is ("all images from Dataset will be processed", 000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_end_lapsed_uploads_history_order_and_late_attachment() {
    let s = start(|c| c.skin_api.upload_url_secs = 1).await;
    let t = tenant(&s, "edges", None).await;
    let mut stream = ws(
        &s,
        &format!("/api/v1/companies/{}/results_streaming/", t.company),
        &t.token,
    )
    .await;
    let (sid, bid) = subject_and_batch(&s, &t, "edges").await;
    let (st, img) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(0)).await;
    assert_eq!(st, 201, "{img}");
    let ipath = format!(
        "{}{}/",
        image_path(&t, &sid, &bid),
        img["id"].as_str().unwrap()
    );
    let rows = results_when_done(&s, &t, &ipath).await;
    assert!(rows.len() > 2, "{rows:?}");
    let mut flags = Vec::new();
    for _ in 0..rows.len() {
        flags.push(next_json(&mut stream).await["all_algorithms_calculated"] == true);
    }
    let mut want = vec![false; rows.len()];
    *want.last_mut().unwrap() = true;
    assert_eq!(flags, want, "only the last streamed result is the end");

    // A signed URL for the right side, never used: once it has expired the
    // batch goes on without it.
    let right_url = format!(
        "/api/v1/companies/{}/subjects/{sid}/signed_upload_url/",
        t.company
    );
    let right = json!({"batch_id": bid, "side_id": 2});
    let (st, v) = call(&s, "POST", &right_url, &t.token, Some(right.clone())).await;
    assert_eq!(st, 201, "{v}");
    let results = format!("/api/v3/companies/{}/batches/{bid}/results/", t.company);
    let (_, v) = call(&s, "GET", &results, &t.token, None).await;
    assert_eq!(
        v["all_algorithms_calculated"], false,
        "an upload is pending"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, v) = call(&s, "GET", &results, &t.token, None).await;
    assert_eq!(v["all_algorithms_calculated"], true, "{v}");
    let (st, v) = call(&s, "POST", &right_url, &t.token, Some(right)).await;
    assert_eq!(st, 201, "a new URL for the side: {v}");

    // A photo taken before the first, uploaded after it.
    let (st, up) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/subjects/{sid}/upload/", t.company),
        &t.token,
        Some(json!({"front": "old.jpg", "creation_time": "2026-11-01T09:00:00Z"})),
    )
    .await;
    assert_eq!(st, 200, "{up}");
    let old = up["image_batch_id"].as_str().unwrap().to_string();
    let r = s
        .client
        .put(up["front"]["url"].as_str().unwrap())
        .header("content-type", "application/octet-stream")
        .body(selfie(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/batches/{old}/compute/", t.company),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let history = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/all_results/",
        t.company, t.dataset
    );
    let mut h = Value::Null;
    for _ in 0..600 {
        (_, h) = call(&s, "GET", &history, &t.token, None).await;
        if h.as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h[0]["batch_id"], old.as_str(), "oldest first: {h}");
    assert_eq!(h[1]["batch_id"], bid.as_str(), "{h}");
    let list = |o: &str| {
        format!(
            "/api/v3/companies/{}/batches/?subject_id={sid}&ordering={o}",
            t.company
        )
    };
    let (_, asc) = call(&s, "GET", &list("creation_time"), &t.token, None).await;
    let (_, desc) = call(&s, "GET", &list("-creation_time"), &t.token, None).await;
    assert_eq!(asc["results"][0]["id"], old.as_str(), "{asc}");
    assert_eq!(desc["results"][0]["id"], bid.as_str(), "{desc}");

    // A dataset with no application yet: its upload waits, and is
    // analysed once the application is attached.
    let (st, ds) = call(
        &s,
        "POST",
        &format!("/api/v1/companies/{}/datasets/", t.company),
        &t.token,
        Some(json!({"name": "later", "image_type_id": 1})),
    )
    .await;
    assert_eq!(st, 201, "{ds}");
    let later = Tenant {
        token: t.token.clone(),
        company: t.company.clone(),
        user: t.user.clone(),
        dataset: ds["id"].as_str().unwrap().to_string(),
    };
    let (sid2, bid2) = subject_and_batch(&s, &later, "later").await;
    let (st, img2) = upload_b64(&s, &later, &sid2, &bid2, 1, &selfie(2)).await;
    assert_eq!(st, 201, "{img2}");
    assert_eq!(img2["status"], "uploaded", "{img2}");
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/companies/{}/applications/{FM2}/runs/", t.company),
        &t.token,
        Some(json!({"dataset_id": later.dataset})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let ipath2 = format!(
        "{}{}/",
        image_path(&later, &sid2, &bid2),
        img2["id"].as_str().unwrap()
    );
    let rows2 = results_when_done(&s, &later, &ipath2).await;
    assert_eq!(rows2.len(), rows.len(), "{rows2:?}");

    // Smoothing steadies a photo's own values; a photo with none gets none.
    let (_, sm) = call(
        &s,
        "GET",
        &format!("{ipath}smoothed_results/"),
        &t.token,
        None,
    )
    .await;
    assert!(sm.as_array().is_some_and(|a| !a.is_empty()), "{sm}");
    let bid3 = new_batch(&s, &t, &sid).await;
    let (st, img3) = upload_b64(&s, &t, &sid, &bid3, 1, &fixture("coffee.jpg")).await;
    assert_eq!(st, 201, "{img3}");
    let ipath3 = format!(
        "{}{}/",
        image_path(&t, &sid, &bid3),
        img3["id"].as_str().unwrap()
    );
    results_when_done(&s, &t, &ipath3).await;
    let (st, sm) = call(
        &s,
        "GET",
        &format!("{ipath3}smoothed_results/"),
        &t.token,
        None,
    )
    .await;
    assert_eq!((st, sm), (200, json!([])));

    // A face too small for any metric: v3 parameters say why.
    let bid4 = new_batch(&s, &t, &sid).await;
    let photo = image::load_from_memory(&selfie(0)).unwrap().to_rgb8();
    let small = image::imageops::resize(&photo, 180, 240, image::imageops::FilterType::Triangle);
    let mut png = std::io::Cursor::new(Vec::new());
    small.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let (st, img4) = upload_b64(&s, &t, &sid, &bid4, 1, png.get_ref()).await;
    assert_eq!(st, 201, "{img4}");
    let ipath4 = format!(
        "{}{}/",
        image_path(&t, &sid, &bid4),
        img4["id"].as_str().unwrap()
    );
    results_when_done(&s, &t, &ipath4).await;
    let (_, params) = call(
        &s,
        "GET",
        &format!("/api/v3/companies/{}/subjects/{sid}/parameters/", t.company),
        &t.token,
        None,
    )
    .await;
    let entry = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["image_batch_id"] == bid4.as_str())
        .unwrap_or_else(|| panic!("{params}"));
    assert!(
        entry["detection_errors"]["front"]
            .as_str()
            .is_some_and(|e| e.contains("face_too_small")),
        "{entry}"
    );

    // Metadata cleared: the results and the face's measures are gone, and
    // the image reads finished, not as if still being analysed.
    let (st, v) = call(
        &s,
        "POST",
        &format!(
            "/api/v1/companies/{}/datasets/{}/subjects/{sid2}/clear_metadata/",
            later.company, later.dataset
        ),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = call(&s, "GET", &ipath, &t.token, None).await;
    assert!(
        v["face"]["face"]["pose"].is_object(),
        "an analysed image shows its face: {v}"
    );
    let (_, v) = call(&s, "GET", &ipath2, &t.token, None).await;
    assert_eq!(v["all_algorithms_calculated"], true, "{v}");
    assert!(v["face"].is_null(), "{v}");
    let (_, r) = call(&s, "GET", &format!("{ipath2}results/"), &t.token, None).await;
    assert_eq!(r, json!([]));
    s.stop().await;
}

/// A photo large enough that its analysis runs for a while after its face
/// is found (the derived images are made at full size).
fn large_selfie() -> Vec<u8> {
    let img = image::load_from_memory(&selfie(6)).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let scale = 4000.0 / w.max(h) as f32;
    let (w, h) = ((w as f32 * scale) as u32, (h as f32 * scale) as u32);
    let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    big.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Upload the large selfie and wait until its analysis is under way (the
/// face detector's row is stored, the rest not yet); returns the image's
/// path. Says so where the analysis was over first.
async fn mid_analysis(s: &Server, t: &Tenant, sid: &str, bid: &str, photo: &[u8]) -> String {
    let (st, img) = upload_b64(s, t, sid, bid, 1, photo).await;
    assert_eq!(st, 201, "{img}");
    let path = format!(
        "{}{}/",
        image_path(t, sid, bid),
        img["id"].as_str().unwrap()
    );
    for _ in 0..6000 {
        let (_, v) = call(s, "GET", &format!("{path}results/"), &t.token, None).await;
        let rows = v.as_array().cloned().unwrap_or_default();
        if rows
            .first()
            .is_some_and(|r| r["all_algorithms_calculated"] == true)
        {
            eprintln!("note: the analysis ended before the erasure was asked for");
            return path;
        }
        if !rows.is_empty() {
            return path;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no analysis began for {path}");
}

/// Poll image `path` until its analysis is over.
async fn when_finished(s: &Server, t: &Tenant, path: &str) -> Value {
    for _ in 0..1200 {
        let (st, v) = call(s, "GET", path, &t.token, None).await;
        assert_eq!(st, 200, "{v}");
        if v["status"] == "done" || v["status"] == "failed" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never finished");
}

/// What trying the API found (2026-12-07): erasure asked for while a photo
/// was being analysed did not hold (`delete_photos/` left the derived
/// images of that analysis on record and on disk; `clear_metadata/` left
/// its results), and uploads of one side at once could all be stored,
/// against "one image per side per batch".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_during_an_analysis_and_uploads_at_once() {
    let s = start(|_| {}).await;
    let t = tenant(&s, "acme-race", None).await;
    let photo = large_selfie();
    let subjects = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/",
        t.company, t.dataset
    );

    let (sid, bid) = subject_and_batch(&s, &t, "erase mid-analysis").await;
    let path = mid_analysis(&s, &t, &sid, &bid, &photo).await;
    let (st, v) = call(
        &s,
        "POST",
        &format!("{subjects}{sid}/delete_photos/"),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let v = when_finished(&s, &t, &path).await;
    assert_eq!(v["image_erased"], true, "{v}");
    let (_, aux) = call(&s, "GET", &format!("{path}aux/"), &t.token, None).await;
    assert_eq!(aux, json!([]), "no derived image of an erased photo");
    let blobs = s.dir.join("blobs/skin");
    let mut left = Vec::new();
    for _ in 0..100 {
        left = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "files left: {left:?}");

    let (sid, bid) = subject_and_batch(&s, &t, "clear mid-analysis").await;
    let path = mid_analysis(&s, &t, &sid, &bid, &photo).await;
    let (st, v) = call(
        &s,
        "POST",
        &format!("{subjects}{sid}/clear_metadata/"),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let v = when_finished(&s, &t, &path).await;
    assert_eq!(v["all_algorithms_calculated"], true, "{v}");
    assert!(v["face"].is_null(), "{v}");
    let (_, r) = call(&s, "GET", &format!("{path}results/"), &t.token, None).await;
    assert_eq!(r, json!([]), "no result of a cleared analysis");
    let (_, all) = call(
        &s,
        "GET",
        &format!("{subjects}{sid}/all_results/"),
        &t.token,
        None,
    )
    .await;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "{all}");

    // Six uploads of the front side into one batch at once: one is stored.
    let (sid, bid) = subject_and_batch(&s, &t, "uploads at once").await;
    let small = fixture("skin_lisa1.jpg");
    let uploads = (0..6).map(|_| upload_b64(&s, &t, &sid, &bid, 1, &small));
    let mut codes: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(|(st, _)| st)
        .collect();
    codes.sort();
    assert_eq!(codes, [201, 400, 400, 400, 400, 400]);
    let (_, list) = call(&s, "GET", &image_path(&t, &sid, &bid), &t.token, None).await;
    assert_eq!(list["count"], 1, "{list}");
    s.stop().await;
}
