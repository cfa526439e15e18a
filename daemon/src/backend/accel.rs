//! GPU backends: every model through the ops of `crate::gpu`, on a wgpu
//! adapter (WGSL shaders of `shaders/`) or a CUDA device (kernels of
//! `kernels/`). One implementation, generic over the device.

use std::sync::Arc;

use super::cpu::load_with;
use super::{Backend, BackendError, Batch, BatchOutput, ModelPaths, ModelSet, TileMaps};
use crate::gpu::cells::{self, GpuMalaria, GpuUnet, GpuWbc};
use crate::gpu::centerface::GpuCenterFace;
use crate::gpu::skin::{GpuAge, GpuFaceMesh, GpuIris};
use crate::gpu::Compute;
use crate::model::unet::Heads;

enum Models<B> {
    Faces(Box<GpuCenterFace<B>>),
    Cells(Box<[GpuUnet<B>; 3]>),
    Crops(Box<GpuMalaria<B>>),
    Wbc(Box<GpuWbc<B>>),
    Mesh(Box<GpuFaceMesh<B>>),
    Iris(Box<GpuIris<B>>),
    Age(Box<GpuAge<B>>),
}

pub struct AccelBackend<D: Compute> {
    name: &'static str,
    dev: Arc<D>,
    models: Models<D::Buf>,
    max_batch: usize,
}

impl From<crate::gpu::GpuError> for BackendError {
    fn from(e: crate::gpu::GpuError) -> Self {
        BackendError::Device(e.to_string())
    }
}

impl<D: Compute> AccelBackend<D> {
    /// `name`: "wgpu" or "cuda".
    pub fn load(
        name: &'static str,
        dev: Arc<D>,
        models: &ModelPaths,
        set: ModelSet,
        max_batch: usize,
    ) -> Result<Self, BackendError> {
        let d: &D = &dev;
        // Weights are read on the host; each model's `load` uploads them.
        let cpu = candle_core::Device::Cpu;
        let loaded = match set {
            ModelSet::Faces => Models::Faces(Box::new(load_with(
                models.get("centerface")?,
                &cpu,
                |vb| GpuCenterFace::load(d, vb),
            )?)),
            ModelSet::CellTiles => Models::Cells(Box::new([
                load_with(models.get("cbc_rbc")?, &cpu, |vb| {
                    GpuUnet::load(d, vb, Heads::MaskEdge)
                })?,
                load_with(models.get("cbc_wbc")?, &cpu, |vb| {
                    GpuUnet::load(d, vb, Heads::Mask)
                })?,
                load_with(models.get("cbc_plt")?, &cpu, |vb| {
                    GpuUnet::load(d, vb, Heads::Mask)
                })?,
            ])),
            ModelSet::Crops => Models::Crops(Box::new(load_with(
                models.get("malaria_cnn")?,
                &cpu,
                |vb| GpuMalaria::load(d, vb),
            )?)),
            ModelSet::WbcCrops => {
                let path = models.get("wbc_cnn")?;
                Models::Wbc(Box::new(
                    crate::model::wbc::WbcNet::from_safetensors(path, &cpu)
                        .and_then(|net| GpuWbc::new(d, &net))
                        .map_err(|source| BackendError::Load {
                            path: path.to_path_buf(),
                            source,
                        })?,
                ))
            }
            ModelSet::FaceMesh => {
                Models::Mesh(Box::new(load_with(models.get("face_mesh")?, &cpu, |vb| {
                    GpuFaceMesh::load(d, vb)
                })?))
            }
            ModelSet::Iris => Models::Iris(Box::new(load_with(models.get("iris")?, &cpu, |vb| {
                GpuIris::load(d, vb)
            })?)),
            ModelSet::Age => Models::Age(Box::new(load_with(models.get("age")?, &cpu, |vb| {
                GpuAge::load(d, vb)
            })?)),
        };
        Ok(Self {
            name,
            dev,
            models: loaded,
            max_batch: max_batch.max(1),
        })
    }
}

impl<D> Backend for AccelBackend<D>
where
    D: Compute,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn device(&self) -> String {
        self.dev.describe()
    }

    fn masker(&self) -> super::masker::Masker {
        super::masker::Masker::Device(
            self.name,
            Arc::new(crate::gpu::mask::OnDevice::new(
                self.dev.clone(),
                crate::gpu::mask::DEVICE_SCRATCH_BUDGET,
            )),
        )
    }

    fn health(&self) -> Result<(), BackendError> {
        Ok(self.dev.health()?)
    }

    fn letterboxes_frames(&self) -> bool {
        matches!(self.models, Models::Faces(_))
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch
    }

    fn run(&mut self, batch: Batch) -> Result<BatchOutput, BackendError> {
        let dev: &D = &self.dev;
        match (&self.models, batch) {
            (Models::Faces(m), Batch::Faces(b)) => {
                if b.images.len() != b.len() {
                    return Err(BackendError::BadBatch(format!(
                        "{} images and {} thresholds",
                        b.images.len(),
                        b.len()
                    )));
                }
                let out = m.forward_images(dev, &b.images, b.height, b.width)?;
                Ok(BatchOutput::Faces(crate::frame::decode_faces(&out, &b)?))
            }
            (Models::Cells(nets), Batch::CellTiles { data, count }) => Ok(BatchOutput::CellTiles(
                cells::cell_tiles(dev, nets, &data, count)?
                    .into_iter()
                    .map(|[rbc, rbc_edge, wbc, platelets]| TileMaps {
                        rbc,
                        rbc_edge,
                        wbc,
                        platelets,
                    })
                    .collect(),
            )),
            (Models::Crops(m), Batch::Crops { data, count }) => Ok(BatchOutput::Parasitized(
                m.classify(dev, &crate::frame::split_crops(&data, count)?)?,
            )),
            (Models::Wbc(m), Batch::WbcCrops { data, count }) => Ok(BatchOutput::WbcProbs(
                m.classify(dev, &crate::frame::split_wbc_crops(&data, count)?)?,
            )),
            (Models::Mesh(m), Batch::MeshCrops { data, count }) => {
                let side = crate::model::face_mesh::INPUT_SIZE;
                let crops = crate::frame::split_exact(&data, count, side, 3)?;
                Ok(BatchOutput::Mesh(m.run(dev, &crops)?))
            }
            (Models::Iris(m), Batch::EyeCrops { data, count }) => {
                let side = crate::model::iris::INPUT_SIZE;
                let crops = crate::frame::split_exact(&data, count, side, 3)?;
                Ok(BatchOutput::Eyes(m.run(dev, &crops)?))
            }
            (Models::Age(m), Batch::AgeCrops { data, count }) => {
                let side = crate::model::age::INPUT_SIZE;
                let crops = crate::frame::split_exact(&data, count, side, 3)?;
                Ok(BatchOutput::Ages(m.run(dev, &crops)?))
            }
            _ => Err(BackendError::BadBatch(
                "this backend instance does not hold the model for that batch".into(),
            )),
        }
    }
}
