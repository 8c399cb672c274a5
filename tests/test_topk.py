"""embedcore.topk against a numpy stable-sort reference, with heavy ties and every ISA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedcore as ec
from embedcore import _backend
from embedcore.ops.topk import topk_reference


def _expected(scores: np.ndarray, k: int, largest: bool):
    return topk_reference(scores, k, largest)


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize(
    "shape,k", [((1, 1), 1), ((3, 17), 5), ((7, 1000), 10), ((64, 257), 257), ((2, 5003), 1000)]
)
@pytest.mark.parametrize("levels", [None, 3, 16])
def test_topk_matches_numpy(rng, shape, k, largest, levels):
    if levels is None:
        scores = rng.standard_normal(shape).astype(np.float32)
    else:  # heavy ties: values drawn from a few levels
        scores = rng.integers(0, levels, size=shape).astype(np.float32)
    values, indices = ec.topk(scores, k, largest=largest)
    ev, ei = _expected(scores, k, largest)
    np.testing.assert_array_equal(values, ev)
    np.testing.assert_array_equal(indices, ei)  # tie rule: lower index first, so exact equality


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.int32, np.uint8])
def test_topk_dtypes_keep_input_dtype(rng, dtype):
    scores = rng.integers(-50, 50, size=(5, 300)).astype(dtype)
    values, indices = ec.topk(scores, 7)
    ev, ei = _expected(scores, 7, True)
    assert values.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(values, ev)
    np.testing.assert_array_equal(indices, ei)


def test_topk_torch_in_torch_out(rng):
    scores = torch.from_numpy(rng.integers(0, 4, size=(6, 99)).astype(np.float32)).to(torch.bfloat16)
    values, indices = ec.topk(scores, 9)
    assert isinstance(values, torch.Tensor) and values.dtype == torch.bfloat16
    assert indices.dtype == torch.int64
    ev, ei = _expected(scores.float().numpy(), 9, True)
    np.testing.assert_array_equal(values.float().numpy(), ev)
    np.testing.assert_array_equal(indices.numpy(), ei)


def test_topk_non_contiguous_input(rng):
    base = rng.integers(0, 5, size=(40, 30)).astype(np.float32)
    view = base.T[::2]  # strided view: must be copied, not read with wrong strides
    values, indices = ec.topk(view, 4)
    ev, ei = _expected(np.ascontiguousarray(view), 4, True)
    np.testing.assert_array_equal(values, ev)
    np.testing.assert_array_equal(indices, ei)


def test_topk_infinities_are_ranked(rng):
    scores = np.array([[1.0, np.inf, -np.inf, 0.0, np.inf]], dtype=np.float32)
    values, indices = ec.topk(scores, 5)
    np.testing.assert_array_equal(values, [[np.inf, np.inf, 1.0, 0.0, -np.inf]])
    np.testing.assert_array_equal(indices, [[1, 4, 0, 3, 2]])
    _, indices = ec.topk(scores, 2, largest=False)
    np.testing.assert_array_equal(indices, [[2, 3]])


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_topk_thread_count_does_not_change_results(rng, monkeypatch, threads):
    # 1 row x many columns takes the split-row path (rows under 2^18 scores per thread stay on one
    # thread); ties straddle the thread chunks.
    scores = rng.integers(0, 3, size=(1, 800_000)).astype(np.float32)
    monkeypatch.setenv("EMBEDCORE_NUM_THREADS", threads)
    values, indices = ec.topk(scores, 50)
    ev, ei = _expected(scores, 50, True)
    np.testing.assert_array_equal(indices, ei)
    np.testing.assert_array_equal(values, ev)


@pytest.mark.parametrize("isa", _backend.CPU_ISAS)
def test_topk_same_on_every_isa(rng, isa):
    native = _backend.require_native()
    if isa not in native.available_isas():
        pytest.skip(f"{isa} not available on this CPU/build")
    before = native.isa()
    try:
        native.set_isa(isa)
        scores = rng.integers(0, 8, size=(9, 777)).astype(np.float32)
        _, indices = ec.topk(scores, 33)
        np.testing.assert_array_equal(indices, _expected(scores, 33, True)[1])
    finally:
        native.set_isa(before)


def test_topk_reference_backend_agrees(rng, monkeypatch):
    scores = rng.integers(0, 4, size=(4, 50)).astype(np.float32)
    native = ec.topk(scores, 6)
    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    ref = ec.topk(scores, 6)
    ref_t = ec.topk(torch.from_numpy(scores), 6)
    for a, b in zip(native, ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref_t[1].numpy(), native[1])


@pytest.mark.parametrize(
    "scores,k,error,match",
    [
        (np.zeros((2, 5), np.float32), 0, ValueError, r"k must be in \[1, 5\]"),
        (np.zeros((2, 5), np.float32), 6, ValueError, r"k must be in \[1, 5\]"),
        (np.zeros((5,), np.float32), 1, ValueError, "scores must be 2-D"),
        (np.zeros((2, 3, 4), np.float32), 1, ValueError, "scores must be 2-D"),
        (np.array([[1.0, np.nan, 0.0]], np.float32), 1, ValueError, "NaN"),
        (np.zeros((2, 5), np.float32), 2.0, TypeError, "k must be an int"),
        ([[1.0, 2.0]], 1, TypeError, "scores must be a numpy array or a torch tensor"),
        (np.zeros((2, 5), np.complex64), 1, TypeError, "unsupported dtype"),
    ],
)
def test_topk_bad_input(scores, k, error, match):
    with pytest.raises(error, match=match):
        ec.topk(scores, k)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_topk_nan_in_split_row_path(monkeypatch, threads):
    monkeypatch.setenv("EMBEDCORE_NUM_THREADS", threads)
    scores = np.zeros((1, 800_000), np.float32)
    scores[0, 731_234] = np.nan  # in the second thread's chunk
    with pytest.raises(ValueError, match="NaN"):
        ec.topk(scores, 3)
