//! The argusd binary: offline detect/mask, management commands with and
//! without a running daemon, systemd readiness and SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ROOT;

const BIN: &str = env!("CARGO_BIN_EXE_argusd");

fn argusd(state: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(ROOT)
        .env("ARGUS_STATE_DIR", state)
        .env("ARGUS_LOG_FORMAT", "json")
        .env("ARGUS_BACKEND", "cpu")
        .env_remove("ARGUS_CONFIG");
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn detect_and_mask_files_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(argusd(tmp.path()).args([
        "detect",
        "--json",
        "tests/fixtures/group.jpg",
        "tests/fixtures/coffee.jpg",
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The detect API's own answer, plus the file it is about.
    assert_eq!(lines[0]["summary"]["face_count"], 3);
    assert_eq!(lines[0]["detections"].as_array().unwrap().len(), 3);
    assert_eq!(lines[0]["image"]["width"], 1200, "{}", lines[0]);
    assert_eq!(lines[0]["processing"]["model"], "centerface");
    assert_eq!(lines[0]["file"], "tests/fixtures/group.jpg");
    assert_eq!(lines[1]["summary"]["face_count"], 0);
    // A directory holding a.jpg and a.png (same stem) and a nested copy:
    // every output gets a path of its own.
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    std::fs::write(photos.join("a.jpg"), common::fixture("astronaut.jpg")).unwrap();
    std::fs::write(photos.join("a.png"), common::fixture("astronaut.png")).unwrap();
    std::fs::write(photos.join("sub/a.jpg"), common::fixture("astronaut.jpg")).unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let dir = tmp.path().join("out");
    let out = run_ok(
        argusd(tmp.path())
            .args(["mask", "--method", "pixelate", "--format", "png", "--out"])
            .arg(&dir)
            .arg(&photos),
    );
    assert_eq!(out.matches("1 face(s) masked").count(), 3, "{out}");
    for name in ["a.jpg.masked.png", "a.png.masked.png", "sub/a.masked.png"] {
        let img = image::open(dir.join(name)).unwrap();
        assert_eq!(img.width(), 512, "{name}");
    }
    // Flags take the API's ranges; a value outside is refused with the range.
    for (flag, value) in [
        ("--strength", "0"),
        ("--confidence", "5"),
        ("--padding", "3"),
        ("--quality", "101"),
        ("--method", "blur"),
    ] {
        let o = argusd(tmp.path())
            .args(["mask", "tests/fixtures/astronaut.jpg", "--out"])
            .arg(&dir)
            .args([flag, value])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    // Output closed after the first line (`| head -1`): the command ends
    // quietly (SIGPIPE), never with a panic.
    let mut child = argusd(tmp.path())
        .args(["detect", "--json", "tests/fixtures"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"summary\""), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // A bad file is reported, the exit code says so.
    let o = argusd(tmp.path())
        .args(["detect", "Cargo.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Cargo.toml"));
}

/// Start `argusd serve` on an ephemeral port; returns the child and its address.
fn serve(state: &std::path::Path, notify: Option<&std::path::Path>) -> (Child, String) {
    let (child, addr, _) = serve_logged(state, notify);
    (child, addr)
}

/// The daemon's JSON log lines, as they come.
type Log = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// [`serve`], also keeping every log line the daemon writes.
fn serve_logged(state: &std::path::Path, notify: Option<&std::path::Path>) -> (Child, String, Log) {
    let mut c = argusd(state);
    c.args(["serve"])
        .env("ARGUS_LISTEN", "127.0.0.1:0")
        .env("ARGUS_TLS", "false")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    if let Some(n) = notify {
        c.env("NOTIFY_SOCKET", n);
    }
    let mut child = c.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Log::default();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["fields"]["message"] == "argusd ready" {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_string());
                }
                lines.lock().unwrap().push(v);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("daemon became ready");
    (child, addr, log)
}

#[test]
fn management_commands_work_with_and_without_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    // No daemon: the CLI opens the store itself.
    let key1 = run_ok(argusd(tmp.path()).args(["keys", "create", "--name", "offline"]))
        .trim()
        .to_string();
    assert!(key1.starts_with("xyl_"));
    let mut admin = argusd(tmp.path())
        .args(["admin", "create", "--username", "root", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    admin
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-long-password\n")
        .unwrap();
    assert!(admin.wait().unwrap().success());
    // Daemon running: sled is locked, the CLI goes through the control socket.
    let (mut child, addr) = serve(tmp.path(), None);
    let key2 = run_ok(argusd(tmp.path()).args(["keys", "create", "--name", "online"]))
        .trim()
        .to_string();
    let list: serde_json::Value =
        serde_json::from_str(&run_ok(argusd(tmp.path()).args(["keys", "list"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = |key: &str| {
        let key = key.to_string();
        let addr = addr.clone();
        rt.block_on(async move {
            let form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(common::fixture("coffee.jpg")).file_name("c.jpg"),
            );
            reqwest::Client::new()
                .post(format!("http://{addr}/api/v1/detect"))
                .header("X-API-Key", key)
                .multipart(form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(status(&key1), 200);
    assert_eq!(status(&key2), 200);
    run_ok(argusd(tmp.path()).args(["keys", "revoke", &key1[..8]]));
    assert_eq!(
        status(&key1),
        401,
        "revocation through the daemon takes effect at once"
    );
    let bad = argusd(tmp.path())
        .args(["keys", "revoke", "xyl_nothing"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    // After the daemon stopped, its state is there for the offline CLI.
    let list: serde_json::Value =
        serde_json::from_str(&run_ok(argusd(tmp.path()).args(["keys", "list"]))).unwrap();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["is_active"] == false)
            .count(),
        1
    );
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { kill(child.id() as i32, 15) };
}

#[test]
fn notifies_systemd_when_ready_and_drains_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let key = run_ok(argusd(tmp.path()).args(["keys", "create", "--name", "drain"]))
        .trim()
        .to_string();
    let sock_path = tmp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (mut child, addr) = serve(tmp.path(), Some(&sock_path));
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // A request in flight when SIGTERM arrives still completes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr2 = addr.clone();
    let inflight = rt.spawn(async move {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(common::fixture("group.jpg")).file_name("g.jpg"),
        );
        let r = reqwest::Client::new()
            .post(format!("http://{addr2}/api/v1/mask"))
            .header("X-API-Key", key)
            .multipart(form)
            .send()
            .await?;
        let status = r.status().as_u16();
        r.bytes().await.map(|b| (status, b.len()))
    });
    // Signal only once the daemon is provably busy with it: its key was counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&run_ok(argusd(tmp.path()).args(["keys", "list"]))).unwrap();
        if list[0]["request_count"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request never reached the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
    let answered = rt.block_on(inflight).unwrap();
    assert!(
        matches!(answered, Ok((200, n)) if n > 10_000),
        "the in-flight mask request was not completed: {answered:?}"
    );
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(
        !tmp.path().join("argusd.sock").exists(),
        "control socket removed on exit"
    );
}

#[test]
fn bad_configuration_fails_start_up_with_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "listen = \"0.0.0.0:8080\"\n[tls]\nenabled = false\n[detector]\ninput_width = 100\n",
    )
    .unwrap();
    let o = argusd(tmp.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plain HTTP") && err.contains("multiples of 32"),
        "{err}"
    );
    if argus::backend::resolve(argus::backend::BackendKind::Cuda).is_ok() {
        eprintln!("not checking the refusal of --backend cuda: CUDA is available here");
        return;
    }
    let o = argusd(tmp.path())
        .args(["serve", "--backend", "cuda"])
        .env("ARGUS_TLS", "false")
        .env("ARGUS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not available"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Run an `argusd ... users add ... --password-stdin` command with the
/// tests' password on standard input.
fn add_user_from_stdin(dir: &std::path::Path, args: &[&str]) {
    let mut add = argusd(dir);
    add.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = add.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn sigkill(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { kill(child.id() as i32, 9) };
}

/// A PBS analysis reports progress per tile, stops at the next tile on
/// SIGTERM, and finishes after the daemon is started again; a second
/// signal during a slow stop exits at once, without losing the study.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_analysis_stops_promptly_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    add_user_from_stdin(
        tmp.path(),
        &[
            "pbs",
            "users",
            "add",
            "--org",
            "clinic",
            "--user",
            "lab@clinic.test",
            "--password-stdin",
        ],
    );

    let (child, addr, log) = serve_logged(tmp.path(), None);
    // The start-up log says where each family starts and, with no API key
    // or admin yet, the command (this very binary) that makes one.
    {
        let lines = log.lock().unwrap();
        let serving = |family: &str| {
            lines
                .iter()
                .find(|v| v["fields"]["message"] == "serving" && v["fields"]["family"] == family)
                .map(|v| v["fields"]["urls"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        };
        assert!(serving("skin").contains(&format!("http://{addr}/api/v1/login/")));
        assert!(serving("pbs").contains(&format!("http://{addr}/pbs")));
        assert!(serving("faces").contains(&format!("http://{addr}/api/v1/detect")));
        let hint = |start: &str| {
            lines
                .iter()
                .filter_map(|v| v["fields"]["message"].as_str())
                .find(|m| m.starts_with(start))
                .unwrap_or_default()
                .to_string()
        };
        assert!(hint("no API key yet").contains(&format!("{BIN} keys create")));
        assert!(hint("no admin user yet").contains(&format!("{BIN} admin create")));
    }
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"correct horse battery"))
    };
    let login = |http: reqwest::Client, base: String| {
        let hash = hash.clone();
        async move {
            let v: serde_json::Value = http
                .post(format!("{base}/auth/login"))
                .json(&serde_json::json!({"user": "lab@clinic.test", "pass_hash": hash}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["results"]["token"]["HY_APP_AUTH_v1"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let token = login(http.clone(), base.clone()).await;
    let v: serde_json::Value = http
        .post(format!("{base}/pbs"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["results"]["pbs_study_id"].as_str().unwrap().to_string();
    let full = std::fs::read(format!("{ROOT}/tests/fixtures/smear_cbc.jpg")).unwrap();
    let img = image::load_from_memory(&full).unwrap().to_rgb8();
    let mut files = vec![full];
    for (i, x) in [0u32, 300, 600].into_iter().enumerate() {
        let crop = image::imageops::crop_imm(&img, x, 60 * i as u32, 500, 400).to_image();
        let mut out = std::io::Cursor::new(Vec::new());
        crop.write_to(&mut out, image::ImageFormat::Png).unwrap();
        files.push(out.into_inner());
    }
    for (i, f) in files.into_iter().enumerate() {
        let r = http
            .post(format!("{base}/pbs/{id}/files?file_name=f{i}.png"))
            .header("Authorization", &token)
            .body(f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(format!("{base}/pbs/{id}/tasks"))
        .header("Authorization", &token)
        .json(&serde_json::json!({"diagnostic_tasks": ["CBC_COUNTS"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let status = |http: reqwest::Client, base: String, token: String| {
        let id = id.clone();
        async move {
            let v: serde_json::Value = http
                .get(format!("{base}/pbs/{id}/status"))
                .header("Authorization", token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["results"].clone()
        }
    };
    // Progress moves within a file, tile by tile.
    let wait_mid_file = |http: reqwest::Client, base: String, token: String| async move {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let s = status(http.clone(), base.clone(), token.clone()).await;
            let p = s["progress"].as_f64().unwrap();
            let msg = s["progress_message"].as_str().unwrap_or_default();
            if msg.contains("tile") && p > 0.0 {
                assert!(p < 1.0, "stopped mid-study, not after: {s}");
                return;
            }
            assert!(Instant::now() < deadline, "no progress: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_mid_file(http.clone(), base.clone(), token.clone()).await;
    // SIGTERM mid-file: the analysis stops at the next tile, says so, and
    // the daemon exits cleanly within seconds.
    let stopping = Instant::now();
    sigterm(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    let stopped = log
        .lock()
        .unwrap()
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("stopped for shutdown"))
        })
        .cloned()
        .expect("the stop is logged");
    let f = &stopped["fields"];
    assert!(f["tiles_done"].as_u64() < f["tiles"].as_u64(), "{stopped}");

    // Restarted, it resumes. A stop held up by an upload that never ends
    // says what it waits for, and a second signal exits at once (130).
    let key = run_ok(argusd(tmp.path()).args(["keys", "create", "--name", "stall"]));
    let (child, addr, log) = serve_logged(tmp.path(), None);
    let base = format!("http://{addr}");
    let token = login(http.clone(), base.clone()).await;
    wait_mid_file(http.clone(), base.clone(), token.clone()).await;
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n",
        key.trim()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let waiting = loop {
        let said = log.lock().unwrap().iter().find_map(|v| {
            let m = v["fields"]["message"].as_str()?;
            m.starts_with("stopping: still waiting")
                .then(|| v["fields"]["waiting_for"].to_string())
        });
        if let Some(w) = said {
            break w;
        }
        assert!(Instant::now() < deadline, "a slow stop says nothing");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(waiting.contains("HTTP connections"), "{waiting}");
    let second = Instant::now();
    sigterm(&child);
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(5));
    drop(stalled);

    let (child, addr) = serve(tmp.path(), None);
    let base = format!("http://{addr}");
    let token = login(http.clone(), base.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = status(http.clone(), base.clone(), token.clone()).await;
        if s["report_status"] == "ready" {
            break;
        }
        assert_ne!(s["report_status"], "failed", "{s}");
        assert!(
            Instant::now() < deadline,
            "did not finish after restart: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v: serde_json::Value = http
        .get(format!("{base}/pbs/{id}/report/CBC_COUNTS"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["results"]["versions"], 1, "{v}");
    assert_eq!(
        v["results"]["report"]["CBC_COUNTS"]["files"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "every file analysed: {v}"
    );
    sigterm(&child);
    let mut child = child;
    child.wait().unwrap();
}

/// A daemon killed (SIGKILL) while skin images are being analysed
/// analyses the rest after it is started again; none is lost or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skin_analysis_finishes_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    add_user_from_stdin(
        tmp.path(),
        &[
            "skin",
            "users",
            "add",
            "--company",
            "Acme",
            "--email",
            "dev@acme.test",
            "--password-stdin",
        ],
    );

    let (child, addr) = serve(tmp.path(), None);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let login = |http: reqwest::Client, base: String| async move {
        let v: serde_json::Value = http
            .post(format!("{base}/api/v1/login/"))
            .json(&serde_json::json!({"username": "dev@acme.test", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["access_token"].as_str().unwrap().to_string(),
            v["company_id"].as_str().unwrap().to_string(),
        )
    };
    let (token, c) = login(http.clone(), base.clone()).await;
    let post = |http: reqwest::Client, url: String, token: String, body: serde_json::Value| async move {
        let r = http
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json::<serde_json::Value>().await.unwrap()
    };
    let d = post(
        http.clone(),
        format!("{base}/api/v1/companies/{c}/datasets/"),
        token.clone(),
        serde_json::json!({"name": "kiosk", "image_type_id": 1}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        http.clone(),
        format!(
            "{base}/api/v1/companies/{c}/applications/8b5b3acc-480b-4412-8d2c-ebe6ab4384d7/runs/"
        ),
        token.clone(),
        serde_json::json!({"dataset_id": d}),
    )
    .await;
    let s = post(
        http.clone(),
        format!("{base}/api/v1/companies/{c}/datasets/{d}/subjects/"),
        token.clone(),
        serde_json::json!({"name": "s"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let photo = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(common::fixture("skin_lisa1.jpg"))
    };
    let mut images = Vec::new();
    for _ in 0..6 {
        let b = post(
            http.clone(),
            format!("{base}/api/v1/companies/{c}/datasets/{d}/subjects/{s}/batches/"),
            token.clone(),
            serde_json::json!({}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path =
            format!("{base}/api/v1/companies/{c}/datasets/{d}/subjects/{s}/batches/{b}/images/");
        let i = post(
            http.clone(),
            path.clone(),
            token.clone(),
            serde_json::json!({"side_id": 1, "b64data": photo}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        images.push(format!("{path}{i}/"));
    }
    let done = |http: reqwest::Client, token: String, images: Vec<String>| async move {
        let mut n = 0;
        for i in &images {
            let v: serde_json::Value = http
                .get(i)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_ne!(v["status"], "failed", "{v}");
            n += (v["status"] == "done") as usize;
        }
        n
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = done(http.clone(), token.clone(), images.clone()).await;
        if n > 0 {
            assert!(n < images.len(), "killed mid-analysis, not after");
            break;
        }
        assert!(Instant::now() < deadline, "no image analysed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigkill(&child);
    let mut child = child;
    child.wait().unwrap();

    let (child, addr) = serve(tmp.path(), None);
    let base2 = format!("http://{addr}");
    let (token, _) = login(http.clone(), base2.clone()).await;
    let images: Vec<String> = images.iter().map(|i| i.replace(&base, &base2)).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while done(http.clone(), token.clone(), images.clone()).await < images.len() {
        assert!(
            Instant::now() < deadline,
            "not every image analysed after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    let mut child = child;
    child.wait().unwrap();
}
