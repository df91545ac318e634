"""embgen.Model: the engine in-process, shaped like SentenceTransformer and CrossEncoder."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import embgen
from conftest import FIXTURES, MINILM, cosine, fixture_reference, reference, worst_cosine


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_reproduces_sentence_transformers(name):
    rows = reference(name)
    model = embgen.Model(f"sentence-transformers/{name}")
    texts = [r["text"] for r in rows]
    assert model.tokenize(texts) == [r["input_ids"] for r in rows]
    vectors = model.encode(texts, batch_size=16)
    assert vectors.dtype == np.float32 and vectors.shape == (len(rows), model.dimensions)
    assert worst_cosine(vectors, [r["embedding"] for r in rows]) >= 0.99999


def test_a_single_string_gives_one_row_and_a_list_gives_a_matrix(minilm):
    one = minilm.encode("hello world")
    assert one.shape == (384,) and one.dtype == np.float32
    many = minilm.encode(["hello world"])
    assert many.shape == (1, 384)
    np.testing.assert_array_equal(one, many[0])
    assert minilm.encode([]).shape == (0, 384)


def test_normalize_embeddings_scales_to_unit_length():
    # The fixture has no Normalize module, so the flag is what normalizes.
    model = embgen.Model(str(FIXTURES / "models" / "bert-unigram"))
    raw = model.encode(["a short text", "another, longer text about something"])
    unit = model.encode(["a short text", "another, longer text about something"], normalize_embeddings=True)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_prompts_by_name_and_by_text_match_sentence_transformers():
    rows = [r for r in fixture_reference("nomic-bert") if r["prompt_name"]]
    assert rows, "the nomic fixture has prompted rows"
    folder = FIXTURES / "models" / "nomic-bert"
    model = embgen.Model(str(folder))
    prompts = __import__("json").loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert sorted(model.info()["prompts"]) == sorted(prompts)
    for r in rows:
        by_name = model.encode(r["text"], prompt_name=r["prompt_name"])
        by_text = model.encode(r["text"], prompt=prompts[r["prompt_name"]])
        assert cosine(by_name, r["embedding"]) >= 0.99999
        np.testing.assert_array_equal(by_name, by_text)
    with pytest.raises(ValueError, match="prompt"):
        model.encode("x", prompt_name="no-such-prompt")


def test_cross_encoder_predict_matches_cross_encoder():
    rows = fixture_reference("cross-bert")
    model = embgen.Model(str(FIXTURES / "models" / "cross-bert"))
    pairs = [(r["query"], r["document"]) for r in rows]
    scores = model.predict(pairs)
    assert scores.shape == (len(rows),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, [r["scores"][0] for r in rows], atol=1e-5)
    logits = model.predict(pairs, apply_activation=False)
    np.testing.assert_allclose(logits, [r["logits"][0] for r in rows], atol=3e-5)
    with pytest.raises(ValueError, match="cross-encoder"):
        model.encode("not for a cross-encoder")


def test_several_labels_give_one_row_per_pair():
    rows = fixture_reference("cross-bert-3labels")
    model = embgen.Model(str(FIXTURES / "models" / "cross-bert-3labels"))
    scores = model.predict([(r["query"], r["document"]) for r in rows])
    assert scores.shape == (len(rows), 3)
    np.testing.assert_allclose(scores, [r["scores"] for r in rows], rtol=1e-4, atol=3e-5)


def test_info_describes_the_model(minilm):
    info = minilm.info()
    assert info["architecture"] == "bert"
    assert info["dimensions"] == minilm.dimensions == 384
    assert info["max_seq_length"] == minilm.max_seq_length == 256
    assert info["pooling"] == ["mean"] and info["normalize"] is True
    assert info["threads"] == 2 and info["memory_bytes"] > 80_000_000
    assert info["precision"] == "float32"
    assert "MiniLM" in repr(minilm)


def test_quantized_models_stay_close_to_full_precision(minilm):
    texts = [r["text"] for r in reference("all-MiniLM-L6-v2")]
    full = minilm.encode(texts)
    int8 = embgen.Model(MINILM, threads=2, quantize="int8")
    assert int8.info()["quantize"] == "int8" and int8.info()["precision"].startswith("int8")
    assert int8.info()["memory_bytes"] < 0.3 * minilm.info()["memory_bytes"]
    # The engine's quality gate (crates/engine/tests/quantization.rs) measures more.
    assert worst_cosine(int8.encode(texts), full) >= 0.995


def test_max_seq_length_cuts_long_texts():
    model = embgen.Model(MINILM, max_seq_length=16)
    assert model.max_seq_length == 16
    assert len(model.tokenize("word " * 100)[0]) == 16


def test_errors_are_python_exceptions_with_the_engine_message(tmp_path):
    with pytest.raises(RuntimeError, match="no-such-org/no-such-model"):
        embgen.Model("no-such-org/no-such-model")
    # A complete folder whose architecture the engine does not run.
    folder = tmp_path / "t5"
    __import__("shutil").copytree(FIXTURES / "models" / "bert-unigram", folder)
    (folder / "config.json").write_text('{"model_type": "t5", "architectures": ["T5EncoderModel"]}')
    with pytest.raises(RuntimeError, match="t5"):
        embgen.Model(str(folder))
    with pytest.raises(ValueError):
        embgen.Model(MINILM, quantize="int3")
    with pytest.raises(ValueError, match="string"):
        embgen.Model(MINILM).encode([1, 2, 3])


def test_inference_releases_the_gil_and_is_thread_safe(minilm):
    texts = [r["text"] for r in reference("all-MiniLM-L6-v2")]
    alone = minilm.encode(texts)

    # While the engine computes, Python threads keep running.
    ticks = 0
    done = threading.Event()

    def tick():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.perf_counter()
    minilm.encode(texts * 4)
    elapsed = time.perf_counter() - started
    done.set()
    ticker.join()
    # A held GIL would allow at most a tick or two in the whole encode.
    assert ticks >= max(5, elapsed / 0.001 / 10), (ticks, elapsed)

    # One model, several threads at once: every thread gets the vectors it asked for.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: minilm.encode(texts[i::4]), range(4)))
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, alone[i::4], atol=1e-6)


def test_the_embgen_command_comes_with_the_package(tmp_path):
    script = __import__("shutil").which("embgen")
    assert script is not None and script.startswith(sys.prefix), script
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"embgen {embgen.__version__}"
    bad = subprocess.run([script, "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr

    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\nanother line\n")
    out = tmp_path / "out.jsonl"
    subprocess.run([script, "embed", "--model", MINILM, "--input", str(texts), "--output", str(out)], check=True)
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = embgen.Model(MINILM).encode(["hello world", "another line"])
    assert worst_cosine([r["embedding"] for r in rows], expected) >= 0.999999
