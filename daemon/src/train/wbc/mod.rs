//! Training of the white-cell classifier (`argusd train wbc`) on PBC, and
//! with `--bccd-labels` on BCCD's labelled cells too (a second lab,
//! [`super::bccd`]), usually as a fine-tune (`--init`) of a PBC-only run.
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

pub use crate::model::wbc::figures::OtherLab;
use crate::model::wbc::figures::{accepted_calls, accuracies, confusion, merged, other_lab};

use super::dihedral_source;
use crate::model::wbc::{planes, sample_window, WbcNet, CLASSES, CROP, WIDTHS, WINDOW_RBC};

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
    /// BCCD's white-cell labels (`<Class> <id>` per photo): the cells of
    /// BCCD's train split join the training, those of its val split are
    /// reported as a second lab's check. PBC alone when not given.
    #[arg(long)]
    pub bccd_labels: Option<PathBuf>,
    /// BCCD's folder (`Annotations/`, `JPEGImages/`, `train.txt`, `val.txt`).
    #[arg(long, default_value = "../shared/data/bccd")]
    pub bccd: PathBuf,
    /// Times each BCCD training cell is drawn per epoch, each draw augmented
    /// anew (BCCD has ~200 labelled cells to PBC's ~14,000).
    #[arg(long, default_value_t = 10)]
    pub bccd_repeat: usize,
    /// Weights to start from instead of the seeded initialisation (a
    /// fine-tune of an earlier run).
    #[arg(long)]
    pub init: Option<PathBuf>,
}

/// One labelled white cell: interleaved RGB (`w` x `h`), its class index
/// in [`CLASSES`], its name (which the held-out split hashes), and where
/// the cell is: its centre (`cx`, `cy`, pixels) and the red-cell diameter
/// around it (`rbc_px`), which set the window.
pub struct Sample {
    pub rgb: Vec<u8>,
    pub w: usize,
    pub h: usize,
    pub label: usize,
    /// Only the label's lineage is known: a neutrophil of unknown form,
    /// trained towards either neutrophil class.
    pub lineage_only: bool,
    pub name: String,
    pub cx: f32,
    pub cy: f32,
    pub rbc_px: f32,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The weights the run started from (`--init`); `None`: seeded.
    pub init: Option<String>,
    pub classes: Vec<&'static str>,
    /// PBC images trained on.
    pub train_images: usize,
    /// BCCD cells trained on, each drawn `bccd_repeat` times per epoch.
    pub bccd_train_cells: usize,
    pub bccd_repeat: usize,
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
    /// BCCD's val-split cells, when `--bccd-labels` is given.
    pub bccd_val: Option<OtherLab>,
    pub epoch_log: Vec<EpochLog>,
}

#[derive(Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub holdout_accuracy_9: f64,
    pub holdout_accuracy_8: f64,
    pub seconds: f64,
    /// BCCD's val figures after the epoch, when BCCD is in the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bccd_val: Option<OtherLab>,
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
            lineage_only: false,
            name: file,
            cx: w as f32 / 2.0,
            cy: h as f32 / 2.0,
            rbc_px: PBC_RBC_PX,
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
    sample_window(&s.rgb, s.w, s.h, s.cx, s.cy, WINDOW_RBC * s.rbc_px)
}

/// The un-augmented input planes of a sample: the centred window.
fn plain(s: &Sample) -> Vec<f32> {
    planes(&centred_window(s))
}

fn augmented(s: &Sample, rng: &mut StdRng) -> Vec<f32> {
    let side = WINDOW_RBC * s.rbc_px * rng.gen_range(0.85f32..1.18);
    let shift = 0.08 * side;
    let cx = s.cx + rng.gen_range(-shift..shift);
    let cy = s.cy + rng.gen_range(-shift..shift);
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

/// Seeded initial weights, or `init`'s where given. Errors: `init`
/// unreadable or lacking a tensor of the net.
fn initial_vars(
    rng: &mut StdRng,
    init: Option<&Path>,
    dev: &Device,
) -> anyhow::Result<Vec<(String, Var)>> {
    // Drawn even when `init` replaces them, so that the shuffling and the
    // augmentation take the same random numbers as a seeded run.
    let vars = seeded_vars(rng, dev)?;
    if let Some(path) = init {
        let loaded = candle_core::safetensors::load(path, dev)?;
        for (name, var) in &vars {
            let t = loaded
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("{}: no {name}", path.display()))?;
            var.set(t)?;
        }
    }
    Ok(vars)
}

/// Mean cross-entropy of `logits` (N x 9) against, per row, the set of
/// classes any of which is right (`mask`: 0 for those, a large negative
/// number for the rest): `-ln` of the probability summed over the set,
/// which for a one-class set is the usual cross-entropy.
fn set_cross_entropy(logits: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    (logits.log_sum_exp(1)? - logits.broadcast_add(mask)?.log_sum_exp(1)?)?.mean_all()
}

