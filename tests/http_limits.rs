//! Bad input, rate limits and overload: every refusal is a clear JSON error
//! with the right status, and the daemon keeps serving afterwards.

mod common;

use std::time::Duration;

use argus::imaging::test_animations::png_header;
use common::{fixture, json, start, Server};

fn one_pixel_png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(1, 1, image::Rgb([9, 9, 9]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_daemon_keeps_serving() {
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.limits.max_body_bytes = 2 * 1024 * 1024;
    })
    .await;
    let jpeg = fixture("astronaut.jpg");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("zero bytes", vec![], 400),
        ("truncated jpeg", jpeg[..jpeg.len() / 2].to_vec(), 400),
        (
            "plain text",
            b"this is a text file, not a photo\n".to_vec(),
            415,
        ),
        ("1x1 png", one_pixel_png(), 400),
        ("30000x30000 png header", png_header(30_000, 30_000), 413),
        (
            "gif (not in the accepted list)",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            415,
        ),
        (
            "3 MiB body over a 2 MiB limit",
            vec![0xAB; 3 * 1024 * 1024],
            413,
        ),
    ];
    for path in ["/api/v1/detect", "/api/v1/mask"] {
        for (what, body, want) in &cases {
            let r = s.post_image(path, None, body.clone()).await;
            assert_eq!(r.status().as_u16(), *want, "{path} {what}");
            let v = json(r).await;
            assert!(
                v["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{path} {what}: {v}"
            );
        }
    }
    // Wrong field name, and no multipart at all.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(jpeg.clone()).file_name("a.jpg"),
    );
    let r = s
        .client
        .post(s.url("/api/v1/detect"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(json(r).await["detail"], "Field 'image' is required");
    let r = s
        .client
        .post(s.url("/api/v1/detect"))
        .header("content-type", "image/jpeg")
        .body(jpeg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(json(r).await["detail"]
        .as_str()
        .unwrap()
        .contains("multipart/form-data"));
    // Unknown paths and methods answer in the same shape.
    let r = s.client.get(s.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["detail"], "Not Found");
    let r = s.client.get(s.url("/api/v1/detect")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(json(r).await["detail"], "Method Not Allowed");
    // Still healthy, and still right.
    assert!(s.health_ok().await);
    let v = json(s.post_image("/api/v1/detect", None, jpeg).await).await;
    assert_eq!(v["summary"]["face_count"], 1);
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_per_key_answers_429_with_retry_after() {
    let s = start(|c| {
        c.auth.detect_per_minute = 3;
        c.auth.mask_per_minute = 2;
    })
    .await;
    let (a, b) = (s.new_key("a").await, s.new_key("b").await);
    for _ in 0..3 {
        assert_eq!(
            s.post_image("/api/v1/detect", Some(&a), fixture("coffee.jpg"))
                .await
                .status(),
            200
        );
    }
    let r = s
        .post_image("/api/v1/detect", Some(&a), fixture("coffee.jpg"))
        .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(
        json(r).await["detail"],
        "Rate limit exceeded: 3 per 1 minute"
    );
    // Another key has its own budget; mask has its own limit.
    assert_eq!(
        s.post_image("/api/v1/detect", Some(&b), fixture("coffee.jpg"))
            .await
            .status(),
        200
    );
    for want in [200, 200, 429] {
        assert_eq!(
            s.post_image("/api/v1/mask", Some(&a), fixture("coffee.jpg"))
                .await
                .status(),
            want
        );
    }
    s.stop().await;
}

async fn burst(s: &Server, n: usize) -> Vec<(u16, Option<String>)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, url) = (s.client.clone(), s.url("/api/v1/detect"));
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .multipart(Server::image_form(fixture("group.jpg"), "g.jpg"))
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            (status, retry)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The value of the first line of a Prometheus scrape starting with `name`
/// (its labels included); 0 when there is none.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn full_queue_answers_429_and_full_admission_503() {
    // One image per batch and a queue of one: a burst must overflow it.
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
        c.batch.max_batch_size = 1;
        c.batch.queue_depth = 1;
    })
    .await;
    let results = burst(&s, 12).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let full: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(ok >= 1 && !full.is_empty(), "{results:?}");
    assert!(
        full.iter().all(|r| r.1.is_some()),
        "429 needs Retry-After: {results:?}"
    );
    assert_eq!(ok + full.len(), 12, "only 200 or 429: {results:?}");
    assert!(s.health_ok().await);
    s.stop().await;

    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
        c.limits.max_in_flight = 1;
    })
    .await;
    let results = burst(&s, 8).await;
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(
        !busy.is_empty() && busy.iter().all(|r| r.1.as_deref() == Some("1")),
        "{results:?}"
    );
    assert!(results.iter().any(|r| r.0 == 200), "{results:?}");
    assert!(s.health_ok().await);
    s.stop().await;
}

