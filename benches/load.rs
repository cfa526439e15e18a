//! Load tool: drives a running argusd and reports what a client sees.
//!
//! Closed loop (`--concurrency`): that many clients each send a request as
//! soon as the last one is answered; reports images/s, latency percentiles
//! and the batch sizes the daemon formed. This finds the sustained rate.
//!
//!     cargo run --release --example load -- --url https://127.0.0.1:8443 --key xyl_... \
//!         --image tests/fixtures/group.jpg --concurrency 1,8,32 --requests 200
//!
//! Open loop (`--rate`): requests are sent at a fixed rate whether or not
//! earlier ones were answered, as independent clients do; reports goodput
//! (answers with 200 per second), refusals by status and the latency of
//! accepted and of refused requests. Run at 10x the sustained rate to see how
//! the daemon sheds load:
//!
//!     ... --rate 30,300 --max-seconds 30 --pid $(pidof argusd) --stall 70
//!
//! `--stall N` keeps N uploads open for the whole run that send their headers
//! and 1 KiB of body and then nothing (slow or stalled clients), and reports
//! how they were answered. `--pid` samples the daemon's resident memory
//! (VmRSS, from /proc) every 50 ms and reports the peak per level and the
//! process's lifetime peak (VmHWM).
//!
//! `--resize 1280x720` stretches the image to that size and re-encodes it as
//! JPEG (quality 90) first. Batch sizes come from the daemon's
//! argus_batch_size histogram, read from /metrics before and after each level.
//! Only loopback targets are accepted unless --allow-remote is given.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    key: Option<String>,
    image: String,
    endpoint: String,
    resize: Option<(u32, u32)>,
    levels: Vec<usize>,
    rates: Vec<f64>,
    requests: usize,
    max_seconds: u64,
    stall: usize,
    pid: Option<u32>,
    allow_remote: bool,
}

