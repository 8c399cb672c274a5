"""Exact row-wise top-k (``embedcore.topk``, native heaps) vs numpy argpartition + sort and torch.topk.

Same float32 score matrix for every provider; numpy and torch share its memory (``torch.from_numpy``),
so no provider pays for a copy. embedcore and torch run on the same number of threads
(``torch.get_num_threads()``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import embedcore as ec

QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")

# (rows, columns, k): one query over a large corpus, a query batch, a large k.
SHAPES = [(1, 200_000, 10), (16, 50_000, 10), (16, 50_000, 1000)] if QUICK else \
         [(1, 1_000_000, 10), (64, 200_000, 10), (64, 200_000, 1000)]
_SCORES: dict[tuple[int, int], np.ndarray] = {}


def _scores(rows: int, cols: int) -> np.ndarray:
    """Cosine-like scores, built once per shape and shared by all providers."""
    if (rows, cols) not in _SCORES:
        rng = np.random.default_rng(0)
        _SCORES[rows, cols] = rng.uniform(-1.0, 1.0, size=(rows, cols)).astype(np.float32)
    return _SCORES[rows, cols]


def numpy_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The usual numpy idiom: argpartition for the k best, then sort those k."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(part, order, axis=1)


def torch_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.topk(scores, k, dim=1, largest=True, sorted=True)


PROVIDERS = {
    "embedcore": lambda s, k: ec.topk(s, k),
    "numpy": numpy_topk,
    "torch": lambda s, k: torch_topk(torch.from_numpy(s), k),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("rows,cols,k", SHAPES, ids=[f"{r}x{c}-k{k}" for r, c, k in SHAPES])
def test_topk(benchmark, provider, rows, cols, k):
    scores = _scores(rows, cols)
    fn = PROVIDERS[provider]
    # Same answer before timing: a fast wrong result must not enter the table.
    np.testing.assert_array_equal(np.asarray(fn(scores, k)[0]), numpy_topk(scores, k)[0])
    benchmark.group = f"topk: {rows}x{cols} k={k}"
    benchmark.extra_info.update(op="topk", provider=provider, shape=f"{rows}x{cols} k={k}", dtype="float32",
                                metric="time per call")
    benchmark(fn, scores, k)
