"""Assertion helpers shared by the tests (import as `from helpers import ...`)."""

from __future__ import annotations

import numpy as np
from sentence_transformers.util.quantization import quantize_embeddings


def assert_close(actual, expected, atol: float, rtol: float = 0.0, name: str = "value") -> None:
    """allclose that reports the worst element (index, both values, error) on failure."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    if a.size == 0:
        return
    err = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    bad = err > bound
    if bad.any() or np.isnan(a).any() != np.isnan(e).any():
        worst = np.unravel_index(int(np.nanargmax(err - bound)), err.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{a.size} elements off (atol={atol}, rtol={rtol}); worst at "
            f"{tuple(int(i) for i in worst)}: actual {a[worst]!r}, expected {e[worst]!r}, "
            f"error {err[worst]:.3e}"
        )


def assert_codes_match(got, expected_float, precision, ranges, atol) -> None:
    """int8/uint8 codes equal the codes of ``expected_float`` except by exactly 1 where the float lies
    within ``atol`` of the edge between the two buckets; binary bits may flip only within ``atol`` of 0;
    everything else exactly equal."""
    got = np.asarray(got)
    e = np.asarray(expected_float, dtype=np.float32)
    expected = quantize_embeddings(e, precision, ranges=ranges)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if precision in ("binary", "ubinary"):
        gb = np.unpackbits(got.view(np.uint8) ^ (128 if precision == "binary" else 0), axis=-1)
        eb = np.unpackbits(expected.view(np.uint8) ^ (128 if precision == "binary" else 0), axis=-1)
        gb, eb = gb[:, : e.shape[1]], eb[:, : e.shape[1]]
        diff = gb != eb
        assert np.all(np.abs(e[diff]) <= atol), f"sign bits differ away from 0: {e[diff][:5]}"
        return
    g64, e64 = got.astype(np.int64), expected.astype(np.int64)
    diff = g64 != e64
    if not diff.any():
        return
    assert np.all(np.abs(g64 - e64)[diff] == 1), "codes differ by more than 1"
    starts = ranges[0].astype(np.float32)
    steps = (ranges[1] - starts) / np.float32(255)
    steps = np.where(steps == 0, 1, steps)
    offset = 128 if precision == "int8" else 0
    edge = np.maximum(g64, e64)[diff] + offset  # the bucket boundary between the two codes
    cols = np.nonzero(diff)[1]
    edge_value = starts[cols].astype(np.float64) + edge * steps[cols].astype(np.float64)
    dist = np.abs(e[diff].astype(np.float64) - edge_value)
    assert np.all(dist <= atol), f"codes differ by 1 away from a bucket edge (distance {dist.max():.3e})"
