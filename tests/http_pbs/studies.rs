//! A study end to end with the real models: counts, malaria, revisions.

use crate::common::pbs::{call, configure, login, new_study, setup_org, upload, wait_ready};
use crate::common::{fixture, json, start};
use serde_json::json;
use sha2::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_flow_with_counts_malaria_and_revisions() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    // Raw passwords are refused.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"user": "lab@clinic-a.test", "pass_hash": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"user": "lab@clinic-a.test", "pass_hash": hex::encode(sha2::Sha256::digest(b"wrong"))}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let id = new_study(&s, &token, json!({"patient_proxy_id": "PPID12345"})).await;
    let smear = fixture("smear_cbc_crop.png");
    let (st, v) = upload(&s, &id, "file_name=crop.png", &token, smear.clone()).await;
    assert_eq!(st, 201, "{v}");
    let fid = v["results"]["file_id"].as_str().unwrap().to_string();
    let want = format!("sha224-i-{}", hex::encode(sha2::Sha224::digest(&smear)));
    assert_eq!(fid, want);
    // Idempotent by content: the reference's 201 again, nothing added.
    let (st, v) = upload(&s, &id, "content_type=image/png", &token, smear.clone()).await;
    assert_eq!(
        (st, v["results"]["file_id"].as_str().unwrap()),
        (201, fid.as_str())
    );
    assert_eq!(v["results"]["duplicate"], true, "{v}");
    // A generic content_type leaves the type to file_name.
    let q = "content_type=application/octet-stream&file_name=again.png";
    let (st, v) = upload(&s, &id, q, &token, smear.clone()).await;
    assert_eq!(
        (st, v["results"]["duplicate"].clone()),
        (201, json!(true)),
        "{v}"
    );
    let (st, v) = upload(
        &s,
        &id,
        "content_type=application/octet-stream",
        &token,
        smear.clone(),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    // The reference's Go example posts the file to the study's own path.
    let r = s
        .client
        .post(s.url(&format!("/pbs/{id}?file_name=full.jpg")))
        .header("Authorization", &token)
        .body(fixture("smear_cbc.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
    assert_eq!(v["results"]["files"], 2, "{v}");

    // Search by tag.
    let (st, v) = call(
        &s,
        "GET",
        "/pbs?tag.patient_proxy_id=PPID12345",
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["results"]["pbs_studies"][0]["pbs_study_id"], id.as_str());
    let (_, v) = call(&s, "GET", "/pbs?tag.patient_proxy_id=other", &token, None).await;
    assert_eq!(v["results"]["count"], 0);

    // Unknown task: 400 naming the known ones.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["PBS_V2"]})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("MALARIA_ANY_ANY"));
    let (st, _) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": "http://example.com/x"})),
    )
    .await;
    assert_eq!(st, 400, "plain-HTTP callbacks are refused");

    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        // The reference's own example asks for "pbs_v1": every task.
        Some(json!({"diagnostic_tasks": ["pbs_v1"]})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        v["results"]["tasks"],
        json!(["MALARIA_ANY_ANY", "CBC_COUNTS", "WBC_DIFFERENTIAL"]),
        "{v}"
    );
    // Frozen: no more uploads.
    let (st, _) = upload(&s, &id, "file_name=late.jpg", &token, fixture("coffee.jpg")).await;
    assert_eq!(st, 409);
    // Its reports are not ready yet, and the user is told so, not that the
    // study cannot be changed.
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert!(
        v["user_message"]
            .as_str()
            .is_some_and(|m| m.contains("not ready")),
        "{v}"
    );
    let done = wait_ready(&s, &id, &token).await;
    assert_eq!(done["results"]["report_status"], "ready", "{done}");
    assert_eq!(done["results"]["progress"], 1.0);

    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let cbc = &v["results"]["report"]["CBC_COUNTS"];
    assert_eq!(cbc["files"].as_array().unwrap().len(), 2);
    let full = cbc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file_id"] != fid.as_str())
        .unwrap();
    // smear_cbc.jpg, counted by eye: ~75 red cells (whole or cut by the
    // border, many touching), one neutrophil, about 6 platelets. The
    // platelets are smaller and paler than BCCD's, and the platelet net
    // finds 1-3 of them depending on the measured scale (1 at 104 px, 2 at
    // 95-101 px; models/cbc/MODEL_CARD.md, the fixture's paragraph under
    // "Scale from the photo", and "Limits"): at least one.
    let rbc = full["rbc"].as_u64().unwrap();
    assert!((45..=110).contains(&rbc), "red cells {rbc}: {full}");
    assert_eq!(full["wbc"], 1, "{full}");
    let plt = full["platelets"].as_u64().unwrap();
    assert!((1..=12).contains(&plt), "platelets {plt}: {full}");
    let total: u64 = cbc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rbc"].as_u64().unwrap())
        .sum();
    assert_eq!(cbc["rbc"].as_u64().unwrap(), total);

    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/MALARIA_ANY_ANY"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let m = &v["results"]["report"]["MALARIA_ANY_ANY"];
    let (pos, neg) = (
        m["positive_count"].as_u64().unwrap(),
        m["negative_count"].as_u64().unwrap(),
    );
    // Whole cells are classified; those cut by a photo's edge are not.
    assert!(
        pos + neg <= total && pos + neg >= total / 3,
        "{pos}+{neg} of {total} classified"
    );
    // A normal smear: at most 2% positive (and at most one cell here).
    assert!(
        pos <= (total / 50).max(1),
        "{pos} of {total} positive on a normal smear"
    );

    // Asking again makes a new revision; version 1 stays readable.
    let (st, _) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"]})),
    )
    .await;
    assert_eq!(st, 202);
    wait_ready(&s, &id, &token).await;
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        (
            v["results"]["version"].clone(),
            v["results"]["versions"].clone()
        ),
        (json!(2), json!(2))
    );
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS?version=1"),
        &token,
        None,
    )
    .await;
    assert_eq!((st, v["results"]["version"].clone()), (200, json!(1)));
    let (st, _) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS?version=3"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 404);
    // A query that does not parse is a 400, as the API document says.
    for q in ["version=abc", "version=1.0", "versoin=1"] {
        let (st, v) = call(
            &s,
            "GET",
            &format!("/pbs/{id}/report/CBC_COUNTS?{q}"),
            &token,
            None,
        )
        .await;
        assert_eq!(st, 400, "{q}: {v}");
    }
    // Fields no client sends by intent are refused, not dropped; tags
    // that cannot be kept exactly too.
    for body in [
        json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback": "https://x.example/"}),
        json!({"diagnostic_task": ["CBC_COUNTS"]}),
    ] {
        let (st, v) = call(&s, "POST", &format!("/pbs/{id}/tasks"), &token, Some(body)).await;
        assert_eq!(st, 400, "{v}");
    }
    for body in [
        json!({"tag": {"a": "b"}}),
        json!({"tags": {"n": 123456789012345678901234567890u128 as f64}}),
        json!({"tags": {"a\u{0}b": "x"}}),
    ] {
        let (st, v) = call(&s, "POST", "/pbs", &token, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    // The kept thresholds read as configured, not as f32 noise.
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    let text = v.to_string();
    assert!(text.contains("\"min_confidence\":0.7"), "{text}");

    // Heartbeat needs no auth.
    let v = json(s.client.get(s.url("/heartbeat")).send().await.unwrap()).await;
    assert!(
        v["heartbeat"].as_str().unwrap().len() == 20 && v["request_timestamp"].as_u64().is_some()
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("argus_pbs_studies_total{status=\"ready\"} 2"),
        "{metrics}"
    );
    // Exported at 0 from the start: the count must have moved.
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("argus_cells_counted_total{kind=\"rbc\"} ") && !l.ends_with(" 0")));
    s.stop().await;
}
