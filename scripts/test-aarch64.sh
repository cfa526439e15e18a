#!/usr/bin/env bash
# Builds the CPU kernels' tests (argus-kernels, cpu-kernels/) and argus's
# model tests for aarch64 and runs them (NEON and portable paths) under qemu
# user-mode emulation.
#
# Needs, once (Debian): apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# and: rustup target add aarch64-unknown-linux-gnu
#
#     scripts/test-aarch64.sh                 # every kernel test, then argus's model:: tests
#     scripts/test-aarch64.sh pointwise       # a narrower filter, on both crates
#
# The wgpu feature is left out (it adds nothing to the CPU kernels and most
# of the build time). qemu runs the NEON instructions exactly but slowly:
# this checks results, never speed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo test --target aarch64-unknown-linux-gnu -p argus-kernels --lib -- "$@"
exec cargo test --target aarch64-unknown-linux-gnu -p argus --no-default-features --lib -- "${@:-model::}"
