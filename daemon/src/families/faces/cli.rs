//! The face family's offline commands: `argusd detect` and `argusd mask`
//! run the daemon's own pipeline on files (or the image files under
//! directories), with a local batcher. Flags take the API's ranges.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::builder::PossibleValuesParser;
use clap::Args;

use crate::app::CommandError;
use crate::batch::Batcher;
use crate::config::Config;
use crate::detect::{self as pipeline, DetectParams};
use crate::imaging::{MaskMethod, MaskParams, OutputFormat};
use crate::metrics::Metrics;
use crate::offline::{self, Input};

type CliError = CommandError;

/// A number in `lo..=hi`, for clap (the API's query ranges).
fn in_range(s: &str, lo: f32, hi: f32) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between {lo} and {hi}"))
    }
}

fn unit_interval(s: &str) -> Result<f32, String> {
    in_range(s, 0.0, 1.0)
}

fn padding_range(s: &str) -> Result<f32, String> {
    in_range(s, 0.0, 2.0)
}

/// The detection flags both commands share, with the API's defaults and ranges.
#[derive(Debug, Args, Clone, Copy)]
pub struct DetectFlags {
    /// Lowest face score kept, 0 to 1 (the API's `confidence`).
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    confidence: f32,
    /// Overlap (IoU) above which the weaker of two boxes is dropped, 0 to 1.
    #[arg(long, default_value_t = 0.4, value_parser = unit_interval)]
    nms_threshold: f32,
    /// Keep at most this many faces, highest score first; 0 keeps all (0 to 10000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    max_faces: u32,
}

