//! The white-cell classifier on PBC's held-out split and on another lab's
//! labelled white cells, with and without the input's stain normalisation
//! and test-time flips: how the differential carries to photos it was not
//! trained on (issue 21, part 2).
//!
//! ```text
//! cargo run --release --example wbc_eval -- [--weights models/wbc/wbc.safetensors]
//!     [--pbc ../shared/data/pbc/pbc_normal.tar] [--bccd ../shared/data/bccd --labels FILE]
//!     [--split val] [--tta] [--min-confidence 0.7] [--skip-pbc]
//!     [--stain channel|overall [--q 0.99]] [--smooth] [--window-scale F] [--crops DIR]
//!     [--align K] [--shift S]
//! ```
//!
//! `--labels` holds one `<Class> <id>` line per BCCD photo (`Neutrophil
//! 00000`): the class of the photo's white cell, as the BCCD repository's
//! `labels.csv` gives it (one class per photo; photos with two are left
//! out). Each labelled cell is cut as `argus::train::bccd::white_cells`
//! cuts it (around BCCD's white-cell box, in a window of `WINDOW_RBC`
//! median red-cell diameters), as the appliance cuts one around the
//! white-cell net's box at its measured diameter.
//!
//! `--tta` averages the probabilities over the 8 flips and rotations, and
//! `--shift S` over the window and four copies S crop pixels off centre
//! (both: over all 40). The
//! rest are the experiments of the model card's section on BCCD: `--stain`
//! scales each window's optical density so that its `--q` quantile (per
//! channel, or summed) is the median of PBC's training windows (a negative
//! `--q` takes the median of the pixels over `-q` summed density, the red
//! cells), `--smooth` averages BCCD's windows over each output pixel's
//! footprint, `--window-scale` widens them, and `--crops DIR` classifies
//! ready-made 64x64 PNG windows named `<class>_<anything>.png`. `--align K`
//! moves the first K convolutions' pre-activations, per channel, from the
//! evaluated set's mean and spread (from up to 320 of its windows) to
//! those of PBC's training white cells: the feature-statistics alignment
//! of AdaBN (Li et al., "Adaptive Batch Normalization for practical domain
//! adaptation", Pattern Recognition 80 (2018) 109-117) on a net without
//! batch normalisation, an unsupervised adaptation to a new lab.

use std::path::PathBuf;

use argus::model::wbc::{self, decide, sample_window, WbcNet, CLASSES, CROP, WINDOW_RBC};
use argus::train::bccd::white_cells;
use argus::train::dihedral_source;
use argus::train::wbc::{centred_window, held_out, read_tar};
use candle_core::{Device, Tensor};

#[path = "bccd_common.rs"]
#[allow(dead_code)]
mod bccd_common;
use bccd_common::arg;

/// The held-out split of `argusd train wbc`'s defaults (the shipped run).
const SEED: u64 = 20261130;
const HOLDOUT_PCT: u64 = 15;

/// The five normal types of the independent check.
const NORMAL: [&str; 5] = [
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
];

fn lineage(class: usize) -> &'static str {
    match CLASSES[class] {
        "neutrophil_segmented" | "neutrophil_band" => "neutrophil",
        other => other,
    }
}

struct Options {
    /// Experiment: `channel` or `overall` normalisation to `refs`.
    stain: String,
    refs: [f32; 4],
    q: f32,
    tta: bool,
    /// Experiment: also the windows this many crop pixels off centre,
    /// left, right, up and down, their probabilities averaged.
    shift: usize,
    min_confidence: f32,
    /// Experiment: BCCD's windows averaged over each pixel's footprint.
    smooth: bool,
    /// Experiment: BCCD's windows this many times wider.
    window_scale: f32,
    /// Only BCCD's photos listed in `<split>.txt`.
    split: Option<String>,
    /// Experiment: the first `align` layers' pre-activations moved to the
    /// source's per-channel mean and spread (AdaBN-like), from `source`.
    align: usize,
    source: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Per-channel mean and standard deviation of NHWC `z`.
fn channel_stats(z: &Tensor) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let c = z.dim(3)?;
    let flat = z.reshape(((), c))?;
    let m = flat.mean(0)?;
    let v = flat.broadcast_sub(&m)?.sqr()?.mean(0)?;
    let sd = (v + 1e-5)?.sqrt()?;
    Ok((m.to_vec1()?, sd.to_vec1()?))
}

