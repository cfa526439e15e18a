//! `argusd` subcommands. main.rs parses and dispatches; the work is here.

pub mod control;
pub mod manage;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::CommandError;
use crate::config::Config;
use crate::families::faces::cli as faces_cli;
use crate::metrics::Metrics;
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
        action: PbsAction,
    },
    /// Train the models this project trains itself.
    Train {
        #[command(subcommand)]
        model: TrainModel,
    },
}

#[derive(Debug, Subcommand)]
pub enum PbsAction {
    /// Users of organisations (works whether or not the daemon runs).
    Users {
        #[command(subcommand)]
        action: PbsUsers,
    },
    /// Organisations' RSA public keys for client-signed JWTs.
    Keys {
        #[command(subcommand)]
        action: PbsKeys,
    },
    /// Show an organisation's callback signing secret.
    OrgSecret { org: String },
    /// Count cells in smear photos and print counts and boxes.
    Count {
        images: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Red-cell diameter in these photos, pixels (default: config).
        #[arg(long)]
        rbc_diameter_px: Option<f32>,
        /// Also classify every red cell (MALARIA_ANY_ANY).
        #[arg(long)]
        malaria: bool,
        /// Write each red-cell crop the classifier saw here, named with its P(parasitized).
        #[arg(long)]
        crops_dir: Option<PathBuf>,
    },
    /// P(parasitized) of single-cell crops (any size; made 50x50 grayscale).
    Classify {
        crops: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PbsUsers {
    /// Add a user (or reset their password and role); the password is read from stdin.
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    List {
        #[arg(long)]
        org: Option<String>,
    },
    Remove {
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PbsKeys {
    /// Register a PEM public key file (`openssl rsa -pubout` output).
    Add {
        #[arg(long)]
        org: String,
        pem: PathBuf,
        /// Key id tokens name in `kid` (default: derived from the key).
        #[arg(long)]
        kid: Option<String>,
    },
    List {
        #[arg(long)]
        org: Option<String>,
    },
    Revoke {
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrainModel {
    /// The parasitized/uninfected red-cell classifier, on the NIH crops.
    Malaria {
        /// Tar of PNG crops under */Parasitized/ and */Uninfected/.
        #[arg(long, default_value = "../shared/data/nih-malaria-gray50/train.tar")]
        data: PathBuf,
        #[arg(long, default_value = "models/malaria")]
        out: PathBuf,
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        #[arg(long, default_value_t = 20261122)]
        seed: u64,
        /// Share of patients held out for validation, in percent.
        #[arg(long, default_value_t = 15)]
        holdout_pct: u64,
        /// Directory of red-cell crops from normal smears (`pbs count
        /// --crops-dir`), added as uninfected.
        #[arg(long)]
        extra_negatives: Option<PathBuf>,
        /// Start from these weights (fine-tuning).
        #[arg(long)]
        init: Option<PathBuf>,
    },
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
        #[arg(long)]
        name: String,
    },
    List,
    /// Revoke a key by id or by its first 8 characters.
    Revoke {
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create (or reset the password of) an admin user.
    Create {
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

/// Run a management command through the daemon if one owns the state dir,
/// else against the store directly.
pub async fn manage(state_dir: &Path, cmd: Manage) -> Result<serde_json::Value, CliError> {
    if let Some(r) = control::send(state_dir, &cmd).await {
        return r.map_err(CliError::Failed);
    }
    let dir = state_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let store =
            Store::open(&dir).map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
        manage::execute(&store, cmd).map_err(CliError::Failed)
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?
}

fn read_password(from_stdin: bool) -> Result<String, CliError> {
    let mut s = String::new();
    if !from_stdin {
        eprint!("Password (input is read from standard input): ");
    }
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let pw = s.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(CliError::Usage(
            "no password given on standard input".into(),
        ));
    }
    Ok(pw)
}

pub async fn run_command(cli: Cli) -> Result<i32, CliError> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve(_) => {
            crate::run(config, crate::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Detect(args) => Ok(faces_cli::detect(&config, args).await?),
        Command::Mask(args) => Ok(faces_cli::mask(&config, args).await?),
        Command::Keys { action } => {
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
        Command::Admin {
            action:
                AdminAction::Create {
                    username,
                    password_stdin,
                },
        } => {
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
        Command::Pbs { action } => pbs_command(&config, action).await,
        Command::Train {
            model:
                TrainModel::Malaria {
                    data,
                    out,
                    epochs,
                    batch,
                    lr,
                    seed,
                    holdout_pct,
                    extra_negatives,
                    init,
                },
        } => {
            let args = crate::train::malaria::TrainArgs {
                data,
                out,
                epochs,
                batch,
                lr,
                seed,
                holdout_pct,
                extra_negatives,
                init,
            };
            let report = tokio::task::spawn_blocking(move || crate::train::malaria::train(&args))
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?
                .map_err(|e| CliError::Failed(format!("training failed: {e:#}")))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

async fn pbs_command(config: &Config, action: PbsAction) -> Result<i32, CliError> {
    let print = |v: serde_json::Value| {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        Ok(0)
    };
    match action {
        PbsAction::Users { action } => {
            let cmd = match action {
                PbsUsers::Add {
                    org,
                    user,
                    role,
                    password_stdin,
                } => Manage::PbsUserAdd {
                    org,
                    user,
                    role,
                    password: read_password(password_stdin)?,
                },
                PbsUsers::List { org } => Manage::PbsUserList { org },
                PbsUsers::Remove { user } => Manage::PbsUserRemove { user },
            };
            print(manage(&config.state_dir, cmd).await?)
        }
        PbsAction::Keys { action } => {
            let cmd = match action {
                PbsKeys::Add { org, pem, kid } => Manage::PbsKeyAdd {
                    org,
                    pem: std::fs::read_to_string(&pem)
                        .map_err(|e| CliError::Failed(format!("{}: {e}", pem.display())))?,
                    kid,
                },
                PbsKeys::List { org } => Manage::PbsKeyList { org },
                PbsKeys::Revoke { kid } => Manage::PbsKeyRevoke { kid },
            };
            print(manage(&config.state_dir, cmd).await?)
        }
        PbsAction::OrgSecret { org } => {
            print(manage(&config.state_dir, Manage::PbsOrgSecret { org }).await?)
        }
        PbsAction::Count {
            images,
            json,
            rbc_diameter_px,
            malaria,
            crops_dir,
        } => {
            let malaria = malaria || crops_dir.is_some();
            if images.is_empty() {
                return Err(CliError::Usage("give at least one smear photo".into()));
            }
            let b = local_cell_batchers(config)?;
            let native = rbc_diameter_px.or((config.pbs.native_rbc_diameter_px > 0.0)
                .then_some(config.pbs.native_rbc_diameter_px));
            let limits = crate::imaging::DecodeLimits {
                max_pixels: config.limits.max_pixels,
                formats: ["jpeg", "png", "webp", "bmp", "tiff"]
                    .map(String::from)
                    .to_vec(),
            };
            let mut failed = 0;
            for path in &images {
                let res = async {
                    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                    let img = crate::imaging::decode(&bytes, &limits)
                        .map_err(|e| e.to_string())?
                        .image;
                    let img = Arc::new(img);
                    let r = crate::families::pbs::pipeline::analyse(
                        &b,
                        img.clone(),
                        native,
                        config.cells,
                        malaria,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    if let Some(dir) = &crops_dir {
                        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                        let crops = crate::families::pbs::pipeline::rbc_crops(&img, &r.0);
                        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                        let n = crate::model::malaria::CROP as u32;
                        for (i, crop) in crops {
                            let p = r.0.cells[i].p_parasitized.unwrap_or(f32::NAN);
                            let out = dir.join(format!("{stem}_{i:03}_p{:.3}.png", p));
                            image::GrayImage::from_raw(n, n, crop)
                                .ok_or_else(|| "crop size".to_string())?
                                .save(&out)
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    Ok::<_, String>(r)
                }
                .await;
                match res {
                    Ok((a, t)) if json => println!(
                        "{}",
                        serde_json::json!({"file": path, "analysis": a, "timings_ms": t})
                    ),
                    Ok((a, _)) => {
                        let (pos, neg) =
                            crate::families::pbs::pipeline::malaria_counts(&a, &config.cells);
                        println!(
                            "{}: {}x{}, rbc {}, wbc {}, platelets {}{}",
                            path.display(),
                            a.width,
                            a.height,
                            a.counts.rbc,
                            a.counts.wbc,
                            a.counts.platelets,
                            if malaria {
                                format!(", parasitized {pos} of {}", pos + neg)
                            } else {
                                String::new()
                            }
                        )
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: {e}", path.display());
                    }
                }
            }
            b.tiles.shutdown();
            b.crops.shutdown();
            Ok(if failed > 0 { 1 } else { 0 })
        }
        PbsAction::Classify { crops, json } => {
            if crops.is_empty() {
                return Err(CliError::Usage("give at least one crop image".into()));
            }
            let b = local_cell_batchers(config)?;
            let mut failed = 0;
            let n = crate::model::malaria::CROP as u32;
            for path in &crops {
                let res = async {
                    let img = image::open(path).map_err(|e| e.to_string())?.into_luma8();
                    let img =
                        image::imageops::resize(&img, n, n, image::imageops::FilterType::Triangle);
                    let p =
                        crate::families::pbs::pipeline::classify(&b.crops, vec![img.into_raw()])
                            .await
                            .map_err(|e| e.to_string())?;
                    Ok::<f32, String>(p[0])
                }
                .await;
                match res {
                    Ok(p) if json => {
                        println!("{}", serde_json::json!({"file": path, "p_parasitized": p}))
                    }
                    Ok(p) => println!("{}: p_parasitized {p:.4}", path.display()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: {e}", path.display());
                    }
                }
            }
            b.tiles.shutdown();
            b.crops.shutdown();
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}

/// Local tile and crop batchers for the offline pbs commands.
fn local_cell_batchers(
    config: &Config,
) -> Result<crate::families::pbs::pipeline::CellBatchers, CliError> {
    let models = crate::model_paths(config).map_err(CliError::Failed)?;
    let target =
        crate::backend::resolve(config.backend).map_err(|e| CliError::Failed(e.to_string()))?;
    crate::families::pbs::start_cell_batchers(config, &target, &models, Arc::new(Metrics::new()))
        .map_err(|e| CliError::Failed(e.to_string()))
}
