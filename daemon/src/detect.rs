//! Face detection for every family: decode -> letterbox -> batched
//! inference -> boxes in original pixels -> NMS (-> mask -> encode).

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{ImageFormat, RgbImage};

pub use crate::backend::masker::{mask_and_encode, Encoding, Masked, Masker};
use crate::batch::{Batcher, SubmitError};
use crate::frame::{FaceImage, Resident};
use crate::imaging::{self, resize, DecodeLimits, ImagingError};
use crate::model::{decode::nms, Face};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("inference failed: {0}")]
    Inference(String),
}

#[derive(Debug, Clone, Copy)]
pub struct DetectParams {
    pub confidence: f32,
    pub nms_threshold: f32,
    /// 0: no limit.
    pub max_faces: usize,
    /// Also run the detector on tiles of photos too large for one pass to
    /// see faces this small, in original pixels (None: one pass only).
    pub tile_min_face_px: Option<f32>,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            confidence: 0.5,
            nms_threshold: 0.4,
            max_faces: 0,
            tile_min_face_px: None,
        }
    }
}

/// The smallest face, in detector-input pixels, CenterFace finds reliably
/// (its heat map has a stride of 4; a 60 px face shrunk to 10 px by a
/// 12 MP letterbox scored 0.30, the same face at full size 0.92).
pub const MIN_DETECTOR_FACE_PX: f32 = 20.0;
/// Scores below this are never candidates, whatever `confidence` asks:
/// RetinaFace's evaluation on WIDER FACE keeps boxes from 0.02 up (Deng et
/// al., 2019, reference code), and below it every heat-map cell of the
/// background would be a box (a 12 MP photo at 0: 688,504 candidates, 25 s
/// of NMS).
pub const MIN_CANDIDATE_SCORE: f32 = 0.02;
/// At most this many candidates, the best, from one detector pass (the
/// whole photo, or one tile) go to NMS: RetinaFace's `top_k`. A tile sees
/// at most a few hundred faces, each a handful of candidates at the
/// default confidence.
pub const PASS_TOP_K: usize = 5000;

/// At most this many candidates, the best, of one request (all its passes)
/// go to NMS, whose cost grows with candidates times faces kept: a
/// tiled photo of a texture that scores everywhere stays under a second.
pub const REQUEST_TOP_K: usize = 20_000;

/// The `k` best-scoring of `faces` (all of them when there are fewer).
fn best(mut faces: Vec<Face>, k: usize) -> Vec<Face> {
    if faces.len() > k {
        faces.select_nth_unstable_by(k, |a, b| b.score.total_cmp(&a.score));
        faces.truncate(k);
    }
    faces
}

/// The size tiles bring the smallest wanted face to, detector pixels.
const TILE_FACE_PX: f32 = 32.0;

/// Source rectangles `[x, y, w, h]` of the tiles covering a `w` x `h`
/// photo for a `tw` x `th` detector so that a `min_face` px face reaches
/// `TILE_FACE_PX` (never enlarging), with overlaps wide enough for any face
/// too small for the whole-photo pass. Empty when the whole-photo pass
/// already sees `min_face`.
pub fn tiles(w: u32, h: u32, tw: u32, th: u32, min_face: f32) -> Vec<[u32; 4]> {
    let (global, _, _) = resize::fit(w, h, tw, th);
    // A photo narrower than the face looked for holds none whole: tiling a
    // 2 px wide strip would only multiply passes over padding.
    if min_face * global >= MIN_DETECTOR_FACE_PX || (w.min(h) as f32) < min_face {
        return Vec::new();
    }
    let scale = (TILE_FACE_PX / min_face.max(1.0)).min(1.0);
    let (sw, sh) = (
        ((tw as f32 / scale) as u32).min(w),
        ((th as f32 / scale) as u32).min(h),
    );
    // Faces the whole-photo pass misses are below MIN_DETECTOR_FACE_PX /
    // global source pixels; an overlap a third wider holds any of them whole
    // in some tile.
    let overlap = ((1.3 * MIN_DETECTOR_FACE_PX / global) as u32).min(sw.min(sh) / 2);
    let starts = |len: u32, size: u32| -> Vec<u32> {
        if size >= len {
            return vec![0];
        }
        let stride = (size - overlap).max(1);
        let mut v: Vec<u32> = (0..)
            .map(|i| i * stride)
            .take_while(|&x| x + size < len)
            .collect();
        v.push(len - size);
        v
    };
    let (xs, ys) = (starts(w, sw), starts(h, sh));
    ys.iter()
        .flat_map(|&y| xs.iter().map(move |&x| [x, y, sw, sh]))
        .collect()
}

