//! Training of the white-cell classifier (`argusd train wbc`) on PBC.
//!
//! Reproducible: the split, the initial weights, the shuffling and the
//! augmentation all come from one seed; the run is single-device CPU.
//!
//! PBC gives no patient ids, so the held-out part is chosen per image (a
//! hash of the file name and the seed); images of one patient may fall on
//! both sides, which makes the held-out accuracy optimistic. The model card
//! says so.
//!
//! Augmentation is what makes crops from another lab look like the training
//! crops: the window's size (0.85-1.18x, the error of the red-cell size
//! estimate) and centre (+-8% of the window, a white-cell box that is not
//! centred), the 8 flips/rotations, and the stain: each channel's optical
//! density scaled by 0.75-1.33 and all of them by 0.8-1.25 (more or less
//! stain, another dye balance).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::dihedral_source;
use crate::model::wbc::{decide, planes, sample_window, WbcNet, CLASSES, CROP, WIDTHS, WINDOW_RBC};

/// Red-cell diameter in the PBC copy's pixels (0.4x of CellaVision DM96's
/// 360x363 images, where red cells are ~75 px across).
pub const PBC_RBC_PX: f32 = 30.0;

/// `argusd train wbc`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Tar of PBC's JPEGs in one folder per class.
    #[arg(long, default_value = "../shared/data/pbc/pbc_normal.tar")]
    pub data: PathBuf,
    #[arg(long, default_value = "models/wbc")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 20261130)]
    pub seed: u64,
    /// Share of images held out, in percent.
    #[arg(long, default_value_t = 15)]
    pub holdout_pct: u64,
    /// Top-class probability below which a cell is left for review (for
    /// the report's figures; the daemon's own is `cells.wbc_min_confidence`).
    #[arg(long, default_value_t = 0.7)]
    pub min_confidence: f32,
}

/// One labelled PBC image: interleaved RGB (`w` x `h`), its class index in
/// [`CLASSES`] and its file name (which the held-out split hashes).
pub struct Sample {
    pub rgb: Vec<u8>,
    pub w: usize,
    pub h: usize,
    pub label: usize,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub epochs: usize,
    pub classes: Vec<&'static str>,
    pub train_images: usize,
    pub holdout_images: usize,
    /// Top-1 accuracy over the 9 classes.
    pub accuracy_9: f64,
    /// Top-1 accuracy with band and segmented neutrophils as one class (the
    /// 8 PBC folders).
    pub accuracy_8: f64,
    /// `[true][predicted]`, 9 classes in `classes` order.
    pub confusion: Vec<Vec<usize>>,
    pub min_confidence: f32,
    /// Share of held-out cells left for review at `min_confidence`.
    pub review_rate: f64,
    /// Accuracy (8 PBC classes) of the cells given a class.
    pub accepted_accuracy_8: f64,
    pub epoch_log: Vec<EpochLog>,
}

#[derive(Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub holdout_accuracy_9: f64,
    pub holdout_accuracy_8: f64,
    pub seconds: f64,
}

/// PBC's folder (and, for neutrophils, file-name prefix) to a class index;
/// `None` for neutrophils whose form is not given.
fn label_of(folder: &str, file: &str) -> Option<usize> {
    let i = |name: &str| CLASSES.iter().position(|c| *c == name);
    match folder {
        "neutrophil" if file.starts_with("SNE_") => i("neutrophil_segmented"),
        "neutrophil" if file.starts_with("BNE_") => i("neutrophil_band"),
        "neutrophil" => None,
        "lymphocyte" | "monocyte" | "eosinophil" | "basophil" | "erythroblast" | "platelet" => {
            i(folder)
        }
        "ig" => i("immature_granulocyte"),
        _ => None,
    }
}

