//! Debian's chromium, headless, driven over the DevTools protocol
//! (chromiumoxide) for the console's browser tests; screenshots go to
//! `target/test-artifacts/console/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures_util::StreamExt;
use serde_json::Value;

use super::ROOT;

/// The browser binary: `$ARGUS_CHROMIUM`, else Debian's or Chrome's.
pub fn chromium() -> Option<PathBuf> {
    std::env::var_os("ARGUS_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.exists())
}

/// A running headless browser with its own empty profile.
pub struct Chromium {
    pub browser: Browser,
    events: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Start one with a `width`×`height` window; `None`, said on stderr,
    /// where no browser is installed (the caller skips).
    pub async fn launch(width: u32, height: u32) -> Option<Self> {
        let Some(exe) = chromium() else {
            eprintln!("skipped: no chromium (apt-get install chromium, or set ARGUS_CHROMIUM)");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        // The flags keep it off the network (this machine has none) and
        // out of /dev/shm, which containers keep small.
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(width, height)
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Some(Self {
            browser,
            events,
            _profile: profile,
        })
    }

    pub async fn close(mut self) {
        self.browser.close().await.unwrap();
        let _ = self.browser.wait().await;
        self.events.abort();
    }
}

/// The server's base URL as the browser must use it: `localhost`, since
/// the browser keeps the console's Secure cookies on plain HTTP only there.
pub fn browser_base(base: &str) -> String {
    base.replace("127.0.0.1", "localhost")
}

pub fn artefacts() -> PathBuf {
    let dir = Path::new(ROOT).join("target/test-artifacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A full-page PNG under [`artefacts`].
pub async fn shot(page: &Page, name: &str) {
    let path = artefacts().join(name);
    page.save_screenshot(
        ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build(),
        &path,
    )
    .await
    .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
}

/// The value of a JavaScript expression (not a function: chromiumoxide
/// calls anything that looks like one).
pub async fn js(page: &Page, expr: &str) -> Value {
    page.evaluate(expr)
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .into_value()
        .unwrap_or(Value::Null)
}

/// Wait up to 60 s until `expr` is true in the page (a navigation may be
/// under way); on timeout, a screenshot `timeout-<what>.png` and the page.
pub async fn until(page: &Page, expr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(v) = page.evaluate(expr).await {
            if v.into_value::<bool>().unwrap_or(false) {
                return;
            }
        }
        if Instant::now() > deadline {
            let name: String = what
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            shot(page, &format!("timeout-{name}.png")).await;
            let html = page.content().await.unwrap_or_default();
            let url = page.url().await.ok().flatten().unwrap_or_default();
            panic!("timed out waiting for {what} at {url}:\n{html}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Click into a field and type `text`, as a user would.
pub async fn fill(page: &Page, selector: &str, text: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap()
        .type_str(text)
        .await
        .unwrap();
}

pub async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The path the page is on.
pub async fn at(page: &Page) -> String {
    js(page, "location.pathname")
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// On the sign-in page the console sent `page` to: sign in as `user`.
pub async fn sign_in(page: &Page, user: &str, password: &str) {
    until(
        page,
        "location.pathname === '/console/login' && !!document.getElementById('sign-in')",
        "the sign-in page",
    )
    .await;
    fill(page, "#username", user).await;
    fill(page, "#password", password).await;
    click(page, "#sign-in").await;
}
