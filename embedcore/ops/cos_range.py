"""Cosine inputs of any finite magnitude: rows scaled by powers of two before float32 arithmetic.

Scaling a row by a power of two is exact (barring underflow far below the row's largest value), so
it changes no cosine; it keeps float32 square sums (the native kernels' row norms) and float64 query
norms finite for rows of huge values, which would otherwise score 0.
"""

from __future__ import annotations

import numpy as np


def _pow2_exponents(rowmax: np.ndarray) -> np.ndarray:
    """Exponents ``e`` (int) with ``rowmax * 2**-e`` in [0.5, 1) (0 for zero rows)."""
    return np.frexp(rowmax)[1]


def unit_rows(x64: np.ndarray, eps: float) -> np.ndarray:
    """float64 (n, dim) rows divided by their norms clamped at ``eps`` (``torch.nn.functional.normalize``).

    Each row is scaled to a largest value in [0.5, 1) first, so its square sum cannot overflow; the
    quotients are the same as ``x64 / |x64|`` wherever that does not overflow.
    """
    exps = _pow2_exponents(np.abs(x64).max(axis=1, keepdims=True))
    unit = np.ldexp(x64, -exps)
    unorm = np.linalg.norm(unit, axis=1, keepdims=True)
    tiny = np.ldexp(unorm, exps) < eps
    return np.where(tiny, x64 / eps, unit / np.where(unorm > 0, unorm, 1.0))


def cos_safe_corpus(c: np.ndarray) -> np.ndarray | None:
    """None when every row of float ``c`` (N, dim) has a finite float32 square sum (the native cos
    kernel sums squares in float32), else a float32 copy whose rows of huge values are scaled by a
    power of two (exact: cosines unchanged).

    Called only after the native scan reported a non-finite score, so its full read of ``c`` is
    never on the common path.
    """
    # Values under sqrt(FLT_MAX / dim) / 2 keep a float32 square sum finite.
    limit = np.sqrt(np.finfo(np.float32).max / c.shape[1]) / 2
    rowmax = np.abs(c).max(axis=1)
    big = np.flatnonzero(rowmax >= limit)
    if big.size == 0:
        return None
    scaled = c.astype(np.float32)
    scaled[big] = np.ldexp(c[big], -_pow2_exponents(rowmax[big])[:, None]).astype(np.float32)
    return scaled
