"""embgen's rerank dialects, driven by the clients people already use for them.

The cohere SDK (v1 and v2 clients), LangChain's CohereRerank and LlamaIndex's
CohereRerank, pointed at embgen by their base URL and key, and TEI's and Jina's
shapes over plain HTTP. The model is the engine's cross-encoder fixture
(crates/engine/tests/fixtures/models/cross-bert, a random-weight BERT reranker) and
every score is checked against sentence-transformers' CrossEncoder.predict on it.
"""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from embgen_server import serve

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "engine" / "tests" / "fixtures"
KEY = "rerank-key-51c2"
MODEL = "cross-bert"


def reference():
    rows = [json.loads(line) for line in (FIXTURES / "reference" / f"{MODEL}.jsonl").open()]
    by_query = {}
    for r in rows:
        if r["query"].strip():
            by_query.setdefault(r["query"], []).append((r["document"], r["scores"][0]))
    return by_query


REF = reference()
QUERY, PAIRS = next((q, p) for q, p in REF.items() if len(p) >= 2)
DOCS = [d for d, _ in PAIRS]
SCORES = {d: s for d, s in PAIRS}


@pytest.fixture(scope="module")
def base():
    yield from serve({
        "API_KEY": KEY,
        "MODEL_DIRS": str((FIXTURES / "models").resolve()),
        "DEFAULT_MODEL": MODEL,
    })


def post(url, path, body, key=KEY):
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_ranked(pairs):
    """(document, score) pairs: best first, each score sentence-transformers' own."""
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    for doc, score in pairs:
        assert abs(score - SCORES[doc]) <= 1e-5, (doc, score, SCORES[doc])


def test_cohere_sdk_v1_and_v2(base):
    import cohere

    v1 = cohere.Client(base_url=base, api_key=KEY)
    r = v1.rerank(model=MODEL, query=QUERY, documents=DOCS, return_documents=True)
    assert_ranked([(x.document.text, x.relevance_score) for x in r.results])
    r = v1.rerank(model=MODEL, query=QUERY, documents=DOCS, top_n=1)
    assert len(r.results) == 1
    v2 = cohere.ClientV2(base_url=base, api_key=KEY)
    r = v2.rerank(model=MODEL, query=QUERY, documents=DOCS)
    assert_ranked([(DOCS[x.index], x.relevance_score) for x in r.results])
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(base_url=base, api_key="wrong").rerank(model=MODEL, query=QUERY, documents=DOCS)


def test_langchain_and_llamaindex_cohere_rerankers(base):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    lc = CohereRerank(cohere_api_key=KEY, base_url=base, model=MODEL, top_n=len(DOCS))
    out = lc.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    assert_ranked([(d.page_content, d.metadata["relevance_score"]) for d in out])

    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaCohereRerank

    li = LlamaCohereRerank(api_key=KEY, model=MODEL, top_n=len(DOCS), base_url=base)
    nodes = li.postprocess_nodes(
        [NodeWithScore(node=TextNode(text=d)) for d in DOCS], query_bundle=QueryBundle(QUERY)
    )
    assert_ranked([(n.node.get_content(), n.score) for n in nodes])


def test_tei_and_jina_shapes_over_http(base):
    status, ranks = post(base, "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
    assert status == 200
    assert_ranked([(r["text"], r["score"]) for r in ranks])
    # Jina: documents as objects, results with document.text and usage.total_tokens.
    status, body = post(base, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": [{"text": d} for d in DOCS]})
    assert status == 200
    assert_ranked([(r["document"]["text"], r["relevance_score"]) for r in body["results"]])
    assert body["usage"]["total_tokens"] > 0
    # Errors come in each shape.
    status, body = post(base, "/rerank", {"query": QUERY, "texts": []})
    assert status == 422 and "error" in body and "error_type" in body
    status, body = post(base, "/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0})
    assert status == 400 and "message" in body
    status, body = post(base, "/v1/rerank", {"query": QUERY, "documents": DOCS}, key="wrong")
    assert status == 401
