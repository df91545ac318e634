#!/usr/bin/env bash
# embgen against sentence-transformers and ONNX Runtime, measured back to back on
# this machine.
#
# Absolute figures from a small shared machine say little; a ratio against the
# reference implementation measured in the same run, on the same texts and batch
# sizes, does. Needs the sentence-transformers virtualenv (scripts/setup-st-venv.sh;
# ONNX Runtime too: `pip install onnxruntime onnx onnxscript` in it); not part of CI.
#
# Usage: scripts/bench-compare.sh [--limit N] [--batch-sizes 1,8,32,128] [--rerank]
#                                 [--quantize none,int8] [--no-onnx] [--fidelity] [--model ID]...
#   --rerank:   the models are cross-encoders; compare pairs/s of one query against 100
#               documents (embgen bench's rerank row, CrossEncoder.predict).
#   --quantize: embgen's precisions (embgen bench --quantize); int8 rows are compared
#               with ONNX Runtime's dynamic int8 (scripts/bench_onnxruntime.py).
#   --no-onnx:  skip ONNX Runtime. --fidelity: also ONNX int8's fidelity to its fp32.
# Env:   ST_PYTHON (default /opt/st-venv/bin/python)
#        EMBGEN_BIN: a built binary to measure (default: build target/release/embgen);
#                    a copy keeps a long comparison safe from edits to the checkout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export HF_HOME=${HF_HOME:-$root/.cache/hf} HF_HUB_OFFLINE=1
py=${ST_PYTHON:-/opt/st-venv/bin/python}
limit=() batches=1,8,32,128 models=() rerank=() quantize=none onnx=1 fidelity=()
while [ $# -gt 0 ]; do
  case $1 in
    --limit) limit=(--limit "$2"); shift 2 ;;
    --batch-sizes) batches=$2; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    --rerank) rerank=(--rerank); onnx=0; shift ;;
    --quantize) quantize=$2; shift 2 ;;
    --no-onnx) onnx=0; shift ;;
    --fidelity) fidelity=(--fidelity); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(sentence-transformers/all-MiniLM-L6-v2 sentence-transformers/all-mpnet-base-v2)
bin=${EMBGEN_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p embgen
  bin=./target/release/embgen
fi
out=$(mktemp -d)
for m in "${models[@]}"; do
  "$bin" bench --model "$m" --batch-sizes "$batches" --quantize "$quantize" "${limit[@]}" | tee -a "$out/embgen.md"
  "$py" scripts/bench_sentence_transformers.py --model "$m" --batch-sizes "$batches" "${limit[@]}" "${rerank[@]}" | tee -a "$out/st.md"
  if [ "$onnx" = 1 ]; then
    variants=fp32
    case ",$quantize," in *,int8,*) variants=fp32,int8,int8-matmul ;; esac
    "$py" scripts/bench_onnxruntime.py --model "$m" --batch-sizes "$batches" --variants "$variants" "${limit[@]}" "${fidelity[@]}" | tee -a "$out/onnx.md"
  fi
done
touch "$out/onnx.md"
python3 - "$out/embgen.md" "$out/st.md" "$out/onnx.md" <<'PY'
import re, sys
def rows(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            out[(cells[0], cells[1], int(cells[2]))] = float(cells[7])  # tokens/s
        elif len(cells) == 6 and cells[1] == "rerank" and cells[2].isdigit():
            out[(cells[0], cells[1], int(cells[2]))] = float(cells[5])  # pairs/s
    return out
ours, st, onnx = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
base = lambda model: re.sub(r" \(.*\)$", "", model)
print("\n| model | order | batch | embgen tokens/s (pairs/s) | sentence-transformers | ratio | ONNX Runtime (same precision) | ratio | ONNX int8 MatMul-only | ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
cell = lambda v, ours: (f"{v:.0f} | {ours / v:.2f}x" if v else " | ")
for key in sorted(ours):
    model, order, batch = key
    v = ours[key]
    theirs = st.get((base(model), order, batch))
    if theirs is None and not onnx:
        continue
    o = onnx.get(key)
    om = onnx.get((model.replace("(int8)", "(int8 matmul)"), order, batch)) if "(int8)" in model else None
    print(f"| {model} | {order} | {batch} | {v:.0f} | {cell(theirs, v)} | {cell(o, v)} | {cell(om, v)} |")
for path, who in ((sys.argv[1], "embgen"), (sys.argv[3], "onnxruntime")):
    for line in open(path):
        if "16-token query" in line:
            print(f"{line.strip()} [{who}]")
PY
