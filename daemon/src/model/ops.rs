//! Fused convolution ops that candle does slowly on CPU.
//!
//! candle's grouped `conv2d` runs a depthwise convolution as one convolution per
//! channel, and its 1x1 convolutions go through im2col. These custom ops run
//! the same maths directly: a 1x1 convolution is one GEMM per image, a
//! depthwise 3x3 is a direct loop per plane, a 2x2/stride-2 transposed
//! convolution is one GEMM followed by a scatter. Bias and ReLU are fused in.
//! Each op's CPU implementation is also the reference that GPU kernels are
//! tested against.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

fn gemm_threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst[m×n] = bias[m] (broadcast over n) + lhs[m×k] · rhs[k×n]`, all row-major.
fn gemm_bias(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    bias: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    debug_assert_eq!(dst.len(), m * n);
    debug_assert_eq!(lhs.len(), m * k);
    debug_assert_eq!(rhs.len(), k * n);
    for (row, b) in dst.chunks_exact_mut(n).zip(bias) {
        row.fill(*b);
    }
    // SAFETY: the three buffers are live, distinct and sized m×n, m×k and k×n
    // (asserted above); strides describe row-major storage of those shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_threads(),
        )
    }
}

fn relu_in_place(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// 1x1 convolution: x [N,Cin,H,W], w [Cout,Cin(,1,1)], b [Cout].
#[derive(Debug, Clone, Copy)]
pub struct Pointwise {
    pub relu: bool,
}

impl CustomOp3 for Pointwise {
    fn name(&self) -> &'static str {
        "pointwise-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cin, h, w) = l1.shape().dims4()?;
        let cout = l2.shape().dims()[0];
        if l2.shape().elem_count() != cout * cin || l3.shape().elem_count() != cout {
            candle_core::bail!(
                "pointwise: weight {:?} / bias {:?} do not fit input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        let (x, wt, b) = (
            slice(s1, l1, "x")?,
            slice(s2, l2, "w")?,
            slice(s3, l3, "b")?,
        );
        let hw = h * w;
        let mut out = vec![0f32; n * cout * hw];
        for (dst, src) in out
            .chunks_exact_mut(cout * hw)
            .zip(x.chunks_exact(cin * hw))
        {
            gemm_bias(dst, wt, src, b, cout, cin, hw);
            if self.relu {
                relu_in_place(dst);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, cout, h, w))))
    }
}

/// Depthwise 3x3 convolution with padding 1: x [N,C,H,W], w [C,1,3,3], b [C].
#[derive(Debug, Clone, Copy)]
pub struct Depthwise3x3 {
    pub stride: usize,
    pub relu: bool,
}

impl Depthwise3x3 {
    pub fn out_dim(&self, d: usize) -> usize {
        (d + 2 - 3) / self.stride + 1
    }

    /// One output plane. Interior pixels take the unchecked fast path; the
    /// one-pixel border handles the zero padding.
    fn plane(&self, src: &[f32], dst: &mut [f32], k: &[f32], bias: f32, h: usize, w: usize) {
        let (oh, ow, s) = (self.out_dim(h), self.out_dim(w), self.stride);
        let at = |y: isize, x: isize| -> f32 {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                0.0
            } else {
                src[y as usize * w + x as usize]
            }
        };
        let border = |oy: usize, ox: usize| -> f32 {
            let (cy, cx) = ((oy * s) as isize, (ox * s) as isize);
            let mut acc = bias;
            for ky in 0..3 {
                for kx in 0..3 {
                    acc += k[ky * 3 + kx] * at(cy + ky as isize - 1, cx + kx as isize - 1);
                }
            }
            acc
        };
        for oy in 0..oh {
            let cy = oy * s;
            let row = &mut dst[oy * ow..(oy + 1) * ow];
            if cy == 0 || cy + 1 >= h {
                for (ox, v) in row.iter_mut().enumerate() {
                    *v = border(oy, ox);
                }
            } else {
                let (r0, r1, r2) = (
                    &src[(cy - 1) * w..cy * w],
                    &src[cy * w..(cy + 1) * w],
                    &src[(cy + 1) * w..(cy + 2) * w],
                );
                row[0] = border(oy, 0);
                // Last output column whose 3x3 window is fully inside the row.
                let last = (w - 2) / s;
                for (ox, v) in row
                    .iter_mut()
                    .enumerate()
                    .take(last.min(ow - 1) + 1)
                    .skip(1)
                {
                    let x = ox * s - 1;
                    *v = bias
                        + k[0] * r0[x]
                        + k[1] * r0[x + 1]
                        + k[2] * r0[x + 2]
                        + k[3] * r1[x]
                        + k[4] * r1[x + 1]
                        + k[5] * r1[x + 2]
                        + k[6] * r2[x]
                        + k[7] * r2[x + 1]
                        + k[8] * r2[x + 2];
                }
                for (ox, v) in row.iter_mut().enumerate().skip(last + 1) {
                    *v = border(oy, ox);
                }
            }
        }
        if self.relu {
            relu_in_place(dst);
        }
    }
}

impl CustomOp3 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "depthwise-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        if l2.shape().elem_count() != c * 9 || l3.shape().elem_count() != c {
            candle_core::bail!(
                "depthwise: weight {:?} / bias {:?} do not fit input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        if h < 2 || w < 2 {
            candle_core::bail!("depthwise: input {h}x{w} too small");
        }
        let (x, wt, b) = (
            slice(s1, l1, "x")?,
            slice(s2, l2, "w")?,
            slice(s3, l3, "b")?,
        );
        let (oh, ow) = (self.out_dim(h), self.out_dim(w));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_exact_mut(oh * ow)
            .zip(x.par_chunks_exact(h * w))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let ch = i % c;
                self.plane(src, dst, &wt[ch * 9..ch * 9 + 9], b[ch], h, w);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Transposed convolution with kernel 2, stride 2, no padding:
/// x [N,Cin,H,W], w [Cin,Cout,2,2], b [Cout] -> [N,Cout,2H,2W].
///
/// The windows never overlap, so it is one GEMM ([Cout*4, Cin] · [Cin, HW])
/// whose rows are scattered into the 2x2 positions.
#[derive(Debug, Clone, Copy)]
pub struct Upsample2x2 {
    pub relu: bool,
}

impl CustomOp3 for Upsample2x2 {
    fn name(&self) -> &'static str {
        "conv-transpose2x2s2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cin, h, w) = l1.shape().dims4()?;
        let (wcin, cout, kh, kw) = l2.shape().dims4()?;
        if wcin != cin || kh != 2 || kw != 2 || l3.shape().elem_count() != cout {
            candle_core::bail!(
                "upsample2x2: weight {:?} / bias {:?} do not fit input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        let (x, wt, b) = (
            slice(s1, l1, "x")?,
            slice(s2, l2, "w")?,
            slice(s3, l3, "b")?,
        );
        // lhs[(o*4 + a*2 + bb), c] = w[c, o, a, bb]
        let rows = cout * 4;
        let mut lhs = vec![0f32; rows * cin];
        for c in 0..cin {
            for r in 0..rows {
                lhs[r * cin + c] = wt[c * rows + r];
            }
        }
        let zero_bias = vec![0f32; rows];
        let hw = h * w;
        let (oh, ow) = (2 * h, 2 * w);
        let mut out = vec![0f32; n * cout * oh * ow];
        let mut tmp = vec![0f32; rows * hw];
        for (dst, src) in out
            .chunks_exact_mut(cout * oh * ow)
            .zip(x.chunks_exact(cin * hw))
        {
            gemm_bias(&mut tmp, &lhs, src, &zero_bias, rows, cin, hw);
            for o in 0..cout {
                let plane = &mut dst[o * oh * ow..(o + 1) * oh * ow];
                for a in 0..2 {
                    for bb in 0..2 {
                        let t = &tmp[(o * 4 + a * 2 + bb) * hw..(o * 4 + a * 2 + bb + 1) * hw];
                        for y in 0..h {
                            let orow = &mut plane[(2 * y + a) * ow..(2 * y + a + 1) * ow];
                            for xx in 0..w {
                                orow[2 * xx + bb] = t[y * w + xx] + b[o];
                            }
                        }
                    }
                }
            }
            if self.relu {
                relu_in_place(dst);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, cout, oh, ow))))
    }
}

pub fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(w, b, &Pointwise { relu })
}

pub fn depthwise3x3(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    relu: bool,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(w, b, &Depthwise3x3 { stride, relu })
}

pub fn upsample2x2(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(w, b, &Upsample2x2 { relu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    fn rand(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn bias_relu(y: Tensor, b: &Tensor, relu: bool) -> Tensor {
        let y = y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap();
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    }

    #[test]
    fn pointwise_matches_candle_conv2d() {
        let (x, w, b) = (rand(&[2, 16, 7, 9]), rand(&[24, 16, 1, 1]), rand(&[24]));
        for relu in [false, true] {
            let want = bias_relu(x.conv2d(&w, 0, 1, 1, 1).unwrap(), &b, relu);
            let got = pointwise(&x, &w, &b, relu).unwrap();
            assert!(max_abs_diff(&want, &got) < 1e-4);
        }
    }

    #[test]
    fn depthwise_matches_candle_grouped_conv2d() {
        // Odd and even sizes, both strides: the border paths differ.
        for (h, w) in [(8, 8), (7, 9), (2, 5), (16, 3)] {
            let (x, k, b) = (rand(&[2, 6, h, w]), rand(&[6, 1, 3, 3]), rand(&[6]));
            for stride in [1, 2] {
                let want = bias_relu(x.conv2d(&k, 1, stride, 1, 6).unwrap(), &b, true);
                let got = depthwise3x3(&x, &k, &b, stride, true).unwrap();
                assert_eq!(want.dims(), got.dims(), "{h}x{w} s{stride}");
                assert!(max_abs_diff(&want, &got) < 1e-4, "{h}x{w} s{stride}");
            }
        }
    }

    #[test]
    fn upsample_matches_candle_conv_transpose2d() {
        let (x, w, b) = (rand(&[2, 5, 3, 4]), rand(&[5, 7, 2, 2]), rand(&[7]));
        let want = bias_relu(x.conv_transpose2d(&w, 0, 0, 2, 1).unwrap(), &b, true);
        let got = upsample2x2(&x, &w, &b, true).unwrap();
        assert_eq!(want.dims(), got.dims());
        assert!(max_abs_diff(&want, &got) < 1e-4);
    }

    #[test]
    fn mismatched_weights_are_an_error_not_a_panic() {
        let (x, w, b) = (
            rand(&[1, 4, 4, 4]),
            Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
            rand(&[3]),
        );
        assert!(pointwise(&x, &w, &b, false).is_err());
    }
}
