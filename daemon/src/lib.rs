//! argus: the library behind `argusd`, a GPU-accelerated edge inference appliance.
//!
//! `main.rs` parses the command line and calls [`cli::run_command`]; `serve`
//! ends in [`run`], which tests drive through [`start`] without a process.
//!
//! Three tiers, dependencies pointing one way (checked by a test,
//! `layering.rs`):
//!
//! - **families** ([`families`]): one folder per API family
//!   (`families/faces`, `families/pbs`, `families/skin`), each with its routes, typed
//!   request and response structs, error shape, store schema and
//!   background work, plugged in through [`app::Family`]; registering one
//!   is a line in `families/mod.rs`. A family never uses another.
//! - **platform**: [`app`] (shared state, the `Family` trait), [`http`]
//!   (listener, router assembly, the one error-kind table), [`auth`]
//!   (credentials and their extractors), [`store`] (sled engine, blobs,
//!   the async wrapper), [`jobs`] (durable job queue), [`webhooks`]
//!   (signed, retried delivery), [`outbound`] (the one outgoing client and
//!   its address policy), [`events`] (broadcast bus), [`offline`] (the
//!   offline commands' files and progress bar), [`config`],
//!   [`metrics`]. It knows no family.
//! - **inference**: [`frame`] (the types that cross the stack), [`batch`]
//!   (micro-batcher), [`detect`] (face detection for every family), [`backend`] (CPU, wgpu, CUDA behind one trait, the
//!   manifest's model list), `gpu` (kernels and shaders), [`model`]
//!   (candle model code), [`imaging`] (decode, resize, mask, encode). It
//!   knows no family, no HTTP and of the platform only `metrics`.
//!
//! [`cli`] (the command line and the control socket) and [`train`] sit on
//! top, beside the families.

/// Inference allocates and frees tensors of many megabytes per frame; glibc
/// returns such blocks to the kernel on every free, so each frame paid for
/// fresh page faults and zeroing. mimalloc keeps them for reuse. Declared in
/// the library so the daemon, tests and benches all run with it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod batch;
pub mod cli;
pub mod config;
pub mod detect;
pub mod events;
pub mod families;
pub mod frame;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod gpu;
pub mod http;
pub mod imaging;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod outbound;
pub mod store;
pub mod train;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use app::App;
use backend::{BackendError, ModelPaths};
use config::{Config, ConfigError};
use metrics::Metrics;
use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state directory {dir}: {source}")]
    Store { dir: String, source: StoreError },
    #[error("models: {0}")]
    Models(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("outgoing calls: {0}")]
    Outbound(String),
    #[error("control socket: {0}")]
    Control(std::io::Error),
}

/// Every model `models/manifest.toml` lists, each checked against its sha256.
pub fn model_paths(config: &Config) -> Result<ModelPaths, String> {
    ModelPaths::from_manifest(&config.resolved_models_dir(), true)
}

/// Resolve the backend and start every family on it (models loaded and
/// warmed up, batchers running), off the async runtime.
async fn start_families(
    app: &Arc<App>,
    models: ModelPaths,
) -> Result<Vec<Arc<dyn app::Family>>, RunError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let target = backend::resolve(app.config.backend)?;
        let ctx = families::Startup {
            app: app.clone(),
            target,
            models,
        };
        families::start_all(&ctx)
    })
    .await
    .map_err(|e| RunError::Models(e.to_string()))?
}

/// A started daemon: listening, model warm, store open.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    /// Background tasks, each with what it is (named while stopping).
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
    control: Option<tokio::task::JoinHandle<()>>,
}

fn open_store(dir: &Path) -> Result<Store, RunError> {
    Store::open(dir).map_err(|source| RunError::Store {
        dir: dir.display().to_string(),
        source,
    })
}

