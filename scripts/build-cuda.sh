#!/usr/bin/env bash
# Build argusd with the CUDA backend (plus wgpu and CPU, as always) and stage
# NVRTC beside it. No CUDA toolkit is needed to build: cudarc loads libcuda
# and libnvrtc at run time, and NVRTC compiles kernels/*.cu at start-up.
#
#   scripts/build-cuda.sh            # then:
#   LD_LIBRARY_PATH=target/nvrtc target/release/argusd serve --backend cuda
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features cuda "$@"
scripts/fetch-nvrtc.sh target/nvrtc
echo "built target/release/argusd with CUDA; run it with LD_LIBRARY_PATH=$PWD/target/nvrtc"
