"""The Spark recipe: `embed_partitions` under `mapInPandas` on a local Spark.

Spark runs the function in its own Python workers, one model per partition task, as
it would on a cluster's executors; every vector is checked against `embgen embed`
(the native command) on the same texts, as the Ray test does.
"""

import os
import shutil
import sys

import pytest

from conftest import MINILM, assert_rows_match_workload

pyspark = pytest.importorskip("pyspark")

# Spark is a JVM: without Java there is no Spark to test (scripts/test.sh lists
# skips with their reasons; the machines CI runs on have Java 17).
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17 or later)", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # The workers are this virtualenv's Python, where the wheel is installed.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("embgen-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_map_in_pandas_on_local_spark_matches_embgen(spark, workload):
    import pandas as pd

    texts, _ = workload
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts})
    df = spark.createDataFrame(frame).repartition(2)

    def embed(frames):
        from embgen.ray import embed_partitions

        # One engine thread per task: local[2] runs two tasks at once on two cores.
        yield from embed_partitions(frames, MINILM, threads=1, batch_size=32)

    out = df.mapInPandas(embed, schema="id long, text string, embedding array<float>")
    assert_rows_match_workload(out.collect(), workload)
