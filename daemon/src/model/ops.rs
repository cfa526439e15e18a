//! Fused convolution ops on NCHW candle tensors, for the cell UNets.
//!
//! candle's 1x1 convolutions go through im2col and its bias and ReLU are
//! separate passes. These custom ops run the same maths directly: a 1x1
//! convolution is one GEMM per image, a dense 3x3 is GEMMs over im2col row
//! bands, a 2x2/stride-2 transposed convolution is one GEMM followed by a
//! scatter. Bias and ReLU are fused in. (CenterFace runs on the NHWC kernels
//! of `model::nhwc` instead; these ops also check those in tests.)

use argus_kernels::gemm_tile;
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

/// Columns per tile of the tiled GEMMs: a tile of the output (Cout × TILE)
/// stays in L2 while bias and ReLU are applied to it.
const TILE: usize = 1024;

/// A raw pointer that rayon tasks may share: every task writes a disjoint
/// column range of the buffer it points into.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: used only for disjoint writes, see `SharedMut`.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Taking `self` makes closures capture the whole (Send) wrapper rather
    /// than its raw-pointer field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// The 1x1 convolution of one image: AVX-512 where the CPU has it, else the
/// tiled portable GEMM.
#[allow(clippy::too_many_arguments)]
fn pointwise_image(
    out: &mut [f32],
    w: &[f32],
    x: &[f32],
    bias: &[f32],
    cout: usize,
    cin: usize,
    hw: usize,
    relu: bool,
    residual: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        let wt = transpose(w, cout, cin);
        let dst = SharedMut(out.as_mut_ptr());
        // Small maps (deep layers) still get a tile per thread: columns in
        // multiples of the kernel's 48-wide register block.
        let threads = rayon::current_num_threads().max(1);
        let tile = if hw >= 2 * threads * TILE {
            TILE
        } else {
            hw.div_ceil(2 * threads).div_ceil(48).max(1) * 48
        };
        let tiles = hw.div_ceil(tile);
        (0..tiles).into_par_iter().for_each(|t| {
            let j0 = t * tile;
            // SAFETY: AVX-512F was detected; buffers have the sizes the
            // kernel requires; tiles are disjoint column ranges.
            unsafe {
                super::avx512::pointwise_cols(
                    dst.ptr(),
                    x.as_ptr(),
                    wt.as_ptr(),
                    bias.as_ptr(),
                    cin,
                    cout,
                    super::avx512::Strides { x: hw, out: hw },
                    j0,
                    (j0 + tile).min(hw),
                    relu,
                    residual.map(|r| r.as_ptr()),
                )
            };
        });
        return;
    }
    gemm_bias_act(out, w, x, bias, cout, cin, hw, relu);
    if let Some(r) = residual {
        add_in_place(out, r);
    }
}

/// [rows × cols] -> [cols × rows].
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// out[m × n] = act(lhs[m×k] · rhs[k×n] + bias), row-major, tiled over columns
/// and parallel over tiles; bias and ReLU run on each tile while it is hot.
#[allow(clippy::too_many_arguments)]
fn gemm_bias_act(
    out: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    bias: &[f32],
    m: usize,
    k: usize,
    n: usize,
    relu: bool,
) {
    assert!(out.len() == m * n && lhs.len() == m * k && rhs.len() == k * n && bias.len() == m);
    let tiles = n.div_ceil(TILE);
    if tiles < 2 * rayon::current_num_threads() && n * m < 4 * TILE * 64 {
        // Small output (deep, low-resolution layers): one GEMM, parallel inside.
        // SAFETY: out, lhs, rhs are live slices of the sizes asserted above.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm_threads(),
            )
        };
        for (row, b) in out.chunks_exact_mut(n).zip(bias) {
            epilogue(row, *b, relu);
        }
        return;
    }
    let dst = SharedMut(out.as_mut_ptr());
    (0..tiles).into_par_iter().for_each(|t| {
        let c0 = t * TILE;
        let w = TILE.min(n - c0);
        // SAFETY: tile t covers columns c0..c0+w of every row, disjoint from
        // other tiles; all pointers stay inside out (m×n) and rhs (k×n).
        unsafe {
            gemm_tile(dst.ptr().add(c0), n, lhs, rhs.as_ptr().add(c0), n, m, k, w);
            for (r, b) in bias.iter().enumerate() {
                epilogue(
                    std::slice::from_raw_parts_mut(dst.ptr().add(r * n + c0), w),
                    *b,
                    relu,
                );
            }
        }
    });
}

fn epilogue(v: &mut [f32], bias: f32, relu: bool) {
    if relu {
        for x in v {
            *x = (*x + bias).max(0.0);
        }
    } else {
        for x in v {
            *x += bias;
        }
    }
}

