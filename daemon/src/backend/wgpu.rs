//! wgpu backend: every model on a Vulkan, Metal or DX12 adapter through the
//! WGSL shaders of `shaders/` (see `crate::gpu`).

use std::path::Path;
use std::sync::Arc;

use super::{Backend, BackendError, Batch, BatchOutput, ModelPaths, ModelSet, TileMaps};
use crate::gpu::cells::{self, GpuMalaria, GpuUnet};
use crate::gpu::centerface::GpuCenterFace;
use crate::gpu::Gpu;
use crate::model::{load_weights, unet::Heads};

enum Models {
    Faces(Box<GpuCenterFace>),
    Cells(Box<[GpuUnet; 3]>),
    Crops(Box<GpuMalaria>),
}

pub struct WgpuBackend {
    gpu: Arc<Gpu>,
    models: Models,
    max_batch: usize,
}

impl From<crate::gpu::GpuError> for BackendError {
    fn from(e: crate::gpu::GpuError) -> Self {
        BackendError::Device(e.to_string())
    }
}

fn load_with<T>(
    path: &Path,
    f: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T, BackendError> {
    let err = |source| BackendError::Load {
        path: path.to_path_buf(),
        source,
    };
    f(load_weights(path, &candle_core::Device::Cpu).map_err(err)?).map_err(err)
}

impl WgpuBackend {
    pub fn load(
        gpu: Arc<Gpu>,
        models: &ModelPaths,
        set: ModelSet,
        max_batch: usize,
    ) -> Result<Self, BackendError> {
        let g = &gpu;
        let loaded = match set {
            ModelSet::Faces => Models::Faces(Box::new(load_with(&models.centerface, |vb| {
                GpuCenterFace::load(g, vb)
            })?)),
            ModelSet::CellTiles => Models::Cells(Box::new([
                load_with(&models.cbc_rbc, |vb| GpuUnet::load(g, vb, Heads::MaskEdge))?,
                load_with(&models.cbc_wbc, |vb| GpuUnet::load(g, vb, Heads::Mask))?,
                load_with(&models.cbc_plt, |vb| GpuUnet::load(g, vb, Heads::Mask))?,
            ])),
            ModelSet::Crops => Models::Crops(Box::new(load_with(&models.malaria, |vb| {
                GpuMalaria::load(g, vb)
            })?)),
        };
        Ok(Self {
            gpu,
            models: loaded,
            max_batch: max_batch.max(1),
        })
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn device(&self) -> String {
        self.gpu.describe()
    }

    fn masker(&self) -> crate::pipeline::faces::Masker {
        crate::pipeline::faces::Masker::Wgpu(self.gpu.clone())
    }

    fn health(&self) -> Result<(), BackendError> {
        Ok(self.gpu.health()?)
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch
    }

    fn run(&mut self, batch: Batch) -> Result<BatchOutput, BackendError> {
        let gpu = &self.gpu;
        match (&self.models, batch) {
            (Models::Faces(m), Batch::Faces(b)) => {
                let out = m.forward_rgb8(gpu, &b.pixels, b.len(), b.height, b.width)?;
                Ok(BatchOutput::Faces(super::cpu::decode_faces(&out, &b)?))
            }
            (Models::Cells(nets), Batch::CellTiles { data, count }) => Ok(BatchOutput::CellTiles(
                cells::cell_tiles(gpu, nets, &data, count)?
                    .into_iter()
                    .map(|[rbc, rbc_edge, wbc, platelets]| TileMaps {
                        rbc,
                        rbc_edge,
                        wbc,
                        platelets,
                    })
                    .collect(),
            )),
            (Models::Crops(m), Batch::Crops { data, count }) => {
                let crops: Vec<&[u8]> = data
                    .chunks_exact(crate::model::malaria::CROP.pow(2))
                    .collect();
                if crops.len() != count {
                    return Err(BackendError::BadBatch(format!(
                        "{} bytes for {count} crops",
                        data.len()
                    )));
                }
                Ok(BatchOutput::Parasitized(m.classify(gpu, &crops)?))
            }
            _ => Err(BackendError::BadBatch(
                "this backend instance does not hold the model for that batch".into(),
            )),
        }
    }
}
