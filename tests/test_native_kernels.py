"""The per-ISA distance primitives of embedcore._C against numpy, on every ISA this CPU has."""

from __future__ import annotations

import numpy as np
import pytest

from embedcore import _backend

from helpers import assert_close


def _pairwise(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs scores with the kernel level the `isa` fixture switched to."""
    return _backend.require_native().pairwise(kind, a, b)


DIMS = [1, 7, 16, 31, 33, 64, 100, 384, 1000]


@pytest.mark.parametrize("d", DIMS)
def test_float_kernels(isa, rng, d):
    a = rng.standard_normal((5, d)).astype(np.float32)
    b = rng.standard_normal((9, d)).astype(np.float32)
    ref_dot = a.astype(np.float64) @ b.T.astype(np.float64)
    ref_l2 = ((a[:, None, :].astype(np.float64) - b[None].astype(np.float64)) ** 2).sum(-1)
    tol = 1e-5 * np.sqrt(d) * 4
    assert_close(_pairwise("dot_f32", a, b), ref_dot, atol=tol, rtol=1e-5, name="dot_f32")
    assert_close(_pairwise("l2sq_f32", a, b), ref_l2, atol=tol, rtol=1e-5, name="l2sq_f32")


@pytest.mark.parametrize("d", DIMS)
def test_int8_dot_is_exact(isa, rng, d):
    a = rng.integers(-128, 128, size=(4, d), dtype=np.int8)
    b = rng.integers(-128, 128, size=(6, d), dtype=np.int8)
    a[0] = -128  # extremes: -128 * -128 must not overflow the int16 products
    b[0] = -128
    out = _pairwise("dot_i8", a, b)
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b.T.astype(np.int64))


@pytest.mark.parametrize("nbytes", [1, 3, 8, 9, 48, 64, 65, 130])
def test_hamming_is_exact(isa, rng, nbytes):
    a = rng.integers(0, 256, size=(4, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, size=(5, nbytes), dtype=np.uint8)
    ref = np.unpackbits(a[:, None, :] ^ b[None], axis=-1).sum(-1)
    np.testing.assert_array_equal(_pairwise("hamming", a, b), ref)


def test_pairwise_rejects_bad_input():
    native = _backend.require_native()
    with pytest.raises(ValueError, match="a has dim 3, b has dim 4"):
        native.pairwise("dot_f32", np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="unknown kind"):
        native.pairwise("cosine", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="unknown ISA"):
        native.set_isa("sse9")
