//! The face API over real HTTP: health, detect, mask, auth, metrics, TLS.

mod common;

use common::{fixture, json, start, Server};

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes)
        .expect("a decodable image")
        .into_rgb8()
}

/// Mean absolute difference over a rectangle.
fn mad(a: &image::RgbImage, b: &image::RgbImage, r: [u32; 4]) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in r[1]..r[3] {
        for x in r[0]..r[2] {
            for c in 0..3 {
                sum += a.get_pixel(x, y).0[c].abs_diff(b.get_pixel(x, y).0[c]) as u64;
                n += 1;
            }
        }
    }
    sum as f64 / n as f64
}

#[tokio::test]
async fn health_reports_model_backend_and_storage() {
    let s = start(|_| {}).await;
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["model"], "centerface");
    assert_eq!(v["model_loaded"], true);
    assert_eq!(v["input_size"], serde_json::json!([640, 640]));
    assert_eq!(v["supports_landmarks"], true);
    assert_eq!(v["database_enabled"], true);
    assert_eq!(v["storage_enabled"], true);
    assert_eq!(v["storage_ready"], true);
    assert_eq!(v["backend"], "cpu");
    assert!(v["device"].as_str().unwrap().starts_with("cpu"));
    for p in ["/live", "/ready"] {
        assert_eq!(
            s.client.get(s.url(p)).send().await.unwrap().status(),
            200,
            "{p}"
        );
    }
    // The image store goes away: /ready agrees with /health, so a load
    // balancer stops sending uploads that would fail; /live stays up.
    let originals = s.dir.join("blobs/originals");
    let moved = s.dir.join("blobs/originals.away");
    std::fs::rename(&originals, &moved).unwrap();
    for (p, want) in [("/health", 503), ("/ready", 503), ("/live", 200)] {
        let st = s.client.get(s.url(p)).send().await.unwrap().status();
        assert_eq!(st, want, "{p} without the image store");
    }
    std::fs::rename(&moved, &originals).unwrap();
    assert_eq!(
        s.client.get(s.url("/ready")).send().await.unwrap().status(),
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn detect_finds_the_faces_in_real_photos() {
    let s = start(|_| {}).await;
    let key = s.new_key("kiosk").await;
    for (name, want) in [
        ("astronaut.jpg", 1),
        ("astronaut.png", 1),
        ("camera.jpg", 1),
        ("group.jpg", 3),
        ("coffee.jpg", 0),
        ("chelsea.jpg", 0),
        ("rocket.jpg", 0),
    ] {
        let r = s
            .post_image("/api/v1/detect", Some(&key), fixture(name))
            .await;
        assert_eq!(r.status(), 200, "{name}");
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let v = json(r).await;
        assert_eq!(v["summary"]["face_count"], want, "{name}: {v}");
        assert_eq!(v["detections"].as_array().unwrap().len(), want, "{name}");
        assert_eq!(v["request_id"], rid.as_str());
        assert_eq!(v["processing"]["model"], "centerface");
        assert_eq!(v["profiling"]["model_name"], "centerface");
        assert!(
            v["image_id"].is_string() && v["job_id"].is_string(),
            "storage is on by default"
        );
    }
    // The astronaut's face, checked against where it is in the photo.
    let v = json(
        s.post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
            .await,
    )
    .await;
    let d = &v["detections"][0];
    let b = &d["bbox"];
    let (x1, y1, x2, y2) = (
        b["x1"].as_f64().unwrap(),
        b["y1"].as_f64().unwrap(),
        b["x2"].as_f64().unwrap(),
        b["y2"].as_f64().unwrap(),
    );
    assert!(
        (170.0..190.0).contains(&x1)
            && (50.0..70.0).contains(&y1)
            && (260.0..280.0).contains(&x2)
            && (165.0..185.0).contains(&y2),
        "{b}"
    );
    assert!(d["confidence"].as_f64().unwrap() > 0.8);
    // Eyes above the nose, nose above the mouth, left eye left of the right eye.
    let lm = &d["landmarks"];
    let y = |k: &str| lm[k]["y"].as_f64().unwrap();
    let x = |k: &str| lm[k]["x"].as_f64().unwrap();
    assert!(
        y("left_eye") < y("nose") && y("nose") < y("left_mouth") && x("left_eye") < x("right_eye"),
        "{lm}"
    );
    assert_eq!(
        v["image"],
        serde_json::json!({"width": 512, "height": 512, "channels": 3, "size_bytes": fixture("astronaut.jpg").len()})
    );
    for k in ["size", "area", "center", "relative"] {
        assert!(!d[k].is_null(), "detection field {k}");
    }
    for k in [
        "decode_ms",
        "preprocess_ms",
        "blob_ms",
        "inference_ms",
        "postprocess_ms",
        "nms_ms",
        "total_ms",
        "candidates_before_nms",
        "candidates_after_nms",
        "det_scale",
        "input_resolution",
        "det_resolution",
        "input_bytes",
        "input_pixels",
        "storage_ms",
    ] {
        assert!(!v["profiling"][k].is_null(), "profiling.{k}");
    }
    assert_eq!(v["profiling"]["input_resolution"], "512x512");
    assert_eq!(v["profiling"]["det_resolution"], "640x640");
    assert!(v["profiling"]["mask_ms"].is_null());
    s.stop().await;
}

#[tokio::test]
async fn exif_orientation_is_applied_before_detection() {
    let s = start(|c| c.auth.api_key_enabled = false).await;
    let a = json(
        s.post_image("/api/v1/detect", None, fixture("astronaut.jpg"))
            .await,
    )
    .await;
    let b = json(
        s.post_image("/api/v1/detect", None, fixture("astronaut_exif8.jpg"))
            .await,
    )
    .await;
    for k in ["x1", "y1", "x2", "y2"] {
        let (p, q) = (
            a["detections"][0]["bbox"][k].as_f64().unwrap(),
            b["detections"][0]["bbox"][k].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 4.0, "{k}: {p} vs {q}");
    }
    s.stop().await;
}

#[tokio::test]
async fn query_parameters_change_the_result() {
    let s = start(|c| c.auth.api_key_enabled = false).await;
    let post = |q: &'static str| {
        let s = &s;
        async move {
            let r = s
                .client
                .post(s.url(&format!("/api/v1/detect?{q}")))
                .multipart(Server::image_form(fixture("group.jpg"), "g.jpg"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), json(r).await)
        }
    };
    let (st, v) = post("max_faces=1").await;
    assert_eq!(st, 200);
    assert_eq!(v["summary"]["face_count"], 1);
    let (_, v) = post("confidence=0.85").await;
    assert_eq!(v["summary"]["face_count"], 2, "{}", v["detections"]);
    assert_eq!(v["processing"]["confidence_threshold"], 0.85);
    // NMS at its defaults merges neighbouring heatmap cells; with IoU
    // threshold 1.0 it suppresses nothing, so every candidate is a face.
    let (_, v) = post("confidence=0.3").await;
    let before = v["profiling"]["candidates_before_nms"].as_u64().unwrap();
    assert!(
        before > v["profiling"]["candidates_after_nms"].as_u64().unwrap(),
        "{}",
        v["profiling"]
    );
    let (_, v) = post("confidence=0.3&nms_threshold=1.0").await;
    assert_eq!(v["summary"]["face_count"].as_u64().unwrap(), before);
    for bad in [
        "confidence=2",
        "confidence=abc",
        "nms_threshold=-1",
        "max_faces=-3",
    ] {
        let (st, v) = post(bad).await;
        assert_eq!(st, 422, "{bad}");
        assert!(v["detail"].is_string(), "{bad}");
    }
    // A repeated name is a client's mistake, not "the last one wins".
    let (st, v) = post("confidence=0.5&confidence=0.9").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("confidence")),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn mask_hides_faces_and_leaves_the_rest_alone() {
    let s = start(|c| c.auth.api_key_enabled = false).await;
    let original = decode(&fixture("group.jpg"));
    let det = json(
        s.post_image("/api/v1/detect", None, fixture("group.jpg"))
            .await,
    )
    .await;
    let boxes: Vec<[u32; 4]> = det["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b = &d["bbox"];
            [
                b["x1"].as_f64().unwrap() as u32 + 1,
                b["y1"].as_f64().unwrap() as u32 + 1,
                b["x2"].as_f64().unwrap() as u32 - 1,
                b["y2"].as_f64().unwrap() as u32 - 1,
            ]
        })
        .collect();
    assert_eq!(boxes.len(), 3);
    for method in ["gaussian", "pixelate", "solid", "elliptical"] {
        let r = s
            .post_fixture(
                &format!("/api/v1/mask?method={method}&format=png"),
                "group.jpg",
            )
            .await;
        assert_eq!(r.status(), 200, "{method}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "image/png");
        assert_eq!(h["x-face-count"], "3");
        assert_eq!(h["x-model"], "centerface");
        for k in [
            "x-request-id",
            "x-inference-ms",
            "x-mask-ms",
            "x-encode-ms",
            "x-total-ms",
            "x-image-id",
            "x-job-id",
        ] {
            assert!(h.contains_key(k), "{method}: header {k}");
        }
        let masked = decode(&r.bytes().await.unwrap());
        assert_eq!(masked.dimensions(), original.dimensions());
        // Inside every face the picture changed a lot.
        for b in &boxes {
            let inner = [
                b[0] + (b[2] - b[0]) / 4,
                b[1] + (b[3] - b[1]) / 4,
                b[2] - (b[2] - b[0]) / 4,
                b[3] - (b[3] - b[1]) / 4,
            ];
            assert!(
                mad(&masked, &original, inner) > 12.0,
                "{method}: face {b:?} barely changed"
            );
        }
        // PNG is lossless: away from the (padded) faces every pixel is as decoded.
        let far = |x: u32, y: u32| {
            boxes.iter().all(|b| {
                let (pw, ph) = ((b[2] - b[0]) / 2 + 4, (b[3] - b[1]) / 2 + 4);
                x + pw < b[0] || x > b[2] + pw || y + ph < b[1] || y > b[3] + ph
            })
        };
        let changed = original
            .enumerate_pixels()
            .filter(|(x, y, p)| far(*x, *y) && masked.get_pixel(*x, *y) != *p)
            .count();
        assert_eq!(
            changed, 0,
            "{method}: {changed} pixels away from faces changed"
        );
        // Unrecognisable: the detector no longer finds those faces.
        // Unrecognisable: the fine detail (what identifies a face) is gone ...
        for b in &boxes {
            let inner = [
                b[0] + (b[2] - b[0]) / 4,
                b[1] + (b[3] - b[1]) / 4,
                b[2] - (b[2] - b[0]) / 4,
                b[3] - (b[3] - b[1]) / 4,
            ];
            if method == "pixelate" {
                // Block edges are sharp by design: count what is left
                // instead, a few flat blocks where there were thousands of
                // colours.
                let mut colours = std::collections::HashSet::new();
                for y in inner[1]..inner[3] {
                    for x in inner[0]..inner[2] {
                        colours.insert(masked.get_pixel(x, y).0);
                    }
                }
                assert!(
                    colours.len() <= 25,
                    "{method}: face {b:?} keeps {} colours",
                    colours.len()
                );
                continue;
            }
            let (before, after) = (detail(&original, inner), detail(&masked, inner));
            assert!(
                after < 0.15 * before,
                "{method}: face {b:?} keeps detail {after:.2} of {before:.2}"
            );
        }
        // ... and where the whole box is covered, the detector no longer finds a face.
        // (The elliptical mask leaves the box corners, e.g. hair, so a blurred
        // head-shaped blob can still score as a face there.)
        if method != "elliptical" {
            let again = json(
                s.post_image("/api/v1/detect", None, image_to_png(&masked))
                    .await,
            )
            .await;
            assert_eq!(
                again["summary"]["face_count"], 0,
                "{method}: masked faces still detected: {}",
                again["detections"]
            );
        }
    }
    s.stop().await;
}

