//! The PBS family's commands: `argusd pbs users|keys|org-secret` (the same
//! actions as the organisation admin endpoints, run through the daemon's
//! control socket when one runs) and the lab tools `pbs count`,
//! `pbs classify` and `pbs differential`, which run the daemon's own
//! pipeline on files.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use sha2::Digest;
use uuid::Uuid;

use super::differential;
use super::fhir;
use super::manage::PbsCommand;
use super::pipeline;
use super::schema::{self, CbcFile, CbcReport, DifferentialCell, MalariaFile, MalariaReport};
use crate::app::{read_password, CommandError};
use crate::config::Config;
use crate::metrics::Metrics;

mod labels;
mod single_cells;
mod summary;

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
    OrgSecret {
        /// The organisation's name.
        org: String,
    },
    /// Count cells in smear photos and print counts and boxes.
    Count(CountArgs),
    /// P(parasitized) of single-cell crops, each made 50x50 grayscale. Make
    /// crops from smear photos with `argusd pbs count --crops-dir DIR PHOTO`;
    /// a file that cannot be one cell (larger than 400 px, smaller than
    /// 16 px, or far from square) is refused, since the classifier gives
    /// meaningless, often confident, numbers for anything else.
    Classify {
        /// Crop image files, or directories of them.
        #[arg(required = true)]
        crops: Vec<PathBuf>,
        /// Print one JSON object per line and crop.
        #[arg(long)]
        json: bool,
        /// Classify files that do not look like single-cell crops anyway.
        #[arg(long)]
        force: bool,
    },
    /// White-cell differential of single-cell images, one white cell near
    /// the middle of each (as CellaVision-type analysers export cells and
    /// labelled sets such as PBC hold them), through the appliance's own
    /// path: red-cell size measured, the white cell found, the API's
    /// window classified (where no white cell is found over the centre,
    /// the centre's window). With --labelled, each image's folder names its
    /// class, and a confusion matrix, accuracy, review rate and confident
    /// errors follow: a lab's check of the differential on its own cells.
    Differential(single_cells::DifferentialArgs),
}