fn add_in_place(v: &mut [f32], r: &[f32]) {
    for (x, y) in v.iter_mut().zip(r) {
        *x += y;
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
    gemm_bias_act(dst, lhs, rhs, bias, m, k, n, false)
}

/// A vector of `n` floats filled in by `init`. (Zeroed first: handing out
/// uninitialised memory as `&mut [f32]` would be unsound, and the zeroing
/// of fresh allocator pages is nearly free.)
fn written_by(n: usize, init: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut v = vec![0f32; n];
    init(&mut v);
    v
}

fn relu_in_place(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// 1x1 convolution: x `[N,Cin,H,W]`, w `[Cout,Cin(,1,1)]`, b `[Cout]`, then
/// optional ReLU, then an optional residual `[N,Cout,H,W]` added (fused, so
/// no separate elementwise pass over the output).
#[derive(Debug, Clone)]
pub struct Pointwise {
    pub relu: bool,
    pub residual: Option<Tensor>,
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
        let guard = self.residual.as_ref().map(|r| r.storage_and_layout());
        let residual = match &guard {
            Some((st, layout)) => match &**st {
                candle_core::Storage::Cpu(cpu) => {
                    if layout.shape().dims() != [n, cout, h, w] {
                        candle_core::bail!("pointwise: residual {:?} does not match output [{n}, {cout}, {h}, {w}]", layout.shape());
                    }
                    Some(slice(cpu, layout, "residual")?)
                }
                _ => candle_core::bail!("pointwise: residual must be on the CPU"),
            },
            None => None,
        };
        let out = written_by(n * cout * hw, |out| {
            for (i, (dst, src)) in out
                .chunks_exact_mut(cout * hw)
                .zip(x.chunks_exact(cin * hw))
                .enumerate()
            {
                let res = residual.map(|r| &r[i * cout * hw..(i + 1) * cout * hw]);
                pointwise_image(dst, wt, src, b, cout, cin, hw, self.relu, res);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, cout, h, w))))
    }
}

/// Transposed convolution with kernel 2, stride 2, no padding:
/// x `[N,Cin,H,W]`, w `[Cin,Cout,2,2]`, b `[Cout]` -> `[N,Cout,2H,2W]`.
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

/// Dense 3x3 convolution, padding 1: x `[N,Cin,H,W]`, w `[Cout,Cin,3,3]`, b `[Cout]`.
///
/// im2col on bands of output rows (each band's patch matrix fits in cache)
/// followed by one GEMM per band, bands in parallel. Used where channels are
/// few and the resolution high: the stem (3 -> 32, stride 2) and the head.
#[derive(Debug, Clone, Copy)]
pub struct Dense3x3 {
    pub stride: usize,
    pub relu: bool,
}

impl Dense3x3 {
    fn out_dim(&self, d: usize) -> usize {
        (d + 2 - 3) / self.stride + 1
    }
}

impl CustomOp3 for Dense3x3 {
    fn name(&self) -> &'static str {
        "dense-conv3x3"
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
        let (cout, wcin, kh, kw) = l2.shape().dims4()?;
        if wcin != cin || kh != 3 || kw != 3 || l3.shape().elem_count() != cout {
            candle_core::bail!(
                "dense3x3: weight {:?} / bias {:?} do not fit input {:?}",
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
        let (oh, ow, s) = (self.out_dim(h), self.out_dim(w), self.stride);
        let (plane, k) = (oh * ow, cin * 9);
        let rows_per_band = (TILE / ow).max(1);
        let bands = oh.div_ceil(rows_per_band);
        let relu = self.relu;
        #[cfg(target_arch = "x86_64")]
        let wt_t = super::avx512::available().then(|| transpose(wt, cout, k));
        let out = written_by(n * cout * plane, |out| {
            for (dst_img, src) in out
                .chunks_exact_mut(cout * plane)
                .zip(x.chunks_exact(cin * h * w))
            {
                let dst = SharedMut(dst_img.as_mut_ptr());
                (0..bands).into_par_iter().for_each(|band| {
                    let y0 = band * rows_per_band;
                    let rows = rows_per_band.min(oh - y0);
                    let cols = rows * ow;
                    // patches[(c*9 + ky*3 + kx), r*ow + ox] = x[c, (y0+r)*s + ky - 1, ox*s + kx - 1]
                    let mut patches = vec![0f32; k * cols];
                    for c in 0..cin {
                        let img = &src[c * h * w..(c + 1) * h * w];
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let prow = &mut patches[(c * 9 + ky * 3 + kx) * cols..][..cols];
                                for r in 0..rows {
                                    let y = ((y0 + r) * s + ky) as isize - 1;
                                    if y < 0 || y >= h as isize {
                                        continue;
                                    }
                                    let line = &img[y as usize * w..(y as usize + 1) * w];
                                    for (ox, p) in prow[r * ow..(r + 1) * ow].iter_mut().enumerate()
                                    {
                                        let xx = (ox * s + kx) as isize - 1;
                                        if xx >= 0 && xx < w as isize {
                                            *p = line[xx as usize];
                                        }
                                    }
                                }
                            }
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    if let Some(wt_t) = &wt_t {
                        // SAFETY: AVX-512F detected; patches is k × cols; the
                        // output block starts at column y0*ow of rows of stride
                        // `plane`; bands write disjoint columns.
                        unsafe {
                            super::avx512::pointwise_cols(
                                dst.ptr().add(y0 * ow),
                                patches.as_ptr(),
                                wt_t.as_ptr(),
                                b.as_ptr(),
                                k,
                                cout,
                                super::avx512::Strides {
                                    x: cols,
                                    out: plane,
                                },
                                0,
                                cols,
                                relu,
                                None,
                            )
                        };
                        return;
                    }
                    // SAFETY: this band writes columns y0*ow .. y0*ow+cols of
                    // every output channel, disjoint from other bands, inside
                    // this image's cout × plane block.
                    unsafe {
                        gemm_tile(
                            dst.ptr().add(y0 * ow),
                            plane,
                            wt,
                            patches.as_ptr(),
                            cols,
                            cout,
                            k,
                            cols,
                        );
                        for (o, bias) in b.iter().enumerate() {
                            epilogue(
                                std::slice::from_raw_parts_mut(
                                    dst.ptr().add(o * plane + y0 * ow),
                                    cols,
                                ),
                                *bias,
                                relu,
                            );
                        }
                    }
                });
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, cout, oh, ow))))
    }
}

