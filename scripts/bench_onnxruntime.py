#!/usr/bin/env python3
"""ONNX Runtime baseline for `embgen bench`: fp32 and dynamic int8, same workload.

Why this exists: ONNX Runtime is the CPU engine behind TEI's ONNX path, fastembed and
Infinity, and its dynamic int8 (`onnxruntime.quantization.quantize_dynamic`, what
fastembed's "-Q" models are) is what CPU users reach for first. embgen's fp32 and
int8 are compared with it measured in the same run, on the same texts and batch sizes.

The model is exported from the same weights sentence-transformers loads (its
transformer module, offline from the HF cache): `last_hidden_state` with dynamic batch
and sequence axes; pooling and normalization follow the model's own modules and run in
numpy. Batches are padded to their longest text ("sorted" passes them longest first,
as sentence-transformers does; "file" in workload order), with `--threads` intra-op
threads (default 2) and full graph optimization.

Rows match `embgen bench`'s columns (model, order, batch, texts, tokens, s, texts/s,
tokens/s); int8 rows name the model "NAME (int8)" as `embgen bench --quantize int8`
does, so scripts/bench-compare.sh can pair them. Then the latency of one 16-token
query (p50/p99), and, with --fidelity, each int8 variant's fidelity to the fp32
export computed as embgen's quality test computes its own (crates/engine/tests/
quantization.rs): minimum and mean cosine on the reference texts and the workload,
and top-10 neighbour agreement with every workload text a query against the others.

Variants: `fp32`; `int8` (quantize_dynamic's defaults: QInt8 weights, every op type
it quantizes, as fastembed ships); `int8-matmul` (MatMul only).

Not part of CI (torch and onnxruntime are several GB); run from the
sentence-transformers virtualenv after `pip install onnxruntime onnx onnxscript`:

    /opt/st-venv/bin/python scripts/bench_onnxruntime.py --model sentence-transformers/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKLOAD = REPO.parent / "shared" / "bench" / "workload.jsonl"
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference"
os.environ.setdefault("HF_HOME", str(REPO / ".cache" / "hf"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("fp32", "int8", "int8-matmul")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    p.add_argument("--batch-sizes", default="1,8,32,128")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="fp32,int8",
                   help=f"comma-separated, of {', '.join(VARIANTS)} (default: %(default)s)")
    p.add_argument("--latency-runs", type=int, default=200)
    p.add_argument("--cold-runs", type=int, default=30,
                   help="runs of the query with the caches flushed before each, as `embgen bench --cold-runs` (0: skip)")
    p.add_argument("--fidelity", action="store_true",
                   help="also print each int8 variant's fidelity to the fp32 export")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference JSONL (text fields) for --fidelity; default: "
                        "../shared/reference/<model name>.jsonl")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown {v!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes: need sizes >= 1")
    return args


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
                if limit is not None and len(texts) >= limit:
                    break
    return texts


class Encoder:
    """One ONNX session plus the sentence-transformers model's tokenizer and head."""

    def __init__(self, path: str, st_model, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = st_model.tokenizer
        self.max_len = st_model.max_seq_length
        pooling = next(m for m in st_model if type(m).__name__ == "Pooling")
        mode = getattr(pooling, "pooling_mode", None) or pooling.get_pooling_mode_str()
        self.mode = mode[0] if isinstance(mode, (list, tuple)) else mode
        self.normalize = any(type(m).__name__ == "Normalize" for m in st_model)

    def encode(self, texts: list[str]):
        import numpy as np

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}
        hidden = self.session.run(None, feed)[0]
        mask = enc["attention_mask"].astype(np.float32)[..., None]
        if self.mode == "cls":
            out = hidden[:, 0]
        elif self.mode == "max":
            out = np.where(mask > 0, hidden, -1e9).max(axis=1)
        else:
            out = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self.normalize:
            out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out.astype(np.float32)

    def encode_batched(self, texts: list[str], batch: int):
        import numpy as np

        return np.concatenate([self.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)])


def export(st_model, folder: Path) -> str:
    """The transformer module to ONNX, from the weights sentence-transformers loaded."""
    import torch

    auto = st_model[0].auto_model.eval()
    sample = st_model.tokenizer(["an example", "a longer example text"], padding=True,
                                return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Body(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    path = str(folder / "model.onnx")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Body(auto), tuple(sample[n] for n in names), path, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return path


def quantize(fp32: str, variant: str, folder: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = str(folder / f"model-{variant}.onnx")
    ops = ["MatMul"] if variant == "int8-matmul" else None
    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    return out


def fidelity(full, low) -> tuple[float, float]:
    import numpy as np

    cos = (full * low).sum(axis=1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(low, axis=1))
    return float(cos.min()), float(cos.mean())


def neighbours(vectors):
    import numpy as np

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, 10, axis=1)[:, :10]


def agreement(a, b) -> float:
    return sum(len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist())) / (10 * len(a))


class CacheSweep:
    """Evicts the caches by reading a buffer twice the last-level cache (at most
    1 GiB), as `embgen bench` does before each of its cold runs: written once here,
    only read before each run, so the timed query pays no write-backs."""

    def __init__(self) -> None:
        import numpy as np
        size = 256 << 20
        sizes = []
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            try:
                text = (index / "size").read_text().strip()
            except OSError:
                continue
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:])
            if scale and text[:-1].isdigit():
                sizes.append(int(text[:-1]) * scale)
        if sizes:
            size = max(sizes)
        self.buffer = np.ones(min(2 * size, 1 << 30), dtype=np.uint8)
        self.lines = self.buffer[::64]

    def run(self) -> int:
        return int(self.lines.sum())  # one load per cache line