#[derive(Debug, Subcommand)]
pub enum PbsUsers {
    /// Add a user (or reset their password and role); the password is read
    /// from stdin. The organisation is created with its first user, and
    /// its callback signing secret is printed then, once.
    Add {
        /// The user's organisation (created if new).
        #[arg(long)]
        org: String,
        /// The user's e-mail address, their login name.
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user", "device", "service"])]
        role: String,
        /// Read the password from stdin without a prompt (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, of one organisation or of all.
    List {
        /// Only this organisation's users.
        #[arg(long)]
        org: Option<String>,
    },
    /// Remove a user.
    Remove {
        /// The user's e-mail address.
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
        /// The organisation whose devices sign with the key.
        #[arg(long)]
        org: String,
        /// The public key's PEM file.
        pem: PathBuf,
        /// Key id tokens name in `kid` (default: derived from the key).
        #[arg(long)]
        kid: Option<String>,
    },
    /// List registered keys, of one organisation or of all.
    List {
        /// Only this organisation's keys.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key: tokens it signed are refused from then on.
    Revoke {
        /// The key's id (`kid`), as `keys list` shows it.
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
        PbsAction::Count(args) => count(config, args).await,
        PbsAction::Classify { crops, json, force } => classify(config, crops, json, force).await,
        PbsAction::Differential(args) => single_cells::differential(config, args).await,
    }
}

/// The options of `argusd pbs count`.
#[derive(Debug, clap::Args)]
pub struct CountArgs {
    /// Smear photos, or directories of them (searched recursively).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON object per line and photo: file, file_id, analysis
    /// (counts, cells, red-cell size), differential, timings_ms.
    #[arg(long)]
    json: bool,
    /// Red-cell diameter in these photos, pixels: skips measuring it
    /// in each photo (default: measured; config's
    /// pbs.native_rbc_diameter_px where a photo cannot be measured).
    #[arg(long, value_parser = positive_px)]
    rbc_diameter_px: Option<f32>,
    /// Also classify every red cell (MALARIA_ANY_ANY).
    #[arg(long)]
    malaria: bool,
    /// Write each red-cell crop the classifier saw here, named with its P(parasitized).
    #[arg(long)]
    crops_dir: Option<PathBuf>,
    /// Print one HL7 FHIR R4 Bundle (type collection) for all the photos
    /// together: a DiagnosticReport for CBC_COUNTS, and with --malaria one
    /// for MALARIA_ANY_ANY, as `GET /pbs/{id}/report/{task}?format=fhir`
    /// gives. Nothing is printed unless every photo was analysed.
    #[arg(long, conflicts_with = "json")]
    fhir: bool,
}

/// `argusd pbs count`: cells per smear photo, optionally the red-cell crops.
async fn count(config: &Config, args: CountArgs) -> Result<i32, CommandError> {
    let CountArgs {
        images,
        json,
        rbc_diameter_px,
        malaria,
        crops_dir,
        fhir,
    } = args;
    let started_at = crate::store::now_rfc3339();
    let mut counted = Counted::default();
    let malaria = malaria || crops_dir.is_some();
    let inputs = crate::offline::expand(&images).map_err(CliError::Usage)?;
    let b = local_cell_batchers(config)?;
    let sizes = pipeline::ScaleSettings {
        given_px: rbc_diameter_px,
        ..pipeline::ScaleSettings::from_config(&config.pbs)
    };
    let limits = photo_limits(config);
    let mut failed = 0;
    let bar = crate::offline::progress(inputs.len() as u64, "photos");
    for input in &inputs {
        let path = &input.path;
        let name = input.rel.display().to_string();
        bar.set_message(name.clone());
        let on_tile = |t: usize, n: usize| bar.set_message(format!("{name}: tile {t} of {n}"));
        let watch = pipeline::Watch {
            on_tile: Some(&on_tile),
            stop: None,
        };
        let res = async {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            let file_id = format!("sha224-i-{}", hex::encode(sha2::Sha224::digest(&bytes)));
            let img = crate::imaging::decode(&bytes, &limits)
                .map_err(|e| e.to_string())?
                .image;
            let img = Arc::new(img);
            let r = pipeline::analyse(&b, img.clone(), &sizes, config.cells, malaria, &watch)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(dir) = &crops_dir {
                write_crops(dir, path, &img, &r.0)?;
            }
            Ok::<_, String>((r, file_id))
        }
        .await;
        bar.inc(1);
        bar.suspend(|| match res {
            Ok(((a, _), file_id)) if fhir => counted.add(&a, file_id, name.clone(), config),
            Ok(((a, t), file_id)) if json => {
                // The white-cell differential as the API's WBC_DIFFERENTIAL
                // report gives it, over this one file.
                let cells = differential::cells_of(&a, config.cells.wbc_min_confidence);
                let mut differential = differential::summarise(
                    &[(file_id.clone(), cells)],
                    config.cells.wbc_min_confidence,
                );
                differential
                    .mark_unlike_smear(|_| a.rbc_size.as_ref().is_some_and(|s| s.unlike_smear));
                println!(
                    "{}",
                    serde_json::json!({
                        "file": path,
                        "file_id": file_id,
                        "analysis": a,
                        "differential": differential,
                        "timings_ms": t,
                    })
                )
            }
            Ok(((a, _), _)) => print_counts(path, &a, malaria, config),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        });
    }
    bar.finish_and_clear();
    b.shutdown();
    if fhir && failed == 0 {
        let reports = counted
            .fhir(malaria, &started_at, &config.cells)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Save the red-cell crops of one analysed photo in `dir`, named for the
/// photo, the cell and its P(parasitized).
fn write_crops(
    dir: &Path,
    path: &Path,
    img: &image::RgbImage,
    a: &pipeline::SmearAnalysis,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let crops = pipeline::rbc_crops(img, a);
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let n = crate::model::malaria::CROP as u32;
    for (i, crop) in crops {
        let p = a.cells[i].p_parasitized.unwrap_or(f32::NAN);
        let out = dir.join(format!("{stem}_{i:03}_p{:.3}.png", p));
        image::GrayImage::from_raw(n, n, crop)
            .ok_or_else(|| "crop size".to_string())?
            .save(&out)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One photo's counts as text: cells, the parasitized share, the measured
/// red-cell size, the white cells' classes and any scale warning.
fn print_counts(path: &Path, a: &pipeline::SmearAnalysis, malaria: bool, config: &Config) {
    let (pos, neg) = pipeline::malaria_counts(a, &config.cells);
    println!(
        "{}: {}x{}, rbc {}, wbc {}, platelets {}{}{}",
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
        },
        a.rbc_size.as_ref().map(size_text).unwrap_or_default()
    );
    let cells = differential::cells_of(a, config.cells.wbc_min_confidence);
    if !cells.is_empty() {
        println!(
            "{}: white cells: {}",
            path.display(),
            differential::summary_text(&cells)
        );
    }
    if let Some(w) = a.rbc_size.as_ref().and_then(|s| s.warning.as_ref()) {
        println!("{}: warning: {w}", path.display());
    }
}

/// What `pbs count --fhir` collects from each photo.
#[derive(Default)]
struct Counted {
    cbc: Vec<CbcFile>,
    malaria: Vec<MalariaFile>,
    /// Each file's classified white cells.
    cells: Vec<(String, Vec<DifferentialCell>)>,
    names: Vec<String>,
}

impl Counted {
    fn add(&mut self, a: &pipeline::SmearAnalysis, file_id: String, name: String, config: &Config) {
        let (pos, neg) = pipeline::malaria_counts(a, &config.cells);
        self.cbc.push(CbcFile {
            file_id: file_id.clone(),
            rbc: a.counts.rbc as u64,
            wbc: a.counts.wbc as u64,
            platelets: a.counts.platelets as u64,
            rbc_size: a.rbc_size.clone(),
        });
        self.cells.push((
            file_id.clone(),
            differential::cells_of(a, config.cells.wbc_min_confidence),
        ));
        self.malaria.push(MalariaFile {
            file_id,
            positive_count: Some(pos as u64),
            negative_count: Some(neg as u64),
            unlike_smear: a.rbc_size.as_ref().is_some_and(|s| s.unlike_smear),
        });
        self.names.push(name);
    }

    /// The photos' reports, as the server would store them, in FHIR.
    fn fhir(
        self,
        malaria: bool,
        started_at: &str,
        params: &pipeline::CountParams,
    ) -> Result<serde_json::Value, fhir::FhirError> {
        let now = crate::store::now_rfc3339();
        let sum = |f: fn(&CbcFile) -> u64| self.cbc.iter().map(f).sum();
        let ids: Vec<String> = self.cbc.iter().map(|f| f.file_id.clone()).collect();
        let mut differential = differential::summarise(&self.cells, params.wbc_min_confidence);
        differential.mark_unlike_smear(|id| {
            self.cbc
                .iter()
                .any(|f| f.file_id == id && f.rbc_size.as_ref().is_some_and(|s| s.unlike_smear))
        });
        let cbc = CbcReport {
            rbc: sum(|f| f.rbc),
            wbc: sum(|f| f.wbc),
            platelets: sum(|f| f.platelets),
            files: self.cbc,
            model: schema::CBC_MODEL,
            differential: Some(differential),
            created_at: now.clone(),
        };
        let src = |task: &str| fhir::Source {
            id: format!(
                "{}-{}",
                Uuid::new_v4(),
                task.to_ascii_lowercase().replace('_', "-")
            ),
            identifier: None,
            patient_proxy_id: None,
            received_at: started_at.to_string(),
            fields: self.names.clone(),
            field_ids: ids.clone(),
        };
        let mut reports = vec![fhir::diagnostic_report(
            "CBC_COUNTS",
            &serde_json::to_value(&cbc).expect("reports serialize"),
            &src("CBC_COUNTS"),
        )?];
        if malaria {
            let m = MalariaReport {
                positive_count: self.malaria.iter().filter_map(|f| f.positive_count).sum(),
                negative_count: self.malaria.iter().filter_map(|f| f.negative_count).sum(),
                files: self.malaria,
                model: schema::MALARIA_MODEL,
                parasite_threshold: params.parasite_threshold,
                created_at: now.clone(),
            };
            reports.push(fhir::diagnostic_report(
                "MALARIA_ANY_ANY",
                &serde_json::to_value(&m).expect("reports serialize"),
                &src("MALARIA_ANY_ANY"),
            )?);
        }
        Ok(fhir::bundle(&reports, &now))
    }
}

/// `--rbc-diameter-px`: a finite diameter over 1 px.
fn positive_px(v: &str) -> Result<f32, String> {
    match v.parse::<f32>() {
        Ok(d) if d.is_finite() && d > 1.0 => Ok(d),
        Ok(d) => Err(format!("{d} is not a red-cell diameter (pixels, over 1)")),
        Err(e) => Err(e.to_string()),
    }
}

/// `, red cells 92.4 px (7.4 um) measured from 31 cells` for the text output.
fn size_text(s: &pipeline::RbcScale) -> String {
    use super::scale::ScaleSource;
    let um = s
        .rbc_diameter_um
        .map(|u| format!(" ({u:.1} um)"))
        .unwrap_or_default();
    let from = match s.source {
        ScaleSource::Photo => match s.measured_px {
            // The outline moved the size: say both, or the two look inconsistent.
            Some(m) if (m - s.rbc_diameter_px).abs() >= 0.05 => format!(
                "measured from {} cells ({m:.1} px by colour, refined by their outline)",
                s.cells_measured
            ),
            _ => format!("measured from {} cells", s.cells_measured),
        },
        ScaleSource::Given => "given".into(),
        ScaleSource::Configured => "from pbs.native_rbc_diameter_px".into(),
        ScaleSource::MicronsPerPx => "from pbs.microns_per_px".into(),
        ScaleSource::Assumed => "assumed".into(),
    };
    format!(", red cells {:.1} px{um} {from}", s.rbc_diameter_px)
}

/// Largest and smallest side, in pixels, of an image taken as one cell:
/// red cells in the NIH set's crops are 100-200 px across, the crops
/// `pbs count --crops-dir` writes are 50 px, and a cell photographed at
/// higher magnification stays well under 400 px.
const CELL_CROP_PX: (u32, u32) = (16, 400);

/// Why an image of `w` x `h` pixels cannot be a single-cell crop, if it cannot.
pub fn crop_problem(w: u32, h: u32) -> Option<String> {
    let (lo, hi) = CELL_CROP_PX;
    let hint = "make single-cell crops with `argusd pbs count --crops-dir DIR SMEAR_PHOTO`, or pass --force";
    if w.max(h) > hi {
        return Some(format!(
            "{w}x{h} px is a photo, not one cell (a single-cell crop is at most {hi} px); {hint}"
        ));
    }
    if w.min(h) < lo {
        return Some(format!(
            "{w}x{h} px is too small for a cell (at least {lo} px); {hint}"
        ));
    }
    if w.max(h) > 2 * w.min(h) {
        return Some(format!(
            "{w}x{h} px is far from square, so not one round cell; {hint}"
        ));
    }
    None
}

/// `argusd pbs classify`: P(parasitized) of each crop.
async fn classify(
    config: &Config,
    crops: Vec<PathBuf>,
    json: bool,
    force: bool,
) -> Result<i32, CommandError> {
    let inputs = crate::offline::expand(&crops).map_err(CliError::Usage)?;
    let b = local_cell_batchers(config)?;
    let mut failed = 0;
    let n = crate::model::malaria::CROP as u32;
    for input in &inputs {
        let path = &input.path;
        let res = async {
            let img = image::open(path).map_err(|e| e.to_string())?;
            if let Some(why) = crop_problem(img.width(), img.height()).filter(|_| !force) {
                return Err(why);
            }
            let img = img.into_luma8();
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
    b.shutdown();
    Ok(if failed > 0 { 1 } else { 0 })
}

/// What the offline commands decode: the formats the API takes for smear
/// photos, within the config's pixel limit.
fn photo_limits(config: &Config) -> crate::imaging::DecodeLimits {
    crate::imaging::DecodeLimits {
        max_pixels: config.limits.max_pixels,
        formats: ["jpeg", "png", "webp", "bmp", "tiff"]
            .map(String::from)
            .to_vec(),
    }
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

#[cfg(test)]
mod tests {
    use super::{crop_problem, size_text};
    use crate::families::pbs::scale::{RbcScale, ScaleSource};

    /// A size the outline moved is printed with the colour measure it came
    /// from; one it left alone, or a size given, with just its source.
    #[test]
    fn a_refined_size_says_what_it_was_refined_from() {
        let mut s = RbcScale {
            rbc_diameter_px: 110.0,
            rbc_diameter_um: Some(11.0),
            source: ScaleSource::Photo,
            measured_px: Some(130.0),
            cells_measured: 42,
            warning: None,
            cells_round: None,
            unlike_smear: false,
        };
        let text = size_text(&s);
        assert!(text.contains("110.0 px (11.0 um)"), "{text}");
        assert!(
            text.contains("measured from 42 cells (130.0 px by colour, refined by their outline)"),
            "{text}"
        );
        s.measured_px = Some(110.0);
        assert!(
            size_text(&s).ends_with("measured from 42 cells"),
            "{}",
            size_text(&s)
        );
        s.source = ScaleSource::Given;
        assert!(
            size_text(&s).ends_with("px (11.0 um) given"),
            "{}",
            size_text(&s)
        );
    }

    #[test]
    fn only_cell_sized_images_pass_as_crops() {
        for (w, h) in [(50, 50), (142, 130), (100, 190), (400, 400), (16, 20)] {
            assert_eq!(crop_problem(w, h), None, "{w}x{h}");
        }
        for (w, h) in [(512, 512), (1200, 800), (401, 300), (10, 10), (40, 100)] {
            let why = crop_problem(w, h).expect("refused");
            assert!(why.contains("--crops-dir"), "{why}");
        }
    }
}
