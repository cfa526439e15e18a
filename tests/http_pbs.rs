//! The blood-smear (PBS) family against the real server: login, client-signed
//! JWTs and every rejection, roles, organisation isolation, the study flow
//! with real models, uploads and their bad inputs, callbacks to a real HTTPS
//! receiver on loopback, and a restart in the middle of an analysis.

mod common;

use std::time::Duration;

use argus::cli::manage::Command;
use argus::families::pbs::manage::PbsCommand;
use argus::imaging::test_animations::png_header;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::pbs::{
    call, configure, login, new_study, setup_org, study_with_a_photo, upload, wait_ready, HOST,
};
use common::receiver::receiver;
use common::{fixture, json, start, start_in, ROOT};
use serde_json::{json, Value};
use sha2::Digest;

fn pem_der(path: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/{path}")).unwrap();
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Sign `claims` with a test private key (PKCS#8 PEM in tests/fixtures/jwt).
fn sign(alg: &str, kid: Option<&str>, claims: &Value, key_file: &str) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::signature::RsaKeyPair::from_pkcs8(&pem_der(key_file)).unwrap();
    let enc: &'static dyn ring::signature::RsaEncoding = if alg == "RS384" || alg == "RSA384" {
        &ring::signature::RSA_PKCS1_SHA384
    } else {
        &ring::signature::RSA_PKCS1_SHA256
    };
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        enc,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(org: &str, sub: &str, role: &str) -> Value {
    let t = now();
    json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": org, "sub": sub, "role": role, "aud": [HOST],
        "iat": t, "exp": t + 600,
    })
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_signed_tokens_and_every_rejection() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    setup_org(&s, "clinic-b").await;
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/client.pub.pem")).unwrap();
    let k = s
        .manage(Command::Pbs(PbsCommand::KeyAdd {
            org: "clinic-a".into(),
            pem: pem.clone(),
            kid: Some("scanner-1".into()),
        }))
        .await;
    assert_eq!(k["kid"], "scanner-1");
    let user = "device@clinic-a.test";
    let ok = |c: &Value| sign("RS256", Some("scanner-1"), c, "client_pkcs8.pem");

    let good = claims("clinic-a", user, "device");
    let t = ok(&good);
    let (st, v) = call(&s, "POST", "/pbs", &t, None).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(&s, "POST", "/pbs", &t, None).await;
    assert_eq!(
        (st, v["results"]["claim"].clone()),
        (401, json!("jti")),
        "replay"
    );
    // Bearer prefix accepted; RS384 without kid resolves the org's keys.
    let (st, _) = call(
        &s,
        "POST",
        "/pbs",
        &format!("Bearer {}", ok(&claims("clinic-a", user, "device"))),
        None,
    )
    .await;
    assert_eq!(st, 201);
    // "RSA384" is the reference's name for the same algorithm.
    for alg in ["RS384", "RSA384"] {
        let good = sign(
            alg,
            None,
            &claims("clinic-a", user, "device"),
            "client_pkcs8.pem",
        );
        let (st, v) = call(&s, "POST", "/pbs", &good, None).await;
        assert_eq!(st, 201, "{alg}: {v}");
    }

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let body = URL_SAFE_NO_PAD.encode(claims("clinic-a", user, "device").to_string());
    cases.push((
        "alg none",
        format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
        "alg",
    ));
    let hs = argus::auth::jwt::sign_hs256(&claims("clinic-a", user, "device"), b"guessed");
    cases.push(("HS256 client token", hs, "alg"));
    cases.push((
        "unknown kid",
        sign(
            "RS256",
            Some("nope"),
            &claims("clinic-a", user, "device"),
            "client_pkcs8.pem",
        ),
        "kid",
    ));
    cases.push((
        "RS256 without kid",
        sign(
            "RS256",
            None,
            &claims("clinic-a", user, "device"),
            "client_pkcs8.pem",
        ),
        "kid",
    ));
    cases.push((
        "other key",
        sign(
            "RS256",
            Some("scanner-1"),
            &claims("clinic-a", user, "device"),
            "other_pkcs8.pem",
        ),
        "signature",
    ));
    let mut c = claims("clinic-a", user, "device");
    c["iat"] = json!(now() + 600);
    c["exp"] = json!(now() + 900);
    cases.push(("iat in the future", ok(&c), "iat"));
    let mut c = claims("clinic-a", user, "device");
    c["iat"] = json!(now() - 7200);
    c["exp"] = json!(now() + 86400);
    cases.push(("older than an hour", ok(&c), "iat"));
    let mut c = claims("clinic-a", user, "device");
    c["iat"] = json!(now() - 600);
    c["exp"] = json!(now() - 300);
    cases.push(("expired", ok(&c), "exp"));
    let mut c = claims("clinic-a", user, "device");
    c["aud"] = json!("us.api.hemato.ai");
    cases.push(("wrong aud", ok(&c), "aud"));
    let mut c = claims("clinic-a", user, "device");
    c.as_object_mut().unwrap().remove("jti");
    cases.push(("no jti", ok(&c), "jti"));
    cases.push((
        "unknown sub",
        ok(&claims("clinic-a", "ghost@clinic-a.test", "device")),
        "sub",
    ));
    cases.push((
        "sub of another org",
        ok(&claims("clinic-a", "lab@clinic-b.test", "user")),
        "sub",
    ));
    cases.push((
        "role not the user's",
        ok(&claims("clinic-a", user, "admin")),
        "role",
    ));
    // Key ids are per organisation: clinic-b has no key of that id.
    cases.push((
        "iss not the key's org",
        ok(&claims("clinic-b", "lab@clinic-b.test", "user")),
        "kid",
    ));
    for (name, token, claim) in &cases {
        let (st, v) = call(&s, "POST", "/pbs", token, None).await;
        assert_eq!(st, 401, "{name}: {v}");
        assert_eq!(v["results"]["claim"], *claim, "{name}: {v}");
        // /auth/hello explains the same problem without consuming anything.
        let (st, h) = call(&s, "POST", "/auth/hello", token, None).await;
        assert_eq!(
            (st, h["results"]["valid"].clone()),
            (401, json!(false)),
            "{name}"
        );
        assert_eq!(h["results"]["claim"], *claim, "{name}");
        assert!(
            !h.to_string().contains("BEGIN"),
            "no key material in answers"
        );
    }
    let (st, _) = call(&s, "POST", "/pbs", "", None).await;
    assert_eq!(st, 401);
    // hello on a good token does not use its jti up.
    let t = ok(&claims("clinic-a", user, "device"));
    let (st, h) = call(&s, "POST", "/auth/hello", &t, None).await;
    assert_eq!(
        (st, h["results"]["verified_with"].clone()),
        (200, json!("key scanner-1"))
    );
    let (st, _) = call(&s, "POST", "/pbs", &t, None).await;
    assert_eq!(st, 201);
    // Revocation takes effect at once.
    s.manage(Command::Pbs(PbsCommand::KeyRevoke {
        kid: "scanner-1".into(),
        org: None,
    }))
    .await;
    let (st, v) = call(
        &s,
        "POST",
        "/pbs",
        &ok(&claims("clinic-a", user, "device")),
        None,
    )
    .await;
    assert_eq!((st, v["results"]["claim"].clone()), (401, json!("kid")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_deletes_a_study_and_its_photos() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    setup_org(&s, "clinic-b").await;
    let lab = login(&s, "lab@clinic-a.test").await;
    let admin = login(&s, "admin@clinic-a.test").await;
    let other = login(&s, "admin@clinic-b.test").await;
    let id = study_with_a_photo(&s, &lab, json!({"patient_proxy_id": "P1"})).await;
    let path = format!("/pbs/{id}");
    // A user may not delete; another organisation's admin does not see it.
    assert_eq!(call(&s, "DELETE", &path, &lab, None).await.0, 403);
    assert_eq!(call(&s, "DELETE", &path, &other, None).await.0, 404);
    assert_eq!(
        std::fs::read_dir(s.dir.join("blobs/pbs")).unwrap().count(),
        1
    );
    let (st, v) = call(&s, "DELETE", &path, &admin, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"]["deleted"], true);
    assert_eq!(v["results"]["files"], 1);
    assert_eq!(
        std::fs::read_dir(s.dir.join("blobs/pbs")).unwrap().count(),
        0
    );
    let (st, _) = call(&s, "GET", &format!("{path}/status"), &admin, None).await;
    assert_eq!(st, 404);
    let (_, v) = call(&s, "GET", "/pbs?tag.patient_proxy_id=P1", &admin, None).await;
    assert_eq!(v["results"]["count"], 0);
    assert_eq!(call(&s, "DELETE", &path, &admin, None).await.0, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_name_in_two_organisations_signs_in_to_either() {
    let s = start(configure).await;
    // The same user name and the same password in two organisations.
    common::pbs::add_user(&s, "clinic-b", "lab@shared.test", "user").await;
    common::pbs::add_user(&s, "clinic-a", "lab@shared.test", "user").await;
    let hash = hex::encode(sha2::Sha256::digest(b"correct horse battery"));
    for (org, want) in [
        (None, Some("clinic-a")),
        (Some("clinic-b"), Some("clinic-b")),
        (Some("clinic-a"), Some("clinic-a")),
        (Some("clinic-c"), None),
    ] {
        let mut body = json!({"user": "lab@shared.test", "pass_hash": hash});
        if let Some(o) = org {
            body["org"] = json!(o);
        }
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v = json(r).await;
        match want {
            Some(w) => {
                assert_eq!(st, 202, "{org:?}: {v}");
                assert_eq!(v["results"]["user"]["organisation"], w, "{org:?}: {v}");
            }
            None => assert_eq!(st, 401, "{org:?}: {v}"),
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_the_users_sessions() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let old = login(&s, "lab@clinic-a.test").await;
    let other = login(&s, "admin@clinic-a.test").await;
    let (st, _) = call(&s, "GET", "/pbs", &old, None).await;
    assert_eq!(st, 200);
    // In the same second as the login: sessions follow the password's
    // hash, not the clock.
    common::pbs::add_user(&s, "clinic-a", "lab@clinic-a.test", "user").await;
    let (st, v) = call(&s, "GET", "/pbs", &old, None).await;
    assert_eq!(st, 401, "{v}");
    assert!(v["error"].to_string().contains("log in again"), "{v}");
    // Another user's session is untouched, and the user logs in again.
    assert_eq!(call(&s, "GET", "/pbs", &other, None).await.0, 200);
    let new = login(&s, "lab@clinic-a.test").await;
    assert_eq!(call(&s, "GET", "/pbs", &new, None).await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_organisation_isolation() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    setup_org(&s, "clinic-b").await;
    let device = login(&s, "device@clinic-a.test").await;
    let service = login(&s, "service@clinic-a.test").await;
    let admin = login(&s, "admin@clinic-a.test").await;
    let other = login(&s, "lab@clinic-b.test").await;

    let id = study_with_a_photo(&s, &device, json!({"slide": "S1"})).await;
    let (st, _) = call(&s, "GET", &format!("/pbs/{id}/status"), &device, None).await;
    assert_eq!(st, 200);
    // A device reads the reports of its own studies (none asked for yet
    // here: 404), not of others', and does not search.
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &device,
        None,
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let theirs = study_with_a_photo(&s, &admin, json!({"slide": "S2"})).await;
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{theirs}/report/CBC_COUNTS"),
        &device,
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
    let (st, _) = call(&s, "GET", "/pbs?tag.slide=S1", &device, None).await;
    assert_eq!(st, 403, "device may not search");
    let (st, _) = call(&s, "POST", "/pbs", &service, None).await;
    assert_eq!(st, 403, "service may not create");
    let (st, _) = upload(
        &s,
        &id,
        "file_name=b.jpg",
        &service,
        fixture("smear_cbc.jpg"),
    )
    .await;
    assert_eq!(st, 403, "service may not upload");
    let (st, v) = call(&s, "GET", "/pbs?tag.slide=S1", &service, None).await;
    assert_eq!((st, v["results"]["count"].clone()), (200, json!(1)));
    // Another organisation sees nothing.
    for path in [
        format!("/pbs/{id}/status"),
        format!("/pbs/{id}/report/CBC_COUNTS"),
    ] {
        let (st, _) = call(&s, "GET", &path, &other, None).await;
        assert_eq!(st, 404, "{path}");
    }
    let (st, _) = upload(
        &s,
        &id,
        "file_name=x.png",
        &other,
        fixture("smear_cbc_crop.png"),
    )
    .await;
    assert_eq!(st, 404);
    let (_, v) = call(&s, "GET", "/pbs?tag.slide=S1", &other, None).await;
    assert_eq!(v["results"]["count"], 0);
    // Organisation admin: users and keys of its own organisation only.
    let (st, _) = call(&s, "GET", "/pbs/admin/users", &device, None).await;
    assert_eq!(st, 403);
    let (st, v) = call(&s, "GET", "/pbs/admin/users", &admin, None).await;
    assert_eq!(st, 200);
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["organisation"] == "clinic-a"));
    let (st, v) = call(
        &s,
        "POST",
        "/pbs/admin/users",
        &admin,
        Some(json!({"user": "new@clinic-a.test", "role": "device", "password": "long enough pw"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/client.pub.pem")).unwrap();
    let (st, v) = call(
        &s,
        "POST",
        "/pbs/admin/keys",
        &admin,
        Some(json!({"public_key_pem": pem, "kid": "k-admin"})),
    )
    .await;
    assert_eq!((st, v["results"]["bits"].clone()), (201, json!(2048)));
    let (st, _) = call(&s, "POST", "/pbs/admin/keys", &admin, Some(json!({"public_key_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}))).await;
    assert_eq!(st, 400);
    let (st, _) = call(
        &s,
        "DELETE",
        "/pbs/admin/users/lab@clinic-b.test",
        &admin,
        None,
    )
    .await;
    assert_eq!(st, 404, "another organisation's user");
    // Names are per organisation (issue 18 item 8): clinic-a registering
    // clinic-b's user name and key id gets users and keys of its own,
    // learns nothing of clinic-b's, and clinic-b's keep working.
    let (st, v) = call(
        &s,
        "POST",
        "/pbs/admin/users",
        &admin,
        Some(
            json!({"user": "lab@clinic-b.test", "role": "user", "password": "a different long pw"}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert!(
        !v.to_string().contains("clinic-b\"") && !v.to_string().contains("another"),
        "{v}"
    );
    let org_of = |pw: &'static str| {
        let (s, hash) = (&s, hex::encode(sha2::Sha256::digest(pw.as_bytes())));
        async move {
            let v = json(
                s.client
                    .post(s.url("/auth/login"))
                    .json(&json!({"user": "lab@clinic-b.test", "pass_hash": hash}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            v["results"]["user"]["organisation"].clone()
        }
    };
    assert_eq!(org_of("correct horse battery").await, "clinic-b");
    assert_eq!(org_of("a different long pw").await, "clinic-a");
    let (_, v) = call(&s, "GET", "/pbs/admin/users", &admin, None).await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["organisation"] == "clinic-a"));
    // clinic-b registers the key id clinic-a uses; clinic-a's tokens still verify.
    s.manage(Command::Pbs(PbsCommand::KeyAdd {
        org: "clinic-b".into(),
        pem: std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/client.pub.pem")).unwrap(),
        kid: Some("k-admin".into()),
    }))
    .await;
    let token = sign(
        "RS256",
        Some("k-admin"),
        &claims("clinic-a", "lab@clinic-a.test", "user"),
        "client_pkcs8.pem",
    );
    let (st, v) = call(&s, "POST", "/pbs", &token, None).await;
    assert_eq!(st, 201, "{v}");
    let token = sign(
        "RS256",
        Some("k-admin"),
        &claims("clinic-b", "lab@clinic-b.test", "user"),
        "client_pkcs8.pem",
    );
    let (st, v) = call(&s, "POST", "/pbs", &token, None).await;
    assert_eq!(st, 201, "clinic-b's own key of the same id: {v}");
    s.stop().await;
}

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

/// Every rejection under the family's paths answers in its envelope, axum's
/// own included (a path segment that is not UTF-8, a duplicated query
/// parameter, a wrong method, an unknown path), and is counted in
/// `argus_failures_total{family="pbs"}`.
#[tokio::test]
async fn every_rejection_answers_in_the_envelope() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = new_study(&s, &token, json!({})).await;
    let cases: Vec<(&str, String, u16)> = vec![
        ("GET", "/pbs/%FF%FE/status".into(), 400),
        (
            "POST",
            format!("/pbs/{id}/files?file_name=a.png&file_name=b.png"),
            400,
        ),
        ("POST", format!("/pbs/{id}/status"), 405),
        ("GET", format!("/pbs/{id}/nope"), 404),
        ("GET", "/pbs/admin/nothing/here".into(), 404),
        ("DELETE", "/heartbeat".into(), 405),
        ("GET", "/auth/unknown".into(), 404),
    ];
    for (method, path, want) in &cases {
        let rb = match *method {
            "GET" => s.client.get(s.url(path)),
            "DELETE" => s.client.delete(s.url(path)),
            _ => s
                .client
                .post(s.url(path))
                .body(fixture("smear_cbc_crop.png")),
        };
        let r = rb.header("Authorization", &token).send().await.unwrap();
        let st = r.status().as_u16();
        assert_eq!(st, *want, "{method} {path}");
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let v = json(r).await;
        assert_eq!(v["status"], *want, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {v}"
        );
        assert!(
            v["debug_info"]["version"].is_string(),
            "{method} {path}: {v}"
        );
        assert!(
            v.get("detail").is_none(),
            "not the face family's shape: {v}"
        );
    }
    let r = s
        .client
        .post(s.url(&format!("/pbs/{id}/status")))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key(reqwest::header::ALLOW),
        "405 keeps Allow"
    );
    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [
        ("not_found", 3),
        ("method_not_allowed", 3),
        ("bad_request", 2),
    ] {
        let line = format!("argus_failures_total{{family=\"pbs\",reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line} in:\n{m}");
    }
}

/// Callback URLs that point inside (loopback, cloud metadata, private
/// ranges, in any notation) are refused when tasks are requested, with the
/// reason, and nothing is queued; a host the operator allowed is taken.
#[tokio::test]
async fn internal_callback_urls_are_refused_at_request_time() {
    let s = start(|c| {
        configure(c);
        c.outbound.allow = vec!["10.9.0.0/16".into()];
    })
    .await;
    setup_org(&s, "clinic-a").await;
    let token = login(&s, "lab@clinic-a.test").await;
    let id = study_with_a_photo(&s, &token, json!({})).await;
    for url in [
        "https://127.0.0.1:9999/x",
        "https://169.254.169.254/",
        "https://10.0.0.1/",
        "https://localhost/",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fd00::1]/",
        "https://100.64.1.1/",
        "http://93.184.215.14/",
    ] {
        let (st, v) = call(
            &s,
            "POST",
            &format!("/pbs/{id}/tasks"),
            &token,
            Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": url})),
        )
        .await;
        assert_eq!(st, 400, "{url}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("callback_url refused"), "{url}: {e}");
    }
    let (_, v) = call(&s, "GET", &format!("/pbs/{id}/status"), &token, None).await;
    assert!(
        v["results"]["tasks"].as_array().unwrap().is_empty(),
        "nothing was requested: {v}"
    );
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS"], "callback_url": "https://10.9.3.4/lis"})),
    )
    .await;
    assert_eq!(st, 202, "an allowed network is taken: {v}");
}

/// Time claims: a token not valid before tomorrow is refused naming `nbf`;
/// `exp` of 1e300 or 2^64-1 is refused as out of range (not "expired ...
/// ago"); `/auth/hello` reports a spent `jti` as the real endpoints do.
#[tokio::test]
async fn token_time_claims_and_hello_agree_with_the_endpoints() {
    let s = start(configure).await;
    setup_org(&s, "clinic-a").await;
    let pem = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/jwt/client.pub.pem")).unwrap();
    s.manage(Command::Pbs(PbsCommand::KeyAdd {
        org: "clinic-a".into(),
        pem,
        kid: Some("scanner-1".into()),
    }))
    .await;
    let user = "lab@clinic-a.test";
    let ok = |c: &Value| sign("RS256", Some("scanner-1"), c, "client_pkcs8.pem");
    let mut tomorrow = claims("clinic-a", user, "user");
    tomorrow["nbf"] = json!(now() + 86400);
    let (st, v) = call(&s, "POST", "/pbs", &ok(&tomorrow), None).await;
    assert_eq!(
        (st, v["results"]["claim"].clone()),
        (401, json!("nbf")),
        "{v}"
    );
    for exp in [json!(1e300), json!(u64::MAX)] {
        let mut c = claims("clinic-a", user, "user");
        c["exp"] = exp.clone();
        let (st, v) = call(&s, "POST", "/pbs", &ok(&c), None).await;
        assert_eq!(
            (st, v["results"]["claim"].clone()),
            (401, json!("exp")),
            "{v}"
        );
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("out of range") && !e.contains("ago"),
            "{exp}: {e}"
        );
    }
    let t = ok(&claims("clinic-a", user, "user"));
    let (st, v) = call(&s, "POST", "/auth/hello", &t, None).await;
    assert_eq!(
        (st, v["results"]["valid"].clone()),
        (200, json!(true)),
        "{v}"
    );
    let (st, _) = call(&s, "POST", "/pbs", &t, None).await;
    assert_eq!(st, 201, "hello did not spend the token");
    let (st, v) = call(&s, "POST", "/auth/hello", &t, None).await;
    assert_eq!(
        (st, v["results"]["claim"].clone()),
        (401, json!("jti")),
        "{v}"
    );
}
