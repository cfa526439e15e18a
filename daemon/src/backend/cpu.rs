//! CPU backend: candle on the host, with the fused ops of `model::ops`.

use std::path::Path;

use candle_core::Device;

use super::{Backend, BackendError, Batch, BatchOutput, FaceBatch, ModelPaths, ModelSet};
use crate::frame::{cell_tiles, split_crops, split_exact, EyePoints, MeshPoints};
use crate::model::age::AgeNet;
use crate::model::face_mesh::FaceMesh;
use crate::model::iris::IrisNet;
use crate::model::malaria::{MalariaKernels, MalariaNet};
use crate::model::unet::{Heads, Unet};
use crate::model::wbc::{WbcKernels, WbcNet};
use crate::model::{centerface::CenterFace, load_weights, Face};

enum Models {
    Faces(Box<CenterFace>),
    Cells(Box<[Unet; 3]>),
    Crops(Box<MalariaKernels>),
    Mesh(Box<FaceMesh>),
    Iris(Box<IrisNet>),
    Age(Box<AgeNet>),
    Wbc(Box<WbcKernels>),
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
                |vb| MalariaKernels::new(&MalariaNet::load(vb)?),
            )?)),
            ModelSet::FaceMesh => Models::Mesh(Box::new(load_with(
                models.get("face_mesh")?,
                &device,
                FaceMesh::load,
            )?)),
            ModelSet::Iris => Models::Iris(Box::new(load_with(
                models.get("iris")?,
                &device,
                IrisNet::load,
            )?)),
            ModelSet::Age => Models::Age(Box::new(load_with(
                models.get("age")?,
                &device,
                AgeNet::load,
            )?)),
            ModelSet::WbcCrops => {
                let path = models.get("wbc_cnn")?;
                Models::Wbc(Box::new(
                    WbcNet::from_safetensors(path, &device)
                        .and_then(|net| WbcKernels::new(&net))
                        .map_err(|source| BackendError::Load {
                            path: path.to_path_buf(),
                            source,
                        })?,
                ))
            }
        };
        Ok(Self {
            device,
            models: loaded,
            max_batch: max_batch.max(1),
        })
    }
}

/// Run CenterFace on a batch and decode each image's candidates.
///
/// Each image goes to the model as its own slice and its head maps are
/// decoded where they are: gathering the batch into one buffer and its
/// outputs into tensors cost four copies of every map on the batcher thread,
/// while the inference threads waited (4.5% of a 2-vCPU machine under load).
pub fn detect(model: &CenterFace, batch: &FaceBatch) -> Result<Vec<Vec<Face>>, BackendError> {
    let images = batch.host_images()?;
    let slices: Vec<&[u8]> = images.iter().map(|p| &p[..]).collect();
    let maps = model.forward_rgb8_each(&slices, batch.height, batch.width)?;
    let (w, h) = (batch.width as f32, batch.height as f32);
    Ok(maps
        .iter()
        .zip(&batch.thresholds)
        .map(|(m, &t)| crate::model::decode::candidates(&m.head(), t, w, h))
        .collect())
}

/// Rows of a [N, K, 3] tensor as N vectors of K points.
fn points(t: &candle_core::Tensor) -> Result<Vec<Vec<[f32; 3]>>, BackendError> {
    Ok(t.to_vec3::<f32>()?
        .into_iter()
        .map(|rows| rows.into_iter().map(|p| [p[0], p[1], p[2]]).collect())
        .collect())
}

/// The face mesh on 192x192 RGB crops.
pub fn face_mesh(
    model: &FaceMesh,
    data: &[u8],
    count: usize,
    device: &Device,
) -> Result<Vec<MeshPoints>, BackendError> {
    use crate::model::face_mesh::{input_from_rgb8, INPUT_SIZE};
    let crops = split_exact(data, count, INPUT_SIZE, 3)?;
    let out = model.forward(&input_from_rgb8(&crops, device)?)?;
    let logits = out.presence_logit.to_vec1::<f32>()?;
    Ok(points(&out.landmarks)?
        .into_iter()
        .zip(logits)
        .map(|(points, l)| MeshPoints {
            points,
            presence: 1.0 / (1.0 + (-l).exp()),
        })
        .collect())
}

/// The iris model on 64x64 RGB eye crops.
pub fn eyes(
    model: &IrisNet,
    data: &[u8],
    count: usize,
    device: &Device,
) -> Result<Vec<EyePoints>, BackendError> {
    use crate::model::iris::{input_from_rgb8, INPUT_SIZE};
    let crops = split_exact(data, count, INPUT_SIZE, 3)?;
    let out = model.forward(&input_from_rgb8(&crops, device)?)?;
    Ok(points(&out.contour)?
        .into_iter()
        .zip(points(&out.iris)?)
        .map(|(contour, iris)| EyePoints {
            contour,
            iris: [iris[0], iris[1], iris[2], iris[3], iris[4]],
        })
        .collect())
}

/// The white-cell classifier on `model::wbc::CROP`-square RGB windows.
pub fn wbc_probs(
    model: &WbcKernels,
    data: &[f32],
    count: usize,
) -> Result<Vec<[f32; 9]>, BackendError> {
    Ok(model.classify(&crate::frame::split_wbc_crops(data, count)?)?)
}

/// The age model on 112x112 RGB face crops: years each.
pub fn ages(
    model: &AgeNet,
    data: &[u8],
    count: usize,
    device: &Device,
) -> Result<Vec<f32>, BackendError> {
    use crate::model::age::{input_from_rgb8, INPUT_SIZE};
    let crops = split_exact(data, count, INPUT_SIZE, 3)?;
    Ok(model
        .forward(&input_from_rgb8(&crops, device)?)?
        .to_vec1::<f32>()?)
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
                m.classify(&split_crops(&data, count)?)?,
            )),
            (Models::Mesh(m), Batch::MeshCrops { data, count }) => {
                Ok(BatchOutput::Mesh(face_mesh(m, &data, count, &self.device)?))
            }
            (Models::Iris(m), Batch::EyeCrops { data, count }) => {
                Ok(BatchOutput::Eyes(eyes(m, &data, count, &self.device)?))
            }
            (Models::Age(m), Batch::AgeCrops { data, count }) => {
                Ok(BatchOutput::Ages(ages(m, &data, count, &self.device)?))
            }
            (Models::Wbc(m), Batch::WbcCrops { data, count }) => {
                Ok(BatchOutput::WbcProbs(wbc_probs(m, &data, count)?))
            }
            _ => Err(BackendError::BadBatch(
                "this backend instance does not hold the model for that batch".into(),
            )),
        }
    }
}
