//! Bad input, tenant isolation and tokens, and the dataset webhook.

use crate::client::*;
use crate::common::receiver::receiver;
use crate::common::{fixture, json, start, start_in};
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

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
    // An image's name holds no NUL either (a subject's is checked below).
    let b64 = base64::engine::general_purpose::STANDARD.encode(selfie(0));
    let (st, v) = call(
        &s,
        "POST",
        &image_path(&t, &sid, &bid),
        &t.token,
        Some(json!({"side_id": 1, "b64data": b64, "name": "front\u{0}.jpg"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["name"][0], "Null characters are not allowed.", "{v}");
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
    // Subjects (trying the API found each of these taken, 2026-12-07): a
    // number past u32 is not wrapped into a sex, a birth date is not in the
    // future, a name holds no NUL.
    let subjects = format!(
        "/api/v1/companies/{}/datasets/{}/subjects/",
        t.company, t.dataset
    );
    for (body, field) in [
        (
            json!({"name": "s", "biological_sex": 4294967297u64}),
            "biological_sex",
        ),
        (
            json!({"name": "s", "birth_date": "2999-01-01"}),
            "birth_date",
        ),
        (json!({"name": "a\u{0}b"}), "name"),
    ] {
        let (st, v) = call(&s, "POST", &subjects, &t.token, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v[field].is_array(), "{body}: {v}");
    }
    // History dates: a date, an RFC 3339 time or a naive ISO 8601 one; not
    // a date with anything else after it.
    let history = format!("{subjects}{sid}/all_results/");
    for (q, want) in [
        ("2026-11-01", 200),
        ("2026-11-01T10:00:00Z", 200),
        ("2026-11-01T10:00:00", 200),
        ("2026-11-01%2010:00:00", 200),
        ("2026-11-01T10:00%2B02:00", 200),
        ("2026-11-01garbage", 400),
    ] {
        let (st, v) = call(
            &s,
            "GET",
            &format!("{history}?date_from={q}"),
            &t.token,
            None,
        )
        .await;
        assert_eq!(st, want, "{q}: {v}");
    }
    // A token in the URL is taken for v1's results links, not v3's.
    let r = s
        .client
        .get(s.url(&format!(
            "/api/v3/companies/{}/batches/{bid}/results/?token={}",
            t.company, t.token
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
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
    // A login may be an HTML form, as the reference's parsers take it
    // (Python's `requests.post(url, data=...)`); a field twice is refused.
    let form = |fields: &'static [(&'static str, &'static str)]| {
        s.client.post(s.url("/api/v1/login/")).form(fields).send()
    };
    let r = form(&[
        ("username", "owner@clinic-b.test"),
        ("password", "correct horse battery"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let r = form(&[
        ("username", "owner@clinic-b.test"),
        ("password", "correct horse battery"),
        ("password", "another"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("more than once"),
        "{v}"
    );
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