/// Every labelled image of PBC's tar at `path`, and how many neutrophils
/// were skipped for want of a form. Errors: an unreadable tar or image.
pub fn read_tar(path: &Path) -> anyhow::Result<(Vec<Sample>, usize)> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    let mut skipped = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if !name.ends_with(".jpg") {
            continue;
        }
        let mut parts = name.rsplit('/');
        let file = parts.next().unwrap_or_default().to_string();
        let folder = parts.next().unwrap_or_default();
        let Some(label) = label_of(folder, &file) else {
            skipped += 1;
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        let img = image::load_from_memory(&bytes)?.into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        out.push(Sample {
            rgb: img.into_raw(),
            w,
            h,
            label,
            name: file,
        });
    }
    Ok((out, skipped))
}

/// Stable across runs and platforms (unlike std's randomised hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Whether the seeded split holds the image `name` out of training.
pub fn held_out(seed: u64, holdout_pct: u64, name: &str) -> bool {
    fnv1a(&format!("{seed}:{name}")) % 100 < holdout_pct
}

/// A sample's centred window, un-augmented, as RGB (0..255) of `CROP` x
/// `CROP`: what the held-out figures classify.
pub fn centred_window(s: &Sample) -> Vec<f32> {
    let side = WINDOW_RBC * PBC_RBC_PX;
    sample_window(&s.rgb, s.w, s.h, s.w as f32 / 2.0, s.h as f32 / 2.0, side)
}

/// The un-augmented input planes of a sample: the centred window.
fn plain(s: &Sample) -> Vec<f32> {
    planes(&centred_window(s))
}

fn augmented(s: &Sample, rng: &mut StdRng) -> Vec<f32> {
    let side = WINDOW_RBC * PBC_RBC_PX * rng.gen_range(0.85f32..1.18);
    let shift = 0.08 * side;
    let cx = s.w as f32 / 2.0 + rng.gen_range(-shift..shift);
    let cy = s.h as f32 / 2.0 + rng.gen_range(-shift..shift);
    let p = planes(&sample_window(&s.rgb, s.w, s.h, cx, cy, side));
    let all: f32 = rng.gen_range(0.8..1.25);
    let gain: [f32; 3] = std::array::from_fn(|_| all * rng.gen_range(0.75f32..1.33));
    let t = rng.gen_range(0..8u8);
    let n = CROP - 1;
    let mut out = vec![0f32; p.len()];
    for y in 0..CROP {
        for x in 0..CROP {
            let (sx, sy) = dihedral_source(x, y, n, t);
            for c in 0..3 {
                out[(y * CROP + x) * 3 + c] = p[(sy * CROP + sx) * 3 + c] * gain[c];
            }
        }
    }
    out
}

/// Kaiming-uniform weights and zero biases from the seed.
fn seeded_vars(rng: &mut StdRng, dev: &Device) -> candle_core::Result<Vec<(String, Var)>> {
    let mut vars = Vec::new();
    let mut cin = 3;
    for (i, &c) in WIDTHS.iter().enumerate() {
        let bound = (6.0 / (9 * cin) as f32).sqrt();
        let w: Vec<f32> = (0..9 * cin * c)
            .map(|_| rng.gen_range(-bound..bound))
            .collect();
        vars.push((
            format!("conv{i}.weight"),
            Var::from_tensor(&Tensor::from_vec(w, (9 * cin, c), dev)?)?,
        ));
        vars.push((format!("conv{i}.bias"), Var::zeros(c, DType::F32, dev)?));
        cin = c;
    }
    let bound = (1.0 / cin as f32).sqrt();
    let w: Vec<f32> = (0..cin * CLASSES.len())
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    vars.push((
        "fc.weight".into(),
        Var::from_tensor(&Tensor::from_vec(w, (cin, CLASSES.len()), dev)?)?,
    ));
    vars.push((
        "fc.bias".into(),
        Var::zeros(CLASSES.len(), DType::F32, dev)?,
    ));
    Ok(vars)
}

/// Band and segmented neutrophils as one class (PBC's 8 folders).
fn merged(c: usize) -> usize {
    if c == 1 {
        0
    } else {
        c
    }
}

