//! Colorimetry of skin pixels: sRGB to CIE L*a*b* (D65), the Individual
//! Typology Angle and its classes, and the erythema index.
//!
//! Everything here is colorimetric on the camera's sRGB output: values
//! depend on the device, its white balance and the light, so they compare
//! photos taken the same way, not people photographed differently.

use std::sync::OnceLock;

/// D65 reference white (CIE 1931 2°), Y = 1.
const WHITE: [f64; 3] = [0.950_47, 1.0, 1.088_83];

/// sRGB byte -> linear light in [0, 1] (IEC 61966-2-1).
pub fn linear(v: u8) -> f32 {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [0f32; 256];
        for (i, o) in t.iter_mut().enumerate() {
            let c = i as f64 / 255.0;
            *o = if c <= 0.040_45 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            } as f32;
        }
        t
    })[v as usize]
}

/// Linear light in [0, 1] -> the nearest sRGB byte (IEC 61966-2-1).
pub fn encode(lin: f32) -> u8 {
    let l = lin.clamp(0.0, 1.0) as f64;
    let v = if l <= 0.003_130_8 {
        12.92 * l
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    };
    (v * 255.0).round() as u8
}

/// Linear sRGB -> CIE XYZ (D65), IEC 61966-2-1.
const SRGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.412_456_4, 0.357_576_1, 0.180_437_5],
    [0.212_672_9, 0.715_152_2, 0.072_175_0],
    [0.019_333_9, 0.119_192, 0.950_304_1],
];

/// CIE XYZ -> the CAT16 cone-like space (Li et al. 2017, "Comprehensive
/// colour solutions: CAM16, CAT16, and CAM16-UCS", Color Res. Appl. 42).
const XYZ_TO_CAT16: [[f64; 3]; 3] = [
    [0.401_288, 0.650_173, -0.051_461],
    [-0.250_268, 1.204_414, 0.045_854],
    [-0.002_079, 0.048_952, 0.953_127],
];

fn mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn apply(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| (0..3).map(|k| m[i][k] * v[k]).sum())
}

fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det: f64 = (0..3).map(|j| m[0][j] * c(0, j)).sum();
    // The adjugate is the transposed cofactor matrix.
    std::array::from_fn(|i| std::array::from_fn(|j| c(j, i) / det))
}

/// A complete von Kries adaptation in the CAT16 space that takes `source`
/// (a linear sRGB colour seen as white) to the D65 white of the same
/// luminance Y, as a matrix on linear sRGB, with the cone-space gains.
///
/// Scaling the camera's own R, G and B instead ("wrong von Kries") shifts
/// saturated colours such as skin differently from the white it balances;
/// a sharpened cone space is what the CIE's colour appearance models use
/// for the same job (CIE 248:2022 adopts CAT16).
pub fn cat16_to_d65(source: [f64; 3]) -> ([[f32; 3]; 3], [f32; 3]) {
    let xyz = apply(&SRGB_TO_XYZ, source);
    let target = WHITE.map(|w| w * xyz[1]);
    let (s, d) = (apply(&XYZ_TO_CAT16, xyz), apply(&XYZ_TO_CAT16, target));
    let gains: [f64; 3] = std::array::from_fn(|i| d[i] / s[i]);
    let mut diag = [[0.0; 3]; 3];
    (0..3).for_each(|i| diag[i][i] = gains[i]);
    let cone = mul(&XYZ_TO_CAT16, &SRGB_TO_XYZ);
    let m = mul(&inverse(&cone), &mul(&diag, &cone));
    (m.map(|r| r.map(|v| v as f32)), gains.map(|g| g as f32))
}

/// Linear light in [0, 1] -> sRGB byte through a 65536-entry table: the
/// per-pixel form of [`encode`] for whole images.
pub fn encode_fast(lin: f32) -> u8 {
    static LUT: OnceLock<Vec<u8>> = OnceLock::new();
    let t = LUT.get_or_init(|| (0..=u16::MAX).map(|i| encode(i as f32 / 65535.0)).collect());
    t[(lin.clamp(0.0, 1.0) * 65535.0).round() as usize]
}

