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


def test_levels_are_named_for_their_requirements():
    # avx512 asks only AVX-512 F/BW/VL (float and int8 kernels, as on Skylake-SP / Cascade Lake);
    # VPOPCNTDQ makes a level of its own for the popcount kernels; VNNI is a run-time extension.
    native = _backend.require_native()
    compiled, available = native.compiled_isas(), native.available_isas()
    assert list(compiled) == [isa for isa in _backend.CPU_ISAS if isa in compiled]
    assert list(available) == [isa for isa in compiled if isa in available]
    assert ("avx512" in compiled) == ("avx512_vpopcnt" in compiled)
    assert native.best_isa() == available[-1]
    with pytest.raises(ValueError, match="valid: scalar, avx2, avx512, avx512_vpopcnt"):
        native.set_isa("avx512vpopcntdq")


def test_isa_extensions_only_at_avx512_levels(isa):
    extensions = _backend.require_native().isa_extensions()
    assert set(extensions) <= {"avx512vnni"}
    if not isa.startswith("avx512"):
        assert extensions == []


def test_avx512_levels_score_alike(rng):
    # The two AVX-512 levels share every float and int8 kernel; only the popcount kernels differ,
    # and Hamming distances are exact at both.
    native = _backend.require_native()
    if "avx512_vpopcnt" not in native.available_isas():
        pytest.skip("needs AVX-512 VPOPCNTDQ")
    q = rng.standard_normal((5, 384)).astype(np.float32)
    c = rng.standard_normal((300, 384)).astype(np.float32)
    bits = rng.integers(0, 256, size=(300, 48), dtype=np.uint8)
    before = native.isa()
    results = []
    try:
        for level in ("avx512", "avx512_vpopcnt"):
            native.set_isa(level)
            results.append([native.search_float(q[:nq], c, "f32", metric, 300, 1, None, None)
                            for nq in (1, 5) for metric in ("dot", "l2", "cos")]
                           + [native.search_hamming(bits[:nq], bits, 300, 1) for nq in (1, 5)])
    finally:
        native.set_isa(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("metric", ["dot", "l2", "cos"])
@pytest.mark.parametrize("n,d", [(300, 8), (300, 48), (150, 384), (97, 100)])
def test_streamed_queries_score_as_in_a_batch(isa, rng, metric, n, d):
    # One or two queries stream rows one after another (prefetching a few KB ahead); three or more
    # take the level's many-query walk. Dims of whole 8- and 16-float steps take the streams' unmasked
    # path: a pair's score must be bit-identical either way.
    native = _backend.require_native()
    q = rng.standard_normal((7, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c = rng.standard_normal((n, d)).astype(np.float32)
    full = native.search_float(q, c, "f32", metric, n, 1, None, None)
    for lo, hi in [(0, 1), (3, 4), (6, 7), (1, 3), (5, 7)]:
        part = native.search_float(q[lo:hi], c, "f32", metric, n, 1, None, None)
        np.testing.assert_array_equal(part[0], full[0][lo:hi])
        np.testing.assert_array_equal(part[1], full[1][lo:hi])


SIMD_LEVELS = ["avx2", "avx512", "avx512_vpopcnt"]


@pytest.mark.parametrize("fmt", ["f32", "f16", "i8"])
@pytest.mark.parametrize("d", [1, 7, 9, 15, 16, 17, 31, 48, 100, 385])
def test_float_scores_are_the_same_on_every_simd_level(rng, fmt, d):
    # Every AVX2 and AVX-512 float kernel sums a pair in one order (16-float steps as two 8-float
    # halves, one reduction tree): scores and ranks are bit-identical across those levels, for every
    # batch size (streams and walks), metric and stored format. The scalar level sums in its own order.
    native = _backend.require_native()
    levels = [level for level in SIMD_LEVELS if level in native.available_isas()]
    if len(levels) < 2:
        pytest.skip("needs two SIMD levels")
    n = 137
    c = rng.standard_normal((n, d)).astype(np.float32)
    offset = scale = None
    if fmt == "f16":
        c = c.astype(np.float16).view(np.uint16)
    elif fmt == "i8":
        c = rng.integers(-128, 128, size=(n, d), dtype=np.int8)
        offset, scale = rng.standard_normal(d).astype(np.float32), rng.random(d).astype(np.float32)
    before = native.isa()
    try:
        for nq in (1, 2, 3, 9, 20):
            q = rng.standard_normal((nq, d)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            for metric in ("dot", "l2", "cos"):
                results = []
                for level in levels:
                    native.set_isa(level)
                    results.append(native.search_float(q, c, fmt, metric, n, 1, offset, scale))
                for level, (scores, indices) in zip(levels[1:], results[1:]):
                    np.testing.assert_array_equal(scores, results[0][0], err_msg=f"{level} {nq} {metric}")
                    np.testing.assert_array_equal(indices, results[0][1], err_msg=f"{level} {nq} {metric}")
    finally:
        native.set_isa(before)
