//! Load tool: drives a running argusd at several concurrency levels and
//! reports images/s, latency percentiles and the batch sizes the daemon formed.
//!
//!     cargo run --release --example load -- --url http://127.0.0.1:8443 --key xyl_... \
//!         --image tests/fixtures/group.jpg --concurrency 1,8,32 --requests 200
//!
//! Each level stops after --requests answers or --max-seconds, whichever
//! comes first. `--resize 1280x720` stretches the image to that size and
//! re-encodes it as JPEG (quality 90) first, for the masked-frames figure:
//!
//!     ... --endpoint mask --image tests/fixtures/group.jpg --resize 1280x720
//!
//! Batch sizes come from the daemon's argus_batch_size
//! histogram, read from /metrics before and after each level. Only loopback
//! targets are accepted unless --allow-remote is given.

use std::time::{Duration, Instant};

struct Args {
    url: String,
    key: Option<String>,
    image: String,
    endpoint: String,
    resize: Option<(u32, u32)>,
    levels: Vec<usize>,
    requests: usize,
    max_seconds: u64,
    allow_remote: bool,
}

fn parse() -> Args {
    let mut a = Args {
        url: "https://127.0.0.1:8443".into(),
        key: std::env::var("ARGUS_KEY").ok(),
        image: "tests/fixtures/group.jpg".into(),
        endpoint: "detect".into(),
        resize: None,
        levels: vec![1, 8, 32],
        requests: 200,
        max_seconds: 120,
        allow_remote: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{f} needs a value"));
        match f.as_str() {
            "--url" => a.url = v(),
            "--key" => a.key = Some(v()),
            "--image" => a.image = v(),
            "--endpoint" => a.endpoint = v(),
            "--resize" => {
                let s = v();
                let (w, h) = s.split_once('x').expect("--resize WxH");
                a.resize = Some((w.parse().expect("width"), h.parse().expect("height")));
            }
            "--concurrency" => {
                a.levels = v()
                    .split(',')
                    .map(|s| s.parse().expect("concurrency"))
                    .collect()
            }
            "--requests" => a.requests = v().parse().expect("requests"),
            "--max-seconds" => a.max_seconds = v().parse().expect("max-seconds"),
            "--allow-remote" => a.allow_remote = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// (upper bound, cumulative count) of argus_batch_size buckets.
async fn batch_hist(c: &reqwest::Client, url: &str) -> Vec<(f64, f64)> {
    let text = match c.get(format!("{url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return vec![],
    };
    text.lines()
        .filter(|l| l.starts_with("argus_batch_size_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                n,
            ))
        })
        .collect()
}

/// Whether the URL's host is localhost or a loopback address (v4 or v6).
fn is_loopback(url: &str) -> bool {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = parse();
    if !a.allow_remote && !is_loopback(&a.url) {
        eprintln!(
            "refusing non-loopback target {} (pass --allow-remote to load another host you own)",
            a.url
        );
        std::process::exit(2);
    }
    let mut bytes = std::fs::read(&a.image).expect("image file");
    if let Some((w, h)) = a.resize {
        let img = image::load_from_memory(&bytes).expect("decodable image");
        let img = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
        let mut out = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img.into_rgb8())
            .expect("JPEG encode");
        bytes = out.into_inner();
    }
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    println!(
        "target {} /api/v1/{}, image {}{} ({} bytes)",
        a.url,
        a.endpoint,
        a.image,
        a.resize
            .map(|(w, h)| format!(" resized to {w}x{h}"))
            .unwrap_or_default(),
        bytes.len()
    );
    println!(
        "{:>5} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>10}  batch sizes (size:count)",
        "conc", "ok", "err", "images/s", "p50 ms", "p90 ms", "p99 ms", "mean batch"
    );
    for &conc in &a.levels {
        let before = batch_hist(&client, &a.url).await;
        let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let (c, url, key, bytes, issued, endpoint, total) = (
                client.clone(),
                a.url.clone(),
                a.key.clone(),
                bytes.clone(),
                issued.clone(),
                a.endpoint.clone(),
                a.requests,
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errs = Vec::new();
                while issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                    && Instant::now() < deadline
                {
                    let form = reqwest::multipart::Form::new().part(
                        "image",
                        reqwest::multipart::Part::bytes(bytes.clone()).file_name("load.jpg"),
                    );
                    let mut rb = c.post(format!("{url}/api/v1/{endpoint}")).multipart(form);
                    if let Some(k) = &key {
                        rb = rb.header("X-API-Key", k);
                    }
                    let t = Instant::now();
                    match rb.send().await {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes().await;
                            if s == 200 {
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                            } else {
                                errs.push(s.to_string());
                            }
                        }
                        Err(e) => errs.push(if e.is_timeout() {
                            "timeout".into()
                        } else {
                            "io".into()
                        }),
                    }
                }
                (lat, errs)
            }));
        }
        let mut lat = Vec::new();
        let mut errs = Vec::new();
        for t in tasks {
            let (l, e) = t.await.unwrap();
            lat.extend(l);
            errs.extend(e);
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let after = batch_hist(&client, &a.url).await;
        // Per-bucket counts of batches formed during this level.
        let mut dist = Vec::new();
        let (mut batches, mut images) = (0.0, 0.0);
        let mut prev = 0.0;
        for (i, (le, n)) in after.iter().enumerate() {
            let was = before.get(i).map(|b| b.1).unwrap_or(0.0);
            let in_bucket = (n - was) - prev;
            prev = n - was;
            if in_bucket > 0.0 && le.is_finite() {
                dist.push(format!("{le}:{in_bucket}"));
                batches += in_bucket;
                images += in_bucket * le;
            }
        }
        let mut err_summary: std::collections::BTreeMap<String, usize> = Default::default();
        for e in &errs {
            *err_summary.entry(e.clone()).or_default() += 1;
        }
        println!(
            "{:>5} {:>6} {:>6} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>10.2}  {}{}",
            conc,
            lat.len(),
            errs.len(),
            lat.len() as f64 / secs,
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            if batches > 0.0 {
                images / batches
            } else {
                f64::NAN
            },
            dist.join(" "),
            if err_summary.is_empty() {
                String::new()
            } else {
                format!("  errors {err_summary:?}")
            }
        );
    }
}
