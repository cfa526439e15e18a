//! face-api's age net on the NHWC CPU kernels ([`super::nhwc`]): the graph
//! of [`super::age`] (see `models/skin/age_graph.md`) with TensorFlow SAME
//! padding as in [`super::face_mesh_nhwc`]. A ReLU that follows a pointwise
//! conv runs fused in the GEMM; one that opens a block runs on a copy, since
//! the block's raw input also feeds its shortcut.

use candle_core::Result;
use candle_nn::VarBuilder;

use super::face_mesh::same_pads;
use super::face_mesh_nhwc::{depthwise_same, params, same_skip, skip_front};
use super::nhwc::{self, pointwise::Gather, Dense3x3, Depthwise, Map, Pointwise};

/// `max(x, 0)` of a map, as a new map.
fn relu(x: &Map) -> Map {
    let mut out = Map::recycled(x.h, x.w, x.c);
    for (o, v) in out.data.iter_mut().zip(&x.data) {
        *o = v.max(0.0);
    }
    out
}

/// 3x3 stride-2 max-pool, TensorFlow SAME (padding never wins).
fn max_pool3x3_same(x: &Map) -> Map {
    let (t, _) = same_pads(x.h, 3, 2);
    let (l, _) = same_pads(x.w, 3, 2);
    let (ho, wo, c) = (x.h.div_ceil(2), x.w.div_ceil(2), x.c);
    let mut out = Map::recycled(ho, wo, c);
    nhwc::par_rows(&mut out, 1, |rows, dst| {
        for (i, oy) in rows.enumerate() {
            let o_row = &mut dst[i * wo * c..][..wo * c];
            o_row.fill(f32::NEG_INFINITY);
            for dy in 0..3 {
                let Some(y) = (oy * 2 + dy).checked_sub(t).filter(|&y| y < x.h) else {
                    continue;
                };
                let row = x.rows(y..y + 1);
                for (ox, o) in o_row.chunks_exact_mut(c).enumerate() {
                    for dx in 0..3 {
                        let Some(xx) = (ox * 2 + dx).checked_sub(l).filter(|&v| v < x.w) else {
                            continue;
                        };
                        for (o, v) in o.iter_mut().zip(&row[xx * c..][..c]) {
                            *o = o.max(*v);
                        }
                    }
                }
            }
        }
    });
    out
}

/// Depthwise 3x3 SAME (no bias, no activation) then pointwise + bias.
struct Separable {
    dw: Depthwise,
    dw_w: Vec<f32>,
    pw: Pointwise,
}

impl Separable {
    fn load(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let (w, b) = params(&vb.pp("dw"), &[cin, 1, 3, 3], cin)?;
        let (pw, pb) = params(&vb.pp("pw"), &[cout, cin, 1, 1], cout)?;
        Ok(Self {
            dw: Depthwise::new(&w, &b, cin, 1).without_relu(),
            dw_w: w,
            pw: Pointwise::new(&pw, &pb, cout, cin),
        })
    }

    fn forward(&self, x: &Map, relu: bool, residual: Option<&Map>) -> Map {
        let h = depthwise_same(&self.dw, &self.dw_w, x);
        let mut out = Map::recycled(h.h, h.w, self.pw.cout());
        nhwc::par_rows(&mut out, 1, |rows, dst| {
            self.pw.run(
                h.rows(rows.clone()),
                dst,
                relu,
                residual.map(|r| r.rows(rows.clone())),
            )
        });
        out
    }
}

/// Two separable convs, a SAME max-pool, plus a 1x1 stride-2 conv of the
/// block's raw input.
struct Reduction {
    sep0: Separable,
    sep1: Separable,
    expand: Pointwise,
    activate_input: bool,
}