/// Logits of a forward pass that moves the first `o.align` layers'
/// pre-activations from `target`'s statistics to the source's; with
/// `target` empty, each layer's statistics are taken from this batch (and
/// pushed to `target`). With `collect`, nothing is moved and each layer's
/// raw statistics are pushed to `collect`.
fn forward_aligned(
    net: &WbcNet,
    x: &Tensor,
    o: &Options,
    target: &mut Vec<(Vec<f32>, Vec<f32>)>,
    collect: Option<&mut Vec<(Vec<f32>, Vec<f32>)>>,
) -> anyhow::Result<Tensor> {
    let dev = Device::Cpu;
    let estimate = target.is_empty();
    let mut collect = collect;
    let mut x = x.clone();
    for (i, (w, b)) in net.convs.iter().enumerate() {
        let mut z = wbc::conv3x3(&x, w, b)?;
        if let Some(c) = collect.as_deref_mut() {
            c.push(channel_stats(&z)?);
        } else if i < o.align {
            if estimate {
                target.push(channel_stats(&z)?);
            }
            let (mt, st) = &target[i];
            let (ms, ss) = &o.source[i];
            let scale: Vec<f32> = ss.iter().zip(st).map(|(a, b)| a / b).collect();
            let shift: Vec<f32> = (0..mt.len()).map(|k| ms[k] - mt[k] * scale[k]).collect();
            let n = scale.len();
            z = z
                .broadcast_mul(&Tensor::from_vec(scale, n, &dev)?)?
                .broadcast_add(&Tensor::from_vec(shift, n, &dev)?)?;
        }
        x = z.relu()?;
        if wbc::POOL_AFTER.contains(&i) {
            x = wbc::max_pool2(&x)?;
        }
    }
    let pooled = x.mean(2)?.mean(1)?;
    Ok(pooled.matmul(&net.fc_w)?.broadcast_add(&net.fc_b)?)
}

fn input(crops: &[Vec<f32>], o: &Options) -> anyhow::Result<Tensor> {
    let mut data = Vec::new();
    for c in crops {
        data.extend(if !o.stain.is_empty() {
            normalised(wbc::planes(c), o)
        } else {
            wbc::planes(c)
        });
    }
    Ok(Tensor::from_vec(
        data,
        (crops.len(), CROP, CROP, 3),
        &Device::Cpu,
    )?)
}

/// Experiment: the source's per-layer statistics over PBC's training
/// white cells (every 5th), chunk-averaged (equal chunks but the last).
fn source_stats(net: &WbcNet, tar: &str, o: &Options) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let (samples, _) = read_tar(&PathBuf::from(tar))?;
    let crops: Vec<Vec<f32>> = samples
        .iter()
        .filter(|s| !held_out(SEED, HOLDOUT_PCT, &s.name) && s.label != wbc::PLATELET)
        .step_by(5)
        .map(centred_window)
        .collect();
    // Pooled mean and variance: E[x] and E[x^2] per channel over chunks.
    let mut acc: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let mut weight = 0f64;
    for chunk in crops.chunks(64) {
        let mut st = Vec::new();
        forward_aligned(net, &input(chunk, o)?, o, &mut Vec::new(), Some(&mut st))?;
        let wgt = chunk.len() as f64;
        if acc.is_empty() {
            acc = st
                .iter()
                .map(|(m, _)| (vec![0.0; m.len()], vec![0.0; m.len()]))
                .collect();
        }
        for ((am, aq), (m, sd)) in acc.iter_mut().zip(&st) {
            for k in 0..m.len() {
                am[k] += wgt * m[k] as f64;
                aq[k] += wgt * (sd[k] as f64 * sd[k] as f64 + m[k] as f64 * m[k] as f64);
            }
        }
        weight += wgt;
    }
    println!(
        "source statistics from {} PBC training white cells",
        crops.len()
    );
    Ok(acc
        .into_iter()
        .map(|(m, q)| {
            let mean: Vec<f32> = m.iter().map(|v| (v / weight) as f32).collect();
            let sd: Vec<f32> = q
                .iter()
                .zip(&m)
                .map(|(q, m)| ((q / weight - (m / weight).powi(2)).max(1e-5)).sqrt() as f32)
                .collect();
            (mean, sd)
        })
        .collect())
}

/// The 8 flips and rotations of NHWC planes (`t` in 0..8), as training
/// augments them.
fn turned(p: &[f32], t: u8) -> Vec<f32> {
    let n = CROP - 1;
    let mut out = vec![0f32; p.len()];
    for y in 0..CROP {
        for x in 0..CROP {
            let (sx, sy) = dihedral_source(x, y, n, t);
            out[(y * CROP + x) * 3..][..3].copy_from_slice(&p[(sy * CROP + sx) * 3..][..3]);
        }
    }
    out
}