fn probabilities(
    net: &WbcNet,
    set: &[&Sample],
    dev: &Device,
) -> candle_core::Result<Vec<[f32; 9]>> {
    let mut out = Vec::with_capacity(set.len());
    for chunk in set.chunks(128) {
        let mut data = Vec::with_capacity(chunk.len() * CROP * CROP * 3);
        for s in chunk {
            data.extend(plain(s));
        }
        let x = Tensor::from_vec(data, (chunk.len(), CROP, CROP, 3), dev)?;
        let p = candle_nn::ops::softmax(&net.forward(&x)?, 1)?.to_vec2::<f32>()?;
        out.extend(p.into_iter().map(|r| std::array::from_fn(|i| r[i])));
    }
    Ok(out)
}

fn argmax(p: &[f32; 9]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
        .0
}

/// Held-out accuracy over the nine classes and over the eight of the
/// differential (band and segmented neutrophils merged, [`merged`]).
fn accuracies(p: &[[f32; 9]], truth: &[usize]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let calls = || p.iter().zip(truth).map(|(p, &t)| (argmax(p), t));
    let acc9 = calls().filter(|&(c, t)| c == t).count() as f64 / n;
    let acc8 = calls().filter(|&(c, t)| merged(c) == merged(t)).count() as f64 / n;
    (acc9, acc8)
}

/// Rows: the true class; columns: the net's most probable one.
fn confusion(p: &[[f32; 9]], truth: &[usize]) -> Vec<Vec<usize>> {
    let mut confusion = vec![vec![0usize; CLASSES.len()]; CLASSES.len()];
    for (p, &t) in p.iter().zip(truth) {
        confusion[t][argmax(p)] += 1;
    }
    confusion
}

/// Of the held-out cells, how many are given a class at `min_confidence`
/// ([`decide`]) and how many of those are right over the eight classes.
/// Platelets are accepted as "platelet" here: `decide` leaves them for
/// review in a differential, but PBC holds them as a class of their own.
fn accepted_calls(p: &[[f32; 9]], truth: &[usize], min_confidence: f32) -> (usize, usize) {
    let (mut accepted, mut right) = (0usize, 0usize);
    for (p, &t) in p.iter().zip(truth) {
        let call = decide(p, min_confidence).or_else(|| {
            (argmax(p) == crate::model::wbc::PLATELET && p[argmax(p)] >= min_confidence)
                .then_some(crate::model::wbc::PLATELET)
        });
        if let Some(c) = call {
            accepted += 1;
            right += (merged(c) == merged(t)) as usize;
        }
    }
    (accepted, right)
}

