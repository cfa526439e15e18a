//! Training of the malaria crop classifier (`argusd train malaria`).
//!
//! Reproducible: the split, the initial weights, the shuffling and the
//! augmentation all come from one seed, and the run is single-device CPU.
//!
//! The held-out part is chosen by *patient*, not by crop: the NIH file names
//! start with the slide/patient id (`C100P61ThinF_IMG_...`), and crops of
//! one patient's slide look alike, so a crop-level split would overstate the
//! accuracy on a new patient.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::dihedral_source;
use crate::model::malaria::{planes, MalariaNet, CHANNELS, CROP};

/// `argusd train malaria`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Tar of PNG crops under */Parasitized/ and */Uninfected/.
    #[arg(long, default_value = "../shared/data/nih-malaria-gray50/train.tar")]
    pub data: PathBuf,
    #[arg(long, default_value = "models/malaria")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 20261122)]
    pub seed: u64,
    /// Share of patients held out for validation, in percent.
    #[arg(long, default_value_t = 15)]
    pub holdout_pct: u64,
    /// Directory of red-cell crops from normal smears (`pbs count
    /// --crops-dir`), added as uninfected.
    ///
    /// 50x50 grayscale crops as argusd's own pipeline cuts them: they teach
    /// the net what those look like. Grouped by source photo for the split.
    #[arg(long)]
    pub extra_negatives: Option<PathBuf>,
    /// Start from these weights (fine-tuning) instead of seeded random ones.
    #[arg(long)]
    pub init: Option<PathBuf>,
}

struct Sample {
    pixels: Vec<u8>,
    label: u8,
    group: String,
    /// From the NIH set (false: an extra negative from a normal smear).
    nih: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub epochs: usize,
    pub train_crops: usize,
    pub val_crops: usize,
    pub train_patients: usize,
    pub val_patients: usize,
    pub accuracy: f64,
    pub roc_auc: f64,
    /// [[true negative, false positive], [false negative, true positive]] at p >= 0.5.
    pub confusion: [[usize; 2]; 2],
    pub sensitivity: f64,
    pub specificity: f64,
    /// Extra normal-smear crops: how many trained on, how many held out,
    /// and the share of held-out ones called parasitized at p >= 0.5.
    pub smear_negatives_train: usize,
    pub smear_negatives_val: usize,
    pub smear_negatives_val_positive_rate: f64,
    pub epoch_log: Vec<EpochLog>,
}

#[derive(Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_accuracy: f64,
    pub val_auc: f64,
    pub seconds: f64,
}

fn read_tar(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let label = if name.contains("/Parasitized/") {
            1
        } else if name.contains("/Uninfected/") {
            0
        } else {
            continue;
        };
        if !name.ends_with(".png") {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        let img = image::load_from_memory(&bytes)?.into_luma8();
        let img = if img.dimensions() == (CROP as u32, CROP as u32) {
            img
        } else {
            image::imageops::resize(
                &img,
                CROP as u32,
                CROP as u32,
                image::imageops::FilterType::Triangle,
            )
        };
        let file = name.rsplit('/').next().unwrap_or_default();
        let group = file.split("_IMG").next().unwrap_or(file).to_string();
        out.push(Sample {
            pixels: img.into_raw(),
            label,
            group,
            nih: true,
        });
    }
    Ok(out)
}

/// Crops named `<photo>_<index>_p<score>.png`: uninfected, grouped by photo.
fn read_extra_negatives(dir: &Path) -> anyhow::Result<Vec<Sample>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for p in names {
        let img = image::open(&p)?.into_luma8();
        anyhow::ensure!(
            img.dimensions() == (CROP as u32, CROP as u32),
            "{}: crops must be {CROP}x{CROP}",
            p.display()
        );
        let stem = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let photo = stem.rsplitn(3, '_').nth(2).unwrap_or(&stem).to_string();
        out.push(Sample {
            pixels: img.into_raw(),
            label: 0,
            group: format!("smear:{photo}"),
            nih: false,
        });
    }
    Ok(out)
}

/// Stable across runs and platforms (unlike std's randomised hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// One of the 8 flips/rotations of the square crop, plus a brightness and
/// contrast change of the cell (the planes remove the mean, so only
/// contrast survives; it stands for stain differences).
fn augment(src: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let t = rng.gen_range(0..8u8);
    let contrast: f32 = rng.gen_range(0.8..1.25);
    let mut out = vec![0u8; CROP * CROP];
    let n = CROP - 1;
    for y in 0..CROP {
        for x in 0..CROP {
            let (sx, sy) = dihedral_source(x, y, n, t);
            let p = src[sy * CROP + sx];
            out[y * CROP + x] = if p <= 8 {
                p
            } else {
                (128.0 + (p as f32 - 128.0) * contrast).clamp(9.0, 255.0) as u8
            };
        }
    }
    out
}