/// CIE L*a*b* (D65) of an sRGB pixel: L* in [0, 100], a* and b* roughly
/// in [-128, 127]. sRGB -> XYZ by the IEC 61966-2-1 matrix, then CIE 1976.
pub fn lab([r, g, b]: [u8; 3]) -> [f32; 3] {
    let [x, y, z] = apply(
        &SRGB_TO_XYZ,
        [linear(r) as f64, linear(g) as f64, linear(b) as f64],
    );
    let f = |t: f64| {
        const D: f64 = 6.0 / 29.0;
        if t > D * D * D {
            t.cbrt()
        } else {
            t / (3.0 * D * D) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x / WHITE[0]), f(y / WHITE[1]), f(z / WHITE[2]));
    [
        (116.0 * fy - 16.0) as f32,
        (500.0 * (fx - fy)) as f32,
        (200.0 * (fy - fz)) as f32,
    ]
}

/// Individual Typology Angle in degrees: `atan2(L* - 50, b*) * 180 / pi`
/// (Chardon, Cretois & Hourseau 1991). Higher is lighter skin.
pub fn ita(l: f32, b: f32) -> f32 {
    (l - 50.0).atan2(b).to_degrees()
}

/// The skin-colour classes of the ITA scale (Chardon 1991; Del Bino et al.
/// 2006). Colorimetric categories, not Fitzpatrick phototypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItaClass {
    VeryLight,
    Light,
    Intermediate,
    Tan,
    Brown,
    Dark,
}

impl ItaClass {
    /// very light > 55° >= light > 41° >= intermediate > 28° >= tan > 10°
    /// >= brown > -30° >= dark.
    pub fn of(ita: f32) -> Self {
        match ita {
            a if a > 55.0 => Self::VeryLight,
            a if a > 41.0 => Self::Light,
            a if a > 28.0 => Self::Intermediate,
            a if a > 10.0 => Self::Tan,
            a if a > -30.0 => Self::Brown,
            _ => Self::Dark,
        }
    }

    /// Every class, lightest first.
    pub const ALL: [Self; 6] = [
        Self::VeryLight,
        Self::Light,
        Self::Intermediate,
        Self::Tan,
        Self::Brown,
        Self::Dark,
    ];

    /// The class as the reference's skin-tone classification writes it
    /// ("Very light", ..., "Dark"), for tags a person reads.
    pub fn label(self) -> &'static str {
        match self {
            Self::VeryLight => "Very light",
            Self::Light => "Light",
            Self::Intermediate => "Intermediate",
            Self::Tan => "Tan",
            Self::Brown => "Brown",
            Self::Dark => "Dark",
        }
    }

    /// The label of the class named `name` (its [`Self::name`]).
    pub fn label_of(name: &str) -> Option<&'static str> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .map(Self::label)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::VeryLight => "very_light",
            Self::Light => "light",
            Self::Intermediate => "intermediate",
            Self::Tan => "tan",
            Self::Brown => "brown",
            Self::Dark => "dark",
        }
    }
}

/// Erythema index of a pixel, `100 * log10(R / G)` on linear red and green
/// (Diffey, Oliver & Farr 1984, with the camera's red and green channels
/// standing in for the reflectance meter's filters). Higher is redder.
pub fn erythema_index([r, g, _]: [u8; 3]) -> f32 {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    let t = LUT.get_or_init(|| {
        let mut t = [0f32; 256];
        for (i, o) in t.iter_mut().enumerate() {
            *o = 100.0 * linear(i as u8).max(1e-3).log10();
        }
        t
    });
    t[r as usize] - t[g as usize]
}

