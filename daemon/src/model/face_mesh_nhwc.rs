//! The face mesh on the NHWC CPU kernels ([`super::nhwc`]), the same ones
//! CenterFace and the cell nets run on: the graph of [`super::face_mesh`]
//! (see `models/skin/face_mesh_graph.md`), with its TensorFlow SAME padding
//! and PReLUs expressed on those kernels.
//!
//! The kernels pad 3x3 convolutions by one pixel on every side. TensorFlow's
//! SAME padding is that at stride 1; at stride 2 on an even size it pads 0
//! before and 1 after, so output `i` reads input rows and columns `2i, 2i +
//! 1, 2i + 2`. The dense conv reads an explicitly padded map, so it is given
//! that map without its first row and column. The depthwise kernel pads
//! columns itself: it is given the rows that SAME reads and each row from
//! its second column, which shifts every output column right but the first,
//! whose left tap the kernel takes for padding; that tap is added after.

use candle_nn::VarBuilder;

use super::face_mesh::same_pads;
use super::nhwc::{self, pooling, Dense3x3, Depthwise, Map, Pointwise};
use candle_core::Result;

/// A conv's weight and bias under `vb`, flat.
pub(super) fn params(
    vb: &VarBuilder,
    w_shape: &[usize],
    cout: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let w = vb.get(w_shape, "weight")?.flatten_all()?.to_vec1::<f32>()?;
    let b = vb.get(cout, "bias")?.to_vec1::<f32>()?;
    Ok((w, b))
}

/// PReLU slopes under `vb` (`<vb>.weight`, one per channel).
pub(super) fn slopes(vb: &VarBuilder, c: usize) -> Result<Vec<f32>> {
    vb.get(c, "weight")?.to_vec1::<f32>()
}

/// `x` where `x >= 0`, else `alpha[c] * x`, in place over whole pixels.
pub(super) fn prelu(x: &mut [f32], alpha: &[f32]) {
    for px in x.chunks_exact_mut(alpha.len()) {
        for (v, a) in px.iter_mut().zip(alpha) {
            if *v < 0.0 {
                *v *= a;
            }
        }
    }
}

/// A 1x1 conv (+ residual) then PReLU, each thread's rows while in cache.
pub(super) fn pointwise_prelu(
    pw: &Pointwise,
    x: &Map,
    residual: Option<&Map>,
    alpha: &[f32],
) -> Map {
    let mut out = Map::recycled(x.h, x.w, pw.cout());
    nhwc::par_rows(&mut out, 1, |rows, dst| {
        pw.run(
            x.rows(rows.clone()),
            dst,
            false,
            residual.map(|r| r.rows(rows.clone())),
        );
        prelu(dst, alpha);
    });
    out
}

/// How many rows (or columns) of a one-pixel-padded map to skip so the
/// kernels' padding-1 convolution is TensorFlow's SAME one: 1 when SAME
/// pads nothing before (stride 2 on an even size), else 0.
pub(super) fn same_skip(n: usize, stride: usize) -> usize {
    1 - same_pads(n, 3, stride).0
}

/// A padded map (`h + 2` x `w + 2`) without its first `skip` rows and
/// columns: still padded after, as the kernels expect.
pub(super) fn skip_front(p: &Map, skip: usize) -> Map {
    if skip == 0 {
        return p.clone();
    }
    let (h, w, c) = (p.h - skip, p.w - skip, p.c);
    let mut out = Map::recycled(h, w, c);
    let (src, dst) = (p.row_len(), w * c);
    for y in 0..h {
        out.data[y * dst..][..dst].copy_from_slice(&p.data[(y + skip) * src + skip * c..][..dst]);
    }
    out
}