fn batch_tensor(
    samples: &[&Sample],
    aug: Option<&mut StdRng>,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut data = Vec::with_capacity(samples.len() * CHANNELS * CROP * CROP);
    let mut labels = Vec::with_capacity(samples.len());
    match aug {
        Some(rng) => {
            for s in samples {
                data.extend(planes(&augment(&s.pixels, rng)));
                labels.push(s.label as f32);
            }
        }
        None => {
            for s in samples {
                data.extend(planes(&s.pixels));
                labels.push(s.label as f32);
            }
        }
    }
    Ok((
        Tensor::from_vec(data, (samples.len(), CHANNELS, CROP, CROP), dev)?,
        Tensor::from_vec(labels, samples.len(), dev)?,
    ))
}

/// Mean binary cross-entropy on logits in the overflow-free form
/// `max(x, 0) - x*y + ln(1 + e^-|x|)` (candle's version takes the log of a
/// sigmoid, which gives NaN once a logit saturates).
fn bce_with_logits(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((x.relu()? - (x * y)?)? + softplus)?.mean_all()
}

/// ROC AUC as the probability that a random positive outranks a random
/// negative (ties count half): the Mann-Whitney statistic.
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0f64, 0usize);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn evaluate(net: &MalariaNet, val: &[&Sample], dev: &Device) -> candle_core::Result<Vec<f32>> {
    let mut scores = Vec::with_capacity(val.len());
    for chunk in val.chunks(256) {
        let (x, _) = batch_tensor(chunk, None, dev)?;
        scores.extend(candle_nn::ops::sigmoid(&net.forward(&x)?)?.to_vec1::<f32>()?);
    }
    Ok(scores)
}

fn metrics(scores: &[f32], labels: &[u8]) -> (f64, [[usize; 2]; 2]) {
    let mut cm = [[0usize; 2]; 2];
    for (s, &l) in scores.iter().zip(labels) {
        cm[l as usize][(*s >= 0.5) as usize] += 1;
    }
    let acc = (cm[0][0] + cm[1][1]) as f64 / scores.len().max(1) as f64;
    (acc, cm)
}

/// Kaiming-uniform weights and zero biases from the seed, so that two runs
/// with one seed start from the same point (candle's own initialisers draw
/// from an unseeded generator).
fn seeded_varmap(rng: &mut StdRng, dev: &Device) -> candle_core::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        let mut cin = CHANNELS;
        for (i, c) in [16usize, 32, 64, 128].into_iter().enumerate() {
            let fan_in = (cin * 9) as f32;
            let bound = (6.0 / fan_in).sqrt();
            let w: Vec<f32> = (0..c * cin * 9)
                .map(|_| rng.gen_range(-bound..bound))
                .collect();
            data.insert(
                format!("conv{i}.weight"),
                Var::from_tensor(&Tensor::from_vec(w, (c, cin, 3, 3), dev)?)?,
            );
            data.insert(format!("conv{i}.bias"), Var::zeros(c, DType::F32, dev)?);
            cin = c;
        }
        let bound = (1.0 / cin as f32).sqrt();
        let w: Vec<f32> = (0..cin).map(|_| rng.gen_range(-bound..bound)).collect();
        data.insert(
            "fc.weight".into(),
            Var::from_tensor(&Tensor::from_vec(w, (1, cin), dev)?)?,
        );
        data.insert("fc.bias".into(), Var::zeros(1, DType::F32, dev)?);
    }
    Ok(varmap)
}

/// The held-out accuracy and ROC AUC on NIH crops after an epoch; the
/// held-out normal-smear crops called parasitized are printed.
fn check_epoch(
    net: &MalariaNet,
    val: &[&Sample],
    val_labels: &[u8],
    val_smear: &[&Sample],
    dev: &Device,
) -> anyhow::Result<(f64, f64)> {
    let scores = evaluate(net, val, dev)?;
    let (acc, _) = metrics(&scores, val_labels);
    let auc = roc_auc(&scores, val_labels);
    let smear_fp = evaluate(net, val_smear, dev)?
        .iter()
        .filter(|&&p| p >= 0.5)
        .count();
    eprintln!(
        "  held-out normal-smear crops called parasitized: {smear_fp} of {}",
        val_smear.len()
    );
    Ok((acc, auc))
}

