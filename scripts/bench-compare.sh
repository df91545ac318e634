#!/usr/bin/env bash
# embgen against sentence-transformers, measured back to back on this machine.
#
# Absolute figures from a small shared machine say little; a ratio against the
# reference implementation measured in the same run, on the same texts and batch
# sizes, does. Needs the sentence-transformers virtualenv (scripts/setup-st-venv.sh);
# not part of CI.
#
# Usage: scripts/bench-compare.sh [--limit N] [--batch-sizes 1,8,32,128] [--model ID]...
# Env:   ST_PYTHON (default /opt/st-venv/bin/python)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export HF_HOME=${HF_HOME:-$root/.cache/hf} HF_HUB_OFFLINE=1
py=${ST_PYTHON:-/opt/st-venv/bin/python}
limit=() batches=1,8,32,128 models=()
while [ $# -gt 0 ]; do
  case $1 in
    --limit) limit=(--limit "$2"); shift 2 ;;
    --batch-sizes) batches=$2; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(sentence-transformers/all-MiniLM-L6-v2 sentence-transformers/all-mpnet-base-v2)
cargo build --release --quiet -p embgen
out=$(mktemp -d)
for m in "${models[@]}"; do
  ./target/release/embgen bench --model "$m" --batch-sizes "$batches" "${limit[@]}" | tee -a "$out/embgen.md"
  "$py" scripts/bench_sentence_transformers.py --model "$m" --batch-sizes "$batches" "${limit[@]}" | tee -a "$out/st.md"
done
python3 - "$out/embgen.md" "$out/st.md" <<'PY'
import sys
def rows(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            out[(cells[0], cells[1], int(cells[2]))] = float(cells[7])  # tokens/s
    return out
ours, theirs = rows(sys.argv[1]), rows(sys.argv[2])
print("\n| model | order | batch | embgen tokens/s | sentence-transformers tokens/s | ratio |")
print("|---|---|---:|---:|---:|---:|")
for key in sorted(ours):
    if key in theirs:
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ours[key]:.0f} | {theirs[key]:.0f} | {ours[key] / theirs[key]:.2f}x |")
PY
