#!/usr/bin/env bash
# Build here what an NVIDIA GPU machine with no Rust toolchain needs to run
# argus's CUDA tests or benchmarks, into .gpu/ (git-ignored), small enough to
# carry beside the working tree (binaries stripped and xz-compressed):
#
#   scripts/gpu-bundle.sh tests     # lib tests, http_backends and skin, --features cuda
#   scripts/gpu-bundle.sh benches   # model, imaging, cells and skin benches, argusd, load tool
#   scripts/gpu-bundle.sh all       # both, for one call on a short lease
#
# Both hold the Vulkan loader's Debian packages too, so the wgpu backend also
# runs on the NVIDIA GPU. Then, on the GPU machine, from the repository root:
# scripts/gpu-run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: gpu-bundle.sh tests|benches|all}
out=.gpu
rm -rf "$out"
mkdir -p "$out/bin"

# Executables cargo reports building, as "name path" lines. An integration
# test takes the suffix _test: tests/skin.rs and benches/skin.rs are both
# targets named skin.
executables() {
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
           | "\(.target.name)\(if .target.kind == ["test"] then "_test" else "" end) \(.executable)"'
}

build_tests() {
    cargo test --release -p argus --features cuda --no-run --lib --test http_backends --test skin \
        --message-format=json | executables
}
build_benches() {
    # The release profile, not bench's own: the same settings, but under
    # its own name cargo would build the whole crate a second time.
    cargo bench --profile release --features cuda --no-run --bench model --bench imaging --bench cells --bench skin \
        --message-format=json | executables
    cargo build --release --features cuda --bin argusd --example load --message-format=json | executables
}

case "$what" in
tests) build_tests > "$out/list" ;;
benches) build_benches > "$out/list" ;;
all) { build_tests; build_benches; } > "$out/list" ;;
*)
    echo "gpu-bundle: tests, benches or all, not $what" >&2
    exit 2
    ;;
esac

while read -r name path; do
    strip -o "$out/bin/$name" "$path"
    xz -T0 -6 "$out/bin/$name"
done < <(sort -u -k1,1 "$out/list")
# The Vulkan loader (and glvnd, which NVIDIA's Vulkan driver links), for the
# wgpu backend on the GPU: the runner unpacks them where the machine lacks it.
mkdir -p "$out/gl"
(cd "$out/gl" && apt-get download libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2) \
    || echo "gpu-bundle: warning: no Vulkan loader packages; wgpu runs only where the GPU machine has one" >&2
# Tests and benches find models/ and tests/fixtures/ under the path they were
# built in; the runner links it to wherever the tree lands.
pwd > "$out/built_in"
echo "$what" > "$out/kind"
rm "$out/list"
du -sh "$out"
ls -l "$out/bin"
