//! The types that cross the inference stack: a batch of frames or tiles, its
//! output, the backend error, and the host-side decoding of model heads into
//! them. A leaf of the stack: `gpu`, `backend` and `batch` all use it, and it
//! uses only `model` and `imaging`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::model::unet::{Unet, TILE_IN, TILE_OUT};
use crate::model::{decode, Face};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model file {path}: {source}")]
    Load {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error("backend {0:?} is not available: {1}")]
    Unavailable(String, String),
    #[error("device: {0}")]
    Device(String),
}

/// One image of a face batch.
#[derive(Debug, Clone)]
pub enum FaceImage {
    /// Letterboxed on the host: the batch's `width * height * 3` RGB bytes.
    Letterboxed(Vec<u8>),
    /// A decoded frame at its own size; the backend letterboxes it (a GPU
    /// backend on the device, as it lays out the model input), from the
    /// frame's copy on that device when the request already made one.
    Frame(Arc<RgbImage>, Option<Resident>),
}

/// A frame's copy in device memory, made once by the request (see
/// `gpu::mask::DeviceMasker::upload`) so that the batch letterboxes it and
/// the masker then masks and encodes it without a second upload. The
/// device type is erased: the batcher, the CPU backend and a CPU-only
/// build only carry it; the device that made it recognises it.
#[derive(Clone)]
pub struct Resident(Arc<dyn std::any::Any + Send + Sync>);

impl Resident {
    pub fn new<T: std::any::Any + Send + Sync>(copy: T) -> Self {
        Self(Arc::new(copy))
    }

    /// The copy, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// True when no one else holds this copy, so it may be written in place.
    pub fn is_sole(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resident(..)")
    }
}

/// Images for a `width` x `height` model input, plus each image's own
/// detection threshold (requests in one batch may ask for different ones).
#[derive(Debug, Clone)]
pub struct FaceBatch {
    pub images: Vec<FaceImage>,
    pub width: usize,
    pub height: usize,
    pub thresholds: Vec<f32>,
}

impl FaceBatch {
    pub fn len(&self) -> usize {
        self.thresholds.len()
    }

    /// Every image letterboxed on the host, packed HWC one after another
    /// (`len * width * height * 3` bytes): the host reference the device
    /// backends' tests compare against.
    pub fn packed(&self) -> Result<Vec<u8>, BackendError> {
        Ok(self.host_images()?.concat())
    }

