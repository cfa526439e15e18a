//! The PBS family's commands: `argusd pbs users|keys|org-secret` (the same
//! actions as the organisation admin endpoints, run through the daemon's
//! control socket when one runs) and the lab tools `pbs count` and
//! `pbs classify`, which run the daemon's own pipeline on files.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use super::manage::PbsCommand;
use super::pipeline;
use crate::app::{read_password, CommandError};
use crate::config::Config;
use crate::metrics::Metrics;

type CliError = CommandError;

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
        /// The user's organisation (needed when the name is in several).
        #[arg(long)]
        org: Option<String>,
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
        /// The key's organisation (needed when the id is in several).
        #[arg(long)]
        org: Option<String>,
    },
}

/// Run `argusd pbs ACTION`. Users, keys and secrets go through `send`
/// (the daemon's control socket when one runs, else the store directly).
pub async fn run<M, F>(config: &Config, action: PbsAction, send: M) -> Result<i32, CommandError>
where
    M: Fn(PbsCommand) -> F,
    F: Future<Output = Result<serde_json::Value, CommandError>>,
{
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
                } => PbsCommand::UserAdd {
                    org,
                    user,
                    role,
                    password: read_password(password_stdin)?,
                },
                PbsUsers::List { org } => PbsCommand::UserList { org },
                PbsUsers::Remove { user, org } => PbsCommand::UserRemove { user, org },
            };
            print(send(cmd).await?)
        }
        PbsAction::Keys { action } => {
            let cmd = match action {
                PbsKeys::Add { org, pem, kid } => PbsCommand::KeyAdd {
                    org,
                    pem: std::fs::read_to_string(&pem)
                        .map_err(|e| CliError::Failed(format!("{}: {e}", pem.display())))?,
                    kid,
                },
                PbsKeys::List { org } => PbsCommand::KeyList { org },
                PbsKeys::Revoke { kid, org } => PbsCommand::KeyRevoke { kid, org },
            };
            print(send(cmd).await?)
        }
        PbsAction::OrgSecret { org } => print(send(PbsCommand::OrgSecret { org }).await?),
        PbsAction::Count {
            images,
            json,
            rbc_diameter_px,
            malaria,
            crops_dir,
        } => {
            count(
                config,
                CountArgs {
                    images,
                    json,
                    rbc_diameter_px,
                    malaria,
                    crops_dir,
                },
            )
            .await
        }
        PbsAction::Classify { crops, json } => classify(config, crops, json).await,
    }
}

struct CountArgs {
    images: Vec<PathBuf>,
    json: bool,
    rbc_diameter_px: Option<f32>,
    malaria: bool,
    crops_dir: Option<PathBuf>,
}

/// `argusd pbs count`: cells per smear photo, optionally the red-cell crops.
async fn count(config: &Config, args: CountArgs) -> Result<i32, CommandError> {
    let CountArgs {
        images,
        json,
        rbc_diameter_px,
        malaria,
        crops_dir,
    } = args;
    let malaria = malaria || crops_dir.is_some();
    if images.is_empty() {
        return Err(CliError::Usage("give at least one smear photo".into()));
    }
    let b = local_cell_batchers(config)?;
    let native = rbc_diameter_px
        .or((config.pbs.native_rbc_diameter_px > 0.0).then_some(config.pbs.native_rbc_diameter_px));
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
            let r = pipeline::analyse(&b, img.clone(), native, config.cells, malaria)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(dir) = &crops_dir {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                let crops = pipeline::rbc_crops(&img, &r.0);
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
                let (pos, neg) = pipeline::malaria_counts(&a, &config.cells);
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

/// `argusd pbs classify`: P(parasitized) of each crop.
async fn classify(config: &Config, crops: Vec<PathBuf>, json: bool) -> Result<i32, CommandError> {
    if crops.is_empty() {
        return Err(CliError::Usage("give at least one crop image".into()));
    }
    let b = local_cell_batchers(config)?;
    let mut failed = 0;
    let n = crate::model::malaria::CROP as u32;
    for path in &crops {
        let res = async {
            let img = image::open(path).map_err(|e| e.to_string())?.into_luma8();
            let img = image::imageops::resize(&img, n, n, image::imageops::FilterType::Triangle);
            let p = pipeline::classify(&b.crops, vec![img.into_raw()])
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

/// Local tile and crop batchers for the offline pbs commands.
fn local_cell_batchers(config: &Config) -> Result<pipeline::CellBatchers, CliError> {
    let models = crate::backend::ModelPaths::from_manifest(&config.resolved_models_dir(), true)
        .map_err(CliError::Failed)?;
    let target =
        crate::backend::resolve(config.backend).map_err(|e| CliError::Failed(e.to_string()))?;
    super::start_cell_batchers(config, &target, &models, Arc::new(Metrics::new()))
        .map_err(|e| CliError::Failed(e.to_string()))
}
