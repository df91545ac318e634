"""The Ray Data recipe: one embgen.Model per worker over the standard workload.

Every vector is checked against `embgen embed` (the native command) on the same texts.
"""

import numpy as np
import pytest

from conftest import MINILM, assert_rows_match_workload

ray = pytest.importorskip("ray")


def test_map_batches_on_a_local_cluster_matches_embgen(workload):
    from embgen.ray import EmbedBatch

    texts, _ = workload
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
        ds = ds.map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"model": MINILM},
            batch_size=128,
            concurrency=2,
            num_cpus=1,
        )
        rows = ds.take_all()
    finally:
        ray.shutdown()
    assert_rows_match_workload(rows, workload)


def test_embed_batch_takes_pandas_frames_as_spark_gives_them():
    import pandas as pd

    from embgen.ray import EmbedBatch, embed_partitions

    frames = [pd.DataFrame({"text": ["a b c", "d e"]}), pd.DataFrame({"text": ["f"]})]
    out = list(embed_partitions(iter(frames), MINILM, threads=1))
    assert [len(f) for f in out] == [2, 1]
    assert all(len(v) == 384 for f in out for v in f["embedding"])
    direct = EmbedBatch(MINILM, threads=1)({"text": np.array(["f"], dtype=object)})
    np.testing.assert_allclose(out[1]["embedding"][0], direct["embedding"][0], atol=1e-6)