/// Validate the config, open the store, load and warm up the model, bind.
pub async fn start(config: Config) -> Result<Running, RunError> {
    config.validate()?;
    // Only the first call in a process can size the global pool. Its
    // threads are named so an operator (and `top -H`) can tell inference
    // from request handling.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(config.cpu_threads)
        .thread_name(|i| format!("argus-infer-{i}"))
        .build_global();
    tracing::info!(
        kernels = %crate::model::simd::best(),
        threads = rayon::current_num_threads(),
        "CPU inference kernels"
    );
    let state_dir = config.state_dir.clone();
    let store = {
        let dir = state_dir.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || open_store(&dir))
                .await
                .map_err(|e| RunError::Models(e.to_string()))??,
        )
    };
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            match store.run_cleanup() {
                Ok((done, left)) if done + left > 0 => {
                    tracing::info!(done, left, "blob cleanup at start-up")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "blob cleanup at start-up failed"),
            }
            let _ = store.purge_sessions(store::unix_now());
        })
        .await
        .map_err(|e| RunError::Models(e.to_string()))?;
    }
    let metrics = Arc::new(Metrics::new());
    let models = model_paths(&config).map_err(RunError::Models)?;
    let signing_key = store
        .secret("blob_signing_key")
        .map_err(|source| RunError::Store {
            dir: state_dir.display().to_string(),
            source,
        })?;
    let webhooks = {
        let policy =
            Arc::new(outbound::Policy::new(&config.outbound.allow).map_err(RunError::Outbound)?);
        let client = outbound::client(
            policy.clone(),
            Some(config.outbound_ca_file()),
            config.outbound_timeout(),
        )
        .map_err(RunError::Outbound)?;
        Arc::new(
            webhooks::Webhooks::new(store.clone(), policy, client, metrics.clone()).map_err(
                |source| RunError::Store {
                    dir: state_dir.display().to_string(),
                    source,
                },
            )?,
        )
    };
    let app = Arc::new(App::new(
        config.clone(),
        store.clone(),
        metrics.clone(),
        webhooks.clone(),
        signing_key,
    ));
    let families = start_families(&app, models).await?;
    app.set_families(families);
    match listen(app.clone(), store, webhooks).await {
        Ok(r) => Ok(r),
        Err(e) => {
            // The families hold the App: let go of them, and stop their
            // batchers, so the store's lock and the device are released.
            let families = app.take_families();
            let _ =
                tokio::task::spawn_blocking(move || families.iter().for_each(|f| f.stop())).await;
            Err(e)
        }
    }
}

/// Say where the API is and, on a fresh appliance, the commands that make
/// its first API key and admin user.
fn first_steps(app: &App, addr: SocketAddr) {
    let scheme = if app.config.tls.enabled {
        "https"
    } else {
        "http"
    };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let base = format!("{scheme}://{host}:{}", addr.port());
    tracing::info!(
        health = %format!("{base}/health"),
        metrics = %format!("{base}/metrics"),
        "serving"
    );
    for family in app.families() {
        let urls: Vec<String> = family
            .entry_points()
            .iter()
            .map(|(what, path)| format!("{what} {base}{path}"))
            .collect();
        tracing::info!(family = family.name(), urls = %urls.join(", "), "serving");
    }
    let dir = app.config.state_dir.display();
    // The command as this very binary: `argusd` is not on the PATH of a
    // checkout that ran `cargo run`.
    let argusd = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "argusd".into());
    let no_keys = app
        .store
        .list_keys(1, 1)
        .map(|(_, n)| n == 0)
        .unwrap_or(false);
    if no_keys && app.config.auth.api_key_enabled {
        tracing::info!(
            "no API key yet: create one with `ARGUS_STATE_DIR={dir} {argusd} keys create --name NAME`"
        );
    }
    if app.store.admin_count() == 0 {
        tracing::info!(
            "no admin user yet: create one with `echo 'a-long-password' | ARGUS_STATE_DIR={dir} {argusd} admin create --username admin --password-stdin`"
        );
    }
}

