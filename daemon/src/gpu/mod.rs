//! GPU compute shared by the accelerator backends: device tensors, the
//! [`Compute`]/[`Record`] traits a device implements, and the models' ops
//! (`ops`) and blocks (`centerface`, `cells`, `mask`, `skin`) written once against
//! them.
//!
//! A kernel is named by its file stem (`shaders/NAME.wgsl` for wgpu,
//! `kernels/NAME.cu` for CUDA); both take the same parameter words and
//! buffers in the same order and cover the same grid of 1-D, 2-D or 3-D
//! workgroups (thread blocks), so an op is one call whatever the device.
//! Tensors live on the device as NCHW f32. A model's whole forward pass is
//! recorded into one [`Record`], and only the outputs come back.

pub mod cells;
pub mod centerface;
#[cfg(feature = "cuda")]
pub mod cuda_device;
#[cfg(test)]
pub mod cuda_host;
#[cfg(any(feature = "cuda", test))]
pub mod cuda_kernels;
pub mod jpeg;
pub mod mask;
pub mod ops;
pub mod skin;
#[cfg(feature = "wgpu")]
pub mod wgpu_device;

#[cfg(feature = "cuda")]
pub use cuda_device::Cuda;
#[cfg(feature = "wgpu")]
pub use wgpu_device::{describe, is_hardware, AdapterPolicy, Gpu, Recorder, SHADERS};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable wgpu adapter: {0}")]
    NoAdapter(String),
    #[error("no usable CUDA device: {0}")]
    NoCudaDevice(String),
    #[error("requesting the device: {0}")]
    Device(String),
    #[error("shader {name}: {message}")]
    Shader { name: String, message: String },
    #[error("device error: {0}")]
    Run(String),
    #[error("{0}")]
    Shape(String),
    /// Not now: a budget shared by concurrent work is spent.
    #[error("{0}")]
    Busy(String),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// Bytes of activations one submission may allocate: every intermediate of
/// a recorded batch lives until the batch completes, so models split
/// bigger batches into several submissions.
pub const ACTIVATION_BUDGET: u64 = 2 << 30;

/// A device the ops run on.
///
/// Devices and their buffers are shared across threads: the backend's
/// thread runs batches while request threads upload, mask and encode.
pub trait Compute: Send + Sync + 'static {
    /// A device buffer of 32-bit words.
    type Buf: Send + Sync + 'static;
    type Rec<'a>: Record<Buf = Self::Buf>
    where
        Self: 'a;

    /// Start recording work.
    fn recorder(&self) -> Self::Rec<'_>;
    /// A buffer holding `data` (padded to whole words).
    fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<Self::Buf>;
    /// An uninitialised tensor of `shape` (NCHW).
    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<Self::Buf>>;
    /// Largest buffer one kernel argument may cover, in bytes.
    fn max_binding(&self) -> u64;
    /// The adapter or GPU, for /health and logs.
    fn describe(&self) -> String;
    /// Ok while the device is usable.
    fn health(&self) -> Result<()>;

    fn tensor_from(&self, shape: [usize; 4], data: &[f32]) -> Result<Tensor<Self::Buf>> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(GpuError::Shape(format!(
                "{} values for a {shape:?} tensor",
                data.len()
            )));
        }
        Ok(Tensor {
            buf: self.upload("tensor", data)?,
            shape,
        })
    }
}

/// Work recorded for one submission.
pub trait Record {
    type Buf;

    /// Queue one run of kernel `name`: `params` (u32 words; f32 as its
    /// bits) first, then `bufs` in order, over `groups` workgroups.
    fn dispatch(
        &mut self,
        name: &str,
        params: &[u32],
        bufs: &[&Self::Buf],
        groups: [u32; 3],
    ) -> Result<()>;
    /// Bytes in `buf`.
    fn size(&self, buf: &Self::Buf) -> u64;
    /// A new tensor on this recorder's device.
    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<Self::Buf>>;
    /// Bring the first `len` bytes of `buf`, as they are once everything
    /// recorded before this call ran, back at `finish`.
    fn read(&mut self, buf: &Self::Buf, len: u64) -> Result<Readback>;
    /// Run everything recorded, wait for it, and return the readbacks.
    fn finish(self) -> Result<Vec<Vec<u8>>>;
}