/// Requests admitted together whose photos are tiled (too large for one
/// pass to see a small face) each add their tiles to a queue the others
/// fill: an admitted request waits for room rather than getting 429 after
/// its upload, decode and whole-photo pass.
#[tokio::test]
async fn admitted_tiled_photos_wait_for_room_in_a_full_queue() {
    // Batches of two into a queue of two: one photo's tiles fill it.
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
        c.batch.max_batch_size = 2;
        c.batch.queue_depth = 2;
    })
    .await;
    let bg = image::load_from_memory(&fixture("coffee.jpg"))
        .unwrap()
        .to_rgb8();
    let big = image::imageops::resize(&bg, 2400, 1800, image::imageops::FilterType::Triangle);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&big)
        .unwrap();
    let jpeg = jpeg.into_inner();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, url, body) = (s.client.clone(), s.url("/api/v1/detect"), jpeg.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .multipart(Server::image_form(body, "big.jpg"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    assert!(
        answers.iter().all(|a| a.0 == 200 || a.0 == 429),
        "{answers:?}"
    );
    let m = s.metrics().await;
    let count = |name: &str| metric(&m, name);
    // A 429 may only come before the upload is decoded: every decoded
    // photo was answered.
    let decoded = count("argus_image_decode_duration_seconds_count");
    assert_eq!(decoded, ok as f64, "{answers:?}");
    assert!(ok >= 2, "{answers:?}");
    let batches = count("argus_batch_size_count{model=\"centerface\"}");
    assert!(
        batches > 2.0 * ok as f64,
        "the photos were not tiled: {batches} batches"
    );
    s.stop().await;
}

#[tokio::test]
async fn requests_whose_client_left_are_dropped_before_inference() {
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
        c.batch.max_batch_size = 1;
        c.batch.queue_depth = 64;
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, url) = (s.client.clone(), s.url("/api/v1/detect"));
        tasks.push(tokio::spawn(async move {
            let _ = c
                .post(url)
                .multipart(Server::image_form(fixture("group.jpg"), "g.jpg"))
                .send()
                .await;
        }));
    }
    // The clients leave once some of their requests wait in the queue (a
    // fixed client timeout left on a loaded machine before any had reached
    // it, and then there was nothing queued to drop).
    let gauge = metric;
    let depth = "argus_batch_queue_depth{model=\"centerface\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gauge(&s.metrics().await, depth) < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two requests were ever queued together"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in &tasks {
        t.abort();
    }
    // Let the backend thread reach the abandoned entries: until the queue
    // is empty, 60 s at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = s.metrics().await;
        if gauge(&m, depth) == 0.0 || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("argus_batch_dropped_total{model=\"centerface\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    let batches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("argus_batch_size_count{model=\"centerface\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "no queued request was dropped:\n{metrics}");
    // Warm-up is not counted; every non-dropped request ran once at most.
    assert!(
        batches + dropped <= 10.0,
        "batches {batches} dropped {dropped}"
    );
    assert!(s.health_ok().await);
    s.stop().await;
}

/// A client that writes its whole upload before reading gets the 413, not
/// a reset connection: the server reads the rest of a refused body
/// (http::linger). Raw TCP, so the write after the refusal is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_read_to_the_end_so_the_client_sees_why() {
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.limits.max_body_bytes = 2 * 1024 * 1024;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let total = 24 * 1024 * 1024;
        let mut body =
            b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n"
                .to_vec();
        body.resize(total, 0);
        let mut t = std::net::TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            t,
            "POST /api/v1/detect HTTP/1.1\r\nHost: argus\r\nConnection: close\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {total}\r\n\r\n"
        )
        .unwrap();
        let (first, rest) = body.split_at(4 * 1024 * 1024);
        t.write_all(first).unwrap();
        // Long enough for the server to refuse: a server that then closed
        // with the body unread would reset this connection.
        std::thread::sleep(std::time::Duration::from_millis(500));
        t.write_all(rest)
            .expect("the rest of the upload is accepted");
        let mut answer = String::new();
        let _ = t.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too large"), "{answer}");
    s.stop().await;
}

