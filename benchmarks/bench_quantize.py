"""``ec.quantize`` / ``ec.quantization_ranges`` vs sentence-transformers' ``quantize_embeddings`` (and
its numpy min/max calibration) on the same float32 numpy embeddings. CPU; goal: not slower. On a CUDA
machine a tensor case also times the Triton quantize kernel against the torch expression."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sentence_transformers.util.quantization import quantize_embeddings

import embedcore as ec

QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")
ROUNDS = 15 if QUICK else 30  # fixed rounds: the slow baselines must not stretch the suite

SHAPES = [(20_000, 384)] if QUICK else [(200_000, 384), (50_000, 1024)]
PRECISIONS = ["int8", "uint8", "binary", "ubinary"]
_DATA: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _embeddings(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm float32 embeddings and their ranges, built once per shape and shared by providers."""
    if (n, dim) not in _DATA:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        _DATA[n, dim] = x, np.vstack((x.min(0), x.max(0)))
    return _DATA[n, dim]


def _ids(shapes):
    return [f"{n}x{d}" for n, d in shapes]


@pytest.mark.parametrize("provider", ["embedcore", "sentence-transformers"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n,dim", SHAPES, ids=_ids(SHAPES))
def test_quantize_cpu(benchmark, provider, precision, n, dim):
    x, ranges = _embeddings(n, dim)
    kwargs = {"ranges": ranges} if precision in ("int8", "uint8") else {}
    if provider == "embedcore":
        fn = lambda: ec.quantize(x, precision, **kwargs)
    else:
        fn = lambda: quantize_embeddings(x, precision, **kwargs)
    np.testing.assert_array_equal(fn(), quantize_embeddings(x, precision, **kwargs))
    benchmark.group = f"quantize: {precision} {n}x{dim} (CPU)"
    benchmark.extra_info.update(op="quantize", provider=provider, shape=f"{n}x{dim}", dtype="float32",
                                metric="time per call")
    if provider == "embedcore":
        benchmark.extra_info["goal"] = 1.0
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("provider", ["embedcore", "numpy"])
@pytest.mark.parametrize("n,dim", SHAPES, ids=_ids(SHAPES))
def test_quantization_ranges_cpu(benchmark, provider, n, dim):
    x, ranges = _embeddings(n, dim)
    if provider == "embedcore":
        fn = lambda: ec.quantization_ranges(x)
    else:  # sentence-transformers' calibration
        fn = lambda: np.vstack((np.min(x, axis=0), np.max(x, axis=0)))
    np.testing.assert_array_equal(fn(), ranges)
    benchmark.group = f"quantize: ranges (column min/max) {n}x{dim} (CPU)"
    benchmark.extra_info.update(op="quantize", provider=provider, shape=f"{n}x{dim} ranges", dtype="float32",
                                metric="time per call")
    if provider == "embedcore":
        benchmark.extra_info["goal"] = 1.0
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("provider", ["embedcore", "torch"])
@pytest.mark.parametrize("n,dim", SHAPES, ids=_ids(SHAPES))
def test_quantize_cuda(benchmark, provider, n, dim):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from embedcore.ops.quantize import bucket_params

    x, ranges = (torch.from_numpy(a).cuda() for a in _embeddings(n, dim))
    starts, steps = bucket_params(ranges)

    def embedcore():
        out = ec.quantize(x, "int8", ranges=ranges)
        torch.cuda.synchronize()
        return out

    def eager():
        out = (torch.floor((x - starts) / steps).clamp(0, 255) - 128).to(torch.int8)
        torch.cuda.synchronize()
        return out

    assert torch.equal(embedcore(), eager())
    benchmark.group = f"quantize: int8 {n}x{dim} (CUDA)"
    benchmark.extra_info.update(op="quantize", provider=provider, shape=f"{n}x{dim}", dtype="float32",
                                metric="time per call")
    # GPU calls take milliseconds: more rounds for stable medians.
    benchmark.pedantic(embedcore if provider == "embedcore" else eager, rounds=4 * ROUNDS, warmup_rounds=2)


@pytest.mark.parametrize("provider", ["embedcore", "numpy"])
@pytest.mark.parametrize("precision", ["ubinary", "int8"])
def test_quantize_one_row(benchmark, provider, precision):
    # One query per call (the search loop): per-call overhead against the bare numpy expression.
    x, ranges = _embeddings(1_000, 384)
    q = x[:1].copy()
    if provider == "embedcore":
        fn = (lambda: ec.quantize(q, "ubinary")) if precision == "ubinary" else (
            lambda: ec.quantize(q, "int8", ranges=ranges))
    elif precision == "ubinary":
        fn = lambda: np.packbits(q > 0, axis=-1)
    else:
        fn = lambda: quantize_embeddings(q, "int8", ranges=ranges)
    np.testing.assert_array_equal(fn(), quantize_embeddings(q, precision, ranges=ranges))
    benchmark.group = f"quantize: {precision} 1x384 (CPU)"
    benchmark.extra_info.update(op="quantize", provider=provider, shape="1x384", dtype="float32",
                                metric="time per call")
    if provider == "embedcore":
        benchmark.extra_info["goal"] = 1.0
    benchmark.pedantic(fn, rounds=200, iterations=10, warmup_rounds=5)