    /// Every image letterboxed on the host, `width * height * 3` RGB bytes
    /// each: borrowed when the request letterboxed it, made here from a
    /// whole frame otherwise. Errors: a count or a size that does not fit.
    pub fn host_images(&self) -> Result<Vec<Cow<'_, [u8]>>, BackendError> {
        let per = self.width * self.height * 3;
        if self.images.len() != self.len() {
            return Err(BackendError::BadBatch(format!(
                "{} images and {} thresholds",
                self.images.len(),
                self.len()
            )));
        }
        self.images
            .iter()
            .map(|image| match image {
                FaceImage::Letterboxed(p) if p.len() == per => Ok(Cow::Borrowed(&p[..])),
                FaceImage::Letterboxed(p) => Err(BackendError::BadBatch(format!(
                    "{} bytes for a {}x{} input",
                    p.len(),
                    self.width,
                    self.height
                ))),
                FaceImage::Frame(f, _) => {
                    crate::imaging::resize::letterbox(f, self.width as u32, self.height as u32)
                        .map(|lb| Cow::Owned(lb.pixels))
                        .map_err(|e| BackendError::BadBatch(e.to_string()))
                }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.thresholds.is_empty()
    }
}

/// A unit of work for a backend. New model families add variants.
#[derive(Debug)]
pub enum Batch {
    Faces(FaceBatch),
    /// Smear tiles, each [3, 188, 188] BGR in [-1, 1] (`imaging::smear::tile`),
    /// run through all three cell UNets.
    CellTiles {
        data: Vec<f32>,
        count: usize,
    },
    /// 50x50 grayscale red-cell crops for the malaria classifier.
    Crops {
        data: Vec<u8>,
        count: usize,
    },
    /// 192x192 RGB face crops (HWC u8) for the face mesh.
    MeshCrops {
        data: Vec<u8>,
        count: usize,
    },
    /// 64x64 RGB eye crops (HWC u8; a right eye mirrored) for the iris model.
    EyeCrops {
        data: Vec<u8>,
        count: usize,
    },
    /// 112x112 RGB face crops (HWC u8) for the age model.
    AgeCrops {
        data: Vec<u8>,
        count: usize,
    },
    /// White-cell windows for the differential classifier: each
    /// `model::wbc::CROP` square, interleaved RGB as 0-255 floats
    /// (`model::wbc::sample_window`).
    WbcCrops {
        data: Vec<f32>,
        count: usize,
    },
}

/// The face mesh's answer for one crop, in that crop's pixels.
#[derive(Debug, Clone)]
pub struct MeshPoints {
    /// 468 points (x, y, z); z is depth relative to the face's centre, in
    /// the same pixel scale.
    pub points: Vec<[f32; 3]>,
    /// P(a face fills the crop), the sigmoid of the presence logit.
    pub presence: f32,
}

/// The iris model's answer for one eye crop, in that crop's pixels.
#[derive(Debug, Clone)]
pub struct EyePoints {
    /// 71 eye-contour and brow points (x, y, z).
    pub contour: Vec<[f32; 3]>,
    /// Iris centre, then four points on its boundary (x, y, z).
    pub iris: [[f32; 3]; 5],
}

/// The four 100x100 probability maps of one smear tile.
#[derive(Debug, Clone)]
pub struct TileMaps {
    pub rbc: Vec<f32>,
    pub rbc_edge: Vec<f32>,
    pub wbc: Vec<f32>,
    pub platelets: Vec<f32>,
}

#[derive(Debug)]
pub enum BatchOutput {
    /// Per image, the candidates above its threshold in model-input pixels, before NMS.
    Faces(Vec<Vec<Face>>),
    CellTiles(Vec<TileMaps>),
    /// P(parasitized) per crop.
    Parasitized(Vec<f32>),
    Mesh(Vec<MeshPoints>),
    Eyes(Vec<EyePoints>),
    /// The age model's estimate per crop, years.
    Ages(Vec<f32>),
    /// The white-cell classifier's probabilities per crop, in the order of
    /// `model::wbc::CLASSES`.
    WbcProbs(Vec<[f32; 9]>),
}

/// The `count` crops of `side` x `side` x `channels` bytes in `data`.
pub fn split_exact(
    data: &[u8],
    count: usize,
    side: usize,
    channels: usize,
) -> Result<Vec<&[u8]>, BackendError> {
    let each = side * side * channels;
    if data.len() != count * each {
        return Err(BackendError::BadBatch(format!(
            "{} bytes for {count} crops of {side}x{side}x{channels}",
            data.len()
        )));
    }
    Ok(data.chunks_exact(each).collect())
}

/// The crops of a [`Batch::Crops`], checked against its count.
pub fn split_crops(data: &[u8], count: usize) -> Result<Vec<&[u8]>, BackendError> {
    let crops: Vec<&[u8]> = data
        .chunks_exact(crate::model::malaria::CROP.pow(2))
        .collect();
    if crops.len() != count || data.len() != count * crate::model::malaria::CROP.pow(2) {
        return Err(BackendError::BadBatch(format!(
            "{} bytes for {count} crops",
            data.len()
        )));
    }
    Ok(crops)
}

/// A white-cell batch's windows (`model::wbc::CROP` square, RGB floats),
/// checked against the count it claims.
pub fn split_wbc_crops(data: &[f32], count: usize) -> Result<Vec<&[f32]>, BackendError> {
    use crate::model::wbc::CROP;
    let each = CROP * CROP * 3;
    if data.len() != count * each {
        return Err(BackendError::BadBatch(format!(
            "{} floats for {count} white-cell crops of {CROP}x{CROP}x3",
            data.len()
        )));
    }
    Ok(data.chunks_exact(each).collect())
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

/// Run the three cell UNets on a batch of tiles: on the CPU through the
/// NHWC kernels ([`Unet::forward_tiles`]), elsewhere through candle.
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
    if device.is_cpu() {
        // The NHWC kernels; the three nets share nothing but the tile.
        let (r, w, p) = (
            rbc.forward_tiles(&data, count),
            wbc.forward_tiles(&data, count),
            plt.forward_tiles(&data, count),
        );
        return r
            .into_iter()
            .zip(w)
            .zip(p)
            .map(|(((rbc, edge), (wbc, _)), (platelets, _))| {
                Ok(TileMaps {
                    rbc,
                    rbc_edge: edge.ok_or_else(|| {
                        BackendError::BadBatch("the rbc net has no edge head".into())
                    })?,
                    wbc,
                    platelets,
                })
            })
            .collect();
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
