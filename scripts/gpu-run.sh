#!/usr/bin/env bash
# Run a bundle from scripts/gpu-bundle.sh on an NVIDIA GPU machine, from the
# repository root. Logs go to $OUT (or .gpu/out). Needs libcuda (the driver)
# and a CUDA 13 libnvrtc, found on LD_LIBRARY_PATH, in target/nvrtc or under
# a CUDA toolkit or PyTorch install; for wgpu, NVIDIA's Vulkan driver (the
# loader comes in the bundle).
#
#   scripts/gpu-run.sh                  # everything the bundle holds
#   scripts/gpu-run.sh model            # one part: tests, sanitize, model,
#                                       #   imaging, cells (the clinic nets),
#                                       #   skin (the skin pipeline and nets),
#                                       #   e2e, overload, profile (ncu over a
#                                       #   server) or kernels (ncu over
#                                       #   CenterFace in the model bench)
#   scripts/gpu-run.sh tests,model,e2e  # several, in that order
#
# Each part runs under a deadline (GPU_PART_SECONDS, default 300) so that a
# hung kernel costs one part, not the whole lease. On a short lease,
# BENCH_ARGS (say "--warm-up-time 1 --measurement-time 2") shortens the
# criterion runs, E2E_BACKENDS picks the servers (default "cuda wgpu cpu")
# and E2E_REQUESTS the requests per concurrency level (default 400);
# OVERLOAD_BACKENDS the servers for the 10x overload sets (default "cpu cuda").
set -uo pipefail
parts=${1:-all}
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out" .gpu/run
kind=$(cat .gpu/kind)

built_in=$(cat .gpu/built_in)
if [ "$built_in" != "$PWD" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"
fi

if ! ldconfig -p | grep -q 'libnvrtc.so.13' && [ ! -e target/nvrtc/libnvrtc.so.13 ]; then
    lib=$(find / -xdev -name 'libnvrtc.so.13' -not -path '*/proc/*' 2>/dev/null | head -n1)
    [ -n "$lib" ] && export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH="$PWD/target/nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Vulkan for wgpu: the bundle's loader where the machine has none, and
# NVIDIA's driver manifest where the loader would not look for it.
if ! ldconfig -p | grep -q 'libvulkan.so.1' && compgen -G '.gpu/gl/*.deb' >/dev/null; then
    for f in .gpu/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e "$icd" ] \
    && ! ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | grep -qi nvidia; then
    export VK_DRIVER_FILES=$icd
fi

