//! Test harness: the real server on 127.0.0.1:0 with a temporary state
//! directory, the real model and the photos in tests/fixtures.
#![allow(dead_code)]

pub mod browser;
pub mod pbs;
pub mod receiver;

use std::path::{Path, PathBuf};

use argus::cli::manage::Command;
use argus::config::Config;
use argus::Running;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/tests/fixtures/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn base_config(state_dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: state_dir.to_path_buf(),
        models_dir: PathBuf::from(format!("{ROOT}/models")),
        log_format: "text".into(),
        // The same backend on every machine; tests/http_backends.rs covers the others.
        backend: argus::backend::BackendKind::Cpu,
        ..Config::default()
    };
    c.tls.enabled = false;
    c
}

pub struct Server {
    pub running: Option<Running>,
    pub base: String,
    pub dir: PathBuf,
    pub client: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
}

pub async fn start(configure: impl FnOnce(&mut Config)) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut s = start_in(&dir, configure).await;
    s._tmp = Some(tmp);
    s
}

/// Start on an existing state dir (for restart tests; the caller keeps the dir).
pub async fn start_in(dir: &Path, configure: impl FnOnce(&mut Config)) -> Server {
    let mut c = base_config(dir);
    configure(&mut c);
    let scheme = if c.tls.enabled { "https" } else { "http" };
    let running = argus::start(c).await.expect("server starts");
    let base = format!("{scheme}://{}", running.addr);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    Server {
        running: Some(running),
        base,
        dir: dir.to_path_buf(),
        client,
        _tmp: None,
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Run a management command the way the CLI does (through the daemon's socket).
    pub async fn manage(&self, cmd: Command) -> serde_json::Value {
        argus::cli::manage(&self.dir, cmd)
            .await
            .expect("management command")
    }

    pub async fn new_key(&self, name: &str) -> String {
        let v = self.manage(Command::KeysCreate { name: name.into() }).await;
        v["key"].as_str().unwrap().to_string()
    }

    pub async fn new_admin(&self, user: &str, pw: &str) {
        self.manage(Command::AdminCreate {
            username: user.into(),
            password: pw.into(),
        })
        .await;
    }

    pub fn image_form(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Form {
        reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        )
    }

    pub async fn post_image(
        &self,
        path: &str,
        key: Option<&str>,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let mut rb = self
            .client
            .post(self.url(path))
            .multipart(Self::image_form(bytes, "upload.jpg"));
        if let Some(k) = key {
            rb = rb.header("X-API-Key", k);
        }
        rb.send().await.unwrap()
    }

    /// POST a fixture to `path_and_query` (no API key).
    pub async fn post_fixture(&self, path_and_query: &str, name: &str) -> reqwest::Response {
        self.client
            .post(self.url(path_and_query))
            .multipart(Self::image_form(fixture(name), name))
            .send()
            .await
            .unwrap()
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn health_ok(&self) -> bool {
        self.client
            .get(self.url("/health"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// Whether Prometheus text `metrics` counts inferences of `model` on
/// `backend` (`argus_inference_duration_seconds_count`).
pub fn ran_on(metrics: &str, model: &str, backend: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("argus_inference_duration_seconds_count{")
            && l.contains(&format!("model=\"{model}\""))
            && l.contains(&format!("backend=\"{backend}\""))
    })
}

pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({status}): {e}: {text}"))
}
