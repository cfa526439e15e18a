//! One function per shader: checks shapes, allocates the output, records
//! the dispatch. Weights are uploaded once, at model load, as [`Conv`].

use super::{grid_1d, Compute, GpuError, Record, Result, Tensor};
use crate::model::face_mesh::same_pads;

/// A convolution's weight and bias on the device, in PyTorch's layouts:
/// [cout, cin, k, k] (dense), [c, 1, 3, 3] (depthwise), [cin, cout, 2, 2]
/// (transposed), [outputs, inputs] (linear).
pub struct Conv<B> {
    pub w: B,
    pub b: B,
    pub cout: usize,
    pub cin: usize,
    pub k: usize,
}

impl<B> Conv<B> {
    pub fn new<D: Compute<Buf = B>>(
        dev: &D,
        w: &[f32],
        b: &[f32],
        cout: usize,
        cin: usize,
        k: usize,
    ) -> Result<Self> {
        if b.len() != cout || !w.len().is_multiple_of(cout.max(1)) {
            return Err(GpuError::Shape(format!(
                "{} weights and {} biases for {cout} outputs",
                w.len(),
                b.len()
            )));
        }
        Ok(Self {
            w: dev.upload("weight", w)?,
            b: dev.upload("bias", b)?,
            cout,
            cin,
            k,
        })
    }
}

fn u(v: usize) -> u32 {
    v as u32
}

fn groups_2d(w: usize, h: usize, z: usize) -> [u32; 3] {
    [u(w.div_ceil(8)), u(h.div_ceil(8)), u(z)]
}

fn expect_channels<B>(op: &str, x: &Tensor<B>, c: usize) -> Result<()> {
    if x.shape[1] != c {
        return Err(GpuError::Shape(format!(
            "{op}: input has {} channels, the layer takes {c}",
            x.shape[1]
        )));
    }
    Ok(())
}

/// Output edge of a k x k window at `stride` with `pad` on each side.
pub fn out_dim(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad).saturating_sub(k) / stride + 1
}

/// TensorFlow's SAME padding of a k x k window at `stride` over `x`'s
/// planes: the padding before (top and left) and the output size,
/// `ceil(len / stride)` per axis. The padding after needs no word of its
/// own: the shaders skip taps past the end, which is zero padding. They
/// take one leading pad for both axes, so a map whose axes would need
/// different ones (stride 2 over an even height and an odd width) is
/// refused.
fn same<B>(op: &str, x: &Tensor<B>, k: usize, stride: usize) -> Result<(usize, usize, usize)> {
    let [_, _, h, w] = x.shape;
    let ((top, _), (left, _)) = (same_pads(h, k, stride), same_pads(w, k, stride));
    if top != left {
        return Err(GpuError::Shape(format!(
            "{op}: SAME padding of {h}x{w} at stride {stride} differs between the axes \
             ({top} and {left} before)"
        )));
    }
    Ok((top, h.div_ceil(stride), w.div_ceil(stride)))
}

/// Dense k x k convolution (`shaders/conv2d.wgsl`), `pad` zeros on every
/// side.
pub fn conv2d<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<Tensor<R::Buf>> {
    let [_, _, h, w] = x.shape;
    if h + 2 * pad < c.k || w + 2 * pad < c.k {
        return Err(GpuError::Shape(format!(
            "conv2d: {h}x{w} input smaller than its {0}x{0} kernel",
            c.k
        )));
    }
    let out = (out_dim(h, c.k, stride, pad), out_dim(w, c.k, stride, pad));
    conv2d_at(r, x, c, stride, pad, out, relu)
}

/// [`conv2d`] with TensorFlow's SAME padding (the odd pixel of padding
/// after): output `ceil(h / stride)` x `ceil(w / stride)`. Errors as
/// [`same`] says.
pub fn conv2d_same<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    relu: bool,
) -> Result<Tensor<R::Buf>> {
    let (pad, ho, wo) = same("conv2d_same", x, c.k, stride)?;
    conv2d_at(r, x, c, stride, pad, (ho, wo), relu)
}

fn conv2d_at<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    pad: usize,
    (ho, wo): (usize, usize),
    relu: bool,
) -> Result<Tensor<R::Buf>> {
    expect_channels("conv2d", x, c.cin)?;
    let [n, _, h, w] = x.shape;
    let y = r.tensor([n, c.cout, ho, wo])?;
    let p = [
        n,
        c.cin,
        h,
        w,
        c.cout,
        ho,
        wo,
        c.k,
        stride,
        pad,
        relu as usize,
        0,
    ]
    .map(u);
    r.dispatch(
        "conv2d",
        &p,
        &[&x.buf, &c.w, &c.b, &y.buf],
        groups_2d(wo, ho, n * c.cout.div_ceil(8)),
    )?;
    Ok(y)
}

