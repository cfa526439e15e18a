#!/usr/bin/env bash
# Put NVIDIA's runtime compiler (libnvrtc and its builtins) in DIR, from the
# PyPI wheel nvidia-cuda-nvrtc, checked against a pinned sha256. argusd's CUDA
# backend loads libnvrtc at run time to compile kernels/*.cu for the GPU it
# finds; the driver (libcuda) comes with the NVIDIA driver install instead.
# Machines with a CUDA 13 toolkit already have libnvrtc and need none of this.
#
#   scripts/fetch-nvrtc.sh target/nvrtc
#   LD_LIBRARY_PATH=target/nvrtc target/release/argusd serve --backend cuda
set -euo pipefail
dir=${1:?usage: fetch-nvrtc.sh DIR}

# CUDA 13.0 matches driver 580, the driver of the H100/H200 machines.
version=13.0.88
wheel=nvidia_cuda_nvrtc-$version-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
sha256=ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575

if [ -e "$dir/.version" ] && [ "$(cat "$dir/.version")" = "$version" ]; then
    exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "fetch-nvrtc: only x86_64 wheels are pinned" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_12_x86_64 \
    --python-version 3 --dest "$tmp" "nvidia-cuda-nvrtc==$version"
echo "$sha256  $tmp/$wheel" | sha256sum --check --quiet
mkdir -p "$dir"
python3 -m zipfile -e "$tmp/$wheel" "$tmp/x"
cp "$tmp"/x/nvidia/cu13/lib/libnvrtc.so.13 "$tmp"/x/nvidia/cu13/lib/libnvrtc-builtins.so.13.0 "$dir/"
echo "$version" > "$dir/.version"
echo "fetch-nvrtc: NVRTC $version in $dir"
