"""LlamaIndex ``BaseEmbedding`` backed by an in-process ``embgen.Model``.

Needs ``llama-index-core`` (``pip install 'embgen[llama-index]'``)::

    from llama_index.core import Settings
    from embgen.llama_index import EmbgenEmbedding
    Settings.embed_model = EmbgenEmbedding("BAAI/bge-small-en-v1.5")
"""

from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from ._embgen import Model

__all__ = ["EmbgenEmbedding"]


class EmbgenEmbedding(BaseEmbedding):
    """Embeds queries and texts with a sentence-transformers model, in this process.

    Like LlamaIndex's ``HuggingFaceEmbedding``, vectors are normalized by default and
    the model's ``query``/``document`` prompts are used when it defines them.
    """

    threads: Optional[int] = Field(default=None, description="Threads for the engine (None: all cores).")
    quantize: Optional[str] = Field(default=None, description="Weight precision, as the server's QUANTIZE.")
    normalize: bool = Field(default=True, description="Scale each vector to unit length.")
    query_prompt_name: Optional[str] = Field(default=None, description="Prompt for queries.")
    text_prompt_name: Optional[str] = Field(default=None, description="Prompt for texts (documents).")

    _model: Any = PrivateAttr()

    def __init__(
        self,
        model_name: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        model: Optional[Model] = None,
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        normalize: bool = True,
        embed_batch_size: int = 32,
        query_prompt_name: Optional[str] = None,
        text_prompt_name: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        loaded = model if model is not None else Model(model_name, threads=threads, quantize=quantize)
        prompts = loaded.info()["prompts"]
        if query_prompt_name is None:
            query_prompt_name = next((n for n in ("query", "search_query") if n in prompts), None)
        if text_prompt_name is None:
            text_prompt_name = next((n for n in ("document", "passage", "search_document") if n in prompts), None)
        super().__init__(
            model_name=model_name,
            embed_batch_size=embed_batch_size,
            threads=threads,
            quantize=quantize,
            normalize=normalize,
            query_prompt_name=query_prompt_name,
            text_prompt_name=text_prompt_name,
            **kwargs,
        )
        self._model = loaded

    @classmethod
    def class_name(cls) -> str:
        return "EmbgenEmbedding"

    def _encode(self, texts: List[str], prompt_name: Optional[str]) -> List[List[float]]:
        return self._model.encode(
            texts,
            batch_size=self.embed_batch_size,
            normalize_embeddings=self.normalize,
            prompt_name=prompt_name,
        ).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encode([query], self.query_prompt_name)[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._encode([text], self.text_prompt_name)[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encode(texts, self.text_prompt_name)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)