/// Depthwise 3x3 with TensorFlow SAME padding (no activation). `w`: the
/// layer's weights as stored, `[c, 1, 3, 3]`.
pub(super) fn depthwise_same(dw: &Depthwise, w: &[f32], x: &Map) -> Map {
    let (s, c) = (dw.stride(), x.c);
    let (rs, cs) = (same_skip(x.h, s), same_skip(x.w, s));
    let win = x.w - cs;
    let (ho, wo) = (x.h.div_ceil(s), dw.out_dim(win));
    debug_assert_eq!(wo, x.w.div_ceil(s));
    let zeros = vec![0f32; win * c];
    let mut out = Map::recycled(ho, wo, c);
    nhwc::par_rows(&mut out, 1, |rows, dst| {
        for (i, r) in rows.enumerate() {
            let taps: [&[f32]; 3] =
                std::array::from_fn(|dy| match (r * s + dy + rs).checked_sub(1) {
                    Some(y) if y < x.h => &x.rows(y..y + 1)[cs * c..],
                    _ => &zeros[..],
                });
            let o = &mut dst[i * wo * c..][..wo * c];
            dw.row(taps, win, o);
            if cs == 1 {
                // Output column 0's left taps read input column 0, which the
                // kernel saw as padding (linear layer: adding after is exact).
                for (dy, t) in taps.iter().enumerate() {
                    if std::ptr::eq(*t, &zeros[..]) {
                        continue;
                    }
                    // `t` starts at input column 1; column 0 is just before it.
                    let y = (r * s + dy + rs) - 1;
                    let col0 = &x.rows(y..y + 1)[..c];
                    for ch in 0..c {
                        o[ch] += w[ch * 9 + dy * 3] * col0[ch];
                    }
                }
            }
        }
    });
    out
}

/// The unit's shortcut when it is not the input itself: the input's 2x2
/// max-pool (stride 2) with zero channels up to `cout`.
pub(super) fn shortcut(x: &Map, stride: usize, cout: usize) -> Map {
    let pooled;
    let x = if stride == 2 {
        pooled = pooling::max_pool2x2(x);
        &pooled
    } else {
        x
    };
    if cout == x.c {
        return x.clone();
    }
    let mut out = Map::zeros(x.h, x.w, cout);
    for (o, i) in out
        .data
        .chunks_exact_mut(cout)
        .zip(x.data.chunks_exact(x.c))
    {
        o[..x.c].copy_from_slice(i);
    }
    out
}

/// Depthwise 3x3 (SAME) -> pointwise -> + shortcut -> PReLU.
struct Unit {
    dw: Depthwise,
    /// The depthwise weights as stored, for its first output column.
    dw_w: Vec<f32>,
    pw: Pointwise,
    alpha: Vec<f32>,
}

