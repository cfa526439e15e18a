//! Which vector instruction set the CPU kernels run with.
//!
//! The NHWC kernels ([`crate::nhwc`]) exist once per instruction set: AVX-512F
//! (x86-64 servers), AVX2 with FMA (every x86-64 desktop and edge CPU since
//! Haswell/Zen 1), NEON (every aarch64 board), and a portable path (the
//! `gemm` crate and auto-vectorised loops) for anything else. The choice is
//! made once, at run time, from what the CPU reports; `ARGUS_NO_AVX512=1`
//! skips AVX-512 so the AVX2 kernels can be measured on an AVX-512 machine.

/// A set of kernels. Each is only ever chosen where [`supported`] says the
/// CPU has it, which is what makes calling the `unsafe` kernels sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 AVX-512F: 32 registers of 16 floats, masked loads and stores.
    Avx512,
    /// x86-64 AVX2 + FMA: 16 registers of 8 floats.
    Avx2,
    /// aarch64 Advanced SIMD: 32 registers of 4 floats.
    Neon,
    /// No hand-written kernels.
    Portable,
}

/// The kernels to use on this CPU: the widest it supports, AVX-512 only
/// when `ARGUS_NO_AVX512` is unset.
pub fn best() -> Isa {
    static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        if crate::avx512::available() {
            Isa::Avx512
        } else if supported(Isa::Avx2) {
            Isa::Avx2
        } else if supported(Isa::Neon) {
            Isa::Neon
        } else {
            Isa::Portable
        }
    })
}

/// Whether this CPU can run `isa`'s kernels (whatever `ARGUS_NO_AVX512` says).
pub fn supported(isa: Isa) -> bool {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => std::is_x86_feature_detected!("avx512f"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        Isa::Portable => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Every set this CPU can run, widest first: tests compare them all
/// against the definition.
pub fn all_supported() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable]
        .into_iter()
        .filter(|&i| supported(i))
        .collect()
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        })
    }
}

/// An AVX2 lane mask with lanes `0..lanes` set (their sign bits), for
/// `_mm256_maskload_ps`/`_mm256_maskstore_ps` on a vector's valid lanes.
///
/// # Safety
/// The CPU has AVX2 (a `#[target_feature]` function: callers compiled
/// with AVX2 enabled may call it without `unsafe`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub fn avx2_lanes(lanes: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let n = lanes.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}
