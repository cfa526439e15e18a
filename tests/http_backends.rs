//! Backend selection and the accelerator backends over real HTTP: what
//! `auto` picks, how an unavailable backend fails, and the wgpu and CUDA
//! servers answering detect and mask, and analysing a blood smear (counts,
//! malaria, white-cell differential), like the CPU server. wgpu runs on
//! whatever Vulkan adapter the machine has (Mesa's lavapipe in CI, selected
//! explicitly); CUDA needs the `cuda` feature, libcuda, libnvrtc and a GPU.
//! Where a device is missing its test skips with the reason; the smear test
//! also skips on a software adapter, which takes minutes per smear.

mod common;

use argus::backend::{BackendKind, Target};
use common::pbs::{call, configure, login, new_study, setup_org, upload, wait_ready};
use common::{fixture, json, ran_on, start};
use serde_json::{json, Value};

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().into_rgb8()
}

#[tokio::test]
async fn auto_never_takes_a_software_adapter() {
    let s = start(|c| c.backend = BackendKind::Auto).await;
    let v = json(s.client.get(s.url("/health")).send().await.unwrap()).await;
    let (backend, device) = (
        v["backend"].as_str().unwrap(),
        v["device"].as_str().unwrap(),
    );
    if device_or_skip(BackendKind::Cuda).is_none() {
        assert!(backend == "cpu" || backend == "wgpu", "{v}");
    } else {
        assert_eq!(backend, "cuda", "auto takes CUDA first: {v}");
    }
    assert!(
        !device.contains(", Cpu,"),
        "auto picked a software adapter: {device}"
    );
    let m = s.metrics().await;
    assert!(
        m.contains(&format!("backend=\"{backend}\"")),
        "argus_build_info names the backend"
    );
    s.stop().await;
}