/// Where a depthwise convolution applies its ReLU, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relu {
    Off,
    /// To the input as it is read: Xception's ReLU before a separable
    /// conv, where another branch still takes the input un-activated.
    Input,
    /// To the output, after the bias.
    Output,
}

/// Depthwise 3x3 convolution (`shaders/depthwise.wgsl`), `pad` zeros on
/// every side.
pub fn depthwise<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<Tensor<R::Buf>> {
    let [_, _, h, w] = x.shape;
    let out = (out_dim(h, 3, stride, pad), out_dim(w, 3, stride, pad));
    let relu = if relu { Relu::Output } else { Relu::Off };
    depthwise_at(r, x, c, stride, pad, out, relu)
}

/// [`depthwise`] with TensorFlow's SAME padding, as [`conv2d_same`], and
/// the ReLU where `relu` says.
pub fn depthwise_same<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    relu: Relu,
) -> Result<Tensor<R::Buf>> {
    let (pad, ho, wo) = same("depthwise_same", x, 3, stride)?;
    depthwise_at(r, x, c, stride, pad, (ho, wo), relu)
}

fn depthwise_at<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    stride: usize,
    pad: usize,
    (ho, wo): (usize, usize),
    relu: Relu,
) -> Result<Tensor<R::Buf>> {
    expect_channels("depthwise", x, c.cout)?;
    let [n, ch, h, w] = x.shape;
    let y = r.tensor([n, ch, ho, wo])?;
    let (out, input) = (relu == Relu::Output, relu == Relu::Input);
    let p = [
        n,
        ch,
        h,
        w,
        ho,
        wo,
        stride,
        pad,
        out as usize,
        input as usize,
        0,
        0,
    ]
    .map(u);
    r.dispatch(
        "depthwise",
        &p,
        &[&x.buf, &c.w, &c.b, &y.buf],
        groups_2d(wo, ho, n * ch),
    )?;
    Ok(y)
}

/// 1x1 convolution as a tiled matrix product (`shaders/conv1x1.wgsl`):
/// bias, then ReLU if asked, then `residual` added: the output's shape, or
/// fewer channels (at most `c.cout`), which are the first ones and the rest
/// zeros, as MobileNet-style nets widen a shortcut.
pub fn conv1x1<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    relu: bool,
    residual: Option<&Tensor<R::Buf>>,
) -> Result<Tensor<R::Buf>> {
    expect_channels("conv1x1", x, c.cin)?;
    let [n, _, h, w] = x.shape;
    let shape = [n, c.cout, h, w];
    if let Some(res) = residual {
        let [rn, rc, rh, rw] = res.shape;
        if (rn, rh, rw) != (n, h, w) || rc > c.cout {
            return Err(GpuError::Shape(format!(
                "conv1x1: residual {:?} for an output of {shape:?}",
                res.shape
            )));
        }
    }
    let y = r.tensor(shape)?;
    let p = [
        n,
        c.cin,
        c.cout,
        h * w,
        relu as usize,
        residual.map_or(0, |t| t.shape[1]),
        0,
        0,
    ]
    .map(u);
    // Without a residual the kernel never reads that argument; the input
    // stands in for it (bound read-only twice, which both APIs allow).
    let res = residual.map(|t| &t.buf).unwrap_or(&x.buf);
    r.dispatch(
        "conv1x1",
        &p,
        &[&x.buf, &c.w, &c.b, res, &y.buf],
        [u((h * w).div_ceil(64)), u(c.cout.div_ceil(64)), u(n)],
    )?;
    Ok(y)
}

/// 2x2/stride-2 transposed convolution (`shaders/conv_transpose2x2.wgsl`).
pub fn conv_transpose2x2<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
    relu: bool,
) -> Result<Tensor<R::Buf>> {
    expect_channels("conv_transpose2x2", x, c.cin)?;
    let [n, _, h, w] = x.shape;
    let y = r.tensor([n, c.cout, 2 * h, 2 * w])?;
    let p = [n, c.cin, h, w, c.cout, relu as usize, 0, 0].map(u);
    r.dispatch(
        "conv_transpose2x2",
        &p,
        &[&x.buf, &c.w, &c.b, &y.buf],
        groups_2d(2 * w, 2 * h, n * c.cout),
    )?;
    Ok(y)
}

