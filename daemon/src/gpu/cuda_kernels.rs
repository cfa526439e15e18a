//! The CUDA kernels of `kernels/`, built into the binary: NVRTC compiles
//! them at start on a CUDA device, and tests also run them on the host
//! (`cuda_host`).

/// Every kernel of `kernels/`, by file stem, with its block (workgroup)
/// shape: the same as its WGSL twin's `@workgroup_size`.
pub const KERNELS: &[(&str, &str, [u32; 3])] = &[
    (
        "conv2d",
        include_str!("../../../kernels/conv2d.cu"),
        [8, 8, 1],
    ),
    (
        "depthwise",
        include_str!("../../../kernels/depthwise.cu"),
        [8, 8, 1],
    ),
    (
        "conv1x1",
        include_str!("../../../kernels/conv1x1.cu"),
        [16, 16, 1],
    ),
    (
        "conv_transpose2x2",
        include_str!("../../../kernels/conv_transpose2x2.cu"),
        [8, 8, 1],
    ),
    (
        "maxpool2x2",
        include_str!("../../../kernels/maxpool2x2.cu"),
        [8, 8, 1],
    ),
    (
        "maxpool",
        include_str!("../../../kernels/maxpool.cu"),
        [8, 8, 1],
    ),
    (
        "crop_concat",
        include_str!("../../../kernels/crop_concat.cu"),
        [256, 1, 1],
    ),
    (
        "sigmoid",
        include_str!("../../../kernels/sigmoid.cu"),
        [256, 1, 1],
    ),
    (
        "prelu",
        include_str!("../../../kernels/prelu.cu"),
        [256, 1, 1],
    ),
    (
        "global_avg_pool",
        include_str!("../../../kernels/global_avg_pool.cu"),
        [64, 1, 1],
    ),
    (
        "linear",
        include_str!("../../../kernels/linear.cu"),
        [64, 1, 1],
    ),
    (
        "softmax",
        include_str!("../../../kernels/softmax.cu"),
        [64, 1, 1],
    ),
    (
        "letterbox",
        include_str!("../../../kernels/letterbox.cu"),
        [256, 1, 1],
    ),
    (
        "mask_fill",
        include_str!("../../../kernels/mask_fill.cu"),
        [256, 1, 1],
    ),
    (
        "mask_pixelate",
        include_str!("../../../kernels/mask_pixelate.cu"),
        [256, 1, 1],
    ),
    (
        "mask_box_blur",
        include_str!("../../../kernels/mask_box_blur.cu"),
        [256, 1, 1],
    ),
    (
        "mask_put",
        include_str!("../../../kernels/mask_put.cu"),
        [256, 1, 1],
    ),
    (
        "jpeg_dct",
        include_str!("../../../kernels/jpeg_dct.cu"),
        [256, 1, 1],
    ),
    (
        "jpeg_huffman",
        include_str!("../../../kernels/jpeg_huffman.cu"),
        [256, 1, 1],
    ),
    (
        "jpeg_pack",
        include_str!("../../../kernels/jpeg_pack.cu"),
        [256, 1, 1],
    ),
];

/// Largest buffer a kernel argument may cover: kernels index elements with
/// 32-bit integers.
pub const MAX_BINDING: u64 = (u32::MAX as u64 / 4) * 4;

/// Elements of a tensor of `shape`, if the kernels can index it.
pub fn tensor_len(shape: [usize; 4]) -> super::Result<usize> {
    let len = shape.iter().product::<usize>();
    if (len as u64).saturating_mul(4) > MAX_BINDING {
        return Err(super::GpuError::Shape(format!(
            "a {shape:?} tensor is over the kernels' 32-bit indexing"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_in_kernels_is_built_in() {
        let on_disk = crate::gpu::stems_in("kernels", "cu");
        let mut built: Vec<String> = super::KERNELS
            .iter()
            .map(|(n, _, _)| n.to_string())
            .collect();
        built.sort();
        assert_eq!(on_disk, built, "kernels/ and cuda_kernels::KERNELS differ");
    }
}
