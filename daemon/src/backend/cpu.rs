//! CPU backend: candle on the host, with the fused ops of `model::ops`.

use std::path::Path;

use candle_core::Device;

use super::{Backend, BackendError, Batch, BatchOutput, FaceBatch, ModelPaths, ModelSet};
use crate::frame::{cell_tiles, decode_faces, split_crops};
use crate::model::malaria::MalariaNet;
use crate::model::unet::{Heads, Unet};
use crate::model::{centerface::CenterFace, load_weights, Face};

enum Models {
    Faces(Box<CenterFace>),
    Cells(Box<[Unet; 3]>),
    Crops(Box<MalariaNet>),
}

pub struct CpuBackend {
    device: Device,
    models: Models,
    max_batch: usize,
}

/// Load one model from `path` with `f`, naming the file in any error.
pub(super) fn load_with<T>(
    path: &Path,
    device: &Device,
    f: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T, BackendError> {
    let err = |source| BackendError::Load {
        path: path.to_path_buf(),
        source,
    };
    f(load_weights(path, device).map_err(err)?).map_err(err)
}

impl CpuBackend {
    pub fn load(
        models: &ModelPaths,
        set: ModelSet,
        max_batch: usize,
    ) -> Result<Self, BackendError> {
        let device = Device::Cpu;
        let loaded = match set {
            ModelSet::Faces => Models::Faces(Box::new(load_with(
                models.get("centerface")?,
                &device,
                CenterFace::load,
            )?)),
            ModelSet::CellTiles => Models::Cells(Box::new([
                load_with(models.get("cbc_rbc")?, &device, |vb| {
                    Unet::load(vb, Heads::MaskEdge)
                })?,
                load_with(models.get("cbc_wbc")?, &device, |vb| {
                    Unet::load(vb, Heads::Mask)
                })?,
                load_with(models.get("cbc_plt")?, &device, |vb| {
                    Unet::load(vb, Heads::Mask)
                })?,
            ])),
            ModelSet::Crops => Models::Crops(Box::new(load_with(
                models.get("malaria_cnn")?,
                &device,
                MalariaNet::load,
            )?)),
        };
        Ok(Self {
            device,
            models: loaded,
            max_batch: max_batch.max(1),
        })
    }
}

/// Run CenterFace on a batch and decode each image's candidates.
pub fn detect(model: &CenterFace, batch: &FaceBatch) -> Result<Vec<Vec<Face>>, BackendError> {
    let pixels = batch.packed()?;
    let out = model.forward_rgb8(&pixels, batch.len(), batch.height, batch.width)?;
    decode_faces(&out, batch)
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
        match (&self.models, batch) {
            (Models::Faces(m), Batch::Faces(b)) => Ok(BatchOutput::Faces(detect(m, &b)?)),
            (Models::Cells(nets), Batch::CellTiles { data, count }) => Ok(BatchOutput::CellTiles(
                cell_tiles(&nets[0], &nets[1], &nets[2], data, count, &self.device)?,
            )),
            (Models::Crops(m), Batch::Crops { data, count }) => Ok(BatchOutput::Parasitized(
                m.classify(&split_crops(&data, count)?, &self.device)?,
            )),
            _ => Err(BackendError::BadBatch(
                "this backend instance does not hold the model for that batch".into(),
            )),
        }
    }
}