/// Write the weights to `out/malaria.safetensors`.
fn save(varmap: &VarMap, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let weights = out.join("malaria.safetensors");
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &weights)?;
    Ok(())
}

/// Train the malaria classifier as `args` says (split by patient, seeded),
/// write its weights and `training_report.json` to `args.out`, and return
/// the report. Errors: unreadable or empty data, an unloadable `init`, or
/// a file that cannot be written.
pub fn train(args: &TrainArgs) -> anyhow::Result<Report> {
    let dev = Device::Cpu;
    let mut samples = read_tar(&args.data)?;
    anyhow::ensure!(
        !samples.is_empty(),
        "no labelled crops in {}",
        args.data.display()
    );
    if let Some(dir) = &args.extra_negatives {
        samples.extend(read_extra_negatives(dir)?);
    }
    let is_val = |s: &Sample| fnv1a(&format!("{}:{}", args.seed, s.group)) % 100 < args.holdout_pct;
    let (val_all, mut train): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| is_val(s));
    // The accuracy and AUC targets are on NIH crops; normal-smear crops are
    // scored on their own (false-positive rate).
    let (val, val_smear): (Vec<&Sample>, Vec<&Sample>) = val_all.into_iter().partition(|s| s.nih);
    let smear_train = train.iter().filter(|s| !s.nih).count();
    let groups = |v: &[&Sample]| {
        v.iter()
            .map(|s| s.group.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    tracing::info!(
        train = train.len(),
        val = val.len(),
        train_patients = groups(&train),
        val_patients = groups(&val),
        "malaria: data split by patient"
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut varmap = seeded_varmap(&mut rng, &dev)?;
    if let Some(init) = &args.init {
        varmap
            .load(init)
            .map_err(|e| anyhow::anyhow!("{}: {e}", init.display()))?;
    }
    let net = MalariaNet::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = (steps_per_epoch * args.epochs).max(1);
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let val_labels: Vec<u8> = val.iter().map(|s| s.label).collect();
    let mut log = Vec::new();
    let mut step = 0usize;
    for epoch in 1..=args.epochs {
        let started = std::time::Instant::now();
        train.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        for chunk in train.chunks(args.batch) {
            // Cosine decay to 5% of the initial rate.
            let progress = step as f64 / total_steps as f64;
            opt.set_learning_rate(super::cosine_lr(args.lr, 0.05, progress));
            let (x, y) = batch_tensor(chunk, Some(&mut rng), &dev)?;
            let logits = net.forward(&x)?;
            let loss = bce_with_logits(&logits, &y)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            step += 1;
        }
        let (acc, auc) = check_epoch(&net, &val, &val_labels, &val_smear, &dev)?;
        let entry = EpochLog {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            val_accuracy: acc,
            val_auc: auc,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(?entry, "malaria: epoch done");
        eprintln!(
            "epoch {epoch}: loss {:.4} val acc {:.4} auc {:.4} ({:.0} s)",
            entry.train_loss, acc, auc, entry.seconds
        );
        log.push(entry);
    }
    let scores = evaluate(&net, &val, &dev)?;
    let (accuracy, confusion) = metrics(&scores, &val_labels);
    let smear_scores = evaluate(&net, &val_smear, &dev)?;
    let smear_fp = smear_scores.iter().filter(|&&p| p >= 0.5).count() as f64
        / smear_scores.len().max(1) as f64;
    save(&varmap, &args.out)?;
    let report = Report {
        seed: args.seed,
        epochs: args.epochs,
        train_crops: train.len(),
        val_crops: val.len(),
        train_patients: groups(&train),
        val_patients: groups(&val),
        accuracy,
        roc_auc: roc_auc(&scores, &val_labels),
        sensitivity: confusion[1][1] as f64 / (confusion[1][0] + confusion[1][1]).max(1) as f64,
        specificity: confusion[0][0] as f64 / (confusion[0][0] + confusion[0][1]).max(1) as f64,
        confusion,
        smear_negatives_train: smear_train,
        smear_negatives_val: val_smear.len(),
        smear_negatives_val_positive_rate: smear_fp,
        epoch_log: log,
    };
    std::fs::write(
        args.out.join("training_report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]), 0.5);
    }

    #[test]
    fn augmentation_keeps_the_background_black() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut src = vec![0u8; CROP * CROP];
        src[CROP * 10 + 20] = 200;
        let out = augment(&src, &mut rng);
        assert_eq!(out.iter().filter(|&&p| p > 8).count(), 1);
    }
}