/// NHWC planes moved by (`dx`, `dy`) crop pixels, the edge repeated: the
/// window centred that far off.
fn shifted(p: &[f32], dx: isize, dy: isize) -> Vec<f32> {
    if dx == 0 && dy == 0 {
        return p.to_vec();
    }
    let n = CROP as isize;
    let mut out = vec![0f32; p.len()];
    for y in 0..n {
        for x in 0..n {
            let (sx, sy) = ((x + dx).clamp(0, n - 1), (y + dy).clamp(0, n - 1));
            let (o, i) = (((y * n + x) * 3) as usize, ((sy * n + sx) * 3) as usize);
            out[o..o + 3].copy_from_slice(&p[i..i + 3]);
        }
    }
    out
}

fn quantile(mut v: Vec<f32>, q: f32) -> f32 {
    let k = ((v.len() as f32 * q) as usize).min(v.len() - 1);
    *v.select_nth_unstable_by(k, f32::total_cmp).1
}

/// Per channel and summed `q`-quantiles of NHWC optical density; with
/// `q` negative, the per-channel medians of the pixels whose summed density
/// is over `-q` (the red cells, in most of a window).
fn levels(p: &[f32], q: f32) -> [f32; 4] {
    let mut out = [0f32; 4];
    if q < 0.0 {
        let fg: Vec<&[f32]> = p.chunks(3).filter(|x| x.iter().sum::<f32>() > -q).collect();
        if fg.len() < 20 {
            return [1.0; 4];
        }
        for c in 0..3 {
            out[c] = quantile(fg.iter().map(|x| x[c]).collect(), 0.5);
        }
        out[3] = out[0] + out[1] + out[2];
        return out;
    }
    for (c, o) in out.iter_mut().take(3).enumerate() {
        *o = quantile(p.iter().skip(c).step_by(3).copied().collect(), q);
    }
    out[3] = quantile(p.chunks(3).map(|x| x.iter().sum()).collect(), q);
    out
}

fn normalised(mut p: Vec<f32>, o: &Options) -> Vec<f32> {
    let l = levels(&p, o.q);
    let g = |c: usize| (o.refs[c] / l[c].max(0.05)).clamp(0.25, 4.0);
    let gains: [f32; 3] = match o.stain.as_str() {
        "channel" => [g(0), g(1), g(2)],
        _ => [g(3); 3],
    };
    for px in p.chunks_mut(3) {
        for c in 0..3 {
            px[c] *= gains[c];
        }
    }
    p
}

fn classify(net: &WbcNet, crops: &[Vec<f32>], o: &Options) -> anyhow::Result<Vec<[f32; 9]>> {
    let dev = Device::Cpu;
    if o.align > 0 {
        // Target statistics from up to 320 of the set's windows, spread.
        let step = crops.len().div_ceil(320).max(1);
        let sample: Vec<Vec<f32>> = crops.iter().step_by(step).cloned().collect();
        let mut target = Vec::new();
        forward_aligned(net, &input(&sample, o)?, o, &mut target, None)?;
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(64) {
            let logits = forward_aligned(net, &input(chunk, o)?, o, &mut target, None)?;
            for r in candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()? {
                let mut a = [0f32; 9];
                a.copy_from_slice(&r);
                out.push(a);
            }
        }
        return Ok(out);
    }
    let turns: Vec<u8> = if o.tta { (0..8).collect() } else { vec![0] };
    let s = o.shift as isize;
    let offsets: Vec<(isize, isize)> = if s > 0 {
        vec![(0, 0), (s, 0), (-s, 0), (0, s), (0, -s)]
    } else {
        vec![(0, 0)]
    };
    let looks: Vec<(u8, (isize, isize))> = turns
        .iter()
        .flat_map(|&t| offsets.iter().map(move |&d| (t, d)))
        .collect();
    let mut out = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(64) {
        let mut data = Vec::new();
        for c in chunk {
            let p = if !o.stain.is_empty() {
                normalised(wbc::planes(c), o)
            } else {
                wbc::planes(c)
            };
            for &(t, (dx, dy)) in &looks {
                data.extend(turned(&shifted(&p, dx, dy), t));
            }
        }
        let n = chunk.len() * looks.len();
        let x = Tensor::from_vec(data, (n, CROP, CROP, 3), &dev)?;
        let p = candle_nn::ops::softmax(&net.forward(&x)?, 1)?.to_vec2::<f32>()?;
        for rows in p.chunks(looks.len()) {
            let mut a = [0f32; 9];
            for r in rows {
                for (v, x) in a.iter_mut().zip(r) {
                    *v += x / rows.len() as f32;
                }
            }
            out.push(a);
        }
    }
    Ok(out)
}

