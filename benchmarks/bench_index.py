"""Single-query latency of ``embedcore.Index`` vs FAISS and numpy at the same precision.

The setting: a 10,000 x 384 corpus of unit vectors (the demo's size), k = 10, one query per
call. Formats: float32 (FAISS IndexFlatIP), int8 asymmetric (IndexScalarQuantizer QT_8bit), binary
(IndexBinaryFlat) and binary + int8 rescoring x4 (IndexBinaryFlat + numpy rescoring of the
dequantised int8 candidates). The baselines are :func:`embedcore.demo.baselines`, so the demo's
table and these numbers time the same code. FAISS runs at one thread, as embedcore does for a single
query. Goal: below FAISS's latency (ratio >= 1).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from embedcore.demo import baselines
from embedcore.index import Index

pytest.importorskip("faiss")
QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")
N, DIM, K = (10_000, 384, 10)
# method key of embedcore.demo.baselines -> (Index arguments, search arguments)
METHODS = {
    "float32": ({"precision": "float32"}, {}),
    "int8": ({"precision": "int8"}, {}),
    "binary": ({"precision": "binary"}, {}),
    "x4": ({"precision": "binary", "rescore": "int8"}, {"rescore_multiplier": 4}),
}
_DATA: dict[str, object] = {}


def _data() -> dict[str, object]:
    """Corpus, queries, indexes and baselines, built once per module and shared by all providers."""
    if not _DATA:
        rng = np.random.default_rng(0)
        corpus = rng.standard_normal((N, DIM)).astype(np.float32)
        corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
        queries = rng.standard_normal((64, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        indexes = {}
        for key, (init, _) in METHODS.items():
            indexes[key] = Index(DIM, metric="cos", **init)
            indexes[key].add(corpus)
        fns, _ = baselines(corpus, indexes["int8"].ranges)
        # One thread, as embedcore runs a single query (the demo's latency columns do the same).
        import faiss

        faiss.omp_set_num_threads(1)
        _DATA.update(corpus=corpus, queries=queries, indexes=indexes, baselines=fns)
    return _DATA


@pytest.mark.parametrize("provider", ["embedcore", "faiss", "numpy"])
@pytest.mark.parametrize("method", list(METHODS))
def test_index_single_query(benchmark, method, provider):
    data = _data()
    index = data["indexes"][method]
    search_kw = METHODS[method][1]
    if provider == "embedcore":
        fn = lambda q: index.search(q, K, **search_kw)
    else:
        fn = data["baselines"][method][0 if provider == "faiss" else 1]
    query = data["queries"][:1]
    if method == "float32":
        # Same answer before timing: a fast wrong result must not enter the table.
        expected = data["corpus"] @ query[0]
        found = np.asarray(fn(query)[1] if provider != "numpy" else fn(query)).reshape(-1)
        np.testing.assert_array_equal(found, np.argsort(-expected, kind="stable")[:K])
    shape = f"1x{N}x{DIM} k={K}" + (" rescore x4" if method == "x4" else "")
    benchmark.group = f"index search ({method}): {shape}"
    info = dict(op="index_search", provider=provider, shape=shape, metric="time per query",
                dtype={"float32": "float32", "int8": "int8", "binary": "binary", "x4": "binary+int8"}[method])
    if provider == "embedcore":
        info["goal"] = 1.0
    benchmark.extra_info.update(info)
    if QUICK:
        benchmark.pedantic(fn, args=(query,), rounds=50, warmup_rounds=3)
    else:
        benchmark(fn, query)

