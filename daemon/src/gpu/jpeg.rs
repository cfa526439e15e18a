//! Baseline JPEG encoding on the device, so that a frame masked there comes
//! back as its JPEG file and never as pixels.
//!
//! Three kernels: `jpeg_dct` (colour conversion, chroma subsampling, DCT and
//! quantisation, one invocation per 8x8 block), `jpeg_huffman` (one
//! invocation per restart interval, each into a slot of its own) and
//! `jpeg_pack` (the slots into one segment, once the host has added up
//! their lengths). Restart markers are what make the Huffman step parallel:
//! at each one the DC predictions start again from 0 and the bit stream
//! starts on a byte boundary, so every interval codes alone.
//!
//! The coding choices are the CPU encoder's (`jpeg-encoder`), so a client
//! gets the same kind of file either way: the quantisation tables of
//! ITU-T T.81 Annex K.1 scaled by quality as the IJG library does, 4:2:0
//! chroma below quality 90 and 4:4:4 from 90, and the Annex K.3 Huffman
//! tables. The one addition is a restart marker every [`RESTART_MCUS`]
//! MCUs, about 1% of the file.

use image::RgbImage;

use super::{grid_1d, Compute, GpuError, Record, Result};

/// MCUs per restart interval, unless a [`Plan`] says otherwise. Each
/// interval is one invocation of `jpeg_huffman`: a shorter interval means
/// more parallel work (450 invocations for a 720p frame at 4:2:0) for 2.5
/// bytes more per marker. Not yet tuned on a GPU: the `encode_jpeg_*_rst`
/// benches time the choices.
pub const RESTART_MCUS: u32 = 8;

/// The most bytes one block can code to: an 11-bit DC code with 11 extra
/// bits, then 63 AC coefficients of at most a 16-bit code and 10 extra bits
/// (1,660 bits, 208 bytes), every byte 0xFF and so stuffed. A slot this
/// big per block never overflows, whatever the frame holds.
const BLOCK_BYTES_MAX: u32 = 416;

/// Natural (row-major) index of each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Annex K.1 luminance quantisation table, natural order.
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// Annex K.1 chrominance quantisation table, natural order.
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// An Annex K.3 Huffman table: codes per length (1 to 16 bits), then the
/// symbols in code order.
struct HuffmanSpec {
    counts: [u8; 16],
    symbols: &'static [u8],
}

const DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

const LUMA_DC: HuffmanSpec = HuffmanSpec {
    counts: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    symbols: &DC_SYMBOLS,
};

const CHROMA_DC: HuffmanSpec = HuffmanSpec {
    counts: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    symbols: &DC_SYMBOLS,
};

