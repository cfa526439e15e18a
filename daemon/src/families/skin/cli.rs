//! `argusd skin analyze IMAGE... [--json] [--out DIR]`: the skin pipeline
//! on local files, with the models in-process (no daemon needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::analyze::{analyze, masks_svg, Analysis, Want};
use super::work::SkinBatchers;
use crate::app::CommandError;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, Subcommand)]
pub enum SkinAction {
    /// Analyse selfies: skin metrics, quality gates and area masks.
    Analyze(AnalyzeArgs),
    /// Users of the skin API's companies (works whether or not the daemon runs).
    Users {
        #[command(subcommand)]
        action: SkinUsers,
    },
}

#[derive(Debug, Subcommand)]
pub enum SkinUsers {
    /// Add a user to a company (created when new), or reset their
    /// password; the password is read from standard input.
    Add {
        #[arg(long)]
        company: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users and their companies.
    List,
}

/// A management action of the skin family, as the command line sends it
/// (in process, or to a running daemon over its control socket).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SkinCommand {
    UserAdd {
        company: String,
        email: String,
        password: String,
    },
    UserList,
}

/// Run `cmd` on the store (the caller flushes).
pub fn execute(store: &crate::store::Store, cmd: SkinCommand) -> Result<serde_json::Value, String> {
    use super::records::{SkinStore, User};
    let records = SkinStore::open(store.db()).map_err(|e| e.to_string())?;
    match cmd {
        SkinCommand::UserAdd {
            company,
            email,
            password,
        } => super::accounts::add_user(&records, &company, &email, &password)
            .map(|u| serde_json::json!(u)),
        SkinCommand::UserList => {
            let users =
                SkinStore::scan(&records.users, |_: &User| true).map_err(|e| e.to_string())?;
            Ok(serde_json::Value::Array(
                users
                    .iter()
                    .map(|u| serde_json::json!({"id": u.id, "email": u.email, "company_id": u.company_id}))
                    .collect(),
            ))
        }
    }
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Photos (JPEG, PNG, WebP, ...), or directories searched recursively
    /// for them.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print the full analysis as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write per photo `<stem>.aligned.jpg`, `<stem>.redness.png`,
    /// `<stem>.anonymised.jpg` and `<stem>.masks.svg` here (a directory's
    /// tree mirrored; two photos never share a stem: `a.jpg` and `a.png`
    /// become `a.jpg.*` and `a.png.*`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Run `argusd skin ACTION`; user management goes through `send` (the
/// daemon's control socket when one runs, else the store directly).
pub async fn run<M, F>(config: &Config, action: SkinAction, send: M) -> Result<i32, CommandError>
where
    M: Fn(SkinCommand) -> F,
    F: std::future::Future<Output = Result<serde_json::Value, CommandError>>,
{
    match action {
        SkinAction::Analyze(args) => analyze_files(config, args).await,
        SkinAction::Users { action } => {
            let cmd = match action {
                SkinUsers::Add {
                    company,
                    email,
                    password_stdin,
                } => SkinCommand::UserAdd {
                    company,
                    email,
                    password: crate::app::read_password(password_stdin)?,
                },
                SkinUsers::List => SkinCommand::UserList,
            };
            let v = send(cmd).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(0)
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CommandError {
    CommandError::Failed(e.to_string())
}

/// The detector and skin models, loaded for this process.
fn local_batchers(config: &Config) -> Result<SkinBatchers, CommandError> {
    let models = crate::backend::ModelPaths::from_manifest(&config.resolved_models_dir(), true)
        .map_err(CommandError::Failed)?;
    let target = crate::backend::resolve(config.backend).map_err(failed)?;
    SkinBatchers::start(config, &target, &models, Arc::new(Metrics::new())).map_err(failed)
}

async fn analyze_files(config: &Config, args: AnalyzeArgs) -> Result<i32, CommandError> {
    let inputs = crate::offline::expand(&args.images).map_err(CommandError::Usage)?;
    let stems = args
        .out
        .as_ref()
        .map(|dir| crate::offline::output_stems(&inputs, dir));
    let batchers = local_batchers(config)?;
    let limits = crate::imaging::DecodeLimits {
        max_pixels: config.limits.max_pixels,
        formats: config.limits.formats.clone(),
    };
    let want = Want {
        images: args.out.is_some(),
    };
    let mut results = Vec::new();
    let mut code = 0;
    let bar = crate::offline::progress(inputs.len() as u64, "photos");
    for (n, input) in inputs.iter().enumerate() {
        let path = &input.path;
        bar.set_message(input.rel.display().to_string());
        let outcome = match std::fs::read(path) {
            Ok(bytes) => analyze(&batchers, bytes, limits.clone(), config.skin, want)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        bar.inc(1);
        match outcome {
            Ok(a) => {
                if let Some(stem) = stems.as_ref().map(|s| &s[n]) {
                    write_images(stem, &a)?;
                    bar.suspend(|| eprintln!("{} -> {}.*", path.display(), stem.display()));
                }
                if !args.json {
                    bar.suspend(|| print_summary(path, &a));
                }
                results.push(file_json(path, serde_json::to_value(&a).map_err(failed)?));
            }
            Err(e) => {
                bar.suspend(|| eprintln!("{}: {e}", path.display()));
                code = 1;
                results.push(serde_json::json!({"file": path.display().to_string(), "error": e}));
            }
        }
    }
    bar.finish_and_clear();
    batchers.shutdown();
    if args.json {
        let unavailable: serde_json::Map<String, serde_json::Value> = super::UNAVAILABLE
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let doc = serde_json::json!({"results": results, "unavailable": unavailable});
        println!("{}", serde_json::to_string_pretty(&doc).map_err(failed)?);
    }
    Ok(code)
}

fn file_json(path: &Path, mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("file".into(), path.display().to_string().into());
    }
    v
}

/// Write the images of one analysis as `STEM.aligned.jpg`, `.redness.png`,
/// `.anonymised.jpg` and `.masks.svg` (the stem's directory is created).
fn write_images(stem: &Path, a: &Analysis) -> Result<(), CommandError> {
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    }
    let write = |suffix: &str, bytes: &[u8]| {
        let mut name = stem.as_os_str().to_os_string();
        name.push(format!(".{suffix}"));
        let p = std::path::PathBuf::from(name);
        std::fs::write(&p, bytes).map_err(|e| failed(format!("{}: {e}", p.display())))
    };
    if let Some(img) = &a.images {
        write("aligned.jpg", &img.aligned_face_jpeg)?;
        write("redness.png", &img.redness_png)?;
        write("anonymised.jpg", &img.anonymised_jpeg)?;
    }
    if !a.masks.is_empty() {
        write(
            "masks.svg",
            masks_svg(a.width, a.height, &a.masks).as_bytes(),
        )?;
    }
    Ok(())
}

fn print_summary(path: &Path, a: &Analysis) {
    let m = &a.metrics;
    let mut parts = Vec::new();
    if let Some(i) = &m.ita {
        parts.push(format!("ITA {:.1}° ({})", i.value, i.class));
    }
    if let Some(r) = &m.redness {
        parts.push(format!("a* {:.1}, EI {:.1}", r.a_mean, r.erythema_index));
    }
    if let Some(d) = &m.dark_circles {
        parts.push(format!("dark circles ΔL* {:.1}", d.delta_l));
    }
    if let Some(g) = &m.age {
        parts.push(format!("age {:.0}", g.value));
    }
    let issues: Vec<&str> = a.quality.issues.iter().map(|i| i.code).collect();
    println!(
        "{}: {}{}",
        path.display(),
        if parts.is_empty() {
            "no metrics".to_string()
        } else {
            parts.join("; ")
        },
        if issues.is_empty() {
            String::new()
        } else {
            format!(" [quality: {}]", issues.join(", "))
        }
    );
}
