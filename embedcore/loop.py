"""The retrieval loop a search service runs per request: one query text -> its top-k ids.

Two loops over the same corpus vectors, timed by ``benchmarks/bench_loop.py`` and ``embedcore demo``:

* embedcore: ``Embedder.encode(text)`` -> ``Index.search`` (float32 exact, int8 asymmetric, or binary
  with int8 rescoring);
* the peer: a sentence-transformers model (its best CPU backend of the same fidelity tier, see
  :mod:`embedcore.peers`) -> a FAISS search of the same kind.

:func:`tile_corpus` grows a small set of real embeddings to a large index by perturbed copies, so
the scan costs what a large index costs while the vectors keep the model's geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

K = 10
INDEX_KINDS = ("float32", "int8", "binary x4")


def tile_corpus(base: np.ndarray, n: int, sigma: float = 0.35, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: ``base`` itself first, then noisy copies of its rows in turn.

    Row ``i >= len(base)`` is ``normalize(base[i % len(base)] + sigma * g)`` with ``g`` drawn from
    N(0, I / dim): its cosine to the original is about ``1 / sqrt(1 + sigma**2)`` (0.94 for 0.35), far
    enough apart that copies do not tie, close enough that the corpus keeps the model's directions.

    Args:
        base: (m, dim) float32 embeddings (normalised here).
        n: rows wanted, >= 1.
        sigma: noise scale relative to a unit vector, >= 0.
        seed: seed of the noise (same arguments, same corpus).

    Returns:
        (n, dim) float32, every row of unit norm.
    """
    base = np.asarray(base)
    if base.ndim != 2 or len(base) == 0 or base.dtype != np.float32:
        raise ValueError(f"base must be a non-empty (m, dim) float32 array, got {base.dtype} {base.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    m, dim = base.shape
    unit = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    out = np.empty((n, dim), dtype=np.float32)
    out[: min(n, m)] = unit[: min(n, m)]
    rng = np.random.default_rng(seed)
    for start in range(m, n, m):  # one copy of the base per step: memory stays O(m * dim)
        stop = min(start + m, n)
        copy = unit[: stop - start] + rng.standard_normal((stop - start, dim), dtype=np.float32) * (
            sigma / np.sqrt(dim)
        )
        out[start:stop] = copy / np.linalg.norm(copy, axis=1, keepdims=True)
    return out


def as_query(embedding: Any) -> np.ndarray:
    """One query embedding, as (1, dim) C-contiguous float32 (what FAISS and ``Index.search`` take)."""
    q = np.asarray(embedding, dtype=np.float32)
    return np.ascontiguousarray(q.reshape(1, -1))


def embedcore_loop(embedder: Any, index: Any, k: int = K,
                   **search_kwargs: Any) -> Callable[[str], np.ndarray]:
    """text -> (k,) int64 ids with embedcore: ``embedder.encode(text)`` then ``index.search``."""
    return lambda text: index.search(as_query(embedder.encode(text)), k, **search_kwargs)[1][0]


def peer_loop(model: Any, search: Callable[[np.ndarray], Any]) -> Callable[[str], np.ndarray]:
    """text -> (k,) ids with a sentence-transformers model and a search taking a (1, dim) query.

    ``search`` returns ids, or FAISS's (distances, ids) pair; ids come back as a (k,) array.
    """

    def run(text: str) -> np.ndarray:
        found = search(as_query(model.encode(text)))
        ids = found[1] if isinstance(found, tuple) else found
        return np.asarray(ids).reshape(-1)

    return run


def overlap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean share of ids two loops have in common per query (1.0: the same top-k sets)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equal, non-empty lists of results, got {len(a)} and {len(b)}")
    return float(np.mean([len(np.intersect1d(x, y)) / max(len(x), 1) for x, y in zip(a, b)]))


def exact_peer(available: Callable[[str], bool] | None = None) -> str:
    """The exact-tier sentence-transformers peer to race by default: OpenVINO f32 where OpenVINO is
    installed (the fastest exact backend on x86 CPUs), else ONNX Runtime, else torch."""
    if available is None:
        import importlib.util

        available = lambda name: importlib.util.find_spec(name) is not None
    if available("openvino"):
        return "st-openvino-f32"
    return "st-onnx" if available("onnxruntime") else "st-torch"
