//! CPU backend: candle on the host, with the fused ops of `model::ops`.

use candle_core::{Device, Tensor};

use super::{Backend, BackendError, Batch, BatchOutput, FaceBatch, ModelPaths};
use crate::model::{centerface::CenterFace, decode, load_weights, Face};

pub struct CpuBackend {
    device: Device,
    centerface: CenterFace,
    max_batch: usize,
}

impl CpuBackend {
    pub fn load(models: &ModelPaths, max_batch: usize) -> Result<Self, BackendError> {
        let device = Device::Cpu;
        let load = |source| BackendError::Load {
            path: models.centerface.clone(),
            source,
        };
        let vb = load_weights(&models.centerface, &device).map_err(load)?;
        let centerface = CenterFace::load(vb).map_err(load)?;
        Ok(Self {
            device,
            centerface,
            max_batch: max_batch.max(1),
        })
    }
}

/// HWC u8 images -> NCHW f32 tensor, values kept in 0..=255.
pub fn to_nchw(batch: &FaceBatch, device: &Device) -> Result<Tensor, BackendError> {
    let (n, h, w) = (batch.len(), batch.height, batch.width);
    if batch.pixels.len() != n * h * w * 3 {
        return Err(BackendError::BadBatch(format!(
            "{} bytes for {n} images of {w}x{h}",
            batch.pixels.len()
        )));
    }
    let plane = h * w;
    let mut data = vec![0f32; n * 3 * plane];
    for (img, dst) in batch
        .pixels
        .chunks_exact(3 * plane)
        .zip(data.chunks_exact_mut(3 * plane))
    {
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32;
            g[i] = px[1] as f32;
            b[i] = px[2] as f32;
        }
    }
    Ok(Tensor::from_vec(data, (n, 3, h, w), device)?)
}

/// Run CenterFace on a batch and decode each image's candidates.
pub fn detect(
    model: &CenterFace,
    batch: &FaceBatch,
    device: &Device,
) -> Result<Vec<Vec<Face>>, BackendError> {
    let x = to_nchw(batch, device)?;
    let out = model.forward(&x)?;
    let heat = out.heatmap.flatten_all()?.to_vec1::<f32>()?;
    let scale = out.scale.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let offset = out.offset.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let lms = out
        .landmarks
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (_, _, h, w) = out.heatmap.dims4()?;
    let plane = h * w;
    Ok(batch
        .thresholds
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let maps = decode::HeadMaps {
                heatmap: &heat[i * plane..(i + 1) * plane],
                scale: &scale[i * 2 * plane..(i + 1) * 2 * plane],
                offset: &offset[i * 2 * plane..(i + 1) * 2 * plane],
                landmarks: &lms[i * 10 * plane..(i + 1) * 10 * plane],
                h,
                w,
            };
            decode::candidates(&maps, t, batch.width as f32, batch.height as f32)
        })
        .collect())
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch
    }

    fn run(&mut self, batch: Batch) -> Result<BatchOutput, BackendError> {
        match batch {
            Batch::Faces(b) => Ok(BatchOutput::Faces(detect(
                &self.centerface,
                &b,
                &self.device,
            )?)),
        }
    }
}