/// 2x2 max-pool, stride 2, floor (`shaders/maxpool2x2.wgsl`).
pub fn maxpool2x2<R: Record>(r: &mut R, x: &Tensor<R::Buf>) -> Result<Tensor<R::Buf>> {
    let [n, c, h, w] = x.shape;
    let (ho, wo) = (h / 2, w / 2);
    let y = r.tensor([n, c, ho, wo])?;
    r.dispatch(
        "maxpool2x2",
        &[h, w, ho, wo].map(u),
        &[&x.buf, &y.buf],
        groups_2d(wo, ho, n * c),
    )?;
    Ok(y)
}

/// k x k max-pool at `stride` with TensorFlow's SAME padding, the padding
/// never winning (-inf; SAME puts at most (k - 1) / 2 cells before and
/// after, so every window holds a cell of the map), output `ceil(h / stride)` x `ceil(w / stride)`,
/// plus `residual` (the output's shape) when given (`shaders/maxpool.wgsl`):
/// the pooled branch of Xception's reduction blocks and their 1x1
/// shortcut. Errors as [`same`] says, or on a residual of another shape.
pub fn maxpool_same<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    k: usize,
    stride: usize,
    residual: Option<&Tensor<R::Buf>>,
) -> Result<Tensor<R::Buf>> {
    let (pad, ho, wo) = same("maxpool_same", x, k, stride)?;
    let [n, c, h, w] = x.shape;
    let shape = [n, c, ho, wo];
    if residual.is_some_and(|t| t.shape != shape) {
        return Err(GpuError::Shape(format!(
            "maxpool_same: residual {:?} for an output of {shape:?}",
            residual.map(|t| t.shape)
        )));
    }
    let y = r.tensor(shape)?;
    let p = [h, w, ho, wo, k, stride, pad, residual.is_some() as usize].map(u);
    // As in `conv1x1`: the input stands in for an absent residual.
    let res = residual.map(|t| &t.buf).unwrap_or(&x.buf);
    r.dispatch(
        "maxpool",
        &p,
        &[&x.buf, res, &y.buf],
        groups_2d(wo, ho, n * c),
    )?;
    Ok(y)
}

/// [centre crop of `a` to `b`'s size, `b`] along channels (`shaders/crop_concat.wgsl`).
pub fn crop_concat<R: Record>(
    r: &mut R,
    a: &Tensor<R::Buf>,
    b: &Tensor<R::Buf>,
) -> Result<Tensor<R::Buf>> {
    let [n, ca, ha, wa] = a.shape;
    let [nb, cb, h, w] = b.shape;
    let crop = (ha.saturating_sub(h)) / 2;
    if nb != n || ha < h || wa < w || ha - h != wa - w || (ha - h) % 2 != 0 {
        return Err(GpuError::Shape(format!(
            "crop_concat: cannot centre-crop {:?} to {:?}",
            a.shape, b.shape
        )));
    }
    let y = r.tensor([n, ca + cb, h, w])?;
    r.dispatch(
        "crop_concat",
        &[n, ca, cb, ha, wa, h, w, crop].map(u),
        &[&a.buf, &b.buf, &y.buf],
        grid_1d(y.len()),
    )?;
    Ok(y)
}

/// Sigmoid in place on channels `c0..c0 + k` (`shaders/sigmoid.wgsl`).
pub fn sigmoid<R: Record>(r: &mut R, x: &Tensor<R::Buf>, c0: usize, k: usize) -> Result<()> {
    let [n, c, h, w] = x.shape;
    if c0 + k > c {
        return Err(GpuError::Shape(format!(
            "sigmoid: channels {c0}..{} of {c}",
            c0 + k
        )));
    }
    r.dispatch(
        "sigmoid",
        &[n, c, h * w, c0, k, 0, 0, 0].map(u),
        &[&x.buf],
        grid_1d(n * k * h * w),
    )
}

/// PReLU slopes on the device, one per channel, uploaded once at load.
pub struct Slopes<B> {
    pub buf: B,
    pub c: usize,
}

impl<B> Slopes<B> {
    pub fn new<D: Compute<Buf = B>>(dev: &D, alpha: &[f32]) -> Result<Self> {
        Ok(Self {
            buf: dev.upload("prelu", alpha)?,
            c: alpha.len(),
        })
    }
}

