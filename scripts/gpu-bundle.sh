#!/usr/bin/env bash
# Build here what an NVIDIA GPU machine with no Rust toolchain needs to run
# argus's CUDA tests or benchmarks, into .gpu/ (git-ignored), small enough to
# carry beside the working tree (binaries stripped and xz-compressed):
#
#   scripts/gpu-bundle.sh tests     # lib tests and http_backends, --features cuda
#   scripts/gpu-bundle.sh benches   # model and imaging benches, argusd, load tool
#
# Then, on the GPU machine, from the repository root: scripts/gpu-run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: gpu-bundle.sh tests|benches}
out=.gpu
rm -rf "$out"
mkdir -p "$out/bin"

# Executables cargo reports building, as "name path" lines.
executables() {
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
           | "\(.target.name) \(.executable)"'
}

case "$what" in
tests)
    cargo test --release --features cuda --no-run --lib --test http_backends \
        --message-format=json | executables > "$out/list"
    ;;
benches)
    {
        cargo bench --features cuda --no-run --bench model --bench imaging --message-format=json
        cargo build --release --features cuda --bin argusd --example load --message-format=json
    } | executables > "$out/list"
    ;;
*)
    echo "gpu-bundle: tests or benches, not $what" >&2
    exit 2
    ;;
esac

while read -r name path; do
    strip -o "$out/bin/$name" "$path"
    xz -T0 -6 "$out/bin/$name"
done < <(sort -u -k1,1 "$out/list")
# Tests and benches find models/ and tests/fixtures/ under the path they were
# built in; the runner links it to wherever the tree lands.
pwd > "$out/built_in"
echo "$what" > "$out/kind"
rm "$out/list"
du -sh "$out"
ls -l "$out/bin"
