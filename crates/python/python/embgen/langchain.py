"""LangChain ``Embeddings`` backed by an in-process ``embgen.Model``.

Needs ``langchain-core`` (``pip install 'embgen[langchain]'``)::

    from embgen.langchain import EmbgenEmbeddings
    embeddings = EmbgenEmbeddings("nomic-ai/nomic-embed-text-v1.5")
    vector = embeddings.embed_query("what is embgen?")
"""

from typing import List, Optional

from langchain_core.embeddings import Embeddings

from ._embgen import Model

__all__ = ["EmbgenEmbeddings"]


def _prompt_named(model: Model, *names: str) -> Optional[str]:
    """The first of ``names`` the model defines a prompt for, if any."""
    prompts = model.info()["prompts"]
    return next((n for n in names if n in prompts), None)


class EmbgenEmbeddings(Embeddings):
    """Embeds documents and queries with a sentence-transformers model, in this process.

    Queries and documents get the model's own ``query`` and ``document`` prompts when
    its ``config_sentence_transformers.json`` defines them (nomic-embed-text, E5, Qwen3,
    EmbeddingGemma need them); pass the prompt names to choose others. Like
    LangChain's ``HuggingFaceEmbeddings``, vectors are left as the model makes them
    unless ``normalize_embeddings=True``.
    """

    def __init__(
        self,
        model_name: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        model: Optional[Model] = None,
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        query_prompt_name: Optional[str] = None,
        document_prompt_name: Optional[str] = None,
    ) -> None:
        self.model = model if model is not None else Model(model_name, threads=threads, quantize=quantize)
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.query_prompt_name = query_prompt_name or _prompt_named(self.model, "query", "search_query")
        self.document_prompt_name = document_prompt_name or _prompt_named(
            self.model, "document", "passage", "search_document"
        )

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        if not texts:
            return []
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize_embeddings,
            prompt_name=self.document_prompt_name,
        ).tolist()

    def embed_query(self, text: str) -> List[float]:
        return self.model.encode(
            text,
            normalize_embeddings=self.normalize_embeddings,
            prompt_name=self.query_prompt_name,
        ).tolist()