/// Most tiles a `w` x `h` photo may take: four times what its area needs
/// in whole `tw` x `th` detector tiles at `min_face`'s scale, plus 16. A
/// photo of ordinary shape needs fewer (12 MP at 4:3: 35 of 96; 40 MP at
/// 4:3: 154 of 268; a 20000x2000 panorama: 196 of 268); only a long thin
/// strip, each of whose tiles is mostly padding, goes over (60x600000:
/// 780 of 244), and it would cost a pass per tile.
pub fn max_tiles(w: u32, h: u32, tw: u32, th: u32, min_face: f32) -> usize {
    let scale = (TILE_FACE_PX / min_face.max(1.0)).min(1.0);
    let tile_area = (tw as f64 / scale as f64) * (th as f64 / scale as f64);
    4 * ((w as f64 * h as f64) / tile_area.max(1.0)).ceil() as usize + 16
}

/// [`ImagingError::TooManyTiles`] when `w` x `h` needs more tiles than
/// [`max_tiles`] allows: checked before any pass, so the refusal costs no
/// inference.
pub fn check_tiles(w: u32, h: u32, tw: u32, th: u32, min_face: f32) -> Result<(), ImagingError> {
    let n = tiles(w, h, tw, th, min_face).len();
    let max = max_tiles(w, h, tw, th, min_face);
    if n > max {
        return Err(ImagingError::TooManyTiles {
            width: w,
            height: h,
            tiles: n,
            max,
        });
    }
    Ok(())
}

/// Whether a face found on tile `[x, y, w, h]` touches one of the tile's
/// edges inside the photo (within 2 px), where the tile cut it.
fn cut_edges(rect: [u32; 4], width: u32, height: u32) -> impl Fn(&Face) -> bool {
    let [x, y, w, h] = rect.map(|v| v as f32);
    let m = 2.0;
    let (left, top) = (x > 0.0, y > 0.0);
    let (right, bottom) = (x + w < width as f32, y + h < height as f32);
    move |f: &Face| {
        (left && f.x1 <= x + m)
            || (top && f.y1 <= y + m)
            || (right && f.x2 >= x + w - m)
            || (bottom && f.y2 >= y + h - m)
    }
}

/// After NMS of a tiled detection: drop faces that lie mostly (>= 60% of
/// their area) inside a larger kept face, a part of a big face (an eye, a
/// cheek) a tile saw alone. Order is kept.
fn drop_parts(faces: Vec<Face>) -> Vec<Face> {
    let mut by_area: Vec<usize> = (0..faces.len()).collect();
    by_area.sort_by(|&a, &b| faces[b].area().total_cmp(&faces[a].area()));
    let mut keep = vec![false; faces.len()];
    for (n, &i) in by_area.iter().enumerate() {
        let f = &faces[i];
        let inside = by_area[..n]
            .iter()
            .any(|&k| keep[k] && faces[k].intersection(f) >= 0.6 * f.area());
        keep[i] = !inside;
    }
    faces
        .into_iter()
        .zip(keep)
        .filter_map(|(f, k)| k.then_some(f))
        .collect()
}

/// Longest an admitted request's photo or tile waits for room in a full
/// queue while the backend takes no batch, before the request gets 429
/// (each batch taken makes room and starts the wait again; see
/// [`Batcher::submit_admitted`]).
const ROOM_WAIT: Duration = Duration::from_secs(10);

/// Where a tile lies in its photo: offset, and original pixels per model pixel.
struct TileAt {
    ox: f32,
    oy: f32,
    inv: f32,
    rect: [u32; 4],
}

