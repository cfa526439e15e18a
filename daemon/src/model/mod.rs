//! Model code: architectures, their fused ops and their post-processing.

pub mod age;
mod age_nhwc;
pub mod centerface;
pub mod decode;
pub mod face_mesh;
mod face_mesh_nhwc;
pub mod iris;
mod iris_nhwc;
pub mod malaria;
pub mod ops;
pub mod unet;
pub mod wbc;

#[cfg(test)]
mod nhwc_parity;

// The CPU kernels build as their own crate, optimised even in test builds;
// re-exported so the model code reads `model::nhwc` as before.
pub use argus_kernels::{avx512, nhwc, simd};

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// A face found by the detector, in the coordinates of the image it was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    pub score: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// left eye, right eye, nose, left mouth corner, right mouth corner: (x, y).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Area (square pixels) this box shares with `o`.
    pub fn intersection(&self, o: &Face) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        w * h
    }

    pub fn iou(&self, o: &Face) -> f32 {
        let inter = self.intersection(o);
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// Each image of an NCHW tensor `[n, c, h, w]` on the CPU through `f(its c ×
/// h × w floats, h, w)`, run as [`nhwc::whole_images`] runs them, results in order.
pub fn per_chw_image<R: Send>(
    x: &candle_core::Tensor,
    f: impl Fn(&[f32], usize, usize) -> R + Sync,
) -> candle_core::Result<Vec<R>> {
    let (n, c, h, w) = x.dims4()?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let plane = c * h * w;
    Ok(nhwc::whole_images(n, |i| {
        f(&data[i * plane..][..plane], h, w)
    }))
}

/// Load safetensors weights as f32 on `device`, each tensor in freshly
/// allocated storage of its own.
///
/// Measured here: the CPU kernels ran the stem convolution ~5x slower (13 ms
/// against 2.6 ms at 640x448) with weights from the memory-mapped loader than
/// with a plain copy of the same values, so every tensor is copied once at
/// load time. The files are a few MB.
pub fn load_weights<'a>(path: &Path, device: &Device) -> candle_core::Result<VarBuilder<'a>> {
    let bytes = std::fs::read(path)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    let loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut owned = std::collections::HashMap::with_capacity(loaded.len());
    for (name, t) in loaded {
        let t = t.to_dtype(DType::F32)?;
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        owned.insert(name, candle_core::Tensor::from_vec(data, t.dims(), device)?);
    }
    Ok(VarBuilder::from_tensors(owned, DType::F32, device))
}

/// Largest absolute elementwise difference of two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(candle_core::D::Minus1)
        .unwrap()
        .to_scalar()
        .unwrap()
}
