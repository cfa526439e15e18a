#!/usr/bin/env bash
# The deface CLI peer of BENCHMARKS.md: per-image time of deface and of
# `argusd mask` on the same 21 copies of group.jpg at the same detection size.
#   python3 -m venv /tmp/dv && /tmp/dv/bin/pip install deface==1.5.0 onnx onnxruntime
#   cargo build --release && DEFACE=/tmp/dv/bin/deface bash benches/peers/deface_cli.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFACE=${DEFACE:-deface}
A=./target/release/argusd
work=$(mktemp -d)
mkdir -p "$work/in" "$work/out"
for i in $(seq 1 21); do cp tests/fixtures/group.jpg "$work/in/g$i.jpg"; done
export ARGUS_DETECTOR_INPUT_WIDTH=640 ARGUS_DETECTOR_INPUT_HEIGHT=448 ARGUS_STATE_DIR="$work/state" ARGUS_LOG=warn
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
for rep in 1 2 3; do
  rm -f "$work"/in/*_anonymized*
  d1=$(t "$DEFACE" "$work/in/g1.jpg" --scale 640x427 --thresh 0.5 --backend onnxrt --ep CPUExecutionProvider)
  rm -f "$work"/in/*_anonymized*
  d21=$(t "$DEFACE" "$work"/in/g*.jpg --scale 640x427 --thresh 0.5 --backend onnxrt --ep CPUExecutionProvider)
  rm -f "$work"/in/*_anonymized*
  a1=$(t $A mask "$work/in/g1.jpg" --out "$work/out" --method gaussian)
  a21=$(t $A mask "$work"/in/g*.jpg --out "$work/out" --method gaussian)
  printf 'deface %.1f ms/image | argusd mask %.1f ms/image\n' "$(echo "($d21-$d1)*50" | bc -l)" "$(echo "($a21-$a1)*50" | bc -l)"
done
rm -rf "$work"