for f in .gpu/bin/*.xz; do
    xz -dc "$f" > ".gpu/run/$(basename "$f" .xz)"
    chmod +x ".gpu/run/$(basename "$f" .xz)"
done
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    ldconfig -p | grep libvulkan
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

rc=0
limit=${GPU_PART_SECONDS:-300}
bench_args=${BENCH_ARGS:-}

run_tests() {
    # Every op and model on CUDA against the CPU, then a CUDA server
    # against a CPU server.
    # TEST_FILTER narrows the first (default gpu::); a binary not carried
    # is left out.
    # The kernels' host run is left out unless GPU_TEST_HOST=1: CI runs it,
    # and here it would take most of the deadline.
    [ "${GPU_TEST_HOST:-0}" = 1 ] || export ARGUS_TEST_SKIP_CUDA_HOST=1
    [ -e .gpu/run/argus ] && { timeout "$limit" .gpu/run/argus "${TEST_FILTER:-gpu::}" --test-threads 1 --nocapture 2>&1 \
        | tee "$out/gpu-tests.log" || rc=1; }
    [ -e .gpu/run/http_backends_test ] && { timeout "$limit" .gpu/run/http_backends_test --test-threads 1 --nocapture 2>&1 \
        | tee "$out/http-backends.log" || rc=1; }
    # The skin pipeline with its nets on each device against the CPU's.
    [ -e .gpu/run/skin_test ] && { timeout "$limit" .gpu/run/skin_test pipeline_matches --test-threads 1 --nocapture 2>&1 \
        | tee "$out/skin-pipeline.log" || rc=1; }
    return 0
}

run_sanitize() {
    if command -v compute-sanitizer >/dev/null; then
        # Out-of-bounds and misaligned accesses in the kernels, on the op
        # tests; then shared-memory hazards in conv1x1, the one kernel with
        # a shared tile.
        timeout "$limit" compute-sanitizer --tool memcheck --error-exitcode 9 \
            .gpu/run/argus gpu::ops gpu::jpeg gpu::mask --test-threads 1 2>&1 | tail -n 40 | tee "$out/memcheck.log" || rc=1
        timeout "$limit" compute-sanitizer --tool racecheck --error-exitcode 9 \
            .gpu/run/argus gpu::ops::tests::conv1x1 --test-threads 1 2>&1 | tail -n 40 | tee "$out/racecheck.log" || rc=1
    fi
}

run_model() {
    # Criterion groups per device; the CPU groups are the same-run comparison.
    # shellcheck disable=SC2086
    timeout "$limit" .gpu/run/model --bench 'cpu|cuda|wgpu' $bench_args 2>&1 | tee "$out/bench-model.log" || rc=1
}

run_cells() {
    # The clinic nets (cell UNets, malaria and white-cell classifiers) per
    # device; the CPU group's same nets are the same-run comparison (its
    # whole-smear and size-measure runs are left out to keep the deadline
    # for the devices).
    # shellcheck disable=SC2086
    timeout "$limit" .gpu/run/cells --bench 'cells/(cuda|wgpu)|cells/cpu-[0-9]+t/(unet3|malaria|wbc)' $bench_args 2>&1 \
        | tee "$out/bench-cells.log" || rc=1
}

run_skin() {
    # The skin pipeline and its nets (face mesh, iris, age) per device; the
    # CPU group's nets at batch 1 are the same-run comparison.
    # shellcheck disable=SC2086
    timeout "$limit" .gpu/run/skin --bench 'skin/(cuda|wgpu)|skin/cpu-[0-9]+t/model' $bench_args 2>&1 \
        | tee "$out/bench-skin.log" || rc=1
}

run_imaging() {
    # shellcheck disable=SC2086
    timeout "$limit" .gpu/run/imaging --bench 'mask_3_faces|jpeg' $bench_args 2>&1 | tee "$out/bench-imaging.log" || rc=1
}

run_e2e() {
    # End to end: masked 1280x720 JPEG frames/s through the HTTPS server on
    # CUDA, wgpu (Vulkan), then the CPU, with the per-key rate limits out
    # of the way.
    for backend in ${E2E_BACKENDS:-cuda wgpu cpu}; do
        state=$(mktemp -d)
        key=$(.gpu/run/argusd --state-dir "$state" keys create --name bench | grep -o 'xyl_[A-Za-z0-9_-]*')
        ARGUS_AUTH_DETECT_PER_MINUTE=1000000 ARGUS_AUTH_MASK_PER_MINUTE=1000000 \
            .gpu/run/argusd --state-dir "$state" serve --backend "$backend" \
            --listen 127.0.0.1:18443 > "$out/argusd-$backend.log" 2>&1 &
        pid=$!
        for _ in $(seq 120); do
            curl -skf https://127.0.0.1:18443/health >/dev/null 2>&1 && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "argusd --backend $backend did not start:" >&2
            tail -n 5 "$out/argusd-$backend.log" >&2
            rc=1
            rm -rf "$state"
            continue
        fi
        curl -sk https://127.0.0.1:18443/health > "$out/health-$backend.json"
        for endpoint in detect mask; do
            timeout "$limit" .gpu/run/load --url https://127.0.0.1:18443 --key "$key" --endpoint "$endpoint" \
                --image tests/fixtures/group.jpg --resize 1280x720 --concurrency 1,8,32,64 \
                --requests "${E2E_REQUESTS:-400}" --max-seconds 60 2>&1 | tee -a "$out/load-$backend.log" || rc=1
        done
        # Whether the device was lost under load, who uploaded the frames,
        # where the answers were encoded, and what queued.
        curl -sk --max-time 10 https://127.0.0.1:18443/health > "$out/health-$backend-after.json"
        curl -sk --max-time 10 https://127.0.0.1:18443/metrics | grep -v '^#' > "$out/metrics-$backend.txt"
        grep -E '^argus_(device_frame_uploads|masked_frames)_total' "$out/metrics-$backend.txt"
        # A clean stop after load is part of the check: a wgpu server once
        # died with SIGSEGV here (the device dropped before the threads that
        # used it, see backend::hold_devices_until_exit).
        kill "$pid"
        # Bounded: a stop that hangs must not spend the rest of the lease.
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { echo "argusd --backend $backend did not stop in 30 s" >&2; kill -9 "$pid"; }
        wait "$pid"
        status=$?
        echo "argusd --backend $backend stopped with status $status" | tee -a "$out/load-$backend.log"
        [ "$status" -eq 0 ] || rc=1
        rm -rf "$state"
    done
}

run_overload() {
    # Issue 18's goodput under 10x the sustained rate, on a machine where
    # the load tool does not share two vCPUs with the daemon: alternating
    # closed-loop and open-loop runs (benches/tools/overload_sets.sh).
    for backend in ${OVERLOAD_BACKENDS:-cpu cuda}; do
        ARGUS_BACKEND=$backend LOAD=.gpu/run/load LOG="$out/overload-$backend.log" RATE=${RATE:-auto} \
            timeout "$limit" benches/tools/overload_sets.sh .gpu/run/argusd 2>&1 \
            | tee "$out/overload-$backend.txt" || rc=1
    done
}

run_profile() {
    # Where a CUDA server's time goes, kernel by kernel: Nsight Compute
    # times PROFILE_LAUNCHES launches after the first PROFILE_SKIP (each
    # launch is replayed, so this is slow) while 4 detect requests run,
    # then the server stops and ncu prints a per-kernel summary.
    command -v ncu >/dev/null || { echo "no ncu here" >&2; return; }
    local state key pid
    state=$(mktemp -d)
    key=$(.gpu/run/argusd --state-dir "$state" keys create --name profile | grep -o 'xyl_[A-Za-z0-9_-]*')
    # PROFILE_SKIP passes over the first launches: 300 did not get past the
    # start-up warm-ups of the cell and skin nets (2026-12-04).
    timeout "$limit" ncu --clock-control none --launch-skip "${PROFILE_SKIP:-0}" \
        --launch-count "${PROFILE_LAUNCHES:-300}" \
        --print-summary per-kernel .gpu/run/argusd --state-dir "$state" serve --backend cuda \
        --listen 127.0.0.1:18444 > "$out/ncu.txt" 2>&1 &
    for _ in $(seq 120); do
        curl -skf https://127.0.0.1:18444/health >/dev/null 2>&1 && break
        sleep 1
    done
    for _ in 1 2 3 4; do
        curl -sk -o /dev/null -w '%{http_code} %{time_total}s\n' -X POST \
            https://127.0.0.1:18444/api/v1/detect -H "X-API-Key: $key" \
            -F image=@tests/fixtures/group.jpg
    done
    # Anchored: timeout and ncu carry the same words in their command lines.
    pid=$(pgrep -f "^[^ ]*argusd --state-dir $state serve") && kill -INT "$pid"
    wait
    rm -rf "$state"
}

run_kernels() {
    # CenterFace's kernels alone, as the daemon runs them (batches of 8
    # 1280x720 frames already on the device), from the model bench: no
    # other net's warm-up comes first, so the first PROFILE_LAUNCHES
    # launches (after PROFILE_SKIP) are CenterFace's. Needs the model bench.
    command -v ncu >/dev/null || { echo "no ncu here" >&2; return; }
    [ -e .gpu/run/model ] || { echo "kernels: the model bench was not carried" >&2; rc=1; return; }
    ARGUS_BENCH_BATCHES=8 timeout "$limit" ncu --clock-control none --launch-skip "${PROFILE_SKIP:-0}" \
        --launch-count "${PROFILE_LAUNCHES:-300}" --print-summary per-kernel \
        .gpu/run/model --bench 'centerface/cuda/resident' --profile-time 2 > "$out/ncu-model.txt" 2>&1 || rc=1
    tail -n 5 "$out/ncu-model.txt"
}

if [ "$parts" = all ]; then
    case "$kind" in
    tests) parts=tests,sanitize ;;
    benches) parts=model,imaging,cells,skin,e2e ;;
    all) parts=tests,model,imaging,cells,skin,e2e,sanitize ;;
    esac
fi
for part in ${parts//,/ }; do
    case "$part" in
    tests | sanitize | model | imaging | cells | skin | e2e | overload | profile | kernels) echo "== $part" && "run_$part" ;;
    *) echo "gpu-run: no part $part (tests, sanitize, model, imaging, cells, skin, e2e, overload, profile, kernels)" >&2 && rc=2 ;;
    esac
done
exit $rc