impl DetectFlags {
    fn params(self) -> DetectParams {
        DetectParams {
            confidence: self.confidence,
            nms_threshold: self.nms_threshold,
            max_faces: self.max_faces as usize,
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files, or directories searched recursively for .jpg, .jpeg,
    /// .png, .webp, .gif, .bmp and .tif files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON object per line and file, in order: the detect API's
    /// answer (reference 004's schema) with the input's path added as
    /// `file`, or `{"detail": ..., "file": ...}` for a file that failed.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    detect: DetectFlags,
}

#[derive(Debug, Args)]
pub struct MaskArgs {
    /// Image files, or directories searched recursively for .jpg, .jpeg,
    /// .png, .webp, .gif, .bmp and .tif files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Directory for the masked images (created when missing): NAME.masked.EXT,
    /// a directory's tree mirrored under it. Two inputs never share an
    /// output: `a.jpg` and `a.png` become `a.jpg.masked.EXT` and `a.png.masked.EXT`.
    #[arg(long)]
    out: PathBuf,
    /// How faces are masked.
    #[arg(long, default_value = "gaussian", value_parser = PossibleValuesParser::new(MaskMethod::ALL))]
    method: String,
    /// Blur kernel size, or pixelation block edge in px, 1 to 999; never
    /// weaker than the privacy floor. Default: 199 for the blurs; for
    /// pixelate six blocks across each face.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=999))]
    strength: Option<u32>,
    /// Share of the face box added on each side before masking, 0 to 2.
    #[arg(long, default_value_t = 0.15, value_parser = padding_range)]
    padding: f32,
    /// Output format.
    #[arg(long, default_value = "jpeg", value_parser = PossibleValuesParser::new(OutputFormat::ALL))]
    format: String,
    /// JPEG and WebP quality, 1 to 100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    #[command(flatten)]
    detect: DetectFlags,
}

/// `argusd detect`: print each file's faces. Exit code 1 if any file failed.
pub async fn detect(config: &Config, args: DetectArgs) -> Result<i32, CommandError> {
    let inputs = offline::expand(&args.images).map_err(CliError::Usage)?;
    let b = local_batcher(config)?;
    let params = args.detect.params();
    let bar = offline::progress(inputs.len() as u64, "images");
    let mut failed = 0;
    for input in &inputs {
        let path = &input.path;
        bar.set_message(input.rel.display().to_string());
        let t0 = std::time::Instant::now();
        let res = detect_file(&b, path, config, params).await;
        bar.suspend(|| match res {
            Ok((prep, det)) if args.json => {
                let t = super::api::Timings {
                    total_ms: pipeline::ms(t0.elapsed()),
                    ..Default::default()
                };
                let id = uuid::Uuid::now_v7().to_string();
                let body =
                    super::api::detect_response(&b, &id, (None, None), &prep, &det, params, t);
                let mut v = serde_json::to_value(body).unwrap_or_default();
                v["file"] = serde_json::json!(path);
                println!("{v}");
            }
            Ok((prep, det)) => {
                let (w, h) = prep.image.dimensions();
                println!("{}: {w}x{h}, {} face(s)", path.display(), det.faces.len());
                for f in &det.faces {
                    println!(
                        "  {:.3}  [{:.1}, {:.1}, {:.1}, {:.1}]",
                        f.score, f.x1, f.y1, f.x2, f.y2
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
                if args.json {
                    println!("{}", serde_json::json!({"detail": e, "file": path}));
                }
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `argusd mask`: write each file masked into `--out`. Exit code 1 if any
/// file failed.
pub async fn mask(config: &Config, args: MaskArgs) -> Result<i32, CommandError> {
    // clap has checked both against the lists these parse.
    let method = MaskMethod::parse(&args.method).unwrap_or(MaskMethod::Gaussian);
    let format = OutputFormat::parse(&args.format).unwrap_or(OutputFormat::Jpeg);
    let inputs = offline::expand(&args.images).map_err(CliError::Usage)?;
    let outputs = offline::output_paths(&inputs, &args.out, ".masked", format.extension());
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Failed(format!("{}: {e}", args.out.display())))?;
    let b = local_batcher(config)?;
    let params = args.detect.params();
    let mask = MaskParams {
        method,
        strength: args.strength.unwrap_or(method.default_strength()),
        padding: args.padding,
    };
    let bar = offline::progress(inputs.len() as u64, "images");
    let mut failed = 0;
    for (input, dest) in inputs.iter().zip(&outputs) {
        bar.set_message(input.rel.display().to_string());
        let res = mask_file(
            &b,
            config,
            input,
            dest,
            params,
            (mask, format, args.quality),
        )
        .await;
        bar.suspend(|| match res {
            Ok(n) => println!(
                "{} -> {} ({n} face(s) masked)",
                input.path.display(),
                dest.display()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", input.path.display());
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Mask one file into `dest`; the number of faces masked.
async fn mask_file(
    b: &Batcher,
    config: &Config,
    input: &Input,
    dest: &Path,
    params: DetectParams,
    (mask, format, quality): (MaskParams, OutputFormat, u8),
) -> Result<usize, String> {
    let (mut prep, det) = detect_file(b, &input.path, config, params).await?;
    let masked = pipeline::mask_and_encode(
        b.masker(),
        &mut prep.image,
        prep.resident.take(),
        &det.faces,
        mask,
        pipeline::Encoding {
            format,
            quality,
            alpha: prep.alpha.as_deref(),
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(dest, masked.bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(masked.regions)
}

/// Read, decode and detect one file for the offline commands.
async fn detect_file(
    b: &Batcher,
    path: &Path,
    config: &Config,
    params: DetectParams,
) -> Result<(pipeline::Prepared, pipeline::Detected), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let limits = crate::imaging::DecodeLimits {
        max_pixels: config.limits.max_pixels,
        formats: config.limits.formats.clone(),
    };
    let info = b.info();
    let mut prep = pipeline::prepare(
        &bytes,
        &limits,
        info.input_width,
        info.input_height,
        info.frames,
    )
    .map_err(|e| e.to_string())?;
    prep.upload(b.masker());
    let params = DetectParams {
        tile_min_face_px: config.detector.tile_min_face_px(),
        ..params
    };
    let det = pipeline::detect(b, &mut prep, params)
        .await
        .map_err(|e| e.to_string())?;
    Ok((prep, det))
}

/// A local batcher for the offline detect/mask commands.
fn local_batcher(config: &Config) -> Result<Batcher, CliError> {
    let models = crate::backend::ModelPaths::from_manifest(&config.resolved_models_dir(), true)
        .map_err(CliError::Failed)?;
    let target =
        crate::backend::resolve(config.backend).map_err(|e| CliError::Failed(e.to_string()))?;
    let input = (config.detector.input_width, config.detector.input_height);
    crate::families::face_batcher(config, input, &target, &models, Arc::new(Metrics::new()))
        .map_err(|e| CliError::Failed(e.to_string()))
}
