#!/usr/bin/env bash
# Builds argus's library tests for aarch64 and runs the CPU-kernel tests
# (NEON and portable paths) under qemu user-mode emulation.
#
# Needs, once (Debian): apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# and: rustup target add aarch64-unknown-linux-gnu
#
#     scripts/test-aarch64.sh                 # model:: tests
#     scripts/test-aarch64.sh model::nhwc     # a narrower filter
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
exec cargo test --target aarch64-unknown-linux-gnu -p argus --no-default-features --lib -- "${@:-model::}"