pub fn dense3x3(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, relu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(w, b, &Dense3x3 { stride, relu })
}

pub fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        w,
        b,
        &Pointwise {
            relu,
            residual: None,
        },
    )
}

/// `act(conv1x1(x) + b) + residual` in one pass.
pub fn pointwise_add(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    residual: &Tensor,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        w,
        b,
        &Pointwise {
            relu,
            residual: Some(residual.contiguous()?),
        },
    )
}

pub fn upsample2x2(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(w, b, &Upsample2x2 { relu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{DType, Device};

    fn rand(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
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
        // 64x80 = 5 column tiles: the tiled parallel path.
        for (h, w) in [(7, 9), (64, 80)] {
            pointwise_case(h, w);
        }
    }

    fn pointwise_case(h: usize, wd: usize) {
        let (x, w, b) = (rand(&[2, 16, h, wd]), rand(&[24, 16, 1, 1]), rand(&[24]));
        for relu in [false, true] {
            let want = bias_relu(x.conv2d(&w, 0, 1, 1, 1).unwrap(), &b, relu);
            let got = pointwise(&x, &w, &b, relu).unwrap();
            assert!(max_abs_diff(&want, &got) < 1e-4);
            let res = rand(want.dims());
            let got = pointwise_add(&x, &w, &b, relu, &res).unwrap();
            assert!(max_abs_diff(&(want + &res).unwrap(), &got) < 1e-4);
        }
    }

    #[test]
    fn avx512_and_portable_pointwise_agree() {
        // Odd sizes exercise the masked column tail and the single-row tail.
        let (cout, cin, hw) = (13, 37, 16 * 3 * 5 + 7 + 1024);
        let (x, w, b) = (rand(&[cin, hw]), rand(&[cout, cin]), rand(&[cout]));
        let (x, w, b) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.to_vec1::<f32>().unwrap(),
        );
        let mut portable = vec![0f32; cout * hw];
        gemm_bias_act(&mut portable, &w, &x, &b, cout, cin, hw, true);
        let mut fast = vec![0f32; cout * hw];
        pointwise_image(&mut fast, &w, &x, &b, cout, cin, hw, true, None);
        let err = portable
            .iter()
            .zip(&fast)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "max abs diff {err}");
        if !crate::model::avx512::available() {
            println!("no AVX-512 on this CPU: both sides ran the portable path");
        }
    }

    #[test]
    fn dense_matches_candle_conv2d() {
        for (cin, h, w, stride) in [(3, 9, 12, 2), (24, 8, 7, 1), (5, 40, 33, 1), (3, 64, 96, 2)] {
            let (x, k, b) = (rand(&[2, cin, h, w]), rand(&[6, cin, 3, 3]), rand(&[6]));
            let want = bias_relu(x.conv2d(&k, 1, stride, 1, 1).unwrap(), &b, true);
            let got = dense3x3(&x, &k, &b, stride, true).unwrap();
            assert_eq!(want.dims(), got.dims());
            assert!(max_abs_diff(&want, &got) < 1e-3, "{cin} {h}x{w} s{stride}");
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