impl Unit {
    fn load(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        let (w, b) = params(&vb.pp("dw"), &[cin, 1, 3, 3], cin)?;
        let (pw, pb) = params(&vb.pp("pw"), &[cout, cin, 1, 1], cout)?;
        Ok(Self {
            dw: Depthwise::new(&w, &b, cin, stride).without_relu(),
            dw_w: w,
            pw: Pointwise::new(&pw, &pb, cout, cin),
            alpha: slopes(&vb.pp("prelu"), cout)?,
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let h = depthwise_same(&self.dw, &self.dw_w, x);
        let (s, cout) = (self.dw.stride(), self.pw.cout());
        if s == 1 && cout == x.c {
            return pointwise_prelu(&self.pw, &h, Some(x), &self.alpha);
        }
        pointwise_prelu(&self.pw, &h, Some(&shortcut(x, s, cout)), &self.alpha)
    }
}

/// A head: units at 128 channels, a 1x1 projection to 32 + PReLU, units at
/// 32, then a 3x3 VALID conv of the 3x3 map to the outputs.
struct Head {
    wide: Vec<Unit>,
    proj: Pointwise,
    proj_alpha: Vec<f32>,
    narrow: Vec<Unit>,
    out: Dense3x3,
}

impl Head {
    fn load(vb: VarBuilder, wide: &[usize], narrow: &[usize], outputs: usize) -> Result<Self> {
        let unit = |i: usize, c: usize, s: usize| Unit::load(vb.pp(i.to_string()), c, c, s);
        let proj = vb.pp("proj");
        let (pw, pb) = params(&proj.pp("conv"), &[32, 128, 1, 1], 32)?;
        let (ow, ob) = params(&vb.pp("out"), &[outputs, 32, 3, 3], outputs)?;
        Ok(Self {
            wide: wide
                .iter()
                .enumerate()
                .map(|(i, &s)| unit(i, 128, s))
                .collect::<Result<_>>()?,
            proj: Pointwise::new(&pw, &pb, 32, 128),
            proj_alpha: slopes(&proj.pp("prelu"), 32)?,
            narrow: narrow
                .iter()
                .enumerate()
                .map(|(i, &s)| unit(wide.len() + i, 32, s))
                .collect::<Result<_>>()?,
            out: Dense3x3::new(&ow, &ob, outputs, 32, 1),
        })
    }

    /// The head's outputs for one image.
    fn forward(&self, x: &Map) -> Vec<f32> {
        let mut h = x.clone();
        for u in &self.wide {
            h = u.forward(&h);
        }
        h = pointwise_prelu(&self.proj, &h, None, &self.proj_alpha);
        for u in &self.narrow {
            h = u.forward(&h);
        }
        // On the unpadded 3x3 map the padded-input kernel is the VALID conv.
        let out = self.out.forward_padded(&h, false);
        debug_assert_eq!((out.h, out.w), (1, 1));
        out.data.clone()
    }
}

/// The face mesh's weights packed for the NHWC kernels.
pub(crate) struct MeshKernels {
    stem: Dense3x3,
    stem_alpha: Vec<f32>,
    backbone: Vec<Unit>,
    mesh: Head,
    flag: Head,
}

impl MeshKernels {
    /// `backbone`: (output channels, stride) of each unit after the 16-channel stem.
    pub(crate) fn load(
        vb: &VarBuilder,
        backbone: &[(usize, usize)],
        landmarks: usize,
    ) -> Result<Self> {
        let stem = vb.pp("stem");
        let (w, b) = params(&stem.pp("conv"), &[16, 3, 3, 3], 16)?;
        let mut units = Vec::with_capacity(backbone.len());
        let mut cin = 16;
        for (i, &(cout, stride)) in backbone.iter().enumerate() {
            units.push(Unit::load(
                vb.pp(format!("backbone.{i}")),
                cin,
                cout,
                stride,
            )?);
            cin = cout;
        }
        Ok(Self {
            stem: Dense3x3::new(&w, &b, 16, 3, 2),
            stem_alpha: slopes(&stem.pp("prelu"), 16)?,
            backbone: units,
            mesh: Head::load(vb.pp("mesh"), &[2, 1, 1], &[1], 3 * landmarks)?,
            flag: Head::load(vb.pp("flag"), &[2], &[1], 1)?,
        })
    }

    /// One image, NCHW `3 x h x w` in [0, 1] -> (landmarks `3 * landmarks`
    /// floats, presence logit).
    pub(crate) fn forward_chw(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, f32) {
        let p = skip_front(&Map::padded_from_chw(x, 3, h, w), same_skip(h, 2));
        let mut m = self.stem.forward_padded(&p, false);
        prelu(&mut m.data, &self.stem_alpha);
        for u in &self.backbone {
            m = u.forward(&m);
        }
        (self.mesh.forward(&m), self.flag.forward(&m)[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_skip_is_tensorflows_padding() {
        // Stride 2, even: SAME pads 0 before, so the padded map's first
        // row goes; odd: 1 before, as the kernels pad.
        assert_eq!(same_skip(192, 2), 1);
        assert_eq!(same_skip(7, 2), 0);
        assert_eq!(same_skip(96, 1), 0);
    }

    /// Depthwise SAME at stride 2 against the definition, even and odd sizes.
    #[test]
    fn depthwise_same_matches_the_definition() {
        for (h, w, c) in [(6, 8, 5), (7, 5, 16), (4, 4, 3)] {
            let x = Map {
                h,
                w,
                c,
                data: (0..h * w * c)
                    .map(|i| ((i * 29 % 31) as f32 - 15.0) / 7.0)
                    .collect(),
            };
            let wt: Vec<f32> = (0..c * 9)
                .map(|i| ((i * 11 % 13) as f32 - 6.0) / 6.0)
                .collect();
            let b: Vec<f32> = (0..c).map(|i| i as f32 * 0.1).collect();
            for s in [1, 2] {
                let dw = Depthwise::new(&wt, &b, c, s).without_relu();
                let got = depthwise_same(&dw, &wt, &x);
                let ((t, _), (l, _)) = (same_pads(h, 3, s), same_pads(w, 3, s));
                assert_eq!((got.h, got.w), (h.div_ceil(s), w.div_ceil(s)));
                for oy in 0..got.h {
                    for ox in 0..got.w {
                        for ch in 0..c {
                            let mut want = b[ch];
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let y = (oy * s + dy) as isize - t as isize;
                                    let xx = (ox * s + dx) as isize - l as isize;
                                    if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx)
                                    {
                                        want += wt[ch * 9 + dy * 3 + dx]
                                            * x.data[(y as usize * w + xx as usize) * c + ch];
                                    }
                                }
                            }
                            let v = got.data[(oy * got.w + ox) * c + ch];
                            assert!(
                                (v - want).abs() < 1e-4,
                                "{h}x{w} s{s} ({oy},{ox},{ch}): {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
