//! The daemon's control socket (`state_dir/argusd.sock`, owner-only): one
//! JSON `manage::Command` per connection, one JSON answer back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::manage::{execute_audited, Command};
use crate::store::Store;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("argusd.sock")
}

/// Serve management commands until the task is dropped.
pub fn start(
    state_dir: &Path,
    store: Arc<Store>,
    audit: Arc<crate::audit::AuditLog>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(state_dir);
    // We hold the sled lock, so any socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (store, audit) = (store.clone(), audit.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, store, audit).await {
                    tracing::warn!(error = %e, "control socket request failed");
                }
            });
        }
    }))
}

async fn handle(
    stream: UnixStream,
    store: Arc<Store>,
    audit: Arc<crate::audit::AuditLog>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).take(1 << 16).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Command>(&line) {
        Ok(cmd) => {
            match tokio::task::spawn_blocking(move || execute_audited(&store, cmd, &audit)).await {
                Ok(Ok(v)) => serde_json::json!({"ok": true, "result": v}),
                Ok(Err(e)) => serde_json::json!({"ok": false, "error": e}),
                Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
            }
        }
        Err(e) => serde_json::json!({"ok": false, "error": format!("bad command: {e}")}),
    };
    w.write_all(format!("{answer}\n").as_bytes()).await?;
    w.shutdown().await
}

/// Send a command to a running daemon; None when no daemon listens there.
pub async fn send(state_dir: &Path, cmd: &Command) -> Option<Result<serde_json::Value, String>> {
    let stream = UnixStream::connect(socket_path(state_dir)).await.ok()?;
    let (r, mut w) = stream.into_split();
    let req = serde_json::to_string(cmd).ok()? + "\n";
    if let Err(e) = w.write_all(req.as_bytes()).await {
        return Some(Err(e.to_string()));
    }
    let mut line = String::new();
    if let Err(e) = BufReader::new(r).read_line(&mut line).await {
        return Some(Err(e.to_string()));
    }
    let v: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("bad answer from the daemon: {e}"))),
    };
    Some(if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].as_str().unwrap_or("failed").to_string())
    })
}

use tokio::io::AsyncReadExt as _;
