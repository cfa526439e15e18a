//! Dense 3x3 convolutions (through im2col rows) and 2x2/stride-2 transposed
//! convolutions, both on the pointwise GEMM kernel.

use super::{par_rows, pointwise::Gather, with_scratch, Map, Pointwise};
use crate::simd::{self, Isa};

/// Dense 3x3 convolution, padding 1, stride 1 or 2, bias and optional ReLU.
///
/// Each output row is gathered into an im2col row (`wout × 9·cin`, taps
/// major, channels minor so NHWC input copies whole pixels) and multiplied by
/// the weights reordered to match.
#[derive(Debug, Clone)]
pub struct Dense3x3 {
    cin: usize,
    stride: usize,
    pw: Pointwise,
}

impl Dense3x3 {
    /// `w` as stored: `[cout, cin, 3, 3]`.
    pub fn new(w: &[f32], b: &[f32], cout: usize, cin: usize, stride: usize) -> Self {
        Self::for_isa(simd::best(), w, b, cout, cin, stride)
    }

    /// On `isa`'s kernels (tests run every one the CPU has); panics as
    /// [`Pointwise::for_isa`] does.
    pub fn for_isa(isa: Isa, w: &[f32], b: &[f32], cout: usize, cin: usize, stride: usize) -> Self {
        assert_eq!(
            w.len(),
            cout * cin * 9,
            "dense 3x3 weight is not [cout, cin, 3, 3]"
        );
        assert!(stride == 1 || stride == 2, "dense 3x3 stride {stride}");
        let k = 9 * cin;
        let mut m = vec![0f32; cout * k];
        for o in 0..cout {
            for c in 0..cin {
                for tap in 0..9 {
                    m[o * k + tap * cin + c] = w[(o * cin + c) * 9 + tap];
                }
            }
        }
        Self {
            cin,
            stride,
            pw: Pointwise::for_isa(isa, &m, b, cout, k),
        }
    }

    fn out_dim(&self, d: usize) -> usize {
        (d - 1) / self.stride + 1
    }

    /// On an NHWC map.
    pub fn forward(&self, x: &Map, relu: bool) -> Map {
        assert_eq!(x.c, self.cin, "dense 3x3: input channels");
        self.forward_padded(&x.padded(), relu)
    }

    /// On one NCHW image (`cin × h × w`), as the model's input arrives.
    pub fn forward_chw(&self, x: &[f32], h: usize, w: usize, relu: bool) -> Map {
        self.forward_padded(&Map::padded_from_chw(x, self.cin, h, w), relu)
    }

    /// On a map with a one-pixel zero border: every tap of every output
    /// pixel is then a whole input pixel at a fixed offset, which the GEMM
    /// kernel gathers itself (no im2col buffer).
    ///
    /// On an unpadded map this is the unpadded ("valid") convolution, two
    /// pixels smaller each way.
    pub fn forward_padded(&self, p: &Map, relu: bool) -> Map {
        assert_eq!(p.c, self.cin, "dense 3x3: input channels");
        assert!(
            p.h >= 3 && p.w >= 3,
            "dense 3x3: map smaller than the kernel"
        );
        let (h, w, c, s) = (p.h - 2, p.w - 2, self.cin, self.stride);
        let (ho, wo, cout) = (self.out_dim(h), self.out_dim(w), self.pw.cout());
        let pr = p.row_len();
        // Taps are ordered (dy, dx, c), so the three taps of a kernel row
        // are one contiguous run of 3·c floats in the padded row.
        let segs: [(usize, usize); 3] = std::array::from_fn(|dy| (dy * pr, 3 * c));
        let g = Gather {
            stride: s * c,
            segs: &segs,
        };
        let mut out = Map::recycled(ho, wo, cout);
        par_rows(&mut out, 1, |rows, dst| {
            for (i, r) in rows.enumerate() {
                self.pw.run_gather(
                    &p.data[r * s * pr..],
                    &g,
                    &mut dst[i * wo * cout..][..wo * cout],
                    relu,
                    None,
                );
            }
        });
        out
    }
}

/// 2x2 transposed convolution with stride 2 (each input pixel paints a 2x2
/// block), bias and ReLU: one GEMM to `4 × cout` columns per input row, then
/// a scatter into the two output rows.
#[derive(Debug, Clone)]
pub struct Upsample2x2 {
    cout: usize,
    pw: Pointwise,
}

impl Upsample2x2 {
    /// `w` as stored for a transposed convolution: `[cin, cout, 2, 2]`.
    pub fn new(w: &[f32], b: &[f32], cin: usize, cout: usize) -> Self {
        Self::for_isa(simd::best(), w, b, cin, cout)
    }

    /// On `isa`'s kernels; panics as [`Pointwise::for_isa`] does.
    pub fn for_isa(isa: Isa, w: &[f32], b: &[f32], cin: usize, cout: usize) -> Self {
        assert_eq!(
            w.len(),
            cin * cout * 4,
            "upsample weight is not [cin, cout, 2, 2]"
        );
        assert_eq!(b.len(), cout, "upsample bias is not cout");
        let mut m = vec![0f32; 4 * cout * cin];
        let mut bias = vec![0f32; 4 * cout];
        for q in 0..4 {
            for o in 0..cout {
                for c in 0..cin {
                    m[(q * cout + o) * cin + c] = w[(c * cout + o) * 4 + q];
                }
                bias[q * cout + o] = b[o];
            }
        }
        Self {
            cout,
            pw: Pointwise::for_isa(isa, &m, &bias, 4 * cout, cin),
        }
    }

    pub fn forward(&self, x: &Map) -> Map {
        assert_eq!(x.c, self.pw.k(), "upsample: input channels");
        let cout = self.cout;
        let (ow, w) = (2 * x.w, x.w);
        let mut out = Map::recycled(2 * x.h, ow, cout);
        par_rows(&mut out, 2, |rows, dst| {
            with_scratch([w * 4 * cout, 0], 0, |tmp, _, _| {
                for y in rows.start / 2..rows.end / 2 {
                    self.pw.run(x.rows(y..y + 1), tmp, true, None);
                    for ix in 0..w {
                        for q in 0..4 {
                            let (dy, dx) = (q / 2, q % 2);
                            let orow = 2 * y + dy - rows.start;
                            dst[(orow * ow + 2 * ix + dx) * cout..][..cout]
                                .copy_from_slice(&tmp[(ix * 4 + q) * cout..][..cout]);
                        }
                    }
                }
            })
        });
        out
    }
}
