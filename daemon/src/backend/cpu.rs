//! CPU backend: candle on the host, with the fused ops of `model::ops`.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{Backend, BackendError, Batch, BatchOutput, FaceBatch, ModelPaths, ModelSet, TileMaps};
use crate::model::malaria::MalariaNet;
use crate::model::unet::{Heads, Unet, TILE_IN, TILE_OUT};
use crate::model::{centerface::CenterFace, decode, load_weights, Face};

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
                &models.centerface,
                &device,
                CenterFace::load,
            )?)),
            ModelSet::CellTiles => Models::Cells(Box::new([
                load_with(&models.cbc_rbc, &device, |vb| {
                    Unet::load(vb, Heads::MaskEdge)
                })?,
                load_with(&models.cbc_wbc, &device, |vb| Unet::load(vb, Heads::Mask))?,
                load_with(&models.cbc_plt, &device, |vb| Unet::load(vb, Heads::Mask))?,
            ])),
            ModelSet::Crops => Models::Crops(Box::new(load_with(
                &models.malaria,
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

/// Each image's candidates from the heads of a batch (any backend's).
pub fn decode_faces(
    out: &crate::model::centerface::Output,
    batch: &FaceBatch,
) -> Result<Vec<Vec<Face>>, BackendError> {
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

/// Run the three cell UNets on a batch of tiles.
pub fn cell_tiles(
    rbc: &Unet,
    wbc: &Unet,
    plt: &Unet,
    data: Vec<f32>,
    count: usize,
    device: &Device,
) -> Result<Vec<TileMaps>, BackendError> {
    if data.len() != count * 3 * TILE_IN * TILE_IN {
        return Err(BackendError::BadBatch(format!(
            "{} values for {count} tiles of {TILE_IN}x{TILE_IN}x3",
            data.len()
        )));
    }
    let x = Tensor::from_vec(data, (count, 3, TILE_IN, TILE_IN), device)?;
    let r = rbc.forward(&x)?;
    let maps =
        |t: &Tensor| -> Result<Vec<f32>, BackendError> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let (rm, wm, pm) = (
        maps(&r.mask)?,
        maps(&wbc.forward(&x)?.mask)?,
        maps(&plt.forward(&x)?.mask)?,
    );
    let em = match &r.edge {
        Some(e) => maps(e)?,
        None => {
            return Err(BackendError::BadBatch(
                "the rbc net has no edge head".into(),
            ))
        }
    };
    let plane = TILE_OUT * TILE_OUT;
    Ok((0..count)
        .map(|i| {
            let s = i * plane..(i + 1) * plane;
            TileMaps {
                rbc: rm[s.clone()].to_vec(),
                rbc_edge: em[s.clone()].to_vec(),
                wbc: wm[s.clone()].to_vec(),
                platelets: pm[s].to_vec(),
            }
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
        match (&self.models, batch) {
            (Models::Faces(m), Batch::Faces(b)) => Ok(BatchOutput::Faces(detect(m, &b)?)),
            (Models::Cells(nets), Batch::CellTiles { data, count }) => Ok(BatchOutput::CellTiles(
                cell_tiles(&nets[0], &nets[1], &nets[2], data, count, &self.device)?,
            )),
            (Models::Crops(m), Batch::Crops { data, count }) => Ok(BatchOutput::Parasitized(
                m.classify(&super::split_crops(&data, count)?, &self.device)?,
            )),
            _ => Err(BackendError::BadBatch(
                "this backend instance does not hold the model for that batch".into(),
            )),
        }
    }
}