impl Reduction {
    fn load(vb: VarBuilder, cin: usize, cout: usize, activate_input: bool) -> Result<Self> {
        let (w, b) = params(&vb.pp("expand"), &[cout, cin, 1, 1], cout)?;
        Ok(Self {
            sep0: Separable::load(vb.pp("sep0"), cin, cout)?,
            sep1: Separable::load(vb.pp("sep1"), cout, cout)?,
            expand: Pointwise::new(&w, &b, cout, cin),
            activate_input,
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let h = if self.activate_input {
            self.sep0.forward(&relu(x), true, None)
        } else {
            self.sep0.forward(x, true, None)
        };
        let pooled = max_pool3x3_same(&self.sep1.forward(&h, false, None));
        // 1x1 stride 2 (SAME pads nothing): every other pixel of every other
        // row, plus the pooled map.
        let (ho, wo, c, cout) = (pooled.h, pooled.w, x.c, self.expand.cout());
        let segs = [(0, c)];
        let g = Gather {
            stride: 2 * c,
            segs: &segs,
        };
        let rl = x.row_len();
        let mut out = Map::recycled(ho, wo, cout);
        nhwc::par_rows(&mut out, 1, |rows, dst| {
            for (i, r) in rows.enumerate() {
                self.expand.run_gather(
                    &x.data[2 * r * rl..],
                    &g,
                    &mut dst[i * wo * cout..][..wo * cout],
                    false,
                    Some(pooled.rows(r..r + 1)),
                );
            }
        });
        out
    }
}

/// ReLU + separable conv three times, plus the block's input.
struct Main {
    seps: [Separable; 3],
}

impl Main {
    fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let sep = |i: usize| Separable::load(vb.pp(format!("sep{i}")), c, c);
        Ok(Self {
            seps: [sep(0)?, sep(1)?, sep(2)?],
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let h = self.seps[0].forward(&relu(x), true, None);
        let h = self.seps[1].forward(&h, true, None);
        self.seps[2].forward(&h, false, Some(x))
    }
}

/// The age net's weights packed for the NHWC kernels.
pub(crate) struct AgeKernels {
    conv_in: Dense3x3,
    reductions: [Reduction; 3],
    mains: [Main; 2],
    exit_sep: Separable,
    fc_w: Vec<f32>,
    fc_b: f32,
}

impl AgeKernels {
    pub(crate) fn load(vb: &VarBuilder) -> Result<Self> {
        let entry = vb.pp("entry");
        let middle = vb.pp("middle");
        let (w, b) = params(&entry.pp("conv_in"), &[32, 3, 3, 3], 32)?;
        let fc = vb.pp("fc_age");
        Ok(Self {
            conv_in: Dense3x3::new(&w, &b, 32, 3, 2),
            reductions: [
                Reduction::load(entry.pp("block0"), 32, 64, false)?,
                Reduction::load(entry.pp("block1"), 64, 128, true)?,
                Reduction::load(vb.pp("exit.block"), 128, 256, true)?,
            ],
            mains: [
                Main::load(middle.pp("block0"), 128)?,
                Main::load(middle.pp("block1"), 128)?,
            ],
            exit_sep: Separable::load(vb.pp("exit.sep"), 256, 512)?,
            fc_w: fc
                .get((1, 512), "weight")?
                .flatten_all()?
                .to_vec1::<f32>()?,
            fc_b: fc.get(1, "bias")?.to_vec1::<f32>()?[0],
        })
    }

    /// One normalised crop, NCHW `3 x h x w` -> its age, years.
    pub(crate) fn forward_chw(&self, x: &[f32], h: usize, w: usize) -> f32 {
        let p = skip_front(&Map::padded_from_chw(x, 3, h, w), same_skip(h, 2));
        let mut m = self.conv_in.forward_padded(&p, true);
        let [entry0, entry1, exit] = &self.reductions;
        m = entry1.forward(&entry0.forward(&m));
        for b in &self.mains {
            m = b.forward(&m);
        }
        m = self.exit_sep.forward(&exit.forward(&m), true, None);
        let feat = nhwc::global_mean(&m);
        self.fc_b + feat.iter().zip(&self.fc_w).map(|(a, b)| a * b).sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, with -inf padding, even and odd sizes.
    #[test]
    fn max_pool3x3_same_matches_the_definition() {
        for (h, w, c) in [(6, 8, 3), (7, 5, 2)] {
            let x = Map {
                h,
                w,
                c,
                data: (0..h * w * c)
                    .map(|i| ((i * 37 % 23) as f32) - 11.0)
                    .collect(),
            };
            let got = max_pool3x3_same(&x);
            let ((t, _), (l, _)) = (same_pads(h, 3, 2), same_pads(w, 3, 2));
            for oy in 0..got.h {
                for ox in 0..got.w {
                    for ch in 0..c {
                        let mut m = f32::NEG_INFINITY;
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let y = (oy * 2 + dy) as isize - t as isize;
                                let xx = (ox * 2 + dx) as isize - l as isize;
                                if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                    m = m.max(x.data[(y as usize * w + xx as usize) * c + ch]);
                                }
                            }
                        }
                        assert_eq!(got.data[(oy * got.w + ox) * c + ch], m);
                    }
                }
            }
        }
    }
}