/// An NCHW f32 tensor on a device.
pub struct Tensor<B> {
    pub buf: B,
    pub shape: [usize; 4],
}

impl<B> Tensor<B> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Handle to what `Record::read` brings back: an index into `finish`'s result.
#[derive(Debug, Clone, Copy)]
pub struct Readback(pub usize);

/// Workgroups for `total` invocations of a 256-wide 1-D kernel, folded into
/// two dimensions past the 65,535 per-dimension limit. Kernels rebuild the
/// index as `y * groups_x * 256 + x`.
pub fn grid_1d(total: usize) -> [u32; 3] {
    let groups = total.div_ceil(256).max(1);
    let x = groups.min(65_535);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// A device error met while loading weights, as the loader's error type.
pub(crate) fn load_err(e: GpuError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A convolution's `weight` ([cout, cin, k, k], or [c, 1, 3, 3] depthwise)
/// and `bias` from a checkpoint, uploaded to `dev`.
pub(crate) fn load_conv<D: Compute>(
    dev: &D,
    vb: &candle_nn::VarBuilder,
    shape: [usize; 4],
) -> candle_core::Result<ops::Conv<D::Buf>> {
    let w = vb
        .get(&shape[..], "weight")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = vb.get(shape[0], "bias")?.to_vec1::<f32>()?;
    ops::Conv::new(dev, &w, &b, shape[0], shape[1], shape[2]).map_err(load_err)
}

/// Reinterpret readback bytes as f32.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

/// Check a grid against the per-dimension limit both APIs share.
pub(crate) fn check_grid(name: &str, groups: [u32; 3]) -> Result<()> {
    for (i, &g) in groups.iter().enumerate() {
        if g > 65_535 {
            return Err(GpuError::Shape(format!(
                "{name}: {g} workgroups in dimension {i} (limit 65535)"
            )));
        }
    }
    Ok(())
}

/// Run `$f(&device)` on every accelerator device this build and machine
/// have, and on the CUDA kernels run on the host (`cuda_host`): one test
/// body for all backends. A device that is missing prints why and is
/// skipped.
#[cfg(test)]
macro_rules! on_every_device {
    ($f:expr) => {{
        #[cfg(feature = "wgpu")]
        if let Some(g) = $crate::gpu::wgpu_device::test_gpu() {
            $f(&*g);
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = $crate::gpu::cuda_device::test_cuda() {
            $f(&*c);
        }
        if let Some(h) = $crate::gpu::cuda_host::test_cuda_host() {
            $f(&*h);
        }
    }};
}
#[cfg(test)]
pub(crate) use on_every_device;

/// [`on_every_device`] for bodies that need to share the device
/// (`Arc<D>`), as the request path's masker does.
#[cfg(test)]
macro_rules! on_every_shared_device {
    ($f:expr) => {{
        #[cfg(feature = "wgpu")]
        if let Some(g) = $crate::gpu::wgpu_device::test_gpu() {
            $f(g);
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = $crate::gpu::cuda_device::test_cuda() {
            $f(c);
        }
        if let Some(h) = $crate::gpu::cuda_host::test_cuda_host() {
            $f(h);
        }
    }};
}
#[cfg(test)]
pub(crate) use on_every_shared_device;

/// The stems of the files named `*.{ext}` in `dir` (a folder of the
/// repository), sorted: tests check them against a built-in list.
#[cfg(test)]
pub(crate) fn stems_in(dir: &str, ext: &str) -> Vec<String> {
    let dir = format!("{}/../{dir}", env!("CARGO_MANIFEST_DIR"));
    let suffix = format!(".{ext}");
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(suffix.as_str()).map(str::to_owned)
        })
        .collect();
    stems.sort();
    stems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_grids_fold_into_two_dimensions() {
        assert_eq!(grid_1d(1), [1, 1, 1]);
        assert_eq!(grid_1d(256 * 65_535), [65_535, 1, 1]);
        let [x, y, _] = grid_1d(256 * 65_535 + 1);
        assert_eq!((x, y), (65_535, 2));
    }
}