#[tokio::test]
async fn asking_for_a_backend_that_is_not_there_fails_start_up() {
    if device_or_skip(BackendKind::Cuda).is_some() {
        eprintln!("skipping: CUDA is available here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::base_config(dir.path());
    c.backend = BackendKind::Cuda;
    let err = match argus::start(c).await {
        Ok(_) => panic!("started on a backend that is not available"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cuda") && err.contains("not available"),
        "{err}"
    );
}

/// The target `kind` resolves to, or None (with the reason printed) where
/// the build or the machine lacks it.
fn device_or_skip(kind: BackendKind) -> Option<Target> {
    match argus::backend::resolve(kind) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("skipping {kind:?}: {e}");
            None
        }
    }
}

#[tokio::test]
async fn wgpu_server_detects_and_masks_like_the_cpu_server() {
    device_server_matches_the_cpu_server(BackendKind::Wgpu, "wgpu").await;
}

#[tokio::test]
async fn cuda_server_detects_and_masks_like_the_cpu_server() {
    device_server_matches_the_cpu_server(BackendKind::Cuda, "cuda").await;
}

async fn device_server_matches_the_cpu_server(kind: BackendKind, name: &str) {
    if device_or_skip(kind).is_none() {
        return;
    }
    let cpu = start(|c| c.auth.api_key_enabled = false).await;
    let gpu = start(|c| {
        c.auth.api_key_enabled = false;
        c.backend = kind;
    })
    .await;
    let h = json(gpu.client.get(gpu.url("/health")).send().await.unwrap()).await;
    assert_eq!(h["backend"], name, "{h}");
    assert_eq!(h["max_batch_size"], 32, "the GPU batch cap applies: {h}");
    assert!(h["fallback"].is_null(), "the device is in service: {h}");
    assert_eq!(h["letterbox"], "device", "frames go up whole: {h}");
    let hc = json(cpu.client.get(cpu.url("/health")).send().await.unwrap()).await;
    assert_eq!(hc["letterbox"], "host", "{hc}");
    assert_eq!(h["jpeg_encode"], "device", "{h}");
    assert_eq!(hc["jpeg_encode"], "host", "{hc}");
    assert!(gpu.metrics().await.contains(&format!("backend=\"{name}\"")));

    for name in ["group.jpg", "astronaut.jpg", "coffee.jpg"] {
        let a = json(cpu.post_image("/api/v1/detect", None, fixture(name)).await).await;
        let b = json(gpu.post_image("/api/v1/detect", None, fixture(name)).await).await;
        let (da, db) = (
            a["detections"].as_array().unwrap(),
            b["detections"].as_array().unwrap(),
        );
        assert_eq!(da.len(), db.len(), "{name}: {a} against {b}");
        for (x, y) in da.iter().zip(db) {
            let d =
                |k: &str| (x["bbox"][k].as_f64().unwrap() - y["bbox"][k].as_f64().unwrap()).abs();
            for k in ["x1", "y1", "x2", "y2"] {
                assert!(d(k) < 0.5, "{name}: {k} differs: {x} against {y}");
            }
            let ds = (x["confidence"].as_f64().unwrap() - y["confidence"].as_f64().unwrap()).abs();
            assert!(ds < 1e-3, "{name}: confidence {x} against {y}");
        }
    }

    // Masking runs on the device: the same pixels as the CPU masker but
    // for rounding and the ellipse's edge.
    let original = decode(&fixture("group.jpg"));
    for method in ["gaussian", "pixelate", "solid", "elliptical"] {
        let q = format!("/api/v1/mask?method={method}&format=png");
        let a = decode(
            &cpu.post_fixture(&q, "group.jpg")
                .await
                .bytes()
                .await
                .unwrap(),
        );
        let b = decode(
            &gpu.post_fixture(&q, "group.jpg")
                .await
                .bytes()
                .await
                .unwrap(),
        );
        let changed = a
            .as_raw()
            .iter()
            .zip(original.as_raw())
            .filter(|(x, y)| x != y)
            .count();
        let (mut off, mut worst) = (0usize, 0u8);
        for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
            if x != y {
                off += 1;
                worst = worst.max(x.abs_diff(*y));
            }
        }
        assert!(changed > 1000, "{method}: the mask changed {changed} bytes");
        assert!(
            off * 200 <= changed && (worst <= 1 || method == "elliptical"),
            "{method}: {off} of {changed} masked bytes differ, worst by {worst}"
        );
    }

    // A JPEG answer is masked and encoded on the device. Its restart
    // markers (DRI) show where it was made; the CPU encoder writes none.
    // Where the CPU masker changed the frame, it holds the masked pixels,
    // not the faces.
    let q = "/api/v1/mask?method=gaussian&format=jpeg&quality=90";
    let cpu_jpeg = cpu
        .post_fixture(q, "group.jpg")
        .await
        .bytes()
        .await
        .unwrap();
    let resp = gpu.post_fixture(q, "group.jpg").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-face-count"], "3");
    let dev_jpeg = resp.bytes().await.unwrap();
    let has_dri = |b: &[u8]| b.windows(2).any(|w| w == [0xff, 0xdd]);
    assert!(has_dri(&dev_jpeg), "the device encoded it");
    assert!(!has_dri(&cpu_jpeg), "the CPU encoded it");
    let m = gpu.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("argus_masked_frames_total{")
                && l.contains("encoder=\"device\"")
                && l.contains("format=\"jpeg\"")
                && l.ends_with(" 1")),
        "{m}"
    );
    // Every frame went up once, from its request (3 detections, 5 masks),
    // and the batch letterboxed that copy.
    assert!(
        m.lines()
            .any(|l| l == "argus_device_frame_uploads_total{by=\"request\"} 8"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "argus_device_frame_uploads_total{by=\"batch\"} 0"),
        "{m}"
    );
    let masked = decode(
        &cpu.post_fixture("/api/v1/mask?method=gaussian&format=png", "group.jpg")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    let (dev, host) = (decode(&dev_jpeg), decode(&cpu_jpeg));
    let (mut to_masked, mut to_original, mut n) = (0u64, 0u64, 0u64);
    for (i, (m, o)) in masked.as_raw().iter().zip(original.as_raw()).enumerate() {
        if m.abs_diff(*o) > 8 {
            to_masked += dev.as_raw()[i].abs_diff(*m) as u64;
            to_original += dev.as_raw()[i].abs_diff(*o) as u64;
            n += 1;
        }
    }
    assert!(n > 1000, "the mask changed {n} bytes by more than 8");
    assert!(
        to_masked * 4 < to_original,
        "masked bytes: {} from the masked frame, {} from the original",
        to_masked / n,
        to_original / n
    );
    let mean_diff = dev
        .as_raw()
        .iter()
        .zip(host.as_raw())
        .map(|(a, b)| a.abs_diff(*b) as u64)
        .sum::<u64>() as f64
        / dev.as_raw().len() as f64;
    assert!(
        mean_diff < 1.5,
        "device and CPU JPEGs differ by {mean_diff:.2} on average"
    );
    cpu.stop().await;
    gpu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_server_analyses_smears_like_the_cpu_server() {
    device_smears_match_the_cpu_server(BackendKind::Wgpu, "wgpu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_server_analyses_smears_like_the_cpu_server() {
    device_smears_match_the_cpu_server(BackendKind::Cuda, "cuda").await;
}

/// The smear fixture's reports (`CBC_COUNTS`, `MALARIA_ANY_ANY`,
/// `WBC_DIFFERENTIAL`) from a server on `backend`, with its metrics.
async fn smear_reports(backend: BackendKind) -> (Value, Value, Value, String) {
    let s = start(|c| {
        configure(c);
        c.backend = backend;
    })
    .await;
    setup_org(&s, "clinic-g").await;
    let token = login(&s, "lab@clinic-g.test").await;
    let id = new_study(&s, &token, json!({})).await;
    let (st, v) = upload(&s, &id, "file_name=a.jpg", &token, fixture("smear_cbc.jpg")).await;
    assert_eq!(st, 201, "{v}");
    let tasks = ["CBC_COUNTS", "MALARIA_ANY_ANY", "WBC_DIFFERENTIAL"];
    let body = json!({ "diagnostic_tasks": tasks });
    let (st, v) = call(&s, "POST", &format!("/pbs/{id}/tasks"), &token, Some(body)).await;
    assert_eq!(st, 202, "{v}");
    let done = wait_ready(&s, &id, &token).await;
    assert_eq!(done["results"]["report_status"], "ready", "{done}");
    let mut reports = Vec::new();
    for task in tasks {
        let path = format!("/pbs/{id}/report/{task}");
        let (st, v) = call(&s, "GET", &path, &token, None).await;
        assert_eq!(st, 200, "{v}");
        reports.push(v["results"]["report"][task].clone());
    }
    let metrics = s.metrics().await;
    s.stop().await;
    let [cbc, malaria, diff] = <[Value; 3]>::try_from(reports).unwrap();
    (cbc, malaria, diff, metrics)
}

/// Every clinic model on the device (the three cell UNets, the malaria
/// classifier, the white-cell classifier): the same counts and calls as
/// the CPU server, each white cell's probabilities within 1e-3.
async fn device_smears_match_the_cpu_server(kind: BackendKind, name: &str) {
    let Some(target) = device_or_skip(kind) else {
        return;
    };
    if target.is_software() {
        // Measured on this project's 2-vCPU host: a 320x280 part of this
        // fixture (32 UNet tiles with its measure and count) took 483 s on
        // lavapipe against 2 s on the CPU backend, and the whole photo
        // would take several times that. Each net's parity on such an
        // adapter is checked on its own in `gpu::cells`' tests.
        eprintln!("skipping {name}: a software adapter takes minutes per smear");
        return;
    }
    let (cbc_a, mal_a, diff_a, _) = smear_reports(BackendKind::Cpu).await;
    let (cbc_b, mal_b, diff_b, m) = smear_reports(kind).await;
    for model in ["cbc_unet", "malaria_cnn", "wbc_cnn"] {
        assert!(
            ran_on(&m, model, name),
            "{model} did not run on {name}: {m}"
        );
        assert!(!ran_on(&m, model, "cpu"), "{model} ran on the CPU: {m}");
    }

    let (fa, fb) = (&cbc_a["files"][0], &cbc_b["files"][0]);
    for k in ["rbc", "wbc", "platelets"] {
        assert_eq!(fa[k], fb[k], "{k}: {fa} against {fb}");
    }
    assert_eq!(fa["wbc"], 1, "{fa}");
    for k in ["positive_count", "negative_count"] {
        assert_eq!(mal_a[k], mal_b[k], "{k}: {mal_a} against {mal_b}");
    }
    let cells = |d: &Value| d["files"][0]["cells"].as_array().unwrap().clone();
    let (ca, cb) = (cells(&diff_a), cells(&diff_b));
    assert_eq!(ca.len(), 1, "{diff_a}");
    assert_eq!(ca.len(), cb.len(), "{diff_a} against {diff_b}");
    for (x, y) in ca.iter().zip(&cb) {
        assert_eq!(x["class"], y["class"], "{x} against {y}");
        let (pa, pb) = (
            x["probabilities"].as_object().unwrap(),
            y["probabilities"].as_object().unwrap(),
        );
        assert_eq!(pa.len(), 9, "{x}");
        for (k, v) in pa {
            let d = (v.as_f64().unwrap() - pb[k].as_f64().unwrap()).abs();
            assert!(d < 1e-3, "{k}: {x} against {y}");
        }
    }
    assert_eq!(diff_a["classes"], diff_b["classes"]);
}