const LUMA_AC: HuffmanSpec = HuffmanSpec {
    counts: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
    symbols: &[
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

const CHROMA_AC: HuffmanSpec = HuffmanSpec {
    counts: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
    symbols: &[
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

/// The order the kernels index the tables in: luma DC, luma AC, chroma DC, chroma AC.
const TABLES: [(&HuffmanSpec, u8); 4] = [
    (&LUMA_DC, 0x00),
    (&LUMA_AC, 0x10),
    (&CHROMA_DC, 0x01),
    (&CHROMA_AC, 0x11),
];

/// `table` scaled for `quality` (1-100) the IJG way, natural order.
fn scaled(table: &[u16; 64], quality: u8) -> [u8; 64] {
    let q = quality.clamp(1, 100) as u32;
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    table.map(|v| ((v as u32 * scale + 50) / 100).clamp(1, 255) as u8)
}

/// Canonical codes of `spec` by symbol: (length << 16) | code, 0 where the
/// symbol has none.
fn codes(spec: &HuffmanSpec) -> [u32; 256] {
    let mut out = [0u32; 256];
    let (mut code, mut k) = (0u32, 0usize);
    for (i, &n) in spec.counts.iter().enumerate() {
        for _ in 0..n {
            out[spec.symbols[k] as usize] = ((i as u32 + 1) << 16) | code;
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    out
}

/// The layout of one frame's JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    /// 4:2:0 chroma (else 4:4:4).
    pub subsampled: bool,
    pub mcus_x: u32,
    pub mcus: u32,
    /// Blocks per MCU: 6 (four luma, Cb, Cr) or 3.
    pub bpm: u32,
    /// MCUs per restart interval.
    pub restart: u32,
    pub intervals: u32,
    /// Words in one interval's slot.
    pub slot_words: u32,
}

impl Plan {
    pub fn new(width: u32, height: u32, quality: u8) -> Result<Self> {
        Self::with_restart(width, height, quality, RESTART_MCUS)
    }

    /// [`Plan::new`] with `restart` MCUs per restart interval (1 to 65535).
    pub fn with_restart(width: u32, height: u32, quality: u8, restart: u32) -> Result<Self> {
        if !(1..=65_535).contains(&restart) {
            return Err(GpuError::Shape(format!(
                "a JPEG restart interval is 1 to 65535 MCUs, not {restart}"
            )));
        }
        if width == 0 || height == 0 || width > 65_535 || height > 65_535 {
            return Err(GpuError::Shape(format!(
                "JPEG cannot hold {width}x{height}; each side must be 1 to 65535"
            )));
        }
        let quality = quality.clamp(1, 100);
        // As the CPU encoder chooses.
        let subsampled = quality < 90;
        let (mcu, bpm) = if subsampled { (16, 6) } else { (8, 3) };
        let mcus_x = width.div_ceil(mcu);
        let mcus = mcus_x * height.div_ceil(mcu);
        let intervals = mcus.div_ceil(restart);
        // Up to 3 bytes of padding and its stuffing, and the marker. (An
        // interval longer than the frame is only as long as the frame.)
        let slot_bytes = restart.min(mcus) as u64 * (bpm * BLOCK_BYTES_MAX) as u64 + 5;
        let slot_words = u32::try_from(slot_bytes.div_ceil(4))
            .map_err(|_| GpuError::Shape(format!("a {slot_bytes}-byte restart interval slot")))?;
        Ok(Self {
            width,
            height,
            quality,
            subsampled,
            mcus_x,
            mcus,
            bpm,
            restart,
            intervals,
            slot_words,
        })
    }

    fn blocks(&self) -> u32 {
        self.mcus * self.bpm
    }

    /// Device bytes of (coefficients, slots).
    fn scratch(&self) -> (u64, u64) {
        (
            self.blocks() as u64 * 128,
            self.intervals as u64 * self.slot_words as u64 * 4,
        )
    }

    /// Device bytes the encoding allocates: frame, coefficients, slots.
    pub fn device_bytes(&self) -> u64 {
        let (coef, slots) = self.scratch();
        self.width as u64 * self.height as u64 * 3 + coef + slots
    }

    /// Ok if every buffer of the encoding fits `gpu`'s binding limit.
    pub fn fits<D: Compute>(&self, gpu: &D) -> Result<()> {
        let frame = self.width as u64 * self.height as u64 * 3;
        let (coef, slots) = self.scratch();
        let biggest = frame.max(coef).max(slots);
        if biggest > gpu.max_binding() {
            return Err(GpuError::Shape(format!(
                "encoding {}x{} needs a {biggest}-byte buffer; the device binds at most {}",
                self.width,
                self.height,
                gpu.max_binding()
            )));
        }
        Ok(())
    }

    fn tables(&self) -> ([u8; 64], [u8; 64]) {
        (
            scaled(&LUMA_Q, self.quality),
            scaled(&CHROMA_Q, self.quality),
        )
    }

    /// Everything of the file before the entropy-coded data: SOI, JFIF
    /// APP0, DQT, SOF0, DHT, DRI and SOS.
    pub fn header(&self) -> Vec<u8> {
        let mut h = vec![0xff, 0xd8];
        segment(&mut h, 0xe0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        let (luma, chroma) = self.tables();
        let mut dqt = Vec::with_capacity(130);
        for (id, t) in [(0u8, luma), (1, chroma)] {
            dqt.push(id);
            dqt.extend(ZIGZAG.iter().map(|&n| t[n as usize]));
        }
        segment(&mut h, 0xdb, &dqt);
        let luma_sampling = if self.subsampled { 0x22 } else { 0x11 };
        let mut sof = vec![8];
        sof.extend((self.height as u16).to_be_bytes());
        sof.extend((self.width as u16).to_be_bytes());
        sof.extend([3, 1, luma_sampling, 0, 2, 0x11, 1, 3, 0x11, 1]);
        segment(&mut h, 0xc0, &sof);
        let mut dht = Vec::new();
        for (spec, class_id) in TABLES {
            dht.push(class_id);
            dht.extend(spec.counts);
            dht.extend(spec.symbols);
        }
        segment(&mut h, 0xc4, &dht);
        segment(&mut h, 0xdd, &(self.restart as u16).to_be_bytes());
        segment(&mut h, 0xda, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
        h
    }

    /// The kernels' table buffer: the orthonormal DCT basis ([u][x]), the
    /// luma and chroma quantisers, and the zigzag order.
    fn kernel_tables(&self) -> Vec<f32> {
        let mut t = Vec::with_capacity(256);
        for u in 0..8 {
            let c = if u == 0 { (1.0f64 / 8.0).sqrt() } else { 0.5 };
            for x in 0..8 {
                let a = (2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0;
                t.push((c * a.cos()) as f32);
            }
        }
        let (luma, chroma) = self.tables();
        t.extend(luma.iter().chain(&chroma).map(|&q| q as f32));
        t.extend(ZIGZAG.iter().map(|&n| n as f32));
        t
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend([0xff, marker]);
    out.extend((body.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(body);
}

/// Encode the packed RGB8 frame `frame` (`width` x `height`) once the work
/// already recorded in `r` (masking, say) has run, and return the file.
/// Two submissions: the blocks and intervals, then, once the host knows
/// the intervals' lengths, the packing; only the coded bytes come back.
/// The caller has checked [`Plan::fits`].
pub fn finish<'a, D: Compute>(
    gpu: &'a D,
    mut r: D::Rec<'a>,
    frame: &D::Buf,
    plan: &Plan,
) -> Result<Vec<u8>> {
    let (coef_bytes, slot_bytes) = plan.scratch();
    let tables = gpu.upload("jpeg tables", &plan.kernel_tables())?;
    let codes: Vec<u32> = TABLES.iter().flat_map(|(spec, _)| codes(spec)).collect();
    let codes = gpu.upload("jpeg codes", &codes)?;
    let words = |n: u64| r.tensor([1, 1, 1, n as usize]);
    let coef = words(coef_bytes / 4)?;
    let slots = words(slot_bytes / 4)?;
    let lens = words(plan.intervals as u64)?;
    r.dispatch(
        "jpeg_dct",
        &[
            plan.width,
            plan.height,
            plan.mcus_x,
            plan.blocks(),
            plan.subsampled as u32,
            0,
            0,
            0,
        ],
        &[frame, &tables, &coef.buf],
        grid_1d(plan.blocks() as usize),
    )?;
    r.dispatch(
        "jpeg_huffman",
        &[
            plan.mcus,
            plan.bpm,
            plan.restart,
            plan.intervals,
            plan.slot_words,
            0,
            0,
            0,
        ],
        &[&coef.buf, &codes, &slots.buf, &lens.buf],
        grid_1d(plan.intervals as usize),
    )?;
    let rb = r.read(&lens.buf, plan.intervals as u64 * 4)?;
    let out = r.finish()?;
    let lens: Vec<u32> = bytemuck::pod_collect_to_vec(&out[rb.0]);
    if lens.len() != plan.intervals as usize {
        return Err(GpuError::Run("short JPEG length readback".into()));
    }
    let mut offsets = Vec::with_capacity(lens.len() + 1);
    let mut total = 0u64;
    for &n in &lens {
        // The kernel says u32::MAX for a slot it could not fit into.
        if n > plan.slot_words * 4 {
            return Err(GpuError::Run(format!(
                "a restart interval coded to more than its {}-byte slot",
                plan.slot_words * 4
            )));
        }
        offsets.push(total as u32);
        total += n as u64;
    }
    offsets.push(total as u32);
    let total = total as usize;

    let mut r = gpu.recorder();
    let offsets = gpu.upload("jpeg offsets", &offsets)?;
    let packed = r.tensor([1, 1, 1, total.div_ceil(4).max(1)])?;
    r.dispatch(
        "jpeg_pack",
        &[plan.intervals, total as u32, plan.slot_words, 0],
        &[&slots.buf, &offsets, &packed.buf],
        grid_1d(total.div_ceil(4)),
    )?;
    let rb = r.read(&packed.buf, total as u64)?;
    let out = r.finish()?;
    let data = &out[rb.0];
    if data.len() != total {
        return Err(GpuError::Run("short JPEG data readback".into()));
    }
    let mut file = plan.header();
    file.reserve(total + 2);
    file.extend_from_slice(data);
    file.extend([0xff, 0xd9]);
    Ok(file)
}

/// Encode `img` as a JPEG of `quality` on `gpu`.
pub fn encode<D: Compute>(gpu: &D, img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    encode_planned(gpu, img, &Plan::new(img.width(), img.height(), quality)?)
}

/// Encode `img` on `gpu` as `plan` (made for its size) lays it out.
pub fn encode_planned<D: Compute>(gpu: &D, img: &RgbImage, plan: &Plan) -> Result<Vec<u8>> {
    if (plan.width, plan.height) != img.dimensions() {
        return Err(GpuError::Shape(format!(
            "a plan for {}x{} given a {}x{} frame",
            plan.width,
            plan.height,
            img.width(),
            img.height()
        )));
    }
    plan.fits(gpu)?;
    let r = gpu.recorder();
    let frame = gpu.upload("frame", img.as_raw())?;
    finish(gpu, r, &frame, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::on_every_device;

    fn fixture(name: &str) -> RgbImage {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        image::open(path).expect("fixture").to_rgb8()
    }

    fn decode(bytes: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .expect("the file decodes")
            .to_rgb8()
    }

    /// Peak signal-to-noise ratio between two images of one size, in dB.
    fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let se: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        let mse = se / a.as_raw().len() as f64;
        if mse == 0.0 {
            return 99.0;
        }
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }

    /// The markers between SOS and EOI: the RSTn, in order.
    fn restart_markers(file: &[u8]) -> Vec<u8> {
        let sos = file
            .windows(2)
            .position(|w| w == [0xff, 0xda])
            .expect("SOS");
        let len = u16::from_be_bytes([file[sos + 2], file[sos + 3]]) as usize;
        let data = &file[sos + 2 + len..];
        assert_eq!(&data[data.len() - 2..], &[0xff, 0xd9], "ends with EOI");
        let data = &data[..data.len() - 2];
        let mut markers = Vec::new();
        for (i, w) in data.windows(2).enumerate() {
            if w[0] == 0xff && w[1] != 0 && (i == 0 || data[i - 1] != 0xff) {
                markers.push(w[1]);
            }
        }
        markers
    }

    /// A table entry: code length and code.
    fn code(len: u32, bits: u32) -> u32 {
        (len << 16) | bits
    }

    #[test]
    fn huffman_codes_are_the_standards() {
        // A few codes printed in Annex K.3 (Tables K.3 to K.6).
        let dc_luma = codes(&LUMA_DC);
        assert_eq!(dc_luma[0], code(2, 0b00));
        assert_eq!(dc_luma[11], code(9, 0b1_1111_1110));
        let ac_luma = codes(&LUMA_AC);
        assert_eq!(ac_luma[0x00], code(4, 0b1010), "EOB");
        assert_eq!(ac_luma[0x01], code(2, 0b00));
        assert_eq!(ac_luma[0xf0], code(11, 0b111_1111_1001), "ZRL");
        assert_eq!(ac_luma[0xfa], code(16, 0xfffe));
        let dc_chroma = codes(&CHROMA_DC);
        assert_eq!(dc_chroma[11], code(11, 0b111_1111_1110));
        let ac_chroma = codes(&CHROMA_AC);
        assert_eq!(ac_chroma[0x00], code(2, 0b00), "EOB");
        assert_eq!(ac_chroma[0xf0], code(10, 0b11_1111_1010), "ZRL");
        // Every symbol a baseline coder can emit has a code.
        for t in [&ac_luma, &ac_chroma] {
            for run in 0..16 {
                for size in 1..=10 {
                    assert_ne!(t[(run << 4) | size], 0, "AC {run}/{size}");
                }
            }
        }
    }

    #[test]
    fn quality_scales_the_tables_as_ijg_does() {
        assert_eq!(scaled(&LUMA_Q, 50), LUMA_Q.map(|v| v as u8));
        assert_eq!(scaled(&LUMA_Q, 100), [1; 64]);
        assert_eq!(scaled(&LUMA_Q, 75)[0], 8);
        assert_eq!(scaled(&CHROMA_Q, 10)[63], 255);
        let plan = Plan::new(1280, 720, 75).unwrap();
        assert!(plan.subsampled);
        assert_eq!((plan.mcus_x, plan.mcus, plan.intervals), (80, 3600, 450));
        assert!(!Plan::new(1280, 720, 90).unwrap().subsampled);
        assert!(Plan::new(70_000, 10, 75).is_err());
        assert!(Plan::new(0, 10, 75).is_err());
    }

    /// The restart interval changes only where the markers go: any
    /// interval codes the very pixels the default does, with its markers
    /// in order, and the file grows as the markers add up.
    #[test]
    fn any_restart_interval_codes_the_same_pixels() {
        on_every_device!(|gpu| restart_intervals_on(gpu, &[1, 3, 16, 24]));
        // Longer intervals, up to one for the whole frame, where no loop
        // limit applies: Mesa's software rasterizer (llvmpipe) silently
        // ends a shader's loops after 65,535 iterations, which cuts
        // intervals of more than about 30 MCUs short there.
        if let Some(h) = crate::gpu::cuda_host::test_cuda_host() {
            restart_intervals_on(&*h, &[64, 65_535]);
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = crate::gpu::cuda_device::test_cuda() {
            restart_intervals_on(&*c, &[64, 65_535]);
        }
    }

    fn restart_intervals_on<D: Compute>(gpu: &D, restarts: &[u32]) {
        let photo =
            image::imageops::crop_imm(&fixture("astronaut.png"), 40, 30, 300, 200).to_image();
        for q in [85, 95] {
            let base = encode(gpu, &photo, q).unwrap();
            let want = decode(&base);
            let mut last = base.len();
            for &restart in restarts {
                let plan = Plan::with_restart(photo.width(), photo.height(), q, restart).unwrap();
                let file = encode_planned(gpu, &photo, &plan).unwrap();
                let dri = file.windows(2).position(|w| w == [0xff, 0xdd]).unwrap();
                assert_eq!(file[dri + 4..dri + 6], (restart as u16).to_be_bytes());
                let got = decode(&file);
                let first = got
                    .as_raw()
                    .iter()
                    .zip(want.as_raw())
                    .position(|(a, b)| a != b);
                assert!(
                    first.is_none(),
                    "{}: q{q}, every {restart} MCUs: byte {first:?} differs",
                    gpu.describe()
                );
                let markers = restart_markers(&file);
                assert_eq!(markers.len() as u32, plan.intervals - 1, "q{q}/{restart}");
                for (i, m) in markers.iter().enumerate() {
                    assert_eq!(*m, 0xd0 + (i % 8) as u8, "q{q}/{restart}: RST {i}");
                }
                let fewer = restart > RESTART_MCUS;
                assert_eq!(
                    file.len() < last,
                    fewer,
                    "q{q}/{restart}: markers cost bytes"
                );
                if fewer {
                    last = file.len();
                }
            }
        }
        assert!(Plan::with_restart(8, 8, 85, 0).is_err());
        assert!(Plan::with_restart(8, 8, 85, 65_536).is_err());
        let other = Plan::new(8, 8, 85).unwrap();
        assert!(matches!(
            encode_planned(gpu, &photo, &other),
            Err(GpuError::Shape(_))
        ));
    }

    /// Real photos, odd sizes and a worst case (noise at quality 100), at
    /// qualities on both sides of the 4:2:0 switch: the file decodes, has
    /// its restart markers in order, and is as good and about as big as
    /// the CPU encoder's.
    #[test]
    fn device_jpeg_matches_the_cpu_encoder() {
        on_every_device!(device_jpeg_matches_the_cpu_encoder_on);
    }

    fn device_jpeg_matches_the_cpu_encoder_on<D: Compute>(gpu: &D) {
        let photo = fixture("astronaut.png");
        let group = fixture("group.jpg");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let noise = RgbImage::from_fn(61, 37, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
        });
        let cases: Vec<(&str, RgbImage, u8)> = vec![
            ("astronaut q75", photo.clone(), 75),
            ("astronaut q95", photo.clone(), 95),
            ("group q30", group.clone(), 30),
            ("group q90", group, 90),
            (
                "odd crop q85",
                image::imageops::crop_imm(&photo, 101, 57, 129, 75).to_image(),
                85,
            ),
            (
                "odd crop q100",
                image::imageops::crop_imm(&photo, 3, 9, 33, 17).to_image(),
                100,
            ),
            (
                "one pixel",
                image::imageops::crop_imm(&photo, 200, 200, 1, 1).to_image(),
                80,
            ),
            ("noise q100", noise.clone(), 100),
            ("noise q50", noise, 50),
        ];
        for (name, img, q) in cases {
            let plan = Plan::new(img.width(), img.height(), q).unwrap();
            let dev = encode(gpu, &img, q).unwrap_or_else(|e| panic!("{name}: {e}"));
            let cpu = crate::imaging::encode(&img, crate::imaging::OutputFormat::Jpeg, q).unwrap();
            let (dev_px, cpu_px) = (decode(&dev), decode(&cpu));
            let markers = restart_markers(&dev);
            assert_eq!(markers.len() as u32, plan.intervals - 1, "{name}: RSTs");
            for (i, m) in markers.iter().enumerate() {
                assert_eq!(*m, 0xd0 + (i % 8) as u8, "{name}: RST {i}");
            }
            let (dev_err, cpu_err) = (psnr(&dev_px, &img), psnr(&cpu_px, &img));
            let between = psnr(&dev_px, &cpu_px);
            let ratio = dev.len() as f64 / cpu.len() as f64;
            eprintln!(
                "{name}: device {} B {dev_err:.2} dB, cpu {} B {cpu_err:.2} dB, between {between:.1} dB",
                dev.len(),
                cpu.len()
            );
            // At 45 dB and up the difference is a level here and there.
            assert!(
                dev_err > (cpu_err - 0.3).min(45.0),
                "{name}: {dev_err:.2} dB against the CPU's {cpu_err:.2}"
            );
            // Where both lose most of the image (noise at q50) they lose it
            // differently; elsewhere they must agree closely.
            assert!(
                between > 38.0 || cpu_err < 30.0,
                "{name}: {between:.1} dB from the CPU's"
            );
            // Small files carry the same headers, so only big ones compare.
            if img.width() * img.height() > 4096 {
                assert!(
                    (0.9..1.1).contains(&ratio),
                    "{name}: {ratio:.3} the CPU's size"
                );
            }
        }
    }

    /// A slot too small for its interval is reported, not overrun: the
    /// guard pages of the host run fault on a write past the buffer.
    #[test]
    fn an_overfull_slot_is_an_error() {
        on_every_device!(an_overfull_slot_is_an_error_on);
    }

    fn an_overfull_slot_is_an_error_on<D: Compute>(gpu: &D) {
        let img = fixture("astronaut.png");
        let mut plan = Plan::new(img.width(), img.height(), 95).unwrap();
        plan.slot_words = 16;
        let frame = gpu.upload("frame", img.as_raw()).unwrap();
        let err = finish(gpu, gpu.recorder(), &frame, &plan).unwrap_err();
        assert!(
            err.to_string().contains("more than its 64-byte slot"),
            "{err}"
        );
    }
}
