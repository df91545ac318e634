"""Shared setup for the Python package's tests.

The package under test is the wheel installed in this virtualenv (scripts/test.sh
builds it with maturin and installs it into .cache/venv-python). Models come from the
Hugging Face cache scripts/fetch-test-models.sh lays out, offline, and from the engine's
committed fixtures; the reference vectors are sentence-transformers' own.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "engine" / "tests" / "fixtures"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Names resolve as the server resolves them: through HF_HOME, offline here.
os.environ.setdefault("HF_HOME", os.environ.get("EMBGEN_HF_HOME", str(ROOT / ".cache" / "hf")))
os.environ["HF_HUB_OFFLINE"] = "1"
# The package's `embgen` command, as an activated virtualenv would find it.
os.environ["PATH"] = f"{Path(os.path.abspath(sys.executable)).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def shared(*parts):
    return Path(os.environ.get("EMBGEN_SHARED_DIR", ROOT.parent / "shared")).joinpath(*parts)


def reference(name):
    folder = Path(os.environ.get("EMBGEN_REFERENCE_DIR", shared("reference")))
    return [json.loads(line) for line in (folder / f"{name}.jsonl").open()]


def fixture_reference(name):
    return [json.loads(line) for line in (FIXTURES / "reference" / f"{name}.jsonl").open()]


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_rows_match_workload(rows, workload):
    """Rows back from a distributed run (`id`, `text`, `embedding`, in any order) are
    the workload's texts, each with `embgen embed`'s vector (cosine >= 0.999999)."""
    texts, expected = workload
    rows = sorted(rows, key=lambda r: r["id"])
    assert [r["text"] for r in rows] == texts
    got = np.array([r["embedding"] for r in rows], dtype=np.float32)
    assert got.shape == expected.shape
    cos = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cos.min() >= 0.999999, cos.min()


def worst_cosine(vectors, expected):
    assert len(vectors) == len(expected)
    return min(cosine(v, e) for v, e in zip(vectors, expected))


@pytest.fixture(scope="session")
def minilm():
    import embgen

    return embgen.Model(MINILM, threads=2)


@pytest.fixture(scope="session")
def workload(tmp_path_factory):
    """The standard workload's texts and `embgen embed`'s vectors of them (the native command)."""
    texts = [json.loads(line)["text"] for line in shared("bench", "workload.jsonl").open()]
    folder = tmp_path_factory.mktemp("workload")
    source = folder / "texts.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = folder / "embgen.jsonl"
    subprocess.run(["embgen", "embed", "--model", MINILM, "--input", str(source), "--output", str(out)], check=True)
    expected = np.array([json.loads(line)["embedding"] for line in out.open()], dtype=np.float32)
    return texts, expected
