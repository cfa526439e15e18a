//! The face family's offline commands: `argusd detect` and `argusd mask`
//! run the daemon's own pipeline on files, with a local batcher.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::app::CommandError;
use crate::batch::Batcher;
use crate::config::Config;
use crate::detect::{self as pipeline, DetectParams};
use crate::imaging::{MaskMethod, MaskParams, OutputFormat};
use crate::metrics::Metrics;

type CliError = CommandError;

#[derive(Debug, Args)]
pub struct DetectArgs {
    images: Vec<PathBuf>,
    /// Print JSON (one object per image) instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0.5)]
    confidence: f32,
    #[arg(long, default_value_t = 0.4)]
    nms_threshold: f32,
}

#[derive(Debug, Args)]
pub struct MaskArgs {
    images: Vec<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "gaussian")]
    method: String,
    #[arg(long, default_value_t = 199)]
    strength: u32,
    #[arg(long, default_value_t = 0.15)]
    padding: f32,
    #[arg(long, default_value = "jpeg")]
    format: String,
    #[arg(long, default_value_t = 95)]
    quality: u8,
    #[arg(long, default_value_t = 0.5)]
    confidence: f32,
}

/// `argusd detect`: print each file's faces. Exit code 1 if any file failed.
pub async fn detect(config: &Config, args: DetectArgs) -> Result<i32, CommandError> {
    let DetectArgs {
        images,
        json,
        confidence,
        nms_threshold,
    } = args;
    let config = config.clone();
    if images.is_empty() {
        return Err(CliError::Usage("give at least one image file".into()));
    }
    let b = local_batcher(&config)?;
    let params = DetectParams {
        confidence,
        nms_threshold,
        ..Default::default()
    };
    let mut failed = 0;
    for path in images {
        let res = detect_file(&b, &path, &config, params)
            .await
            .map(|(prep, det)| (prep.image.dimensions(), det));
        match res {
            Ok(((w, h), det)) if json => println!(
                "{}",
                serde_json::json!({"file": path, "width": w, "height": h, "face_count": det.faces.len(), "faces": faces_json(&det.faces)})
            ),
            Ok(((w, h), det)) => {
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
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `argusd mask`: write each file masked into `--out`. Exit code 1 if any
/// file failed.
pub async fn mask(config: &Config, args: MaskArgs) -> Result<i32, CommandError> {
    let MaskArgs {
        images,
        out,
        method,
        strength,
        padding,
        format,
        quality,
        confidence,
    } = args;
    let config = config.clone();
    let method = MaskMethod::parse(&method).ok_or_else(|| {
        CliError::Usage(format!(
            "--method must be one of {}",
            MaskMethod::ALL.join(", ")
        ))
    })?;
    let format = OutputFormat::parse(&format).ok_or_else(|| {
        CliError::Usage(format!(
            "--format must be one of {}",
            OutputFormat::ALL.join(", ")
        ))
    })?;
    if images.is_empty() {
        return Err(CliError::Usage("give at least one image file".into()));
    }
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    let b = local_batcher(&config)?;
    let params = DetectParams {
        confidence,
        ..Default::default()
    };
    let mut failed = 0;
    for path in images {
        let res = async {
            let (mut prep, det) = detect_file(&b, &path, &config, params).await?;
            let masked = pipeline::mask_and_encode(
                b.masker(),
                &mut prep.image,
                prep.resident.take(),
                &det.faces,
                MaskParams {
                    method,
                    strength,
                    padding,
                },
                pipeline::Encoding {
                    format,
                    quality,
                    alpha: prep.alpha.as_deref(),
                },
            )
            .map_err(|e| e.to_string())?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
            let dest = out.join(format!("{stem}.masked.{}", format.extension()));
            std::fs::write(&dest, masked.bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
            Ok::<_, String>((dest, masked.regions))
        }
        .await;
        match res {
            Ok((dest, n)) => println!(
                "{} -> {} ({n} face(s) masked)",
                path.display(),
                dest.display()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
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

fn faces_json(faces: &[crate::model::Face]) -> serde_json::Value {
    serde_json::Value::Array(
        faces
            .iter()
            .map(|f| {
                serde_json::json!({
                    "confidence": (f.score * 1e4).round() / 1e4,
                    "bbox": [f.x1, f.y1, f.x2, f.y2],
                    "landmarks": f.landmarks,
                })
            })
            .collect(),
    )
}
