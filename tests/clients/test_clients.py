"""embgen's OpenAI, TEI and Ollama dialects, driven by those ecosystems' real clients.

Why this exists: most users point an existing client at embgen rather than writing
HTTP by hand, so the proof that a dialect works is that client, unmodified, getting
the same vectors sentence-transformers computes. The server is the real binary
(target/release/embgen) on 127.0.0.1 with an API key, all-MiniLM-L6-v2 laid out as a
Hugging Face cache (scripts/fetch-test-models.sh), and MAX_BATCH_SIZE=8 so that every
32-input request must be split internally.
"""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from embgen_server import serve

ROOT = Path(__file__).resolve().parents[2]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
KEY = "test-key-7f3a"


def reference():
    folder = Path(os.environ.get("EMBGEN_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
    return [json.loads(line) for line in (folder / "all-MiniLM-L6-v2.jsonl").open()]


REF = reference()
TEXTS = [r["text"] for r in REF]


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_matches_reference(vectors, rows=REF):
    assert len(vectors) == len(rows)
    worst = min(cosine(v, r["embedding"]) for v, r in zip(vectors, rows))
    assert worst >= 0.99999, worst


@pytest.fixture(scope="session")
def server():
    yield from serve({"API_KEY": f"other-key,{KEY}", "MAX_BATCH_SIZE": "8"})


def raw(base, method, path, body=None, key=KEY):
    req = urllib.request.Request(f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# --- OpenAI ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_client(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)


def test_openai_default_base64(openai_client):
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    r = openai_client.embeddings.create(model=MINILM, input=TEXTS)
    assert r.object == "list" and r.model == MINILM
    assert [d.index for d in r.data] == list(range(len(TEXTS)))
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(row["tokens"] for row in REF)
    assert_matches_reference([d.embedding for d in r.data])


def test_openai_float_and_single_string(openai_client):
    r = openai_client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:32], encoding_format="float")
    assert_matches_reference([d.embedding for d in r.data], REF[:32])
    one = openai_client.embeddings.create(model=MINILM, input=TEXTS[3], user="someone")
    assert_matches_reference([one.data[0].embedding], REF[3:4])


def test_openai_dimensions_keep_the_first_and_renormalize(openai_client):
    r = openai_client.embeddings.create(model=MINILM, input=TEXTS[:4], dimensions=128)
    for d, row in zip(r.data, REF[:4]):
        v = np.asarray(d.embedding)
        assert v.shape == (128,)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        assert cosine(v, row["embedding"][:128]) >= 0.99999


def test_openai_errors(openai_client, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length"):
        openai_client.embeddings.create(model=MINILM, input=[[1820, 374, 264]])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        openai_client.embeddings.create(model=MINILM, input="x", dimensions=1000)
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="nobody/no-such-model", input="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong").embeddings.create(model=MINILM, input="x")
    status, body = raw(server, "POST", "/v1/embeddings", {"input": "x"}, key=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key" and body["error"]["type"]


def test_openai_models(openai_client):
    ids = [m.id for m in openai_client.models.list().data]
    assert MINILM in ids


# --- Ollama ---------------------------------------------------------------------


def test_ollama_embed(server):
    import ollama

    client = ollama.Client(host=server, headers={"Authorization": f"Bearer {KEY}"})
    r = client.embed(model=MINILM, input=TEXTS)
    assert r.model == MINILM
    assert r.prompt_eval_count == sum(row["tokens"] for row in REF)
    assert r.total_duration > 0
    assert_matches_reference(r.embeddings)
    one = client.embed(model=MINILM, input=TEXTS[0], dimensions=64)
    assert len(one.embeddings[0]) == 64


def test_ollama_errors(server):
    import ollama

    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=server, headers={"Authorization": "Bearer wrong"}).embed(model=MINILM, input="x")
    assert e.value.status_code == 401
    client = ollama.Client(host=server, headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="nobody/no-such-model", input="x")
    assert e.value.status_code == 404
    long = " ".join(["word"] * 400)
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model=MINILM, input=long, truncate=False)
    assert e.value.status_code == 413
    assert len(client.embed(model=MINILM, input=long).embeddings[0]) == 384


# --- TEI ------------------------------------------------------------------------


def test_tei_inference_client(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=server, token=KEY)
    vectors = client.feature_extraction(TEXTS[:32])
    assert vectors.shape == (32, 384)
    assert_matches_reference(list(vectors), REF[:32])
    single = client.feature_extraction(TEXTS[40])
    assert_matches_reference([np.asarray(single).reshape(-1)], REF[40:41])


def test_tei_routes(server):
    status, vectors = raw(server, "POST", "/embed", {"inputs": TEXTS[:5], "truncate": True})
    assert status == 200
    assert_matches_reference(vectors, REF[:5])
    status, tokens = raw(server, "POST", "/tokenize", {"inputs": TEXTS[:3]})
    assert status == 200
    for toks, row in zip(tokens, REF[:3]):
        assert [t["id"] for t in toks] == row["input_ids"][: len(toks)]
        assert toks[0]["special"] is True
    status, info = raw(server, "GET", "/info")
    assert status == 200 and info["model_id"] == MINILM and info["max_input_length"] == 256
    # Left truncation keeps the end of a long text.
    long = "start " + " ".join(["middle"] * 400) + " finish"
    status, (left,) = raw(server, "POST", "/embed", {"inputs": long, "truncation_direction": "Left"})
    status, (right,) = raw(server, "POST", "/embed", {"inputs": long})
    assert cosine(left, right) < 0.9999
    status, body = raw(server, "POST", "/embed", {"inputs": long, "truncate": False})
    assert status == 413 and body["error_type"] == "Validation"
    status, body = raw(server, "POST", "/embed", {"inputs": "x"}, key=None)
    assert status == 401 and body["error_type"] == "Unauthorized"


# --- Keys on every route ---------------------------------------------------------


def test_every_route_but_health_needs_the_key(server):
    assert raw(server, "GET", "/health", key=None)[0] == 200
    for method, path in [("GET", "/"), ("POST", "/embeddings"), ("GET", "/model/info"), ("GET", "/metrics"),
                         ("GET", "/v1/models"), ("POST", "/api/embed"), ("GET", "/info"), ("GET", "/openapi.json")]:
        status, body = raw(server, method, path, {"texts": ["x"]} if method == "POST" else None, key=None)
        assert status == 401, (path, status, body)
    status, body = raw(server, "POST", "/embeddings", {"texts": TEXTS[:32]})
    assert status == 200 and len(body["embeddings"]) == 32
