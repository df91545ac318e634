#!/usr/bin/env python3
"""Resident memory of `embgen serve` with one model loaded, as a user would see it.

For each model folder and precision: starts the server (127.0.0.1, the model preloaded
from a folder under MODEL_DIRS), reads the process's RSS once the model is loaded, sends
the first `--texts` workload texts as one /embeddings request `--requests` times, and
reads RSS again, the peak RSS (VmHWM) and what /model/info and /metrics report. Prints a
Markdown table. Standard library only; not part of CI (the big models are built by
scripts/make-bench-models.py).

  scripts/measure_memory.py .cache/bench-models/qwen3-embedding-0.6b \\
      .cache/bench-models/qwen3-embedding-0.6b-bf16 --quantize none,bf16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def get(url: str, timeout: float = 600) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post_json(url: str, body: dict, timeout: float = 600) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def measure(binary: Path, folder: Path, quantize: str, texts: list[str], requests: int, port: int,
            threads: int | None) -> dict:
    env = dict(os.environ, MODEL_DIRS=str(folder.parent), DEFAULT_MODEL=str(folder), PRELOAD="true",
               QUANTIZE=quantize, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="warn",
               MAX_TOKENS_PER_REQUEST="1000000")
    if threads:
        env["THREADS"] = str(threads)
    t0 = time.time()
    proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if json.loads(get(base + "/health", timeout=2)).get("model_loaded"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        load_s = time.time() - t0
        info = json.loads(get(base + "/model/info"))
        loaded_kib = proc_kib(proc.pid, "VmRSS")
        for _ in range(requests):
            out = post_json(base + "/embeddings", {"texts": texts})
            assert out["total_texts"] == len(texts)
        served_kib = proc_kib(proc.pid, "VmRSS")
        peak_kib = proc_kib(proc.pid, "VmHWM")
        metrics = get(base + "/metrics").decode()
        held = [ln for ln in metrics.splitlines() if ln.startswith("embgen_model_memory_bytes")]
        return {
            "model": folder.name, "quantize": quantize, "load_s": load_s,
            "weights": info.get("weights_dtype"), "precision": info.get("precision"), "info_bytes": info.get("memory_bytes"),
            "metrics_bytes": [float(ln.rsplit(" ", 1)[1]) for ln in held],
            "rss_loaded_mib": loaded_kib / 1024, "rss_served_mib": served_kib / 1024,
            "peak_mib": peak_kib / 1024,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--quantize", default="none", help="comma-separated: none, int8, bf16")
    ap.add_argument("--workload", type=Path, default=ROOT.parent / "shared/bench/workload.jsonl")
    ap.add_argument("--texts", type=int, default=32, help="texts per request")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/embgen")
    ap.add_argument("--port", type=int, default=8391)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in args.workload.open()][: args.texts]
    rows = []
    for folder in args.folders:
        for q in args.quantize.split(","):
            r = measure(args.binary, folder.resolve(), q, texts, args.requests, args.port, args.threads)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    print("| model | QUANTIZE | weights | precision | /model/info MiB | load s | RSS loaded MiB | RSS after requests MiB | peak RSS MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        info = r["info_bytes"] / 2**20 if r["info_bytes"] else float("nan")
        print(f"| {r['model']} | {r['quantize']} | {r['weights']} | {r['precision']} | {info:.0f} | {r['load_s']:.1f} | "
              f"{r['rss_loaded_mib']:.0f} | {r['rss_served_mib']:.0f} | {r['peak_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