/// PReLU in place (`shaders/prelu.wgsl`): a negative value `v` of channel
/// `ch` becomes `alpha[ch] * v`. The MediaPipe face and iris nets' only
/// activation.
pub fn prelu<R: Record>(r: &mut R, x: &Tensor<R::Buf>, alpha: &Slopes<R::Buf>) -> Result<()> {
    expect_channels("prelu", x, alpha.c)?;
    let [n, c, h, w] = x.shape;
    r.dispatch(
        "prelu",
        &[n, c, h * w, 0].map(u),
        &[&x.buf, &alpha.buf],
        grid_1d(n * c * h * w),
    )
}

/// Mean over each plane: [n, c, h, w] -> [n, c, 1, 1] (`shaders/global_avg_pool.wgsl`).
pub fn global_avg_pool<R: Record>(r: &mut R, x: &Tensor<R::Buf>) -> Result<Tensor<R::Buf>> {
    let [n, c, h, w] = x.shape;
    let y = r.tensor([n, c, 1, 1])?;
    r.dispatch(
        "global_avg_pool",
        &[n * c, h * w, 0, 0].map(u),
        &[&x.buf, &y.buf],
        [u((n * c).div_ceil(64)), 1, 1],
    )?;
    Ok(y)
}

/// Fully connected: [n, inputs, 1, 1] -> [n, outputs, 1, 1] (`shaders/linear.wgsl`).
pub fn linear<R: Record>(
    r: &mut R,
    x: &Tensor<R::Buf>,
    c: &Conv<R::Buf>,
) -> Result<Tensor<R::Buf>> {
    let [n, ch, h, w] = x.shape;
    if ch * h * w != c.cin {
        return Err(GpuError::Shape(format!(
            "linear: {} inputs per item, the layer takes {}",
            ch * h * w,
            c.cin
        )));
    }
    let y = r.tensor([n, c.cout, 1, 1])?;
    r.dispatch(
        "linear",
        &[n, c.cin, c.cout, 0].map(u),
        &[&x.buf, &c.w, &c.b, &y.buf],
        [u((n * c.cout).div_ceil(64)), 1, 1],
    )?;
    Ok(y)
}

/// Softmax in place over each item's values (channels x plane flattened).
pub fn softmax<R: Record>(r: &mut R, x: &Tensor<R::Buf>) -> Result<()> {
    let [n, c, h, w] = x.shape;
    r.dispatch(
        "softmax",
        &[n, c * h * w, 0, 0].map(u),
        &[&x.buf],
        [u(n.div_ceil(64)), 1, 1],
    )
}

/// How [`letterbox`] maps bytes to the model's input.
#[derive(Debug, Clone, Copy)]
pub struct Prep {
    /// Swap R and B (the source is RGB).
    pub bgr: bool,
    pub scale: f32,
    pub offset: f32,
}

/// One RGB8 frame of `sw x sh`, uploaded as it is, letterboxed into image
/// `slot` of the [n, 3, dh, dw] input `x`: resampled (anti-aliased, like
/// the host letterbox) to `rw x rh` in the top-left corner, zeros elsewhere,
/// then laid out and scaled by `prep` (`shaders/letterbox.wgsl`).
#[allow(clippy::too_many_arguments)]
pub fn letterbox<R: Record>(
    r: &mut R,
    src: &R::Buf,
    (sw, sh): (usize, usize),
    (rw, rh): (usize, usize),
    x: &Tensor<R::Buf>,
    slot: usize,
    prep: Prep,
) -> Result<()> {
    let [n, c, dh, dw] = x.shape;
    if sw == 0 || sh == 0 || (r.size(src) as usize) < sw * sh * 3 {
        return Err(GpuError::Shape(format!(
            "letterbox: {} bytes for a {sw}x{sh} frame",
            r.size(src)
        )));
    }
    if c != 3 || slot >= n || rw == 0 || rh == 0 || rw > dw || rh > dh {
        return Err(GpuError::Shape(format!(
            "letterbox: {rw}x{rh} into image {slot} of a {:?} input",
            x.shape
        )));
    }
    let p = [
        u(sh),
        u(sw),
        u(rh),
        u(rw),
        u(dh),
        u(dw),
        u(slot),
        prep.bgr as u32,
        prep.scale.to_bits(),
        prep.offset.to_bits(),
    ];
    r.dispatch("letterbox", &p, &[src, &x.buf], grid_1d(3 * dh * dw))
}

#[cfg(test)]
mod tests;