fn pbc(net: &WbcNet, tar: &str, o: &Options) -> anyhow::Result<()> {
    let (samples, _) = read_tar(&PathBuf::from(tar))?;
    let held: Vec<_> = samples
        .iter()
        .filter(|s| held_out(SEED, HOLDOUT_PCT, &s.name))
        .collect();
    let crops: Vec<Vec<f32>> = held.iter().map(|s| centred_window(s)).collect();
    let p = classify(net, &crops, o)?;
    let top = |p: &[f32; 9]| (0..9).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
    let right8 = held
        .iter()
        .zip(&p)
        .filter(|(s, p)| lineage(top(p)) == lineage(s.label))
        .count();
    let (mut called, mut called_right) = (0, 0);
    for (s, p) in held.iter().zip(&p) {
        let call = decide(p, o.min_confidence).or_else(|| {
            (top(p) == wbc::PLATELET && p[top(p)] >= o.min_confidence).then_some(wbc::PLATELET)
        });
        if let Some(c) = call {
            called += 1;
            called_right += (lineage(c) == lineage(s.label)) as usize;
        }
    }
    let n = held.len() as f64;
    println!(
        "PBC held out ({} images): accuracy, 8 classes {:.3}; review {:.3}; accuracy of the called {:.3}",
        held.len(),
        right8 as f64 / n,
        1.0 - called as f64 / n,
        called_right as f64 / called.max(1) as f64
    );
    Ok(())
}

/// Experiment: the window as `sample_window` cuts it, each output pixel
/// the mean of n x n bilinear samples over its footprint (n = the step,
/// rounded up), so a window much larger than `CROP` does not alias.
fn smooth_window(rgb: &[u8], w: usize, h: usize, cx: f32, cy: f32, side: f32) -> Vec<f32> {
    let step = side / CROP as f32;
    let n = step.ceil().max(1.0) as usize;
    let mut out = vec![0f32; CROP * CROP * 3];
    for j in 0..n {
        for i in 0..n {
            let dx = ((i as f32 + 0.5) / n as f32 - 0.5) * step;
            let dy = ((j as f32 + 0.5) / n as f32 - 0.5) * step;
            let s = sample_window(rgb, w, h, cx + dx, cy + dy, side);
            for (o, v) in out.iter_mut().zip(s) {
                *o += v / (n * n) as f32;
            }
        }
    }
    out
}

/// Experiment: `CROP`-square PNG windows named `<class>_<anything>.png`.
fn crops_dir(net: &WbcNet, dir: &str, o: &Options) -> anyhow::Result<()> {
    let mut truth = Vec::new();
    let mut crops = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(class) = name.split('_').next() else {
            continue;
        };
        let img = image::open(&path)?.into_rgb8();
        crops.push(img.as_raw().iter().map(|&v| v as f32).collect());
        truth.push(class.to_lowercase());
    }
    report(net, &truth, &crops, o)
}

fn bccd(net: &WbcNet, dir: &str, labels: &str, o: &Options) -> anyhow::Result<()> {
    // `white_cells` keeps one window of photo on each side of the cell.
    anyhow::ensure!(
        o.window_scale <= 2.0,
        "--window-scale over 2 needs more photo than is cut"
    );
    let cells = white_cells(
        &PathBuf::from(dir),
        &PathBuf::from(labels),
        o.split.as_deref(),
    )?;
    let mut truth = Vec::new();
    let mut crops = Vec::new();
    for s in &cells {
        let side = WINDOW_RBC * s.rbc_px * o.window_scale;
        crops.push(if o.smooth {
            smooth_window(&s.rgb, s.w, s.h, s.cx, s.cy, side)
        } else {
            sample_window(&s.rgb, s.w, s.h, s.cx, s.cy, side)
        });
        truth.push(lineage(s.label).to_string());
    }
    report(net, &truth, &crops, o)
}