fn parse() -> Args {
    let mut a = Args {
        url: "https://127.0.0.1:8443".into(),
        key: std::env::var("ARGUS_KEY").ok(),
        image: "tests/fixtures/group.jpg".into(),
        endpoint: "detect".into(),
        resize: None,
        levels: vec![],
        rates: vec![],
        requests: 200,
        max_seconds: 120,
        stall: 0,
        pid: None,
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
            "--concurrency" => a.levels = list(&v(), "concurrency"),
            "--rate" => a.rates = list(&v(), "rate"),
            "--requests" => a.requests = v().parse().expect("requests"),
            "--max-seconds" => a.max_seconds = v().parse().expect("max-seconds"),
            "--stall" => a.stall = v().parse().expect("stall"),
            "--pid" => a.pid = Some(v().parse().expect("pid")),
            "--allow-remote" => a.allow_remote = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if a.levels.is_empty() && a.rates.is_empty() {
        a.levels = vec![1, 8, 32];
    }
    a
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Vec<T> {
    s.split(',')
        .map(|x| x.parse().unwrap_or_else(|_| panic!("bad {what} {x}")))
        .collect()
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

/// Batches formed between two readings of the histogram: (mean size, "size:count ...").
fn batch_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> (f64, String) {
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
    let mean = if batches > 0.0 {
        images / batches
    } else {
        f64::NAN
    };
    (mean, dist.join(" "))
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

/// A /proc/PID/status field in kB, as MiB.
fn proc_mib(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Samples VmRSS every 50 ms until dropped; `peak()` is the highest seen, in MiB.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let (peak_kib, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        if let Some(pid) = pid {
            let (p, s) = (peak_kib.clone(), stop.clone());
            tokio::spawn(async move {
                while !s.load(Ordering::Relaxed) {
                    if let Some(m) = proc_mib(pid, "VmRSS:") {
                        p.fetch_max((m * 1024.0) as u64, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        Self { peak_kib, stop }
    }
    fn peak(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one request needs; cheap to clone into a task.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    bytes: &'static [u8],
}

impl Target {
    /// Sends one upload; the status (or "timeout"/"io") and the time to the
    /// whole answer, in ms.
    async fn send(&self) -> (String, f64) {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(self.bytes).file_name("load.jpg"),
        );
        let mut rb = self.client.post(&self.url).multipart(form);
        if let Some(k) = &self.key {
            rb = rb.header("X-API-Key", k);
        }
        let t = Instant::now();
        let outcome = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(body) => {
                        if ![200, 429, 503].contains(&status) {
                            // An answer a valid upload should never get: show what it said.
                            eprintln!("unexpected {status}: {}", String::from_utf8_lossy(&body));
                        }
                        status.to_string()
                    }
                    Err(_) => "io".into(),
                }
            }
            Err(e) if e.is_timeout() => "timeout".into(),
            Err(_) => "io".into(),
        };
        (outcome, t.elapsed().as_secs_f64() * 1e3)
    }
}

fn summarise(outcomes: &[(String, f64)]) -> (Vec<f64>, Vec<f64>, BTreeMap<String, usize>) {
    let (mut ok, mut refused, mut by) = (Vec::new(), Vec::new(), BTreeMap::new());
    for (s, ms) in outcomes {
        *by.entry(s.clone()).or_insert(0) += 1;
        if s == "200" {
            ok.push(*ms);
        } else if s == "429" || s == "503" {
            refused.push(*ms);
        }
    }
    ok.sort_by(f64::total_cmp);
    refused.sort_by(f64::total_cmp);
    (ok, refused, by)
}

async fn closed_loop(t: &Target, a: &Args, conc: usize, metrics: &str) {
    let before = batch_hist(&t.client, metrics).await;
    let rss = RssSampler::start(a.pid);
    let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (t, issued, total) = (t.clone(), issued.clone(), a.requests);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                out.push(t.send().await);
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let (ok, _, by) = summarise(&outcomes);
    let (mean, dist) = batch_delta(&before, &batch_hist(&t.client, metrics).await);
    println!(
        "closed conc {conc:>4}: ok {:>5}  images/s {:>7.1}  p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  mean batch {mean:.2} ({dist})  peak RSS {:.0} MiB  answers {by:?}",
        ok.len(),
        ok.len() as f64 / secs,
        pct(&ok, 0.5),
        pct(&ok, 0.9),
        pct(&ok, 0.99),
        rss.peak(),
    );
}

async fn open_loop(t: &Target, a: &Args, rate: f64, metrics: &str) {
    let before = batch_hist(&t.client, metrics).await;
    let rss = RssSampler::start(a.pid);
    let window = Duration::from_secs(a.max_seconds);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while start.elapsed() < window {
        tick.tick().await;
        let t = t.clone();
        tasks.push(tokio::spawn(async move { t.send().await }));
    }
    let sent = tasks.len();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let drained = start.elapsed().as_secs_f64();
    let (ok, refused, by) = summarise(&outcomes);
    let (mean, _) = batch_delta(&before, &batch_hist(&t.client, metrics).await);
    println!(
        "open rate {rate:>6.1}/s: sent {sent} over {:.0} s (all answered after {drained:.1} s)  goodput {:>6.1}/s  accepted p50 {:>7.1} ms p99 {:>7.1} ms  refused p50 {:>6.1} ms p99 {:>6.1} ms  mean batch {mean:.2}  peak RSS {:.0} MiB  answers {by:?}",
        window.as_secs_f64(),
        ok.len() as f64 / drained,
        pct(&ok, 0.5),
        pct(&ok, 0.99),
        pct(&refused, 0.5),
        pct(&refused, 0.99),
        rss.peak(),
    );
}

/// Starts `n` uploads that send their headers and 1 KiB of a multipart body,
/// then nothing. Each task ends with the daemon's answer (or the error) and
/// the seconds it took.
fn stalled_uploads(t: &Target, n: usize) -> Vec<tokio::task::JoinHandle<(String, f64)>> {
    (0..n)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                let head = b"--stall\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
                let mut first = head;
                first.resize(1024, 0xFF);
                let body = futures_util::stream::iter([Ok::<_, std::io::Error>(first)])
                    .chain(futures_util::stream::pending());
                let mut rb = t
                    .client
                    .post(&t.url)
                    .header("Content-Type", "multipart/form-data; boundary=stall")
                    .body(reqwest::Body::wrap_stream(body));
                if let Some(k) = &t.key {
                    rb = rb.header("X-API-Key", k);
                }
                let start = Instant::now();
                let out = match rb.send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) if e.is_timeout() => "timeout".into(),
                    Err(_) => "closed".into(),
                };
                (out, start.elapsed().as_secs_f64())
            })
        })
        .collect()
}

use futures_util::StreamExt;

// One thread: the tool shares the daemon's CPUs, and a multi-threaded
// runtime would spend them on waking its own workers (measured: about a
// third of its CPU per request at 500 requests/s).
#[tokio::main(flavor = "current_thread")]
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
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Stalled clients get a client of their own, so they never share (and
    // never block) a pooled connection of the measured requests.
    let stall_client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
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
    let target = Target {
        client,
        url: format!("{}/api/v1/{}", a.url, a.endpoint),
        key: a.key.clone(),
        bytes: Vec::leak(bytes),
    };
    let stalled = stalled_uploads(
        &Target {
            client: stall_client,
            ..target.clone()
        },
        a.stall,
    );
    if a.stall > 0 {
        println!("{} stalled uploads open alongside", a.stall);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for &conc in &a.levels {
        closed_loop(&target, &a, conc, &a.url).await;
    }
    for &rate in &a.rates {
        open_loop(&target, &a, rate, &a.url).await;
    }
    if a.stall > 0 {
        let mut by: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for s in stalled {
            if s.is_finished() {
                let (out, secs) = s.await.unwrap();
                let e = by.entry(out).or_insert((0, 0.0));
                e.0 += 1;
                e.1 = e.1.max(secs);
            } else {
                s.abort();
                by.entry("still open".into()).or_insert((0, 0.0)).0 += 1;
            }
        }
        println!("stalled uploads: (answer: count, latest after s) {by:?}");
    }
    if let Some(pid) = a.pid {
        println!(
            "daemon peak RSS over its lifetime (VmHWM): {:.0} MiB",
            proc_mib(pid, "VmHWM:").unwrap_or(f64::NAN)
        );
    }
}
