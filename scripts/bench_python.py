#!/usr/bin/env python3
"""The Python package's speed: embgen.Model.encode against `embgen embed` (the native
command, same engine) and SentenceTransformer.encode, on the standard workload, in one
run on this machine. Also the package's import time and the wheel's size.

Why: the package must cost nothing over the native engine (within 5% of `embgen
embed`) and beat what Python users run today (sentence-transformers). Not part of CI
(sentence-transformers needs torch); run with a Python that has both packages, or
pass --no-st:

    /opt/st-venv/bin/pip install target/wheels/embgen-*.whl
    /opt/st-venv/bin/python scripts/bench_python.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HOME", str(REPO / ".cache" / "hf"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--workload", type=Path, default=REPO.parent / "shared" / "bench" / "workload.jsonl")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    args = p.parse_args()

    started = time.perf_counter()
    import embgen  # noqa: E402

    import_ms = (time.perf_counter() - started) * 1e3
    wheels = sorted((REPO / "target" / "wheels").glob("embgen-*.whl"))
    print(f"# embgen {embgen.__version__}: import {import_ms:.0f} ms; wheel "
          + (f"{wheels[-1].name} {wheels[-1].stat().st_size / 1e6:.1f} MB" if wheels else "not built"))

    texts = [json.loads(line)["text"] for line in args.workload.open() if line.strip()]
    if args.limit:
        texts = texts[: args.limit]
    rows = []

    model = embgen.Model(args.model, threads=args.threads)
    tokens = sum(len(ids) for ids in model.tokenize(texts)) + 0
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    t = time.perf_counter()
    ours = model.encode(texts, batch_size=args.batch_size)
    rows.append(("embgen.Model.encode", time.perf_counter() - t))

    # The native command on the same texts: its own process, load time excluded by
    # timing a second run minus a run on one text (load and start-up).
    command = shutil.which("embgen") or str(Path(sys.executable).parent / "embgen")
    with tempfile.TemporaryDirectory() as tmp:
        src, one, out = Path(tmp) / "texts.jsonl", Path(tmp) / "one.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"text": x}) + "\n" for x in texts))
        one.write_text(json.dumps({"text": texts[0]}) + "\n")
        env = dict(os.environ, THREADS=str(args.threads))

        def run(path: Path) -> float:
            t = time.perf_counter()
            subprocess.run([command, "embed", "--model", args.model, "--input", str(path), "--output", str(out),
                            "--batch-size", str(args.batch_size), "--threads", str(args.threads)],
                           check=True, env=env, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t

        fixed = min(run(one) for _ in range(2))
        rows.append(("embgen embed (command, start-up excluded)", run(src) - fixed))
        native = [json.loads(line)["embedding"] for line in out.open()]
        import numpy as np

        worst = min(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(ours, native))
        print(f"# embgen.Model vs embgen embed: minimum cosine {worst:.7f}")

    if not args.no_st:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        st = SentenceTransformer(args.model, device="cpu")
        st.encode(texts[:64], batch_size=args.batch_size)
        t = time.perf_counter()
        st.encode(texts, batch_size=args.batch_size)
        rows.append((f"SentenceTransformer.encode (torch {torch.__version__})", time.perf_counter() - t))

    print(f"# {len(texts)} texts, {tokens} tokens, batch {args.batch_size}, {args.threads} threads")
    print("| what | s | tokens/s | vs embgen.Model |")
    print("|---|---:|---:|---:|")
    base = rows[0][1]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {tokens / seconds:.0f} | {base / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