fn report(net: &WbcNet, truth: &[String], crops: &[Vec<f32>], o: &Options) -> anyhow::Result<()> {
    let p = classify(net, crops, o)?;
    // The lineages the classifier can call (band and segmented as one;
    // platelet is left for review by `decide`), then review.
    let mut cols: Vec<&str> = (0..wbc::PLATELET).map(lineage).collect();
    cols.dedup();
    cols.push("review");
    let mut table = vec![vec![0usize; cols.len()]; NORMAL.len()];
    let mut top_right = 0;
    for (t, p) in truth.iter().zip(&p) {
        let Some(row) = NORMAL.iter().position(|n| n == t) else {
            continue;
        };
        let call = decide(p, o.min_confidence).map_or("review", lineage);
        let col = cols
            .iter()
            .position(|c| *c == call)
            .unwrap_or(cols.len() - 1);
        table[row][col] += 1;
        let top = (0..9).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
        top_right += (lineage(top) == t) as usize;
    }
    let n: usize = table.iter().flatten().sum();
    let right: usize = (0..NORMAL.len()).map(|i| table[i][i]).sum();
    let review: usize = table.iter().map(|r| r[cols.len() - 1]).sum();
    println!("BCCD ({n} white cells; rows true, columns called):");
    println!(
        "{:<12}{}",
        "",
        cols.iter()
            .map(|c| format!("{:>8.7}", c))
            .collect::<String>()
    );
    for (name, row) in NORMAL.iter().zip(&table) {
        println!(
            "{name:<12}{}",
            row.iter().map(|v| format!("{v:>8}")).collect::<String>()
        );
    }
    let called = n - review;
    println!(
        "BCCD: accuracy {:.3}; review {:.3}; accuracy of the called {:.3}; confident errors {}; top class right {:.3}",
        right as f64 / n.max(1) as f64,
        review as f64 / n.max(1) as f64,
        right as f64 / called.max(1) as f64,
        called - right,
        top_right as f64 / n.max(1) as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let weights = arg(&args, "--weights").unwrap_or(format!("{root}/models/wbc/wbc.safetensors"));
    let o = Options {
        tta: args.iter().any(|a| a == "--tta"),
        shift: arg(&args, "--shift")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0),
        stain: arg(&args, "--stain").unwrap_or_default(),
        split: arg(&args, "--split"),
        smooth: args.iter().any(|a| a == "--smooth"),
        window_scale: arg(&args, "--window-scale")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(1.0),
        refs: [0.0; 4],
        align: arg(&args, "--align")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0),
        source: Vec::new(),
        q: arg(&args, "--q")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0.99),
        min_confidence: arg(&args, "--min-confidence")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0.7),
    };
    let mut o = o;
    if !o.stain.is_empty() {
        let tar =
            arg(&args, "--pbc").unwrap_or(format!("{root}/../shared/data/pbc/pbc_normal.tar"));
        let (samples, _) = read_tar(&PathBuf::from(tar))?;
        let mut per: Vec<Vec<f32>> = vec![Vec::new(); 4];
        for s in samples
            .iter()
            .filter(|s| !held_out(SEED, HOLDOUT_PCT, &s.name) && s.label != wbc::PLATELET)
            .step_by(5)
        {
            let l = levels(&wbc::planes(&centred_window(s)), o.q);
            for (v, x) in per.iter_mut().zip(l) {
                v.push(x);
            }
        }
        for (r, v) in o.refs.iter_mut().zip(per) {
            *r = quantile(v, 0.5);
        }
        println!(
            "references (median {}-quantile of PBC training white cells): {:?}",
            o.q, o.refs
        );
    }
    let net = WbcNet::from_safetensors(&PathBuf::from(&weights), &Device::Cpu)?;
    anyhow::ensure!(
        o.align <= net.convs.len(),
        "--align: the net has {} convolutions",
        net.convs.len()
    );
    anyhow::ensure!(
        !(o.align > 0 && (o.tta || o.shift > 0)),
        "--align does not combine with --tta or --shift"
    );
    if o.align > 0 {
        let tar =
            arg(&args, "--pbc").unwrap_or(format!("{root}/../shared/data/pbc/pbc_normal.tar"));
        o.source = source_stats(&net, &tar, &o)?;
    }
    if let Some(dir) = arg(&args, "--crops") {
        crops_dir(&net, &dir, &o)?;
    }
    if let Some(labels) = arg(&args, "--labels") {
        let dir = arg(&args, "--bccd").unwrap_or(format!("{root}/../shared/data/bccd"));
        bccd(&net, &dir, &labels, &o)?;
    }
    if !args.iter().any(|a| a == "--skip-pbc") {
        let tar =
            arg(&args, "--pbc").unwrap_or(format!("{root}/../shared/data/pbc/pbc_normal.tar"));
        pbc(&net, &tar, &o)?;
    }
    Ok(())
}