/// Bind the listeners and start the background work of a started `app`.
async fn listen(
    app: Arc<App>,
    store: Arc<Store>,
    webhooks: Arc<webhooks::Webhooks>,
) -> Result<Running, RunError> {
    let config = &app.config;
    let state_dir = config.state_dir.clone();
    let router = http::router(app.clone());

    let tls = if config.tls.enabled {
        Some(tokio_rustls::TlsAcceptor::from(http::tls::server_config(
            &config.tls,
            &state_dir,
            config.listen,
        )?))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let mut tasks = vec![(
        "HTTP connections".to_string(),
        tokio::spawn(http::serve(listener, tls, router, rx.clone(), grace)),
    )];
    tasks.push((
        "webhook deliveries".into(),
        tokio::spawn(webhooks.run(rx.clone())),
    ));
    for family in app.families() {
        let name = format!("{} background work", family.name());
        for t in family.clone().spawn_background(rx.clone()) {
            tasks.push((name.clone(), t));
        }
    }
    let mut metrics_addr = None;
    if let Some(maddr) = config.metrics.listen {
        let l = tokio::net::TcpListener::bind(maddr)
            .await
            .map_err(|source| RunError::Bind {
                addr: maddr,
                source,
            })?;
        metrics_addr = l.local_addr().ok();
        let r = http::metrics_router(app.clone());
        tasks.push((
            "metrics listener".into(),
            tokio::spawn(http::serve(l, None, r, rx, grace)),
        ));
    }
    first_steps(&app, addr);
    let control =
        cli::control::start(&state_dir, store, app.audit.clone()).map_err(RunError::Control)?;
    tracing::info!(
        %addr,
        scheme = if config.tls.enabled { "https" } else { "http" },
        families = ?app.families().iter().map(|f| f.name()).collect::<Vec<_>>(),
        storage = config.storage.enabled,
        "argusd ready"
    );
    Ok(Running {
        addr,
        metrics_addr,
        app,
        shutdown: tx,
        tasks,
        control: Some(control),
    })
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the grace
    /// period), stop the backend thread and flush the store.
    pub async fn stop(mut self) {
        self.app.set_draining();
        let _ = self.shutdown.send(true);
        wait_naming(std::mem::take(&mut self.tasks)).await;
        if let Some(c) = self.control.take() {
            c.abort();
            // The task holds the store: wait until it is dropped, so the
            // store's lock is released when stop returns (an in-process
            // restart on the same state dir otherwise races it).
            let _ = c.await;
            let _ = std::fs::remove_file(cli::control::socket_path(&self.app.config.state_dir));
        }
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for family in app.take_families() {
                family.stop();
            }
            if let Err(e) = app.store.flush() {
                tracing::error!(error = %e, "final flush failed");
            }
        })
        .await;
        tracing::info!("argusd stopped");
    }
}

/// Wait for every task to end, saying every 2 s which ones are still
/// running, so a slow stop is never silent.
async fn wait_naming(mut tasks: Vec<(String, tokio::task::JoinHandle<()>)>) {
    let started = std::time::Instant::now();
    let mut next_note = Duration::from_secs(2);
    loop {
        tasks.retain(|(_, t)| !t.is_finished());
        if tasks.is_empty() {
            return;
        }
        if started.elapsed() >= next_note {
            let mut names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
            names.dedup();
            tracing::info!(
                waiting_for = %names.join(", "),
                seconds = started.elapsed().as_secs(),
                "stopping: still waiting (a second Ctrl-C or SIGTERM exits at once)"
            );
            next_note += Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serve until `shutdown` resolves (SIGTERM/SIGINT from [`shutdown_signal`]).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    tracing::debug!(config = %config.redacted(), "configuration");
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    for name in Config::unknown_env(&names) {
        tracing::warn!(
            variable = %name,
            "{name} sets nothing: no setting has that name (see config/argusd.toml; a.b is ARGUS_A_B)"
        );
    }
    let running = start(config).await?;
    // READY=1 only now: the model answered its warm-up inference.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    shutdown.await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: draining connections and stopping background work");
    // A second signal does not wait: everything acknowledged is already
    // durable, and unfinished analyses resume at the next start.
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!(
            "second stop signal: exiting now; unfinished work resumes at the next start"
        );
        std::process::exit(130);
    });
    running.stop().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
