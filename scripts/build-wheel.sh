#!/usr/bin/env bash
# Builds the Python wheel (crates/python) into target/wheels with maturin, from a
# virtualenv of its own kept in .cache/venv-build. One abi3 wheel serves CPython 3.9+.
# Extra arguments go to `maturin build` (for example --target aarch64-unknown-linux-gnu).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.cache/venv-build
if [ ! -x "$venv/bin/maturin" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.9,<2'
fi
rm -f target/wheels/embgen-*.whl
"$venv/bin/maturin" build --release --quiet -m crates/python/Cargo.toml --out target/wheels "$@" >&2
ls target/wheels/embgen-*.whl