/// Train the white-cell classifier as `args` says (held-out part chosen
/// per image, seeded), write its weights after every epoch and
/// `training_report.json` to `args.out`, and return the report. Errors:
/// unreadable or empty data, or a file that cannot be written.
pub fn train(args: &TrainArgs) -> anyhow::Result<Report> {
    let dev = Device::Cpu;
    let (samples, skipped) = read_tar(&args.data)?;
    anyhow::ensure!(
        !samples.is_empty(),
        "no labelled images in {}",
        args.data.display()
    );
    let is_holdout = |s: &Sample| held_out(args.seed, args.holdout_pct, &s.name);
    let (holdout, mut train): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| is_holdout(s));
    eprintln!(
        "wbc: {} train, {} held out, {skipped} neutrophils of unknown form skipped",
        train.len(),
        holdout.len()
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let vars = seeded_vars(&mut rng, &dev)?;
    let by_name: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let net = WbcNet::load(|n| {
        by_name
            .get(n)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("no {n}")))
    })?;
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = (steps_per_epoch * args.epochs).max(1);
    let truth: Vec<usize> = holdout.iter().map(|s| s.label).collect();
    let mut log = Vec::new();
    let mut step = 0usize;
    for epoch in 1..=args.epochs {
        let started = std::time::Instant::now();
        train.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        for (k, chunk) in train.chunks(args.batch).enumerate() {
            let progress = step as f64 / total_steps as f64;
            opt.set_learning_rate(super::cosine_lr(args.lr, 0.03, progress));
            let mut data = Vec::with_capacity(chunk.len() * CROP * CROP * 3);
            let mut labels = Vec::with_capacity(chunk.len());
            for s in chunk {
                data.extend(augmented(s, &mut rng));
                labels.push(s.label as u32);
            }
            let x = Tensor::from_vec(data, (chunk.len(), CROP, CROP, 3), &dev)?;
            let y = Tensor::from_vec(labels, chunk.len(), &dev)?;
            let loss = candle_nn::loss::cross_entropy(&net.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()? as f64;
            loss_sum += l * chunk.len() as f64;
            step += 1;
            if k % 50 == 0 {
                eprintln!(
                    "  epoch {epoch} step {k}/{steps_per_epoch} loss {l:.4} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let p = probabilities(&net, &holdout, &dev)?;
        let (acc9, acc8) = accuracies(&p, &truth);
        let entry = EpochLog {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            holdout_accuracy_9: acc9,
            holdout_accuracy_8: acc8,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {epoch}: loss {:.4} held-out acc9 {acc9:.4} acc8 {acc8:.4} ({:.0} s)",
            entry.train_loss, entry.seconds
        );
        log.push(entry);
        save(&vars, &args.out)?;
    }
    let p = probabilities(&net, &holdout, &dev)?;
    let (acc9, acc8) = accuracies(&p, &truth);
    let confusion = confusion(&p, &truth);
    let (accepted, right) = accepted_calls(&p, &truth, args.min_confidence);
    let n = truth.len().max(1) as f64;
    let report = Report {
        seed: args.seed,
        epochs: args.epochs,
        classes: CLASSES.to_vec(),
        train_images: train.len(),
        holdout_images: holdout.len(),
        accuracy_9: acc9,
        accuracy_8: acc8,
        confusion,
        min_confidence: args.min_confidence,
        review_rate: 1.0 - accepted as f64 / n,
        accepted_accuracy_8: right as f64 / accepted.max(1) as f64,
        epoch_log: log,
    };
    std::fs::write(
        args.out.join("training_report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

fn save(vars: &[(String, Var)], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, out.join("wbc.safetensors"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbc_folders_map_to_the_differential_classes() {
        assert_eq!(label_of("neutrophil", "SNE_1.jpg"), Some(0));
        assert_eq!(label_of("neutrophil", "BNE_1.jpg"), Some(1));
        assert_eq!(label_of("neutrophil", "NEUTROPHIL_1.jpg"), None);
        assert_eq!(
            CLASSES[label_of("ig", "MY_1.jpg").unwrap()],
            "immature_granulocyte"
        );
        assert_eq!(
            CLASSES[label_of("platelet", "PLATELET_1.jpg").unwrap()],
            "platelet"
        );
        assert_eq!(label_of("other", "x.jpg"), None);
    }

    /// One step of training lowers the loss on the batch it saw: the
    /// gradients flow through the unfold convolutions and the pools.
    #[test]
    fn a_step_lowers_the_loss() {
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(7);
        let vars = seeded_vars(&mut rng, &dev).unwrap();
        let by_name: HashMap<String, Tensor> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let net = WbcNet::load(|n| Ok(by_name[n].clone())).unwrap();
        let data: Vec<f32> = (0..4 * CROP * CROP * 3)
            .map(|_| rng.gen_range(0.0..2.0))
            .collect();
        let x = Tensor::from_vec(data, (4, CROP, CROP, 3), &dev).unwrap();
        let y = Tensor::from_vec(vec![0u32, 2, 4, 8], 4, &dev).unwrap();
        let mut opt = AdamW::new(
            vars.iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr: 1e-3,
                ..Default::default()
            },
        )
        .unwrap();
        let loss =
            |net: &WbcNet| candle_nn::loss::cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
        let before = loss(&net);
        for _ in 0..5 {
            opt.backward_step(&loss(&net)).unwrap();
        }
        let (b, a) = (
            before.to_scalar::<f32>().unwrap(),
            loss(&net).to_scalar::<f32>().unwrap(),
        );
        assert!(a < b, "loss {b} -> {a}");
    }
}
