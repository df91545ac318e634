#!/usr/bin/env bash
# The NEON kernels, tested on every run rather than only claimed: cross-compiles the
# engine for aarch64-unknown-linux-gnu and runs its unit tests (every kernel against
# its reference, int8 and f32), the quantization unit tests, and all-MiniLM-L6-v2's
# fidelity to sentence-transformers under qemu-user. .cargo/config.toml names the
# linker and the runner.
#
# Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (.ci/run
# installs them; so does this script when run as root and they are missing), and the
# test cache (scripts/fetch-test-models.sh). Run by scripts/test.sh when they are there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=aarch64-unknown-linux-gnu
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
  else
    echo "test-aarch64: needs qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross" >&2
    exit 1
  fi
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >/dev/null
export EMBGEN_HF_HOME=${EMBGEN_HF_HOME:-$root/.cache/hf}
# The kernels and everything else in the engine's unit tests, then the real model.
cargo test --release --quiet --target "$target" -p embgen-engine --lib
cargo test --release --quiet --target "$target" -p embgen-engine --test fidelity -- minilm
