"""The LangChain and LlamaIndex integrations, driven through the real packages."""

import numpy as np

import embgen
from conftest import FIXTURES, cosine, reference, worst_cosine

ROWS = reference("all-MiniLM-L6-v2")
TEXTS = [r["text"] for r in ROWS]


def test_langchain_embeddings(minilm):
    from langchain_core.embeddings import Embeddings

    from embgen.langchain import EmbgenEmbeddings

    embeddings = EmbgenEmbeddings(model=minilm)
    assert isinstance(embeddings, Embeddings)
    docs = embeddings.embed_documents(TEXTS)
    assert isinstance(docs, list) and isinstance(docs[0], list) and isinstance(docs[0][0], float)
    assert worst_cosine(docs, [r["embedding"] for r in ROWS]) >= 0.99999
    query = embeddings.embed_query(TEXTS[3])
    assert cosine(query, ROWS[3]["embedding"]) >= 0.99999
    assert embeddings.embed_documents([]) == []


def test_langchain_uses_the_models_query_and_document_prompts():
    from embgen.langchain import EmbgenEmbeddings

    model = embgen.Model(str(FIXTURES / "models" / "nomic-bert"))
    embeddings = EmbgenEmbeddings(model=model, query_prompt_name="search_query", document_prompt_name="search_document")
    query = embeddings.embed_query("what is rust")
    np.testing.assert_allclose(query, model.encode("search_query: what is rust", prompt=""), atol=1e-6)
    doc = embeddings.embed_documents(["rust is a language"])[0]
    np.testing.assert_allclose(doc, model.encode("search_document: rust is a language", prompt=""), atol=1e-6)


def test_langchain_vector_store_search(minilm):
    from langchain_core.vectorstores import InMemoryVectorStore

    from embgen.langchain import EmbgenEmbeddings

    store = InMemoryVectorStore(EmbgenEmbeddings(model=minilm))
    store.add_texts(TEXTS)
    hits = store.similarity_search(TEXTS[7], k=1)
    assert hits[0].page_content == TEXTS[7]


def test_llama_index_embedding(minilm):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from embgen.llama_index import EmbgenEmbedding

    embed = EmbgenEmbedding(model=minilm, embed_batch_size=8)
    assert isinstance(embed, BaseEmbedding)
    assert embed.class_name() == "EmbgenEmbedding"
    vectors = embed.get_text_embedding_batch(TEXTS)
    assert worst_cosine(vectors, [r["embedding"] for r in ROWS]) >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = embed.get_query_embedding(TEXTS[0])
    assert cosine(query, ROWS[0]["embedding"]) >= 0.99999


def test_llama_index_vector_index_retrieves():
    from llama_index.core import Document, VectorStoreIndex

    from embgen.llama_index import EmbgenEmbedding

    embed = EmbgenEmbedding("sentence-transformers/all-MiniLM-L6-v2", threads=1)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS[:20]], embed_model=embed)
    nodes = index.as_retriever(similarity_top_k=1).retrieve(TEXTS[5])
    assert nodes[0].node.get_content() == TEXTS[5]
