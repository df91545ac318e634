"""Embedding a corpus on Ray Data (or Spark): one ``embgen.Model`` per worker.

``EmbedBatch`` is a callable class for ``Dataset.map_batches``: Ray builds one per
actor, so each worker loads the model once and embeds every batch it is given with
as many engine threads as Ray assigned it CPUs::

    import ray
    from embgen.ray import EmbedBatch

    ds = ray.data.read_json("corpus.jsonl")                   # a "text" column
    ds = ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"model": "sentence-transformers/all-MiniLM-L6-v2"},
        batch_size=256,
        concurrency=4,          # four actors ...
        num_cpus=2,             # ... of two CPUs each: threads=2 in each model
    )
    ds.write_parquet("embeddings/")

Nothing here imports Ray: the same class serves a Spark ``mapInPandas`` (see
``embed_partitions``) or any loop over pandas frames or dicts of arrays.
"""

from typing import Any, Dict, Iterable, Iterator, Optional

import numpy as np

from ._embgen import Model

__all__ = ["EmbedBatch", "embed_partitions"]


def _assigned_cpus() -> Optional[int]:
    """The CPUs Ray gave this worker, or None outside Ray (the engine then uses all cores)."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else None


class EmbedBatch:
    """Adds an ``embedding`` column to each batch (a dict of numpy arrays or a pandas frame)."""

    def __init__(
        self,
        model: str,
        *,
        column: str = "text",
        output_column: str = "embedding",
        threads: Optional[int] = None,
        quantize: Optional[str] = None,
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        prompt_name: Optional[str] = None,
    ) -> None:
        self.model = Model(model, threads=threads or _assigned_cpus(), quantize=quantize)
        self.column = column
        self.output_column = output_column
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.prompt_name = prompt_name

    def __call__(self, batch: Any) -> Any:
        texts = [str(t) for t in batch[self.column]]
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize_embeddings,
            prompt_name=self.prompt_name,
        )
        if hasattr(batch, "assign"):
            # pandas: one array per row, which Arrow and Spark store as a list column.
            return batch.assign(**{self.output_column: list(vectors)})
        out: Dict[str, Any] = dict(batch)
        out[self.output_column] = np.asarray(vectors, dtype=np.float32)
        return out


def embed_partitions(frames: Iterable[Any], model: str, **kwargs: Any) -> Iterator[Any]:
    """For Spark's ``mapInPandas``: loads the model once per partition task, embeds each frame.

    ``df.mapInPandas(lambda it: embed_partitions(it, "sentence-transformers/all-MiniLM-L6-v2"),
    schema="text string, embedding array<float>")``
    """
    embed = EmbedBatch(model, **kwargs)
    for frame in frames:
        out = embed(frame)
        out[embed.output_column] = [v.tolist() for v in out[embed.output_column]]
        yield out
