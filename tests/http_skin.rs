//! The skin family's HTTP API against the real server: the quick-start
//! flow of `000_*.txt` and the v3 flow of `001_*.txt` as a client writes
//! them, websockets with a real client, a real HTTPS webhook receiver,
//! tenant isolation, tokens, retention, bad input and a restart in the
//! middle of an analysis.
//!
//! Photos: `../shared/data/faces/canada` (CC BY 4.0, DeBruine & Jones)
//! where present, else `tests/fixtures/skin_lisa1.jpg` (CC-0); the no-face
//! photo is `coffee.jpg` (CC0).

mod common;

use std::time::Duration;

use argus::cli::manage::Command;
use argus::families::skin::cli::SkinCommand;
use base64::Engine;
use common::receiver::receiver;
use common::{fixture, json, start, start_in, Server, ROOT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FM2: &str = "8b5b3acc-480b-4412-8d2c-ebe6ab4384d7";

/// A frontal selfie: the first Canada face where the data is present.
fn selfie(n: usize) -> Vec<u8> {
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

async fn add_user(s: &Server, company: &str, email: &str) {
    s.manage(Command::Skin(SkinCommand::UserAdd {
        company: company.into(),
        email: email.into(),
        password: "correct horse battery".into(),
    }))
    .await;
}

async fn login(s: &Server, email: &str) -> Value {
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

struct Tenant {
    token: String,
    company: String,
    user: String,
    dataset: String,
}

/// A company with a user, a dataset and the application attached.
async fn tenant(s: &Server, company: &str, algorithms: Option<Value>) -> Tenant {
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
async fn subject_and_batch(s: &Server, t: &Tenant, name: &str) -> (String, String) {
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
async fn new_batch(s: &Server, t: &Tenant, sid: &str) -> String {
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

fn image_path(t: &Tenant, sid: &str, bid: &str) -> String {
    format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/batches/{bid}/images/",
        t.company, t.dataset
    )
}

async fn upload_b64(
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
async fn results_when_done(s: &Server, t: &Tenant, path: &str) -> Vec<Value> {
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

async fn ws(
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

async fn next_json<S>(sock: &mut S) -> Value
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

/// Bad input, each in the family's `{"detail"}` / `{"field": [...]}` shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly() {
    let s = start(|c| c.skin_api.max_image_bytes = 2_000_000).await;
    let t = tenant(&s, "acme-bad", None).await;
    let (sid, bid) = subject_and_batch(&s, &t, "bad").await;
    let (st, v) = call(
        &s,
        "POST",
        &image_path(&t, &sid, &bid),
        &t.token,
        Some(json!({"side_id": "front", "b64data": "AAAA"})),
    )
    .await;
    assert_eq!(st, 400, "a wrong type is a 400, as DRF answers: {v}");
    let (st, v) = upload_b64(&s, &t, &sid, &bid, 4, &selfie(0)).await;
    assert_eq!(st, 400);
    assert!(
        v["side_id"][0].as_str().unwrap().contains("not a side"),
        "{v}"
    );
    let (st, v) = upload_b64(&s, &t, &sid, &bid, 1, b"GIF89a not really").await;
    assert!(st == 415 || st == 400, "{st} {v}");
    assert!(v["detail"].is_string());
    let big = vec![0xffu8; 2_100_000];
    let (st, _) = upload_b64(&s, &t, &sid, &bid, 1, &big).await;
    assert_eq!(st, 413);
    let (st, v) = call(
        &s,
        "POST",
        &image_path(&t, &sid, &bid),
        &t.token,
        Some(json!({"side_id": 1, "b64data": "%%%"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/companies/{}/datasets/", t.company),
        &t.token,
        Some(json!({"name": "x", "image_type_id": 1, "expire_images_after_days": 400})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(v["expire_images_after_days"].is_array(), "{v}");
    // A field of the wrong kind is keyed by its name, in DRF's words.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/companies/{}/datasets/", t.company),
        &t.token,
        Some(json!({"name": "x", "image_type_id": 1, "expire_images_after_days": -1})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(
        v["expire_images_after_days"][0], "Ensure this value is greater than or equal to 0.",
        "{v}"
    );
    // No face: analysed, and the detection error says so.
    let (st, img) = upload_b64(&s, &t, &sid, &bid, 1, &fixture("coffee.jpg")).await;
    assert_eq!(st, 201);
    let path = format!(
        "{}{}/",
        image_path(&t, &sid, &bid),
        img["id"].as_str().unwrap()
    );
    let rows = results_when_done(&s, &t, &path).await;
    let det = rows
        .iter()
        .find(|r| r["algorithm_version_id"] == 40)
        .unwrap();
    assert_eq!(det["is_ok"], false);
    assert!(
        det["result"]["error"]
            .as_str()
            .unwrap()
            .starts_with("no_face"),
        "{det}"
    );
    assert!(rows
        .iter()
        .filter(|r| r["algorithm_version_id"] != 40)
        .all(|r| r["is_ok"] == false));
    // The same side twice in one batch.
    let (st, v) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(0)).await;
    assert_eq!(st, 400, "{v}");
    s.stop().await;
}

/// Companies never see each other; tokens expire, refresh and revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_tokens_behave() {
    let s = start(|c| c.auth.admin_login_per_minute = 5).await;
    let a = tenant(&s, "clinic-a", None).await;
    let b = tenant(&s, "clinic-b", None).await;
    let (sid, _) = subject_and_batch(&s, &a, "alice").await;
    let a_subject = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/",
        a.company, a.dataset
    );
    assert_eq!(call(&s, "GET", &a_subject, &a.token, None).await.0, 200);
    assert_eq!(
        call(&s, "GET", &a_subject, &b.token, None).await.0,
        404,
        "another company's subject"
    );
    let b_path = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/{sid}/",
        b.company, b.dataset
    );
    assert_eq!(
        call(&s, "GET", &b_path, &b.token, None).await.0,
        404,
        "A's subject under B's dataset"
    );
    assert_eq!(
        call(
            &s,
            "GET",
            &format!("/api/v3/companies/{}/subjects/{sid}/parameters/", b.company),
            &b.token,
            None
        )
        .await
        .0,
        404
    );
    let (st, list) = call(
        &s,
        "GET",
        &format!("/api/v3/companies/{}/batches/", b.company),
        &b.token,
        None,
    )
    .await;
    assert_eq!((st, &list["count"]), (200, &json!(0)));
    // Refresh gives a working access token.
    let l = login(&s, "owner@clinic-a.test").await;
    let r = s
        .client
        .post(s.url("/api/v1/auth/refresh/"))
        .json(&json!({"refresh": l["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh = json(r).await["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(&s, "GET", &a_subject, &fresh, None).await.0, 200);
    // The access token is not a refresh token.
    let r = s
        .client
        .post(s.url("/api/v1/auth/refresh/"))
        .json(&json!({"refresh": fresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Private tokens: revoked at once; expired on time.
    let (_, pt) = call(
        &s,
        "POST",
        "/api/v1/auth/private_tokens/",
        &a.token,
        Some(json!({"name": "short", "expiration_time": "2099-01-01T00:00:00Z"})),
    )
    .await;
    let data = pt["data"].as_str().unwrap().to_string();
    assert_eq!(call(&s, "GET", &a_subject, &data, None).await.0, 200);
    let (st, listed) = call(&s, "GET", "/api/v1/auth/private_tokens/", &a.token, None).await;
    assert_eq!((st, &listed["count"]), (200, &json!(1)));
    assert!(
        listed["results"][0].get("data").is_none(),
        "the token is shown once"
    );
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!(
                "/api/v1/auth/private_tokens/{}/",
                pt["id"].as_str().unwrap()
            ),
            &a.token,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(call(&s, "GET", &a_subject, &data, None).await.0, 401);
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, pt) = call(
        &s,
        "POST",
        "/api/v1/auth/private_tokens/",
        &a.token,
        Some(json!({"name": "2s", "expiration_time": soon})),
    )
    .await;
    let short = pt["data"].as_str().unwrap().to_string();
    assert_eq!(call(&s, "GET", &a_subject, &short, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(call(&s, "GET", &a_subject, &short, None).await.0, 401);
    // Logins are limited per address and user name.
    let mut last = 0;
    let mut retry = None;
    for _ in 0..8 {
        let r = s
            .client
            .post(s.url("/api/v1/login/"))
            .json(&json!({"username": "owner@clinic-b.test", "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        retry = r.headers().get("retry-after").cloned();
    }
    assert_eq!(last, 429);
    assert!(retry.is_some());
    s.stop().await;
}

/// A dataset's webhook reaches a real HTTPS receiver on loopback, signed,
/// with the configured authorization, and is retried after a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_authorized_and_retried() {
    let (port, ca, got) = receiver().await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let s = start_in(&tmp.path().join("state"), |c| {
        c.outbound.ca_file = ca_path.clone();
        c.outbound.allow = vec!["localhost".into()];
        c.skin_api.webhook_retry_base_ms = 200;
    })
    .await;
    let t = tenant(&s, "acme-hooks", None).await;
    let hooks = format!(
        "/api/v1/companies/{}/datasets/{}/webhooks/",
        t.company, t.dataset
    );
    // An internal address the operator did not allow is refused.
    let (st, v) = call(
        &s,
        "POST",
        &hooks,
        &t.token,
        Some(json!({"url": "https://10.0.0.5/hook"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, w) = call(
        &s,
        "POST",
        &hooks,
        &t.token,
        Some(json!({"url": format!("https://localhost:{port}/skin-hook"),
        "authorization": "bearer", "authorization_value": "receiver-secret", "method": "post"})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let secret = hex::decode(w["secret_key"].as_str().unwrap()).unwrap();
    let (sid, bid) = subject_and_batch(&s, &t, "hooked").await;
    let (_, img) = upload_b64(&s, &t, &sid, &bid, 1, &selfie(3)).await;
    let iid = img["id"].as_str().unwrap().to_string();
    for _ in 0..300 {
        if got.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "the failed first delivery was retried");
    let (head, body) = &got[1];
    assert!(head.starts_with("POST /skin-hook"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("authorization: bearer receiver-secret"),
        "{head}"
    );
    let sig = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("x-argus-signature:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    let t_part = sig
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=")
        .parse::<u64>()
        .unwrap();
    assert_eq!(sig, argus::webhooks::sign(&secret, t_part, body));
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["image_id"], iid.as_str());
    assert_eq!(v["status"], "done");
    assert!(!v["results"].as_array().unwrap().is_empty());
    s.stop().await;
}

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
