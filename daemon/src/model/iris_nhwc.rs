//! MediaPipe Iris on the NHWC CPU kernels ([`super::nhwc`]): the graph of
//! [`super::iris`] (see `models/skin/iris_graph.md`) on the layers and the
//! TensorFlow SAME handling of [`super::face_mesh_nhwc`]. Its two extra
//! layer kinds are both a 2x2 stride-2 VALID conv, which reads whole,
//! non-overlapping 2x2 blocks: one GEMM row per output pixel, gathered from
//! two pixels of each of two input rows.

use candle_core::Result;
use candle_nn::VarBuilder;

use super::face_mesh_nhwc::{
    depthwise_same, params, pointwise_prelu, prelu, same_skip, shortcut, skip_front, slopes,
};
use super::nhwc::{self, pointwise::Gather, Dense3x3, Depthwise, Map, Pointwise};

/// A 2x2 stride-2 VALID conv as a GEMM: weights `[cout, cin, 2, 2]`
/// reordered to `[cout, (dy, dx, cin)]`, the order a 2x2 block's pixels sit
/// in two NHWC rows.
fn block2x2(w: &[f32], b: &[f32], cout: usize, cin: usize) -> Pointwise {
    let k = 4 * cin;
    let mut m = vec![0f32; cout * k];
    for o in 0..cout {
        for c in 0..cin {
            for tap in 0..4 {
                m[o * k + tap * cin + c] = w[(o * cin + c) * 4 + tap];
            }
        }
    }
    Pointwise::new(&m, b, cout, k)
}

/// Runs a [`block2x2`] GEMM over `x` (even sizes), PReLU after.
fn block2x2_prelu(pw: &Pointwise, x: &Map, alpha: &[f32]) -> Map {
    let (ho, wo, c) = (x.h / 2, x.w / 2, x.c);
    let rl = x.row_len();
    let segs = [(0, 2 * c), (rl, 2 * c)];
    let g = Gather {
        stride: 2 * c,
        segs: &segs,
    };
    let cout = pw.cout();
    let mut out = Map::recycled(ho, wo, cout);
    nhwc::par_rows(&mut out, 1, |rows, dst| {
        for (i, r) in rows.enumerate() {
            let o = &mut dst[i * wo * cout..][..wo * cout];
            pw.run_gather(&x.data[2 * r * rl..], &g, o, false, None);
            prelu(o, alpha);
        }
    });
    out
}

/// reduce (1x1, or 2x2/s2 VALID) -> PReLU -> depthwise 3x3 SAME -> 1x1 ->
/// + shortcut -> PReLU.
struct Unit {
    reduce: Pointwise,
    reduce_alpha: Vec<f32>,
    down: bool,
    dw: Depthwise,
    dw_w: Vec<f32>,
    pw: Pointwise,
    alpha: Vec<f32>,
}

impl Unit {
    fn load(vb: VarBuilder, (cin, mid, cout, down): (usize, usize, usize, bool)) -> Result<Self> {
        let reduce = if down {
            let (w, b) = params(&vb.pp("reduce"), &[mid, cin, 2, 2], mid)?;
            block2x2(&w, &b, mid, cin)
        } else {
            let (w, b) = params(&vb.pp("reduce"), &[mid, cin, 1, 1], mid)?;
            Pointwise::new(&w, &b, mid, cin)
        };
        let (w, b) = params(&vb.pp("dw"), &[mid, 1, 3, 3], mid)?;
        let (pw, pb) = params(&vb.pp("pw"), &[cout, mid, 1, 1], cout)?;
        Ok(Self {
            reduce,
            reduce_alpha: slopes(&vb.pp("reduce_prelu"), mid)?,
            down,
            dw: Depthwise::new(&w, &b, mid, 1).without_relu(),
            dw_w: w,
            pw: Pointwise::new(&pw, &pb, cout, mid),
            alpha: slopes(&vb.pp("prelu"), cout)?,
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let h = if self.down {
            block2x2_prelu(&self.reduce, x, &self.reduce_alpha)
        } else {
            pointwise_prelu(&self.reduce, x, None, &self.reduce_alpha)
        };
        let h = depthwise_same(&self.dw, &self.dw_w, &h);
        let cout = self.pw.cout();
        if !self.down && cout == x.c {
            return pointwise_prelu(&self.pw, &h, Some(x), &self.alpha);
        }
        let s = if self.down { 2 } else { 1 };
        pointwise_prelu(&self.pw, &h, Some(&shortcut(x, s, cout)), &self.alpha)
    }
}

/// Eight units on the 8x8 backbone map, then a 2x2 VALID conv of the 2x2
/// map: one GEMM row, the map's data being its (dy, dx, c) inputs.
struct Head {
    units: Vec<Unit>,
    out: Pointwise,
}

impl Head {
    fn load(vb: VarBuilder, down: &[bool], outputs: usize) -> Result<Self> {
        let (w, b) = params(&vb.pp("out"), &[outputs, 128, 2, 2], outputs)?;
        Ok(Self {
            units: down
                .iter()
                .enumerate()
                .map(|(i, &d)| Unit::load(vb.pp(i.to_string()), (128, 64, 128, d)))
                .collect::<Result<_>>()?,
            out: block2x2(&w, &b, outputs, 128),
        })
    }

    fn forward(&self, x: &Map) -> Vec<f32> {
        let mut h = x.clone();
        for u in &self.units {
            h = u.forward(&h);
        }
        debug_assert_eq!((h.h, h.w), (2, 2));
        let mut out = vec![0f32; self.out.cout()];
        self.out.run(&h.data, &mut out, false, None);
        out
    }
}

/// The iris net's weights packed for the NHWC kernels.
pub(crate) struct IrisKernels {
    stem: Dense3x3,
    stem_alpha: Vec<f32>,
    backbone: Vec<Unit>,
    contour: Head,
    iris: Head,
}

impl IrisKernels {
    pub(crate) fn load(
        vb: &VarBuilder,
        backbone: &[(usize, usize, usize, bool)],
        head_down: &[bool],
        (contour, iris): (usize, usize),
    ) -> Result<Self> {
        let (w, b) = params(&vb.pp("stem.conv"), &[64, 3, 3, 3], 64)?;
        Ok(Self {
            stem: Dense3x3::new(&w, &b, 64, 3, 2),
            stem_alpha: slopes(&vb.pp("stem.prelu"), 64)?,
            backbone: backbone
                .iter()
                .enumerate()
                .map(|(i, &cfg)| Unit::load(vb.pp(format!("backbone.{i}")), cfg))
                .collect::<Result<_>>()?,
            contour: Head::load(vb.pp("contour"), head_down, contour)?,
            iris: Head::load(vb.pp("iris"), head_down, iris)?,
        })
    }

    /// One image, NCHW `3 x h x w` in [0, 1] -> (contour, iris) outputs.
    pub(crate) fn forward_chw(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
        let p = skip_front(&Map::padded_from_chw(x, 3, h, w), same_skip(h, 2));
        let mut m = self.stem.forward_padded(&p, false);
        prelu(&mut m.data, &self.stem_alpha);
        for u in &self.backbone {
            m = u.forward(&m);
        }
        (self.contour.forward(&m), self.iris.forward(&m))
    }
}