/// CIE 1976 colour difference ΔE*ab.
pub fn delta_e(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// Rec. 601 luma of an sRGB pixel, 0-255 (what OFIQ's exposure measures use).
pub fn luma([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_known_colours() {
        let w = lab([255, 255, 255]);
        assert!(
            (w[0] - 100.0).abs() < 0.01 && w[1].abs() < 0.01 && w[2].abs() < 0.01,
            "{w:?}"
        );
        assert_eq!(lab([0, 0, 0]), [0.0, 0.0, 0.0]);
        // sRGB red is L* 53.24, a* 80.09, b* 67.20 (Lindbloom's calculator).
        let r = lab([255, 0, 0]);
        assert!(
            (r[0] - 53.24).abs() < 0.02
                && (r[1] - 80.09).abs() < 0.05
                && (r[2] - 67.20).abs() < 0.05,
            "{r:?}"
        );
        // A mid skin tone (the same formulas in float64 Python).
        let s = lab([224, 172, 140]);
        assert!(
            (s[0] - 74.35).abs() < 0.02
                && (s[1] - 14.81).abs() < 0.05
                && (s[2] - 23.81).abs() < 0.05,
            "{s:?}"
        );
    }

    #[test]
    fn encode_inverts_linear() {
        for v in 0..=255u8 {
            assert_eq!(encode(linear(v)), v);
        }
    }

    #[test]
    fn cat16_takes_the_source_white_to_neutral() {
        // A warm "white" (the sclera under tungsten-ish light).
        let src = [0.55, 0.42, 0.25];
        let (m, gains) = cat16_to_d65(src);
        let out: [f32; 3] = std::array::from_fn(|i| (0..3).map(|k| m[i][k] * src[k] as f32).sum());
        // Neutral in sRGB means equal channels; Y is kept.
        let y = |c: [f32; 3]| 0.2126729 * c[0] + 0.7151522 * c[1] + 0.072175 * c[2];
        assert!(
            (out[0] - out[1]).abs() < 1e-4 && (out[1] - out[2]).abs() < 1e-4,
            "{out:?}"
        );
        assert!((y(out) - y(src.map(|v| v as f32))).abs() < 1e-4);
        assert!(gains[2] > 1.5 && gains[0] < 1.0, "{gains:?}");
        // Already neutral: identity.
        let (id, g) = cat16_to_d65([0.3, 0.3, 0.3]);
        for i in 0..3 {
            assert!((g[i] - 1.0).abs() < 1e-4);
            for j in 0..3 {
                assert!((id[i][j] - (i == j) as u8 as f32).abs() < 1e-4, "{id:?}");
            }
        }
    }

    #[test]
    fn encode_fast_matches_encode() {
        for i in 0..=1000 {
            let l = i as f32 / 1000.0;
            assert!((encode_fast(l) as i32 - encode(l) as i32).abs() <= 1, "{l}");
        }
        for v in 0..=255u8 {
            assert_eq!(encode_fast(linear(v)), v);
        }
    }

    #[test]
    fn ita_and_classes() {
        assert!((ita(50.0, 10.0)).abs() < 1e-6);
        assert!((ita(60.0, 10.0) - 45.0).abs() < 1e-4);
        assert_eq!(ItaClass::of(56.0), ItaClass::VeryLight);
        assert_eq!(ItaClass::of(55.0), ItaClass::Light);
        assert_eq!(ItaClass::of(41.0), ItaClass::Intermediate);
        assert_eq!(ItaClass::of(28.0), ItaClass::Tan);
        assert_eq!(ItaClass::of(10.0), ItaClass::Brown);
        assert_eq!(ItaClass::of(-30.0), ItaClass::Dark);
        assert_eq!(ItaClass::of(-45.0).name(), "dark");
    }

    #[test]
    fn erythema_index_orders_red_over_neutral() {
        assert_eq!(erythema_index([128, 128, 128]), 0.0);
        assert!(erythema_index([200, 120, 110]) > erythema_index([190, 150, 130]));
        assert!((delta_e([50.0, 0.0, 0.0], [53.0, 4.0, 0.0]) - 5.0).abs() < 1e-5);
    }
}