/// Mean absolute Laplacian of the luma over a rectangle: the fine detail.
fn detail(img: &image::RgbImage, r: [u32; 4]) -> f64 {
    let luma = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
    };
    let mut sum = 0.0;
    let mut n = 0.0;
    for y in r[1].max(1)..r[3].min(img.height() - 1) {
        for x in r[0].max(1)..r[2].min(img.width() - 1) {
            sum += (4.0 * luma(x, y)
                - luma(x - 1, y)
                - luma(x + 1, y)
                - luma(x, y - 1)
                - luma(x, y + 1))
            .abs();
            n += 1.0;
        }
    }
    sum / n
}

fn image_to_png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn every_output_format_and_quality() {
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
    })
    .await;
    let mut sizes = Vec::new();
    for (q, ct, magic) in [
        ("format=jpeg&quality=95", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
        ("format=jpeg&quality=30", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
        ("format=png", "image/png", &b"\x89PNG"[..]),
        ("format=webp&quality=80", "image/webp", &b"RIFF"[..]),
        (
            "method=pixelate&strength=32&format=webp",
            "image/webp",
            &b"RIFF"[..],
        ),
    ] {
        let r = s
            .post_fixture(&format!("/api/v1/mask?{q}"), "astronaut.jpg")
            .await;
        assert_eq!(r.status(), 200, "{q}");
        assert_eq!(r.headers()["content-type"], ct, "{q}");
        assert!(!r.headers().contains_key("x-image-id"), "storage is off");
        let b = r.bytes().await.unwrap();
        assert!(b.starts_with(magic), "{q}");
        assert_eq!(decode(&b).dimensions(), (512, 512), "{q}");
        sizes.push(b.len());
    }
    assert!(
        sizes[1] < sizes[0],
        "quality 30 must be smaller than 95: {sizes:?}"
    );
    for bad in [
        "method=swirl",
        "format=gif",
        "strength=0",
        "quality=101",
        "padding=-1",
    ] {
        let r = s
            .post_fixture(&format!("/api/v1/mask?{bad}"), "astronaut.jpg")
            .await;
        assert_eq!(r.status(), 422, "{bad}");
        assert!(json(r).await["detail"].is_string());
    }
    s.stop().await;
}

#[tokio::test]
async fn api_keys_missing_wrong_and_revoked() {
    let s = start(|_| {}).await;
    let r = s
        .post_image("/api/v1/detect", None, fixture("astronaut.jpg"))
        .await;
    assert_eq!(r.status(), 401);
    assert!(json(r).await["detail"]
        .as_str()
        .unwrap()
        .contains("API key"));
    let r = s
        .post_image(
            "/api/v1/mask",
            Some("xyl_not-a-real-key"),
            fixture("astronaut.jpg"),
        )
        .await;
    assert_eq!(r.status(), 401);
    let key = s.new_key("door-cam").await;
    assert_eq!(
        s.post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
            .await
            .status(),
        200
    );
    // Revoked through the CLI path: effective on the very next request.
    s.manage(argus::cli::manage::Command::KeysRevoke {
        key: key[..8].to_string(),
    })
    .await;
    let r = s
        .post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
        .await;
    assert_eq!(r.status(), 401);
    assert!(json(r).await["detail"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    s.stop().await;
}

#[tokio::test]
async fn metrics_are_exposed_with_base_units() {
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert_eq!(
        s.post_image("/api/v1/detect", None, fixture("group.jpg"))
            .await
            .status(),
        200
    );
    assert_eq!(
        s.post_image("/api/v1/detect", None, b"garbage".to_vec())
            .await
            .status(),
        415
    );
    let text = s.metrics().await;
    for needle in [
        "argus_http_requests_total{method=\"POST\",route=\"/api/v1/detect\",status=\"200\"} 1",
        "argus_http_request_duration_seconds_bucket",
        "argus_batch_size_bucket",
        "argus_batch_queue_wait_seconds_bucket",
        "argus_inference_duration_seconds_count{backend=\"cpu\",model=\"centerface\"}",
        "argus_faces_detected_total 3",
        "argus_failures_total{family=\"faces\",reason=\"unsupported_format\"} 1",
        "argus_batch_queue_depth",
        "argus_build_info{backend=\"cpu\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The separate metrics listener serves the same registry.
    let maddr = s.running.as_ref().unwrap().metrics_addr.unwrap();
    let text2 = s
        .client
        .get(format!("http://{maddr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text2.contains("argus_faces_detected_total 3"));
    s.stop().await;
}

#[tokio::test]
async fn https_with_a_generated_certificate_and_http2() {
    let s = start(|c| {
        c.tls.enabled = true;
        c.auth.api_key_enabled = false;
    })
    .await;
    assert!(s.base.starts_with("https://"));
    assert!(s.dir.join("tls/cert.pem").exists() && s.dir.join("tls/key.pem").exists());
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN must offer h2");
    let h1 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();
    assert_eq!(
        h1.get(s.url("/health")).send().await.unwrap().version(),
        reqwest::Version::HTTP_11
    );
    // An early refusal over HTTP/2 still reaches the client as JSON.
    let r = s
        .client
        .post(s.url("/api/v1/detect?confidence=7"))
        .multipart(Server::image_form(fixture("group.jpg"), "g.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(json(r).await["detail"].is_string());
    s.stop().await;
}

/// Rejections under the face family's paths, axum's own included, answer
/// `{"detail": ...}` and are counted with `family="faces"`.
#[tokio::test]
async fn every_rejection_answers_in_the_detail_shape() {
    let s = start(|_| {}).await;
    for (method, path, want) in [
        ("GET", "/api/v1/nope", 404),
        ("GET", "/api/v1/detect", 405),
        ("PUT", "/api/v1/mask", 405),
        ("GET", "/api/v1/admin/images/%FF", 401),
        ("GET", "/no/family/here", 404),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        let v = json(r).await;
        assert!(v["detail"].is_string(), "{method} {path}: {v}");
    }
    // A raw photo, or no body, where a form is expected: 422 saying the
    // Content-Type is not a form, not axum's "Invalid `boundary`".
    let key = s.new_key("kiosk").await;
    for ct in [Some("image/jpeg"), None] {
        let mut req = s
            .client
            .post(s.url("/api/v1/detect"))
            .header("X-API-Key", &key);
        if let Some(ct) = ct {
            req = req.header("content-type", ct).body(vec![0xFF, 0xD8, 0xFF]);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 422, "{ct:?}");
        let v = json(r).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("Content-Type is not multipart/form-data")
                && !detail.contains("Invalid"),
            "{ct:?}: {detail}"
        );
    }
    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("argus_failures_total{family=\"faces\",reason=\"method_not_allowed\"} 2"),
        "{m}"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(m.contains(name), "{name} exported");
    }
}

/// A motion photo (the astronaut JPEG with 4 KB of video appended, the
/// appended bytes holding an `FF DA` pair, as `../shared/cases/` has it) is
/// detected and masked like the photo; an arithmetic-coded JPEG is refused
/// with 415 naming the coding.
#[tokio::test]
async fn motion_photos_are_read_and_arithmetic_jpegs_are_named() {
    let s = start(|c| c.auth.api_key_enabled = false).await;
    let photo = fixture("astronaut.jpg");
    let mut motion = photo.clone();
    motion.extend_from_slice(b"\x00\x00\x00\x18ftypmp42isom");
    for i in 0..4096u32 {
        motion.push((i.wrapping_mul(2654435761) >> 11) as u8);
    }
    motion.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0C]);
    let a = json(s.post_image("/api/v1/detect", None, photo.clone()).await).await;
    let r = s.post_image("/api/v1/detect", None, motion.clone()).await;
    assert_eq!(r.status(), 200);
    let b = json(r).await;
    assert_eq!(b["summary"]["face_count"], a["summary"]["face_count"]);
    assert_eq!(b["detections"][0]["bbox"], a["detections"][0]["bbox"]);
    let r = s.post_image("/api/v1/mask", None, motion).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-face-count"],
        a["summary"]["face_count"].to_string().as_str()
    );
    let sof0 = photo.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut arith = photo;
    arith[sof0 + 1] = 0xC9;
    let r = s.post_image("/api/v1/detect", None, arith).await;
    assert_eq!(r.status(), 415);
    let v = json(r).await;
    assert!(v["detail"].as_str().unwrap().contains("arithmetic"), "{v}");
    s.stop().await;
}

/// A JSON body that starts with a UTF-8 byte-order mark is read as JSON.
#[tokio::test]
async fn json_bodies_with_a_byte_order_mark_are_read() {
    let s = start(|_| {}).await;
    s.new_admin("ops", "correct-horse-battery").await;
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend_from_slice(br#"{"username":"ops","password":"correct-horse-battery"}"#);
    let r = s
        .client
        .post(s.url("/api/v1/admin/auth/login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    s.stop().await;
}

/// A 12 MP photo with two small faces (about 60 and 45 px wide): the
/// whole-photo pass shrinks them below what CenterFace sees; tiles find
/// them, and /mask hides them. With `detector.tiling = "off"` they are
/// missed, which is the failure tiling closes.
#[tokio::test]
async fn small_faces_in_a_12_mp_photo_are_found_by_tiles_and_masked() {
    // The astronaut's face, located by the detector on the original photo.
    let s = start(|_| {}).await;
    let key = s.new_key("kiosk").await;
    let v = json(
        s.post_image("/api/v1/detect", Some(&key), fixture("astronaut.jpg"))
            .await,
    )
    .await;
    let b: Vec<f64> = ["x1", "y1", "x2", "y2"]
        .iter()
        .map(|k| v["detections"][0]["bbox"][k].as_f64().unwrap())
        .collect();
    let astro = image::load_from_memory(&fixture("astronaut.jpg"))
        .unwrap()
        .to_rgb8();
    let (fw, fh) = (b[2] - b[0], b[3] - b[1]);
    let face = image::imageops::crop_imm(
        &astro,
        (b[0] - 0.3 * fw).max(0.0) as u32,
        (b[1] - 0.3 * fh).max(0.0) as u32,
        (1.6 * fw) as u32,
        (1.6 * fh) as u32,
    )
    .to_image();
    let bg = image::load_from_memory(&fixture("coffee.jpg"))
        .unwrap()
        .to_rgb8();
    let mut big = image::imageops::resize(&bg, 4032, 3024, image::imageops::FilterType::Triangle);
    // (left, top, face width in px) of each pasted face.
    let placed = [(2900u32, 700u32, 60.0f64), (800, 2200, 45.0)];
    for &(x, y, want) in &placed {
        let k = want / fw;
        let f = image::imageops::resize(
            &face,
            (face.width() as f64 * k) as u32,
            (face.height() as f64 * k) as u32,
            image::imageops::FilterType::CatmullRom,
        );
        image::imageops::replace(&mut big, &f, x as i64, y as i64);
    }
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92)
        .encode_image(&big)
        .unwrap();
    let jpeg = jpeg.into_inner();

    let found = |v: &serde_json::Value| -> Vec<(f64, f64)> {
        v["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let b = &d["bbox"];
                (
                    (b["x1"].as_f64().unwrap() + b["x2"].as_f64().unwrap()) / 2.0,
                    (b["y1"].as_f64().unwrap() + b["y2"].as_f64().unwrap()) / 2.0,
                )
            })
            .collect()
    };
    let near = |c: &[(f64, f64)], x: u32, y: u32, w: f64| {
        let (cx, cy) = (x as f64 + 0.8 * w, y as f64 + 0.8 * w * fh / fw);
        c.iter()
            .any(|&(a, b)| (a - cx).abs() < w && (b - cy).abs() < w)
    };
    let v = json(
        s.post_image("/api/v1/detect", Some(&key), jpeg.clone())
            .await,
    )
    .await;
    let c = found(&v);
    for &(x, y, w) in &placed {
        assert!(
            near(&c, x, y, w),
            "the {w} px face at ({x}, {y}) was missed: {v}"
        );
    }
    // /mask hides both: the pixels there change.
    let r = s
        .post_image("/api/v1/mask?method=solid", Some(&key), jpeg.clone())
        .await;
    assert_eq!(r.status(), 200);
    let masked = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    for &(x, y, w) in &placed {
        let (cx, cy) = (x + (0.8 * w) as u32, y + (0.8 * w * fh / fw) as u32);
        let (a, m) = (big.get_pixel(cx, cy), masked.get_pixel(cx, cy));
        let diff: i32 = (0..3).map(|i| (a[i] as i32 - m[i] as i32).abs()).sum();
        assert!(diff > 30, "the {w} px face is not masked: {a:?} vs {m:?}");
    }
    s.stop().await;

    let s = start(|c| c.detector.tiling = argus::config::Tiling::Off).await;
    let key = s.new_key("kiosk").await;
    let v = json(s.post_image("/api/v1/detect", Some(&key), jpeg).await).await;
    let c = found(&v);
    assert!(
        placed.iter().any(|&(x, y, w)| !near(&c, x, y, w)),
        "one pass found every small face, so this photo does not test tiling: {v}"
    );
    s.stop().await;
}

/// An animation is never reduced to its first frame: animated WebP, GIF
/// and APNG get 415 saying why; one-frame files of the same kinds pass.
#[tokio::test]
async fn animated_images_are_refused_not_cut_to_one_frame() {
    use argus::imaging::test_animations::{animated_gif, animated_webp, apng};
    let s = start(|c| {
        c.limits.formats = ["jpeg", "png", "webp", "gif"].map(String::from).to_vec();
    })
    .await;
    let key = s.new_key("kiosk").await;
    for (name, bytes) in [
        ("webp", animated_webp(2)),
        ("gif", animated_gif(3)),
        ("png", apng(2)),
    ] {
        for path in ["/api/v1/detect", "/api/v1/mask"] {
            let r = s.post_image(path, Some(&key), bytes.clone()).await;
            assert_eq!(r.status(), 415, "{name} {path}");
            let v = json(r).await;
            let d = v["detail"].as_str().unwrap();
            assert!(d.contains("animated") && d.contains(name), "{d}");
        }
    }
    for bytes in [animated_webp(1), animated_gif(1), apng(1)] {
        let r = s.post_image("/api/v1/detect", Some(&key), bytes).await;
        assert_eq!(r.status(), 200);
    }
    s.stop().await;
}

/// A cut-out portrait (RGBA, the scene it was cut from still in the RGB of
/// its transparent pixels): PNG and WebP answers keep its transparency,
/// JPEG answers are composited over white, and the hidden scene comes back
/// in none of them.
#[tokio::test]
async fn transparent_uploads_keep_alpha_and_never_reveal_what_it_hid() {
    let s = start(|_| {}).await;
    let key = s.new_key("kiosk").await;
    let photo = image::load_from_memory(&fixture("astronaut.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = photo.dimensions();
    // The right quarter is cut out (alpha 0) but keeps its pixels.
    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
        let p = photo.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], if x >= w * 3 / 4 { 0 } else { 255 }])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    rgba.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    let hidden = (w - 10, h / 2);
    for format in ["png", "webp", "jpeg"] {
        let r = s
            .post_image(
                &format!("/api/v1/mask?format={format}"),
                Some(&key),
                png.clone(),
            )
            .await;
        assert_eq!(r.status(), 200, "{format}");
        assert_eq!(r.headers()["x-face-count"], "1", "{format}");
        let out = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
        let px = out.to_rgba8().get_pixel(hidden.0, hidden.1).0;
        if format == "jpeg" {
            assert!(!out.color().has_alpha());
            assert!(
                px[..3].iter().all(|&c| c > 240),
                "{format}: {px:?} is not the white background"
            );
        } else {
            assert!(out.color().has_alpha(), "{format} lost its alpha channel");
            assert_eq!(px[3], 0, "{format}: the cut-out is no longer transparent");
            assert!(
                px[..3].iter().all(|&c| c > 240),
                "{format}: {px:?} reveals the hidden scene"
            );
            assert_eq!(out.to_rgba8().get_pixel(10, 10).0[3], 255, "{format}");
        }
    }
    s.stop().await;
}

/// `cors.allow_origins`: a listed origin's page may call the API from a
/// browser (preflight, then the call, its headers readable); any other
/// origin gets no CORS headers, and cookies are never allowed across.
/// Without the setting a preflight is refused as before.
#[tokio::test]
async fn listed_origins_may_call_from_a_browser_and_others_may_not() {
    let preflight = |s: &Server, origin: &str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/api/v1/detect"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key")
            .send()
    };
    let s = start(|c| c.cors.allow_origins = vec!["https://kiosk.example.com".into()]).await;
    let key = s.new_key("kiosk").await;
    let r = preflight(&s, "https://kiosk.example.com").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "https://kiosk.example.com"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    // The skin family's v3 upload PUT and PDF token headers too.
    for name in ["x-api-key", "x-goog-content-length-range", "access-token"] {
        assert!(allowed.contains(name), "{name}: {allowed}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
    let r = preflight(&s, "https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The call itself: its timing headers are readable by the page.
    let r = s
        .client
        .post(s.url("/api/v1/detect"))
        .header("origin", "https://kiosk.example.com")
        .header("x-api-key", &key)
        .multipart(Server::image_form(fixture("astronaut.jpg"), "a.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://kiosk.example.com"
    );
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    s.stop().await;

    let s = start(|_| {}).await;
    let r = preflight(&s, "https://kiosk.example.com").await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.stop().await;

    // A setting that is no origin stops the start with the reason.
    let mut c = argus::config::Config::default();
    c.cors.allow_origins = vec!["https://kiosk.example.com/app".into(), "kiosk".into()];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("cors.allow_origins"), "{err}");
}
