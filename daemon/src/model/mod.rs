//! Model code: architectures, their fused ops and their post-processing.

pub mod centerface;
pub mod decode;
pub mod ops;

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

    pub fn iou(&self, o: &Face) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// Load safetensors weights as f32 on `device`.
pub fn load_weights<'a>(path: &Path, device: &Device) -> candle_core::Result<VarBuilder<'a>> {
    // SAFETY: the weights file is opened read-only and is not modified while
    // the daemon runs (it lives in the install tree, not the state dir).
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
}
