//! `argusd` subcommands. main.rs parses and dispatches; the work is here.

pub mod control;
pub mod manage;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::app::{read_password, CommandError};
use crate::config::Config;
use crate::families::faces::cli as faces_cli;
use crate::families::pbs::cli as pbs_cli;
use crate::families::skin::cli as skin_cli;
use crate::store::Store;
use manage::Command as Manage;

impl From<CommandError> for CliError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Usage(m) => CliError::Usage(m),
            CommandError::Failed(m) => CliError::Failed(m),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::RunError),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "argusd",
    version,
    about = "argus: GPU-accelerated edge inference appliance"
)]
pub struct Cli {
    /// Config file (TOML). Without one the embedded defaults apply.
    #[arg(long, global = true, env = "ARGUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (overrides config and ARGUS_STATE_DIR).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Detect faces in image files and print the boxes.
    Detect(faces_cli::DetectArgs),
    /// Mask every face in image files and write the results to a directory.
    Mask(faces_cli::MaskArgs),
    /// Manage API keys (works whether or not the daemon runs).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage admin users (works whether or not the daemon runs).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Blood-smear (PBS) family: users, signing keys, lab validation tools.
    Pbs {
        #[command(subcommand)]
        action: pbs_cli::PbsAction,
    },
    /// Skin family: analyse selfies offline, manage the API's users.
    Skin {
        #[command(subcommand)]
        action: skin_cli::SkinAction,
    },
    /// Read the audit trail of security events (`state_dir/audit/`), oldest
    /// first; `--verify` checks its hash chain.
    Audit {
        /// Only records at or after this time (unix seconds).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only this action (e.g. login, credential_refused, key_created).
        #[arg(long)]
        action: Option<String>,
        /// At most this many (the latest).
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Check that no record was changed or removed.
        #[arg(long)]
        verify: bool,
    },
    /// Train the models this project trains itself.
    Train {
        #[command(subcommand)]
        model: TrainModel,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrainModel {
    /// The parasitized/uninfected red-cell classifier, on the NIH crops.
    Malaria(crate::train::malaria::TrainArgs),
    /// The white-cell classifier of the differential, on PBC (and BCCD's
    /// labelled white cells with --bccd-labels).
    Wbc(crate::train::wbc::TrainArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, e.g. 127.0.0.1:8443.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Backend: auto, cpu, cuda, wgpu.
    #[arg(long)]
    pub backend: Option<String>,
    /// Serve HTTPS (true) or plain HTTP on loopback (false).
    #[arg(long)]
    pub tls: Option<bool>,
    /// Directory with manifest.toml and the weights.
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; the full key is printed once.
    Create {
        /// A name to tell the key by (the client or device it is for).
        #[arg(long)]
        name: String,
    },
    /// List keys: id, name, a preview, whether active, use count and times
    /// (never the whole key).
    List,
    /// Revoke a key by its id, the key itself, or its first 8 characters.
    Revoke {
        /// The key's id, the key itself, or its first 8 characters
        /// (`key_prefix` in `keys list`).
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create (or reset the password of) an admin user.
    Create {
        /// The admin's login name.
        #[arg(long, default_value = "admin")]
        username: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Config from file/env, with the global and `serve` flags on top.
pub fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let mut c = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.state_dir {
        c.state_dir = d.clone();
    }
    if let Command::Serve(a) = &cli.command {
        if let Some(l) = a.listen {
            c.listen = l;
        }
        if let Some(b) = &a.backend {
            c.backend = serde_json::from_value(serde_json::Value::String(b.to_lowercase()))
                .map_err(|_| {
                    CliError::Usage(format!(
                        "--backend must be auto, cpu, cuda or wgpu, got {b:?}"
                    ))
                })?;
        }
        if let Some(t) = a.tls {
            c.tls.enabled = t;
        }
        if let Some(m) = &a.models_dir {
            c.models_dir = m.clone();
        }
    }
    c.validate()?;
    Ok(c)
}

/// Say on stderr, once per process, which state directory a command used
/// (absolute) and how: through the running daemon or opened directly.
pub fn note_state(state_dir: &Path, how: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        eprintln!("argusd: state directory {} ({how})", abs.display());
    });
}

/// Run a management command through the daemon if one owns the state dir,
/// else against the store directly.
pub async fn manage(state_dir: &Path, cmd: Manage) -> Result<serde_json::Value, CliError> {
    if let Some(r) = control::send(state_dir, &cmd).await {
        note_state(state_dir, "through the running daemon's control socket");
        return r.map_err(CliError::Failed);
    }
    note_state(state_dir, "no daemon running on it: opened directly");
    let dir = state_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let store =
            Store::open(&dir).map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
        let d = crate::config::AuditConfig::default();
        let audit = crate::audit::AuditLog::new(&dir, d.max_file_bytes, d.keep_files);
        manage::execute_audited(&store, cmd, &audit).map_err(CliError::Failed)
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?
}

/// Whether a command runs offline: it neither reads the state directory
/// nor talks to a daemon.
fn is_offline(c: &Command) -> bool {
    matches!(
        c,
        Command::Detect(_)
            | Command::Mask(_)
            | Command::Train { .. }
            | Command::Pbs {
                action: pbs_cli::PbsAction::Count { .. } | pbs_cli::PbsAction::Classify { .. },
            }
            | Command::Skin {
                action: skin_cli::SkinAction::Analyze(_),
            }
    )
}

pub async fn run_command(cli: Cli) -> Result<i32, CliError> {
    let config = load_config(&cli)?;
    if is_offline(&cli.command) {
        note_state(
            &config.state_dir,
            "not used: this command runs offline and talks to no daemon",
        );
    }
    match cli.command {
        Command::Serve(_) => {
            crate::run(config, crate::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Detect(args) => Ok(faces_cli::detect(&config, args).await?),
        Command::Mask(args) => Ok(faces_cli::mask(&config, args).await?),
        Command::Keys { action } => keys_command(&config, action).await,
        Command::Admin {
            action:
                AdminAction::Create {
                    username,
                    password_stdin,
                },
        } => admin_create(&config, username, password_stdin).await,
        Command::Pbs { action } => {
            let dir = config.state_dir.clone();
            let send = |cmd| {
                let dir = dir.clone();
                async move {
                    manage(&dir, Manage::Pbs(cmd))
                        .await
                        .map_err(|e| CommandError::Failed(e.to_string()))
                }
            };
            Ok(pbs_cli::run(&config, action, send).await?)
        }
        Command::Skin { action } => {
            let dir = config.state_dir.clone();
            let send = |cmd| {
                let dir = dir.clone();
                async move {
                    manage(&dir, Manage::Skin(cmd))
                        .await
                        .map_err(|e| CommandError::Failed(e.to_string()))
                }
            };
            Ok(skin_cli::run(&config, action, send).await?)
        }
        Command::Audit {
            since,
            action,
            limit,
            verify,
        } => audit_command(&config, since, action.as_deref(), limit, verify),
        Command::Train { model } => train_command(model).await,
    }
}

/// `argusd admin create`: through the running daemon, or on the state
/// directory when none runs.
async fn admin_create(
    config: &Config,
    username: String,
    password_stdin: bool,
) -> Result<i32, CliError> {
    let password = read_password(password_stdin)?;
    let v = manage(
        &config.state_dir,
        Manage::AdminCreate { username, password },
    )
    .await?;
    println!(
        "admin user {} {}",
        v["username"].as_str().unwrap_or_default(),
        if v["updated"] == true {
            "updated"
        } else {
            "created"
        }
    );
    Ok(0)
}

/// `argusd audit`: the trail's records as JSON lines, or with `verify`
/// whether its chain is intact (exit 1 when not).
fn audit_command(
    config: &Config,
    since: u64,
    action: Option<&str>,
    limit: usize,
    verify: bool,
) -> Result<i32, CliError> {
    note_state(&config.state_dir, "audit files read directly");
    let a = &config.audit;
    let log = crate::audit::AuditLog::new(&config.state_dir, a.max_file_bytes, a.keep_files);
    if verify {
        return match log.verify_chain() {
            Ok(n) => {
                println!("audit trail intact: {n} record(s)");
                Ok(0)
            }
            Err(e) => {
                eprintln!("audit trail broken: {e}");
                Ok(1)
            }
        };
    }
    let recs = log
        .read(since, action, limit)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    for r in recs {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    Ok(0)
}

/// `argusd train malaria|wbc`: train on a blocking thread and print the
/// report as JSON.
async fn train_command(model: TrainModel) -> Result<i32, CliError> {
    match model {
        TrainModel::Malaria(args) => {
            print_report(&train_blocking(move || crate::train::malaria::train(&args)).await?)
        }
        TrainModel::Wbc(args) => {
            print_report(&train_blocking(move || crate::train::wbc::train(&args)).await?)
        }
    }
}

/// Print a training report as pretty JSON, its fields in declared order.
fn print_report<T: serde::Serialize>(report: &T) -> Result<i32, CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
    Ok(0)
}

/// Run a training on a blocking thread; its failure is the CLI's.
async fn train_blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
        .map_err(|e| CliError::Failed(format!("training failed: {e:#}")))
}

/// `argusd keys create|list|revoke`.
async fn keys_command(config: &Config, action: KeysAction) -> Result<i32, CliError> {
    let cmd = match action {
        KeysAction::Create { name } => Manage::KeysCreate { name },
        KeysAction::List => Manage::KeysList,
        KeysAction::Revoke { key } => Manage::KeysRevoke { key },
    };
    let is_create = matches!(cmd, Manage::KeysCreate { .. });
    let v = manage(&config.state_dir, cmd).await?;
    if is_create {
        eprintln!("Store this key now: it is shown only once.");
        println!("{}", v["key"].as_str().unwrap_or_default());
        eprintln!(
            "id: {}  name: {}",
            v["id"].as_str().unwrap_or_default(),
            v["name"].as_str().unwrap_or_default()
        );
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(0)
}
