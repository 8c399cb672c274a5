"""Assertion helpers shared by the tests (import as `from helpers import ...`)."""

from __future__ import annotations

import numpy as np


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
