//! Client-signed tokens and every rejection, users across organisations,
//! password resets, roles, isolation, and an admin's deletion.

use crate::client::*;
use crate::common::pbs::{call, configure, login, setup_org, study_with_a_photo, upload};
use crate::common::{fixture, json, start, ROOT};
use argus::cli::manage::Command;
use argus::families::pbs::manage::PbsCommand;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

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
    crate::common::pbs::add_user(&s, "clinic-b", "lab@shared.test", "user").await;
    crate::common::pbs::add_user(&s, "clinic-a", "lab@shared.test", "user").await;
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
    crate::common::pbs::add_user(&s, "clinic-a", "lab@clinic-a.test", "user").await;
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
    // A misspelt field is named, not dropped (the login's `pass_hash` here
    // was refused for the password it seemed to lack).
    let (st, v) = call(
        &s,
        "POST",
        "/pbs/admin/users",
        &admin,
        Some(json!({"user": "x@clinic-a.test", "role": "user", "pass_hash": "long enough pw"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("pass_hash")),
        "{v}"
    );
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
