//! The reference's two client flows end to end: the quick start of
//! `000_*.txt` (with its PDF report) and the v3 flow of `001_*.txt`.

use crate::client::*;
use crate::common::{json, start};
use serde_json::{json, Value};
use std::time::Duration;

/// The quick-start of `000_*.txt`, as its Python client does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_flow() {
    let s = start(|_| {}).await;
    add_user(&s, "Acme Skin", "dev@acme.test").await;
    let l = login(&s, "dev@acme.test").await;
    for k in [
        "access_token",
        "refresh_token",
        "company_id",
        "id",
        "token_access",
        "profile",
    ] {
        assert!(!l[k].is_null(), "login lacks {k}: {l}");
    }
    // Dictionaries need no token.
    let types = json(
        s.client
            .get(s.url("/api/v1/dicts/image_types/"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(types[0]["id"], 1);
    assert_eq!(types[0]["sides"].as_array().unwrap().len(), 3);
    let algs = json(
        s.client
            .get(s.url("/api/v1/dicts/algorithms"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let algs = algs.as_array().unwrap();
    assert!(algs
        .iter()
        .any(|a| a["id"] == 40 && a["is_available"] == true));
    assert!(algs
        .iter()
        .any(|a| a["id"] == 30 && a["tech_name"] == "selfie_v2.redness"));
    let pores = algs.iter().find(|a| a["parameter"] == "pores").unwrap();
    assert_eq!(pores["is_available"], false);
    assert!(pores["unavailable_reason"].as_str().unwrap().len() > 20);

    let t = tenant(&s, "acme-kiosk", Some(json!([30, 40]))).await;
    // A private token works like the login's from here on.
    let (st, pt) = call(
        &s,
        "POST",
        "/api/v1/auth/private_tokens/",
        &t.token,
        Some(json!({"name": "kiosk", "expiration_time": "2099-04-17T16:10:17.350Z"})),
    )
    .await;
    assert_eq!(st, 201, "{pt}");
    let t = Tenant {
        token: pt["data"].as_str().unwrap().to_string(),
        ..t
    };
    // The application list names the appliance's own application.
    let (st, apps) = call(
        &s,
        "GET",
        &format!("/api/v1/companies/{}/applications/", t.company),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(apps[0]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == FM2));

    let mut notes = ws(&s, &format!("/notifications/?user_id={}", t.user), &t.token).await;
    let mut stream = ws(
        &s,
        &format!("/api/v1/companies/{}/results_streaming/", t.company),
        &t.token,
    )
    .await;
    let (sid, bid) = subject_and_batch(&s, &t, "My subject name").await;
    let (st, img) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(0)).await;
    assert_eq!(st, 201, "{img}");
    let iid = img["id"].as_str().unwrap().to_string();

    // The results stream: one message per algorithm, the face detector first.
    let first = next_json(&mut stream).await;
    assert_eq!(
        (first["image_id"].as_str(), &first["algorithm_version_id"]),
        (Some(iid.as_str()), &json!(40))
    );
    let second = next_json(&mut stream).await;
    assert_eq!(second["algorithm_version_id"], 30);
    let note = next_json(&mut notes).await;
    assert_eq!(
        (note["image_id"].as_str(), note["status"].as_str()),
        (Some(iid.as_str()), Some("done"))
    );
    notes.close(None).await.unwrap();

    let ipath = format!("{}{iid}/", image_path(&t, &sid, &bid));
    let rows = results_when_done(&s, &t, &ipath).await;
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["algorithm_version_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![40, 30],
        "only the enabled algorithms ran, the detector first"
    );
    let redness = rows
        .iter()
        .find(|r| r["algorithm_version_id"] == 30)
        .unwrap();
    assert_eq!(redness["is_ok"], true, "{redness}");
    let ei = redness["result"]["area_results"][0]["main_metric"]["value"]
        .as_f64()
        .unwrap();
    assert!((-20.0..80.0).contains(&ei), "erythema index {ei}");

    // Aux images, fetched with ?token= as the quick-start prints them.
    let (st, aux) = call(&s, "GET", &format!("{ipath}aux/"), &t.token, None).await;
    assert_eq!(st, 200);
    let aligned = aux
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["aux_image_type"]["name"] == "aligned_face")
        .unwrap();
    let r = s
        .client
        .get(s.url(&format!(
            "/images/{}.jpg?token={}",
            aligned["id"].as_str().unwrap(),
            t.token
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jpg = r.bytes().await.unwrap();
    assert!(image::load_from_memory(&jpg).is_ok());
    let r = s
        .client
        .get(s.url(&format!("/images/{}.jpg", aligned["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token, no image");
    let r = s
        .client
        .get(s.url(&format!(
            "/api/v1/companies/{}/datasets/?token={}",
            t.company, t.token
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token in the URL of an ordinary call");
    // Results carry the application id the client attached.
    assert!(rows.iter().all(|r| r["application_id"] == FM2), "{rows:?}");

    // A second photo a moment later: history has both, smoothing averages them.
    let bid2 = new_batch(&s, &t, &sid).await;
    let (st, img2) = upload_b64(&s, &t, &sid, &bid2, 1, &selfie(1)).await;
    assert_eq!(st, 201);
    let ipath2 = format!(
        "{}{}/",
        image_path(&t, &sid, &bid2),
        img2["id"].as_str().unwrap()
    );
    let rows2 = results_when_done(&s, &t, &ipath2).await;
    let ei2 = rows2
        .iter()
        .find(|r| r["algorithm_version_id"] == 30)
        .unwrap()["result"]["area_results"][0]["main_metric"]["value"]
        .as_f64()
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    let (st, hist) = call(
        &s,
        "GET",
        &format!(
            "/api/v1/companies/{}/datasets/{}/subjects/{sid}/all_results/?date_from={}",
            t.company,
            t.dataset,
            today - time::Duration::weeks(1)
        ),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{hist}");
    assert_eq!(hist.as_array().unwrap().len(), 2);
    let (st, sm) = call(&s, "GET", &format!("{ipath2}smoothed_results/?sample_time_window=14&sample_max_size=10&smoothing_method=mean"), &t.token, None).await;
    assert_eq!(st, 200, "{sm}");
    let red = sm
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["algorithm_version_id"] == 30)
        .unwrap();
    assert_eq!(red["samples"], 2);
    assert!(
        (red["value"].as_f64().unwrap() - (ei + ei2) / 2.0).abs() < 0.06,
        "{red} vs {ei} {ei2}"
    );
    let (st, _) = call(
        &s,
        "GET",
        &format!("{ipath2}smoothed_results/?smoothing_method=median"),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 400);

    // The PDF report, with the token in `access-token` as the reference sends it.
    let pdf_path = format!(
        "/service/pdf-generator{}pdf/",
        ipath2.trim_start_matches("/api/v1")
    );
    let r = s
        .client
        .post(s.url(&pdf_path))
        .header("access-token", &t.token)
        .json(&json!({"timeout": 30000, "waitUntil": "networkidle0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let pdf = r.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF"));
    check_report_page(&pdf, &s.dir);
    let r = s.client.post(s.url(&pdf_path)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

/// Render the report with `pdftoppm` (poppler-utils) and look at it: an
/// A4 page, the photo's colours in its top-left box, the history charts'
/// red lines below it. Skipped, saying so, where pdftoppm is missing.
fn check_report_page(pdf: &[u8], dir: &std::path::Path) {
    let path = dir.join("report.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = dir.join("report");
    let run = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "50", "-singlefile"])
        .arg(&path)
        .arg(&out)
        .status();
    let Ok(status) = run else {
        eprintln!("pdftoppm is not installed (poppler-utils): the report was not rendered");
        return;
    };
    assert!(status.success());
    let page = image::open(dir.join("report.png")).unwrap().to_rgb8();
    // A4 at 50 dpi.
    assert!(page.width().abs_diff(413) <= 1 && page.height().abs_diff(585) <= 1);
    if let Ok(keep) = std::env::var("ARGUS_KEEP_REPORT") {
        page.save(keep).unwrap();
    }
    let region = |x0: u32, y0: u32, x1: u32, y1: u32, f: &dyn Fn(&image::Rgb<u8>) -> bool| {
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                n += f(page.get_pixel(x, y)) as usize;
            }
        }
        n as f64 / ((x1 - x0) * (y1 - y0)) as f64
    };
    // The photo box (40..280 pt across, 102..382 pt down): mostly not white.
    let photo = region(30, 75, 190, 260, &|p| p.0.iter().any(|&c| c < 235));
    assert!(
        photo > 0.3,
        "the photo is missing from the report ({photo:.2})"
    );
    // Chart lines are drawn in red.
    let red = region(0, 300, 413, 585, &|p| {
        p[0] > 150 && p[1] < 110 && p[2] < 110
    });
    assert!(red > 0.0005, "no history line drawn ({red:.4})");
    // Text in the metrics column.
    let ink = region(215, 40, 400, 250, &|p| p.0.iter().all(|&c| c < 100));
    assert!(ink > 0.002, "no metric text ({ink:.4})");
}

/// The v3 flow of `001_*.txt`: upload, PUT, compute, results, parameters,
/// batch info, batch list; and the upload URL's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_flow_and_upload_rules() {
    let s = start(|c| c.skin_api.upload_url_secs = 3).await;
    let t = tenant(&s, "acme-v3", None).await;
    let (sid, _) = subject_and_batch(&s, &t, "v3 subject").await;
    let (st, up) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/subjects/{sid}/upload/", t.company),
        &t.token,
        Some(
            json!({"front": "my_selfie.jpg", "meta": {}, "creation_time": "2026-11-02T08:30:00Z"}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{up}");
    let (st, bad) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/subjects/{sid}/upload/", t.company),
        &t.token,
        Some(json!({"front": "x.jpg", "creation_time": "yesterday"})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(bad["creation_time"].is_array(), "{bad}");
    let bid = up["image_batch_id"].as_str().unwrap().to_string();
    let front = &up["front"];
    assert_eq!(front["method"], "PUT");
    assert_eq!(
        front["headers"]["X-Goog-Content-Length-Range"],
        "1,31457280"
    );
    let url = front["url"].as_str().unwrap().to_string();
    // Computing before the bytes arrived says what is missing.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/batches/{bid}/compute/", t.company),
        &t.token,
        Some(json!({"app_args": null})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    // Not an image: refused, and the URL is still good for the real one.
    let r = s
        .client
        .put(&url)
        .body(b"hello, not a photo".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = s.client.put(&url).body(Vec::new()).send().await.unwrap();
    assert_eq!(r.status(), 400, "an empty upload is a bad request");
    let r = s
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(selfie(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s.client.put(&url).body(selfie(2)).send().await.unwrap();
    assert_eq!(r.status(), 409, "single use");
    let forged = url.replace("signature=", "signature=0");
    assert_eq!(
        s.client
            .put(&forged)
            .body(selfie(2))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // As Swagger's curl sends it: a JSON content type and no body, which
    // the reference (DRF) reads as `{}`.
    let r = s
        .client
        .post(s.url(&format!(
            "/api/v3/companies/{}/batches/{bid}/compute/",
            t.company
        )))
        .header("Authorization", format!("Bearer {}", t.token))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut res = Value::Null;
    for _ in 0..600 {
        let (st, v) = call(&s, "GET", &format!("/api/v3/companies/{}/batches/{bid}/results/?expiration_seconds=600&with_masks=true&svg_masks=true", t.company), &t.token, None).await;
        assert_eq!(st, 200, "{v}");
        if v["all_algorithms_calculated"] == true {
            res = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let params = &res["face_skin_metrics_3"]["parameters"];
    // The reference's labels ("Very light" ... "Dark"), the name beside.
    let label = params["ita"]["tag"].as_str().expect("an ITA tag");
    assert!(
        [
            "Very light",
            "Light",
            "Intermediate",
            "Tan",
            "Brown",
            "Dark"
        ]
        .contains(&label),
        "{res}"
    );
    assert_eq!(
        params["ita"]["class"].as_str().unwrap(),
        label.to_lowercase().replace(' ', "_")
    );
    assert!(params["ita"]["value"].is_number());
    assert!(params["age"]["age"].is_number());
    assert!(params.get("pores").is_none(), "no made-up parameters");
    // Signed mask URL, no token needed.
    let svg = params["ita"]["masks"]["front"]["svg"].as_str().unwrap();
    let r = s.client.get(svg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<svg"));
    let r = s
        .client
        .get(svg.replace("signature=", "signature=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a link that no longer opens says why");
    let (st, p) = call(
        &s,
        "GET",
        &format!("/api/v3/companies/{}/subjects/{sid}/parameters/", t.company),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(p[0]["image_batch_id"], bid.as_str());
    assert_eq!(p[0]["all_algorithms_calculated"], true);
    assert!(p[0]["predicted_images"]["front"]["aligned_face"].is_string());
    let (st, info) = call(
        &s,
        "GET",
        &format!("/api/v3/companies/{}/batches/{bid}/", t.company),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(info["images"]["front"]["name"], "my_selfie.jpg");
    assert_eq!(
        info["created_at"], "2026-11-02T08:30:00Z",
        "the client's creation_time"
    );
    // Python's requests sends True; an unknown ordering is ignored, as in DRF.
    let (st, _) = call(
        &s,
        "GET",
        &format!(
            "/api/v3/companies/{}/batches/{bid}/results/?with_masks=True&svg_masks=False",
            t.company
        ),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        "GET",
        &format!(
            "/api/v3/companies/{}/batches/?ordering=bogus&page_size=0",
            t.company
        ),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(info["subject"]["id"], sid.as_str());
    // A second (empty) batch: the list pages DRF-style.
    let (_, _) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/subjects/{sid}/upload/", t.company),
        &t.token,
        Some(json!({"left": "l.jpg"})),
    )
    .await;
    let (st, list) = call(
        &s,
        "GET",
        &format!(
            "/api/v3/companies/{}/batches/?subject_id={sid}&page_size=1&ordering=creation_time",
            t.company
        ),
        &t.token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["count"], 3);
    assert!(list["next"].as_str().unwrap().contains("page=2"));
    assert!(list["previous"].is_null());
    let (st, list) = call(
        &s,
        "GET",
        &format!("/api/v3/companies/{}/batches/?q=my_selfie", t.company),
        &t.token,
        None,
    )
    .await;
    assert_eq!((st, &list["count"]), (200, &json!(1)));
    // An upload URL past its lifetime is refused.
    let (_, up2) = call(
        &s,
        "POST",
        &format!("/api/v3/companies/{}/subjects/{sid}/upload/", t.company),
        &t.token,
        Some(json!({"front": "late.jpg"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let r = s
        .client
        .put(up2["front"]["url"].as_str().unwrap())
        .body(selfie(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    s.stop().await;
}