/// A queued tile's faces in original pixels, less those its edges cut and
/// those wider than `max_w` (the whole-photo pass reports those).
async fn tile_faces(
    (rx, at): (crate::batch::worker::Reply<Vec<Face>>, TileAt),
    iw: u32,
    ih: u32,
    max_w: f32,
) -> Result<Vec<Face>, PipelineError> {
    let r = rx
        .await
        .map_err(|_| PipelineError::Inference("the backend thread stopped".into()))?
        .map_err(PipelineError::Inference)?;
    let cut = cut_edges(at.rect, iw, ih);
    let TileAt { ox, oy, inv, .. } = at;
    Ok(best(r.output, PASS_TOP_K)
        .into_iter()
        .map(|f| Face {
            score: f.score,
            x1: ox + f.x1 * inv,
            y1: oy + f.y1 * inv,
            x2: ox + f.x2 * inv,
            y2: oy + f.y2 * inv,
            landmarks: f.landmarks.map(|[lx, ly]| [ox + lx * inv, oy + ly * inv]),
        })
        // A face the tile cuts is part of one: the overlap holds it whole in
        // a neighbour, or the whole-photo pass sees it.
        .filter(|f| !cut(f) && f.x2 - f.x1 < max_w)
        .collect())
}

/// Detect on the tiles of `image` (see [`tiles`]), a batch's worth at a
/// time so one photo never fills the queue; candidates in original pixels.
async fn detect_tiles(
    batcher: &Batcher,
    image: &RgbImage,
    confidence: f32,
    min_face: f32,
) -> Result<(Vec<Face>, usize), PipelineError> {
    let info = batcher.info();
    let (tw, th) = (info.input_width as u32, info.input_height as u32);
    let rects = tiles(image.width(), image.height(), tw, th, min_face);
    // Faces the whole-photo pass sees well are its to report: a tile sees
    // a big face at a scale the detector localises worse.
    let (global, _, _) = resize::fit(image.width(), image.height(), tw, th);
    let max_w = 1.5 * MIN_DETECTOR_FACE_PX / global;
    let mut out = Vec::new();
    let (iw, ih) = image.dimensions();
    for chunk in rects.chunks(info.max_batch.max(1)) {
        let mut waiting = Vec::with_capacity(chunk.len());
        for &[x, y, w, h] in chunk {
            let tile = image::imageops::crop_imm(image, x, y, w, h).to_image();
            let lb = resize::letterbox(&tile, tw, th)?;
            // The request was admitted: a queue full of others' work is a
            // wait, not a refusal after all that was done.
            let rx = batcher
                .submit_admitted((FaceImage::Letterboxed(lb.pixels), confidence), ROOM_WAIT)
                .await?;
            let at = TileAt {
                ox: x as f32,
                oy: y as f32,
                inv: 1.0 / lb.scale,
                rect: [x, y, w, h],
            };
            waiting.push((rx, at));
        }
        for t in waiting {
            out.extend(tile_faces(t, iw, ih, max_w).await?);
        }
    }
    Ok((out, rects.len()))
}

/// A decoded upload and its model input.
pub struct Prepared {
    /// The decoded frame. Where the device letterboxes, the frame itself is
    /// the model input: it is lent to the batch and is back once `detect`
    /// returns, with this field empty until then.
    pub image: RgbImage,
    pub format: ImageFormat,
    pub channels: u8,
    /// The upload's alpha channel, when it has transparent pixels (`image`
    /// is composited over white); PNG and WebP answers keep it.
    pub alpha: Option<Vec<u8>>,
    pub input_bytes: usize,
    pub scale: f32,
    pub model_input: FaceImage,
    /// The frame's copy on the device, once `detect` has returned (see
    /// [`Prepared::upload`]), for masking and encoding there.
    pub resident: Option<Resident>,
    pub decode_ms: f64,
    pub preprocess_ms: f64,
}

impl Prepared {
    /// The photo's width and height, wherever the frame is: lent to the
    /// batch as the model input before `detect`, in `image` after it.
    pub fn dimensions(&self) -> (u32, u32) {
        match &self.model_input {
            FaceImage::Frame(f, _) if self.image.width() == 0 => f.dimensions(),
            _ => self.image.dimensions(),
        }
    }