def query_latency(enc, query: str, runs: int, sweep: CacheSweep | None) -> tuple[float, float]:
    """Median and 99th percentile, nearest rank as `embgen bench` takes them."""
    times = []
    for _ in range(max(runs, 1)):
        if sweep is not None:
            sweep.run()
        start = time.perf_counter()
        enc.encode([query])
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    at = lambda q: times[int((len(times) - 1) * q + 0.5)]
    return at(0.5), at(0.99)


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    st_model = SentenceTransformer(args.model, device="cpu")
    texts = read_texts(args.workload, args.limit)
    counts = [int(n) for n in st_model.tokenizer(texts, truncation=True,
                                                 max_length=st_model.max_seq_length,
                                                 return_length=True)["length"]]
    order = sorted(range(len(texts)), key=lambda i: -counts[i])
    sets = {"file": texts, "sorted": [texts[i] for i in order]}
    tokens = sum(counts)
    short = args.model.rstrip("/").rsplit("/", 1)[-1]
    print(f"# onnxruntime {ort.__version__}, {args.threads} intra-op threads, {len(texts)} texts "
          f"from {args.workload}, padded batches, max_seq_length {st_model.max_seq_length}")
    print("| model | order | batch | texts | tokens | s | texts/s | tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32 = export(st_model, folder)
        paths = {v: fp32 if v == "fp32" else quantize(fp32, v, folder) for v in args.variants}
        if args.fidelity and "fp32" not in paths:
            paths["fp32"] = fp32
        encoders = {v: Encoder(p, st_model, args.threads) for v, p in paths.items()}
        latencies = {}
        sweep = None  # one buffer for every variant, made at the first cold run
        for variant in args.variants:
            enc = encoders[variant]
            name = short if variant == "fp32" else f"{short} ({variant.replace('-matmul', ' matmul')})"
            enc.encode_batched(texts[:64], 32)  # warm-up
            for batch in args.batch_sizes:
                for order_name, batch_texts in sets.items():
                    start = time.perf_counter()
                    out = enc.encode_batched(batch_texts, batch)
                    seconds = time.perf_counter() - start
                    assert len(out) == len(batch_texts)
                    print(f"| {name} | {order_name} | {batch} | {len(out)} | {tokens} | {seconds:.2f} "
                          f"| {len(out) / seconds:.0f} | {tokens / seconds:.0f} |", flush=True)
            # One 16-token query, as `embgen bench` measures it.
            query = st_model.tokenizer.decode(
                st_model.tokenizer(texts[0], add_special_tokens=False)["input_ids"][:14])
            warm, cold = query_latency(enc, query, args.latency_runs, None), None
            if args.cold_runs:
                sweep = sweep or CacheSweep()
                cold = query_latency(enc, query, args.cold_runs, sweep)
            latencies[name] = (warm, cold)
        print()
        for name, ((p50, p99), cold) in latencies.items():
            print(f"# {name}: one 16-token query, batch 1: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            if cold:
                print(f"# {name}: one 16-token query from memory (caches flushed before each), "
                      f"batch 1: p50 {cold[0]:.2f} ms, p99 {cold[1]:.2f} ms")

        if args.fidelity:
            ref_path = args.reference or DEFAULT_REFERENCE / f"{short}.jsonl"
            refs = read_texts(ref_path)
            work = read_texts(args.workload)
            full_ref = encoders["fp32"].encode_batched(refs, 32)
            full_work = encoders["fp32"].encode_batched(work, 32)
            full_nn = neighbours(full_work)
            print("\n| model | reference min | reference mean | workload min | workload mean | top-10 agreement |")
            print("|---|---:|---:|---:|---:|---:|")
            for variant in args.variants:
                if variant == "fp32":
                    continue
                low_ref = encoders[variant].encode_batched(refs, 32)
                low_work = encoders[variant].encode_batched(work, 32)
                rmin, rmean = fidelity(full_ref, low_ref)
                wmin, wmean = fidelity(full_work, low_work)
                agree = agreement(full_nn, neighbours(low_work))
                print(f"| {short} onnxruntime {variant} | {rmin:.5f} | {rmean:.6f} | {wmin:.5f} "
                      f"| {wmean:.6f} | {agree:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
