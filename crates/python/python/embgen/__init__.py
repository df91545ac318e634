"""embgen: sentence embeddings and reranking on the CPU, faithful to sentence-transformers.

``embgen.Model`` runs the engine in this process::

    import embgen
    model = embgen.Model("sentence-transformers/all-MiniLM-L6-v2")
    vectors = model.encode(["a sentence", "another"])   # float32, shape (2, 384)

The ``embgen`` command (``embgen serve``, ``embgen embed``, ...) comes with the
package. Integrations are optional modules: ``embgen.langchain``,
``embgen.llama_index`` and ``embgen.ray``.
"""

from ._embgen import Model, __version__

__all__ = ["Model", "__version__"]
