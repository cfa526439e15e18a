//! Uploads and their bad inputs, the file limit under parallel uploads,
//! callbacks to a real HTTPS receiver, and a restart mid-study.

use crate::common::pbs::{
    call, configure, login, new_study, setup_org, study_with_a_photo, upload, wait_ready,
};
use crate::common::receiver::receiver;
use crate::common::{fixture, json, start, start_in};
use argus::imaging::test_animations::png_header;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors() {
    let s = start(|c| {
        configure(c);
        c.pbs.max_file_bytes = 2 * 1024 * 1024;
    })
    .await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = new_study(&s, &token, json!({})).await;
    // A photo too small to analyse at any scale the analysis may pick:
    // refused here, not failing the whole study later.
    let small = {
        let img = image::load_from_memory(&fixture("smear_cbc.jpg"))
            .unwrap()
            .to_rgb8();
        let crop = image::imageops::crop_imm(&img, 100, 100, 400, 60).to_image();
        let mut out = std::io::Cursor::new(Vec::new());
        crop.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("", fixture("smear_cbc.jpg"), 400, "file_name"),
        ("file_name=strip.png", small, 400, "at least 75 px"),
        ("file_name=notes.txt", b"hello".to_vec(), 400, "type"),
        ("file_name=empty.jpg", Vec::new(), 400, "empty"),
        (
            "file_name=text.jpg",
            b"this is not an image".to_vec(),
            400,
            "image",
        ),
        (
            "file_name=cut.jpg",
            fixture("smear_cbc.jpg")[..4000].to_vec(),
            400,
            "image",
        ),
        // A well-formed header over `limits.max_pixels`: 413, as the
        // faces family answers it, not "not an image".
        (
            "file_name=bomb.png",
            png_header(8_000, 8_000),
            413,
            "pixels",
        ),
        (
            "file_name=huge.png",
            vec![0u8; 3 * 1024 * 1024],
            413,
            "limit",
        ),
        (
            "file_name=huger.png",
            vec![0u8; 40 * 1024 * 1024],
            413,
            "limit",
        ),
    ];
    for (q, body, want, word) in cases {
        let (st, v) = upload(&s, &id, q, &token, body).await;
        assert_eq!(st, want, "{q}: {v}");
        assert_eq!(v["status"], want);
        assert!(v["error"].as_str().unwrap().contains(word), "{q}: {v}");
    }
    let (st, _) = upload(
        &s,
        "not-a-uuid",
        "file_name=a.png",
        &token,
        fixture("smear_cbc_crop.png"),
    )
    .await;
    assert_eq!(st, 404);
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"]})),
    )
    .await;
    assert_eq!(st, 400, "no files yet: {v}");
    let r = s
        .client
        .post(s.url("/pbs"))
        .header("Authorization", &token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing stored was harmed, and the daemon still answers.
    let (st, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
    assert_eq!((st, v["results"]["files"].clone()), (200, json!(0)));
    assert!(s.health_ok().await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_never_pass_the_file_limit() {
    let s = start(|c| {
        configure(c);
        c.pbs.max_files_per_study = 3;
    })
    .await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = new_study(&s, &token, json!({})).await;
    let img = image::load_from_memory(&fixture("smear_cbc.jpg"))
        .unwrap()
        .to_rgb8();
    let files: Vec<Vec<u8>> = (0..8u32)
        .map(|i| {
            let crop = image::imageops::crop_imm(&img, 40 * i, 30 * i, 120, 100).to_image();
            let mut out = std::io::Cursor::new(Vec::new());
            crop.write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        })
        .collect();
    let sent: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let req = s
                .client
                .post(s.url(&format!("/pbs/{id}/files?file_name=f{i}.png")))
                .header("Authorization", &token)
                .body(f);
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), json(r).await)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in sent {
        answers.push(t.await.unwrap());
    }
    let added = answers.iter().filter(|(st, _)| *st == 201).count();
    assert_eq!(added, 3, "{answers:?}");
    for (st, v) in answers.iter().filter(|(st, _)| *st != 201) {
        assert_eq!(*st, 409, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("holds 3 files"),
            "{v}"
        );
    }
    let (st, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
    assert_eq!((st, v["results"]["files"].clone()), (200, json!(3)));
    // The refused uploads left nothing on disk.
    let kept = std::fs::read_dir(s.dir.join("blobs/pbs")).unwrap().count();
    assert_eq!(kept, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_is_signed_and_retried_after_a_failure() {
    let (port, ca, got) = receiver().await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let state = tmp.path().join("state");
    let s = start_in(&state, |c| {
        configure(c);
        c.pbs.callback_ca_file = ca_path.clone();
        // The receiver is on loopback, which outgoing calls may reach only when allowed.
        c.outbound.allow = vec!["localhost".into()];
    })
    .await;
    let org = setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = study_with_a_photo(&s, &token, json!({})).await;
    let url = format!("https://localhost:{port}/pbs_report_is_ready/{id}/sig123");
    let (st, _) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": url})),
    )
    .await;
    assert_eq!(st, 202);
    wait_ready(&s, &id, &token).await;
    for _ in 0..200 {
        if got.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = got.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one failed attempt, one retry: {calls:?}");
    for (head, body) in &calls {
        assert!(
            head.starts_with(&format!("POST /pbs_report_is_ready/{id}/sig123 ")),
            "{head}"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        // Also under the reference's spelling of the key.
        assert_eq!(v["pbs_stody_id"], v["pbs_study_id"], "{v}");
        assert_eq!(
            (
                v["pbs_study_id"].as_str().unwrap(),
                v["report_status"].as_str().unwrap()
            ),
            (id.as_str(), "ready")
        );
        let sig = head
            .lines()
            .find_map(|l| l.strip_prefix("x-argus-signature: "))
            .expect("signature header");
        let t: u64 = sig
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("t=")
            .unwrap()
            .parse()
            .unwrap();
        let want =
            argus::families::pbs::callbacks::sign(&hex::decode(&org.secret).unwrap(), t, body);
        assert_eq!(sig, want, "the clinic can verify the callback");
    }
    assert!(s
        .metrics()
        .await
        .contains("argus_pbs_callbacks_total{outcome=\"delivered\"} 1"));
    // Asked again with `callback_url: null`: the callback is removed, so
    // the new revision is announced to no one.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": null})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    wait_ready(&s, &id, &token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "no callback after null");
    let m = s.metrics().await;
    assert!(
        m.contains("argus_pbs_callbacks_total{outcome=\"delivered\"} 1"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_resumes_after_a_restart_mid_study() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start_in(tmp.path(), configure).await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = new_study(&s, &token, json!({})).await;
    let full = fixture("smear_cbc.jpg");
    // Four distinct files: the photo and re-encodings of crops of it.
    let img = image::load_from_memory(&full).unwrap().to_rgb8();
    let mut files = vec![full.clone()];
    for (i, x) in [0u32, 300, 600].into_iter().enumerate() {
        let crop = image::imageops::crop_imm(&img, x, 50 * i as u32, 500, 400).to_image();
        let mut out = std::io::Cursor::new(Vec::new());
        crop.write_to(&mut out, image::ImageFormat::Png).unwrap();
        files.push(out.into_inner());
    }
    for (i, f) in files.iter().enumerate() {
        let (st, _) = upload(&s, &id, &format!("file_name=f{i}.png"), &token, f.clone()).await;
        assert_eq!(st, 201);
    }
    let (st, _) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS", "MALARIA_ANY_ANY"]})),
    )
    .await;
    assert_eq!(st, 202);
    // Stop as soon as some, not all, files are done.
    let mut progress = 0.0;
    for _ in 0..2400 {
        let (_, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
        progress = v["results"]["progress"].as_f64().unwrap();
        if progress > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        progress > 0.0 && progress < 1.0,
        "stopped mid-study at {progress}"
    );
    s.stop().await;

    let s = start_in(tmp.path(), configure).await;
    let token = login(&s, "lab@clinic-a.test").await;
    let done = wait_ready(&s, &id, &token).await;
    assert_eq!(done["results"]["report_status"], "ready");
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    let per_file = v["results"]["report"]["CBC_COUNTS"]["files"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(per_file.len(), 4, "every file analysed exactly once: {v}");
    assert_eq!(v["results"]["versions"], 1);
    s.stop().await;
}
