"""Cosine inputs of any finite magnitude: rows scaled by powers of two before float32 arithmetic.

Scaling a row by a power of two is exact (barring underflow far below the row's largest value), so
it changes no cosine; it keeps float32 square sums (the native kernels' row norms) and float64 query
norms finite for rows of huge values, which would otherwise score 0.
"""

from __future__ import annotations

import numpy as np

# Corpora up to this size are range-checked with numpy (cache-resident, no thread start-up).
_SMALL_CORPUS_BYTES = 16 << 20


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
    kernel sums squares in float32), else a float32 copy whose other rows are scaled by a power of
    two (exact: cosines unchanged).

    The common case costs one read pass over ``c`` (numpy's min and max while it fits in cache,
    a multithreaded ``torch.aminmax`` beyond): about one memory-bound scan, so a single-query cos
    search over a corpus far beyond the caches takes up to twice as long as the scan alone. Only the
    native kernel could flag an infinite square sum for free.
    """
    # Values under sqrt(FLT_MAX / dim) / 2 keep a float32 square sum finite.
    limit = np.sqrt(np.finfo(np.float32).max / c.shape[1]) / 2
    if c.nbytes <= _SMALL_CORPUS_BYTES:
        low, high = c.min(), c.max()
    else:
        import warnings

        import torch

        with warnings.catch_warnings():  # a read-only memory map: only read here
            warnings.simplefilter("ignore", UserWarning)
            low, high = torch.aminmax(torch.from_numpy(c))
    if max(float(high), -float(low)) < limit:
        return None
    rowmax = np.abs(c).max(axis=1)
    big = np.flatnonzero(rowmax >= limit)
    scaled = c.astype(np.float32)
    scaled[big] = np.ldexp(c[big], -_pow2_exponents(rowmax[big])[:, None]).astype(np.float32)
    return scaled