/// The [`set_cross_entropy`] mask row of a sample. The wrong classes get
/// -1e4 rather than -inf: `exp` of it is 0 in f32 all the same, and a
/// finite mask keeps `inf - inf` (a NaN gradient) out of the sums.
fn mask_row(s: &Sample) -> [f32; 9] {
    std::array::from_fn(|c| {
        let right = c == s.label || (s.lineage_only && merged(c) == merged(s.label));
        if right {
            0.0
        } else {
            -1e4
        }
    })
}

/// What one epoch's pass needs besides its data: the net, its optimiser,
/// the run's options, the learning-rate schedule's position (batches done,
/// of `total_steps`) and the loss.
struct Pass<'a> {
    net: &'a WbcNet,
    opt: AdamW,
    args: &'a TrainArgs,
    step: usize,
    total_steps: usize,
    /// [`set_cross_entropy`] where some label is a lineage only; the usual
    /// cross-entropy otherwise, so that a PBC-only run computes exactly
    /// what it did before BCCD joined.
    set_loss: bool,
}

impl Pass<'_> {
    /// One epoch over `train` (shuffled by the caller) in batches; returns
    /// the mean loss.
    fn epoch(&mut self, train: &[&Sample], rng: &mut StdRng, epoch: usize) -> anyhow::Result<f64> {
        let dev = Device::Cpu;
        let started = std::time::Instant::now();
        let steps_per_epoch = train.len().div_ceil(self.args.batch);
        let mut loss_sum = 0f64;
        for (k, chunk) in train.chunks(self.args.batch).enumerate() {
            let progress = self.step as f64 / self.total_steps as f64;
            self.opt
                .set_learning_rate(crate::train::cosine_lr(self.args.lr, 0.03, progress));
            let mut data = Vec::with_capacity(chunk.len() * CROP * CROP * 3);
            for s in chunk {
                data.extend(augmented(s, rng));
            }
            let x = Tensor::from_vec(data, (chunk.len(), CROP, CROP, 3), &dev)?;
            let logits = self.net.forward(&x)?;
            let loss = if self.set_loss {
                let mask: Vec<f32> = chunk.iter().flat_map(|s| mask_row(s)).collect();
                let m = Tensor::from_vec(mask, (chunk.len(), CLASSES.len()), &dev)?;
                set_cross_entropy(&logits, &m)?
            } else {
                let labels: Vec<u32> = chunk.iter().map(|s| s.label as u32).collect();
                let y = Tensor::from_vec(labels, chunk.len(), &dev)?;
                candle_nn::loss::cross_entropy(&logits, &y)?
            };
            self.opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()? as f64;
            loss_sum += l * chunk.len() as f64;
            self.step += 1;
            if k % 50 == 0 {
                eprintln!(
                    "  epoch {epoch} step {k}/{steps_per_epoch} loss {l:.4} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(loss_sum / train.len() as f64)
    }
}

/// BCCD's labelled cells of its train and val splits, when `args` names
/// its labels; empty otherwise.
fn bccd_sets(args: &TrainArgs) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let Some(labels) = &args.bccd_labels else {
        return Ok((Vec::new(), Vec::new()));
    };
    Ok((
        crate::train::bccd::white_cells(&args.bccd, labels, Some("train"))?,
        crate::train::bccd::white_cells(&args.bccd, labels, Some("val"))?,
    ))
}

/// The BCCD val figures of the net as it stands (`None` without BCCD).
fn bccd_figures(
    net: &WbcNet,
    val: &[&Sample],
    min_confidence: f32,
) -> anyhow::Result<Option<OtherLab>> {
    if val.is_empty() {
        return Ok(None);
    }
    let truth: Vec<usize> = val.iter().map(|s| s.label).collect();
    let o = other_lab(
        &probabilities(net, val, &Device::Cpu)?,
        &truth,
        min_confidence,
    );
    // Shares are None only for an empty set, which returned above.
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    eprintln!(
        "  BCCD val ({} cells): accuracy {} review {} confident errors {} top class {}",
        o.cells,
        f(o.accuracy),
        f(o.review_rate),
        o.confident_errors,
        f(o.top_class_accuracy)
    );
    Ok(Some(o))
}

/// The run's report from the trained net: PBC's held-out figures and
/// BCCD's val figures, with the run's options and `log`.
fn final_report(
    net: &WbcNet,
    args: &TrainArgs,
    (pbc_train, bccd_train): (usize, usize),
    holdout: &[&Sample],
    val: &[&Sample],
    log: Vec<EpochLog>,
) -> anyhow::Result<Report> {
    let truth: Vec<usize> = holdout.iter().map(|s| s.label).collect();
    let p = probabilities(net, holdout, &Device::Cpu)?;
    let (acc9, acc8) = accuracies(&p, &truth);
    let (accepted, right) = accepted_calls(&p, &truth, args.min_confidence);
    let n = truth.len().max(1) as f64;
    Ok(Report {
        seed: args.seed,
        epochs: args.epochs,
        lr: args.lr,
        init: args.init.as_ref().map(|p| p.display().to_string()),
        classes: CLASSES.to_vec(),
        train_images: pbc_train,
        bccd_train_cells: bccd_train,
        bccd_repeat: args.bccd_repeat,
        holdout_images: holdout.len(),
        accuracy_9: acc9,
        accuracy_8: acc8,
        confusion: confusion(&p, &truth),
        min_confidence: args.min_confidence,
        review_rate: 1.0 - accepted as f64 / n,
        accepted_accuracy_8: right as f64 / accepted.max(1) as f64,
        bccd_val: bccd_figures(net, val, args.min_confidence)?,
        epoch_log: log,
    })
}

/// Train the white-cell classifier as `args` says (PBC's held-out part
/// chosen per image, seeded; BCCD's cells by its own train/val split),
/// write its weights after every epoch and `training_report.json` to
/// `args.out`, and return the report. Errors: unreadable or empty data, or
/// a file that cannot be written.
pub fn train(args: &TrainArgs) -> anyhow::Result<Report> {
    let dev = Device::Cpu;
    let (samples, skipped) = read_tar(&args.data)?;
    anyhow::ensure!(
        !samples.is_empty(),
        "no labelled images in {}",
        args.data.display()
    );
    let (bccd_train, bccd_val) = bccd_sets(args)?;
    let is_holdout = |s: &Sample| held_out(args.seed, args.holdout_pct, &s.name);
    let (holdout, mut train): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| is_holdout(s));
    let pbc_train = train.len();
    let bccd_draws = if bccd_train.is_empty() {
        0
    } else {
        args.bccd_repeat
    };
    for _ in 0..bccd_draws {
        train.extend(bccd_train.iter());
    }
    eprintln!(
        "wbc: {pbc_train} PBC train (+ {} BCCD cells x {bccd_draws}), {} PBC held out, {} BCCD val; \
         {skipped} PBC neutrophils of unknown form skipped",
        bccd_train.len(),
        holdout.len(),
        bccd_val.len()
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let vars = initial_vars(&mut rng, args.init.as_deref(), &dev)?;
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
    let opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut pass = Pass {
        net: &net,
        opt,
        args,
        step: 0,
        total_steps: (train.len().div_ceil(args.batch) * args.epochs).max(1),
        set_loss: train.iter().any(|s| s.lineage_only),
    };
    let truth: Vec<usize> = holdout.iter().map(|s| s.label).collect();
    let val: Vec<&Sample> = bccd_val.iter().collect();
    let mut log = Vec::new();
    for epoch in 1..=args.epochs {
        let started = std::time::Instant::now();
        train.shuffle(&mut rng);
        let loss = pass.epoch(&train, &mut rng, epoch)?;
        let (acc9, acc8) = accuracies(&probabilities(&net, &holdout, &dev)?, &truth);
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "epoch {epoch}: loss {loss:.4} held-out acc9 {acc9:.4} acc8 {acc8:.4} ({seconds:.0} s)"
        );
        log.push(EpochLog {
            epoch,
            train_loss: loss,
            holdout_accuracy_9: acc9,
            holdout_accuracy_8: acc8,
            seconds,
            bccd_val: bccd_figures(&net, &val, args.min_confidence)?,
        });
        save(&vars, &args.out)?;
    }
    let report = final_report(
        &net,
        args,
        (pbc_train, bccd_train.len()),
        &holdout,
        &val,
        log,
    )?;
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

    fn sample(label: usize, lineage_only: bool) -> Sample {
        Sample {
            rgb: vec![200; 3],
            w: 1,
            h: 1,
            label,
            lineage_only,
            name: String::new(),
            cx: 0.5,
            cy: 0.5,
            rbc_px: PBC_RBC_PX,
        }
    }

    #[test]
    fn a_one_class_set_is_the_usual_cross_entropy_and_a_neutrophil_of_unknown_form_takes_either() {
        let dev = Device::Cpu;
        let logits: Vec<f32> = (0..18).map(|i| ((i * 7) % 5) as f32 * 0.6 - 1.0).collect();
        let x = Tensor::from_vec(logits, (2, 9), &dev).unwrap();
        let rows = |s: &[Sample]| {
            let m: Vec<f32> = s.iter().flat_map(mask_row).collect();
            Tensor::from_vec(m, (s.len(), 9), &dev).unwrap()
        };
        let ours = set_cross_entropy(&x, &rows(&[sample(3, false), sample(0, false)]))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let y = Tensor::from_vec(vec![3u32, 0], 2, &dev).unwrap();
        let usual = candle_nn::loss::cross_entropy(&x, &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ours - usual).abs() < 1e-5, "{ours} vs {usual}");
        // Either form right: the loss is -ln(p_segmented + p_band), lower
        // than for either form alone.
        let p = candle_nn::ops::softmax(&x, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let either = set_cross_entropy(&x.narrow(0, 1, 1).unwrap(), &rows(&[sample(0, true)]))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((either + (p[1][0] + p[1][1]).ln()).abs() < 1e-5);
        assert_eq!(
            mask_row(&sample(2, true))[0],
            -1e4,
            "only neutrophils have forms"
        );
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