/// Over HTTP/2 a refused upload gets the answer that says why, whatever
/// its size, and one connection carries far more refusals than the 1,024
/// locally caused stream resets after which h2 would close it with GOAWAY
/// (http::linger reads refused bodies to the end rather than resetting
/// their streams; BENCHMARKS.md says why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_refusals_are_answered_and_keep_the_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let s = start(|c| c.auth.api_key_enabled = true).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/api/v1/detect", s.base);
    let chunk = axum::body::Bytes::from(vec![0u8; 16 * 1024]);
    let upload = |chunks: usize| {
        let chunk = chunk.clone();
        let body = futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        client
            .post(&url)
            .header("content-type", "multipart/form-data; boundary=x")
            .body(reqwest::Body::wrap_stream(body))
            .send()
    };

    let r = upload(24 * 64).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("API key"));

    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (answered, failed) = (answered.clone(), failed.clone());
        let requests: Vec<_> = (0..100).map(|_| upload(16)).collect();
        tasks.push(tokio::spawn(async move {
            for r in requests {
                match r.await {
                    Ok(r) if r.status() == 401 => answered.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        (
            answered.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        ),
        (1600, 0),
        "every refused upload must get its 401 over the one connection"
    );
    assert!(s.health_ok().await);
    s.stop().await;
}

/// Clients that send headers and a little of their upload, then stall,
/// hold no in-flight slot: with every slot's worth of them connected, a
/// normal request still gets 200; each stalled one gets 408 once the body
/// deadline passes, on a connection then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_do_not_hold_the_slots() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.storage.enabled = false;
        c.limits.max_in_flight = 2;
        c.limits.body_read_timeout_secs = 2;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/detect HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 200000\r\n\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\
             Content-Type: image/jpeg\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&[0xFF; 1024]).await.unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s
        .post_image("/api/v1/detect", None, fixture("astronaut.jpg"))
        .await;
    assert_eq!(r.status(), 200, "a stalled upload held a slot");
    for mut tcp in stalled {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the stalled connection was closed");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("did not arrive within 2 s"), "{text}");
    }
    s.stop().await;
}

/// Peak resident memory of this process (the server runs in it), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A maximum-size PNG (6300x6300, 39.7 MP, under the 40 MP limit) that
/// compresses to little: a decompression bomb within the rules.
fn big_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(6300, 6300, |x, y| {
        image::Rgb([((x / 64) % 2 * 200) as u8, ((y / 64) % 2 * 200) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// 32 maximum-size PNGs at once share one decode memory budget: each is
/// answered (200, or 503 with Retry-After when its share did not come in
/// time), and the process's peak RSS grows by less than the budget plus a
/// decode's slack; an image larger than the whole budget gets 413.
#[tokio::test]
async fn decoded_pixels_in_flight_share_one_memory_budget() {
    const BUDGET: u64 = 1 << 30;
    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.auth.detect_per_minute = 10_000;
        c.storage.enabled = false;
        c.limits.decode_budget_bytes = BUDGET;
        c.limits.decode_wait_ms = 1500;
        // Room for all 32 in the queue: this is the memory budget's test.
        c.batch.queue_depth = 32;
    })
    .await;
    let png = big_png();
    assert!(png.len() < 1 << 20, "{} bytes", png.len());
    // Warm: one request alone, then measure from here.
    let r = s.post_image("/api/v1/detect", None, png.clone()).await;
    assert_eq!(r.status(), 200);
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, body) = (s.client.clone(), s.url("/api/v1/detect"), png.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .multipart(Server::image_form(body, "big.png"))
                    .send()
                    .await
                    .unwrap();
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => assert!(retry, "a 503 without Retry-After"),
            other => panic!("status {other}"),
        }
    }
    let grew = peak_rss().saturating_sub(before);
    eprintln!(
        "32 x 6300x6300 PNG: {ok} answered 200, peak RSS grew {} MB",
        grew >> 20
    );
    assert!(ok >= 2, "only {ok} of 32 were served");
    assert!(
        grew < BUDGET + (300 << 20),
        "peak RSS grew {} MB",
        grew >> 20
    );
    s.stop().await;

    let s = start(|c| {
        c.auth.api_key_enabled = false;
        c.limits.decode_budget_bytes = 256 << 20;
    })
    .await;
    let r = s.post_image("/api/v1/detect", None, png).await;
    assert_eq!(r.status(), 413);
    let v = json(r).await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("decode memory budget"),
        "{v}"
    );
    s.stop().await;
}

/// Every family's bodies have the deadline, not only the face uploads: a
/// login (skin, clinic, console) or JSON body that stalls part way is
/// answered 408 in the family's JSON shape once `body_read_timeout_secs`
/// pass, and the connection is closed (issue 18, item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_time_out_on_every_family() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| {
        c.storage.enabled = false;
        c.limits.body_read_timeout_secs = 2;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let cases = [
        ("/api/v1/login/", "application/json", "{\"username\": \"a"),
        ("/auth/login", "application/json", "{\"email\": \"a"),
        (
            "/console/login",
            "application/x-www-form-urlencoded",
            "username=admin&pass",
        ),
    ];
    let mut stalled = Vec::new();
    for (path, ctype, start) in cases {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\n\
             Content-Length: 100000\r\n\r\n{start}"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        stalled.push((path, tcp));
    }
    let began = std::time::Instant::now();
    for (path, mut tcp) in stalled {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "{path}: the stalled connection was not closed"
        );
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.contains("did not arrive within 2 s"), "{path}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(
            serde_json::from_str::<serde_json::Value>(body).is_ok(),
            "{path}: not the family's JSON: {text}"
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
    assert!(s.health_ok().await);
    s.stop().await;
}