    /// Put the frame on `masker`'s device now, on the request's thread,
    /// so the batch letterboxes it there and the masker reuses it: the
    /// frame goes up once, and not on the backend's thread. Where that
    /// cannot be (no device, its budget spent, a device error) the batch
    /// uploads the frame itself, as it always could.
    ///
    /// Returns who uploads the frame, "request" or "batch", or None when
    /// no frame goes to a device.
    pub fn upload(&mut self, masker: &Masker) -> Option<&'static str> {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let (Masker::Device(name, dev), FaceImage::Frame(frame, copy @ None)) =
            (masker, &mut self.model_input)
        {
            let t0 = Instant::now();
            let by = match dev.upload(frame) {
                Ok(c) => {
                    *copy = Some(c);
                    "request"
                }
                Err(e) => {
                    tracing::debug!(backend = name, reason = %e, "frame left for the batch to upload");
                    "batch"
                }
            };
            self.preprocess_ms += ms(t0.elapsed());
            return Some(by);
        }
        #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
        let _ = masker;
        None
    }
}

/// Decode and, unless `frames` (the backend letterboxes whole frames on its
/// device), letterbox. Blocking: run it off the async workers.
pub fn prepare(
    bytes: &[u8],
    limits: &DecodeLimits,
    input_w: usize,
    input_h: usize,
    frames: bool,
) -> Result<Prepared, ImagingError> {
    let t0 = Instant::now();
    let mut decoded = imaging::decode(bytes, limits)?;
    let alpha = decoded.alpha.take();
    let t1 = Instant::now();
    let (image, scale, model_input) = if frames {
        let (w, h) = decoded.image.dimensions();
        let (scale, _, _) = resize::fit(w, h, input_w as u32, input_h as u32);
        let frame = FaceImage::Frame(Arc::new(decoded.image), None);
        (RgbImage::new(0, 0), scale, frame)
    } else {
        let lb = resize::letterbox(&decoded.image, input_w as u32, input_h as u32)?;
        (decoded.image, lb.scale, FaceImage::Letterboxed(lb.pixels))
    };
    let t2 = Instant::now();
    Ok(Prepared {
        image,
        format: decoded.format,
        channels: decoded.channels,
        alpha,
        input_bytes: bytes.len(),
        scale,
        model_input,
        resident: None,
        decode_ms: ms(t1 - t0),
        preprocess_ms: ms(t2 - t1),
    })
}

#[derive(Debug, Clone)]
pub struct Detected {
    /// Kept faces, best first, in original image pixels.
    pub faces: Vec<Face>,
    pub candidates_before_nms: usize,
    pub queue_ms: f64,
    pub pack_ms: f64,
    pub inference_ms: f64,
    pub batch_size: usize,
    pub postprocess_ms: f64,
    pub nms_ms: f64,
    /// Tiles run besides the whole photo (0: one pass).
    pub tiles: usize,
}

pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Queue the prepared input on the batcher and turn its candidates into faces.
pub async fn detect(
    batcher: &Batcher,
    prep: &mut Prepared,
    params: DetectParams,
) -> Result<Detected, PipelineError> {
    let params = DetectParams {
        confidence: params.confidence.max(MIN_CANDIDATE_SCORE),
        ..params
    };
    if let Some(min_face) = params.tile_min_face_px {
        let info = batcher.info();
        let (tw, th) = (info.input_width as u32, info.input_height as u32);
        // Before the pass: on a device backend the frame is the model
        // input until then, and `prep.image` is empty.
        let (w, h) = prep.dimensions();
        check_tiles(w, h, tw, th, min_face)?;
    }
    let input = std::mem::replace(&mut prep.model_input, FaceImage::Letterboxed(Vec::new()));
    let lent = match &input {
        FaceImage::Frame(f, copy) => Some((f.clone(), copy.clone())),
        FaceImage::Letterboxed(_) => None,
    };
    let result = match batcher
        .submit_admitted((input, params.confidence), ROOM_WAIT)
        .await
    {
        Ok(rx) => rx
            .await
            .map_err(|_| PipelineError::Inference("the backend thread stopped".into()))
            .and_then(|r| r.map_err(PipelineError::Inference)),
        Err(e) => Err(e.into()),
    };
    if let Some((frame, copy)) = lent {
        // The batch is dropped before its replies go out, so these are the
        // last references: no copy is made, and the device copy is this
        // request's alone to mask.
        prep.image = Arc::try_unwrap(frame).unwrap_or_else(|f| (*f).clone());
        prep.resident = copy;
    }
    let result = result?;
    let t0 = Instant::now();
    let (w, h) = (prep.image.width() as f32, prep.image.height() as f32);
    let inv = 1.0 / prep.scale;
    let candidates: Vec<Face> = best(result.output, PASS_TOP_K)
        .into_iter()
        .map(|f| Face {
            score: f.score,
            x1: (f.x1 * inv).clamp(0.0, w),
            y1: (f.y1 * inv).clamp(0.0, h),
            x2: (f.x2 * inv).clamp(0.0, w),
            y2: (f.y2 * inv).clamp(0.0, h),
            landmarks: f.landmarks.map(|[x, y]| [x * inv, y * inv]),
        })
        .filter(|f| f.x2 > f.x1 && f.y2 > f.y1)
        .collect();
    let mut candidates = candidates;
    let mut tiles = 0;
    let tiles_started = Instant::now();
    if let Some(min_face) = params.tile_min_face_px {
        let (more, n) = detect_tiles(batcher, &prep.image, params.confidence, min_face).await?;
        candidates.extend(more.into_iter().map(|f| Face {
            x1: f.x1.clamp(0.0, w),
            y1: f.y1.clamp(0.0, h),
            x2: f.x2.clamp(0.0, w),
            y2: f.y2.clamp(0.0, h),
            ..f
        }));
        tiles = n;
    }
    let t1 = Instant::now();
    // The tile passes are inference (with their queue waits), not
    // post-processing.
    let tiles_ms = if tiles > 0 {
        ms(t1 - tiles_started)
    } else {
        0.0
    };
    let n = candidates.len();
    let candidates = best(candidates, REQUEST_TOP_K);
    // Many candidates: NMS is milliseconds or more of CPU, kept off the
    // async workers.
    let mut faces = if candidates.len() > 2_000 {
        let iou = params.nms_threshold;
        tokio::task::spawn_blocking(move || nms(candidates, iou))
            .await
            .map_err(|e| PipelineError::Inference(format!("NMS stopped: {e}")))?
    } else {
        nms(candidates, params.nms_threshold)
    };
    if tiles > 0 {
        faces = drop_parts(faces);
    }
    if params.max_faces > 0 {
        faces.truncate(params.max_faces);
    }
    let t2 = Instant::now();
    Ok(Detected {
        faces,
        candidates_before_nms: n,
        queue_ms: result.queue_ms,
        pack_ms: result.pack_ms,
        inference_ms: result.inference_ms + tiles_ms,
        batch_size: result.batch_size,
        postprocess_ms: ms(tiles_started - t0),
        nms_ms: ms(t2 - t1),
        tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Face {
        Face {
            score,
            x1,
            y1,
            x2,
            y2,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn cut_faces_and_parts_of_faces_are_dropped() {
        // A tile in the middle of a photo: faces on its inner edges are cut.
        let cut = cut_edges([100, 100, 800, 800], 4000, 3000);
        assert!(cut(&face(99.0, 300.0, 150.0, 360.0, 0.9)));
        assert!(cut(&face(850.0, 300.0, 899.5, 360.0, 0.9)));
        assert!(!cut(&face(300.0, 300.0, 360.0, 360.0, 0.9)));
        // At the photo's own edge nothing is cut.
        let corner = cut_edges([0, 0, 800, 800], 4000, 3000);
        assert!(!corner(&face(0.0, 0.0, 40.0, 40.0, 0.9)));
        // A small box inside a big face goes; a neighbour that overlaps a
        // little stays.
        let kept = drop_parts(vec![
            face(100.0, 100.0, 400.0, 450.0, 0.9),
            face(150.0, 150.0, 250.0, 250.0, 0.7),
            face(380.0, 100.0, 600.0, 400.0, 0.8),
        ]);
        assert_eq!(kept.len(), 2, "{kept:?}");
    }

    #[test]
    fn tiles_cover_a_large_photo_with_overlap_and_skip_small_ones() {
        // 640x480 fits the detector: a 40 px face is 40 px there.
        assert!(tiles(640, 480, 640, 640, 40.0).is_empty());
        // 12 MP: the whole-photo pass shrinks by 0.159, so tiles are needed.
        let t = tiles(4032, 3024, 640, 640, 40.0);
        assert!(!t.is_empty());
        let (sw, sh) = (t[0][2], t[0][3]);
        assert_eq!((sw, sh), (800, 800), "a 40 px face reaches 32 px");
        // Every pixel is covered, every tile is inside the photo, and
        // neighbours overlap by more than the largest face the whole-photo
        // pass misses (20 / 0.159 = 126 px).
        for &[x, y, w, h] in &t {
            assert!(x + w <= 4032 && y + h <= 3024);
        }
        for gy in (0..3024).step_by(7) {
            for gx in (0..4032).step_by(7) {
                assert!(
                    t.iter()
                        .any(|&[x, y, w, h]| (x..x + w).contains(&gx) && (y..y + h).contains(&gy)),
                    "({gx}, {gy}) is in no tile"
                );
            }
        }
        let mut xs: Vec<u32> = t.iter().map(|r| r[0]).collect();
        xs.sort();
        xs.dedup();
        assert!(xs.windows(2).all(|p| p[0] + sw >= p[1] + 126), "{xs:?}");
        // A larger minimum face needs fewer tiles; one the whole pass sees, none.
        assert!(tiles(4032, 3024, 640, 640, 80.0).len() < t.len());
        assert!(tiles(4032, 3024, 640, 640, 200.0).is_empty());
    }

    #[test]
    fn a_lent_frame_still_gives_the_photos_size() {
        let img = RgbImage::from_pixel(300, 120, image::Rgb([90, 120, 150]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, ImageFormat::Png).unwrap();
        let limits = DecodeLimits {
            max_pixels: 40_000_000,
            formats: vec!["png".into()],
        };
        for frames in [false, true] {
            let p = prepare(png.get_ref(), &limits, 640, 640, frames).unwrap();
            assert_eq!(p.dimensions(), (300, 120), "frames: {frames}");
        }
    }

    #[test]
    fn a_pass_keeps_only_its_best_candidates() {
        let many: Vec<Face> = (0..20)
            .map(|i| face(0.0, 0.0, 10.0, 10.0, i as f32 / 20.0))
            .collect();
        let mut kept: Vec<f32> = best(many.clone(), 5).iter().map(|f| f.score).collect();
        kept.sort_by(f32::total_cmp);
        assert_eq!(kept, vec![0.75, 0.8, 0.85, 0.9, 0.95]);
        assert_eq!(best(many, 50).len(), 20);
    }

    #[test]
    fn long_thin_strips_are_not_tiled_pass_by_pass() {
        // Narrower than the face looked for: no tiles at all.
        assert!(tiles(2, 19_000_000, 640, 640, 40.0).is_empty());
        assert!(check_tiles(2, 19_000_000, 640, 640, 40.0).is_ok());
        // Wide enough for a face but thousands of tiles of padding: refused.
        let err = check_tiles(60, 600_000, 640, 640, 40.0).unwrap_err();
        assert!(
            matches!(err, ImagingError::TooManyTiles { tiles, max, .. } if tiles > max),
            "{err}"
        );
        // Ordinary shapes up to the pixel limit pass: 12 MP, 40 MP at 4:3,
        // a 10:1 panorama of 40 MP.
        for (w, h) in [(4032, 3024), (7300, 5480), (20000, 2000)] {
            let n = tiles(w, h, 640, 640, 40.0).len();
            assert!(n > 0, "{w}x{h}");
            assert!(check_tiles(w, h, 640, 640, 40.0).is_ok(), "{w}x{h}: {n}");
        }
    }
}
