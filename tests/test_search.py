"""ec.search against a numpy brute force: every format and metric, heavy ties, odd dims, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedcore as ec
from embedcore import _backend
from embedcore._spec import search_kind
from embedcore.ops.search import _dequantize, _search_torch, search_reference

N = 1500
NQ = [1, 7, 64]
KS = [1, 10, 1000, N]


def _full_scores(q: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """(nq, N) float64 scores of float inputs, the ground truth the float checks compare with."""
    q = q.astype(np.float64)
    c = c.astype(np.float64)
    if metric == "l2":  # float64: the expansion loses nothing that matters at float32 tolerance
        return np.maximum((q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * (q @ c.T), 0)
    s = q @ c.T
    if metric == "cos":
        s /= np.maximum(np.linalg.norm(q, axis=1), 1e-12)[:, None]
        s /= np.maximum(np.linalg.norm(c, axis=1), 1e-12)[None, :]
    return s


def assert_float_topk(scores, indices, full: np.ndarray, k: int, ascending: bool, tol: float) -> None:
    """Exact top-k up to float rounding.

    Scores must equal the reference scores of the returned indices within ``tol``; the index set may
    differ from the reference only among candidates within ``tol`` of the k-th score; the order must
    be best first, candidates tied in both the result and the reference in ascending index order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    indices = np.asarray(indices)
    nq = full.shape[0]
    assert scores.shape == indices.shape == (nq, k)
    assert indices.dtype == np.int64
    sign = 1.0 if ascending else -1.0
    ref_sorted = np.sort(sign * full, axis=1)[:, :k] * sign
    for i in range(nq):
        idx = indices[i]
        assert len(np.unique(idx)) == k, f"query {i}: repeated indices"
        assert ((idx >= 0) & (idx < full.shape[1])).all()
        got = full[i, idx]
        np.testing.assert_allclose(scores[i], got, atol=tol, rtol=0, err_msg=f"query {i}: score != ref")
        np.testing.assert_allclose(scores[i], ref_sorted[i], atol=tol, rtol=0,
                                   err_msg=f"query {i}: sorted scores != ref")
        kth = ref_sorted[i, -1]
        # Every clearly-better candidate must be in the result; every result must be good enough.
        must = np.nonzero(sign * full[i] < sign * kth - tol)[0]
        assert np.isin(must, idx).all(), f"query {i}: missing {np.setdiff1d(must, idx)[:5]}"
        assert (sign * got <= sign * kth + tol).all(), f"query {i}: result worse than the k-th score"
        # Sorted best first; candidates tied in both the result and the reference go by index.
        assert (np.diff(sign * scores[i]) >= 0).all(), f"query {i}: not sorted"
        tie = (np.diff(got) == 0) & (np.diff(scores[i]) == 0)
        assert (np.diff(idx)[tie] > 0).all(), f"query {i}: tie rule violated"


def _float_tol(q: np.ndarray, c: np.ndarray, metric: str) -> float:
    q = q.astype(np.float64)
    c = c.astype(np.float64)
    d = q.shape[1]
    if metric == "cos":
        scale = 1.0
    elif metric == "l2":
        scale = (np.abs(q).max() + np.abs(c).max()) ** 2 * d
    else:
        scale = np.linalg.norm(q, axis=1).max() * np.linalg.norm(c, axis=1).max()
    return 1e-6 * scale * np.sqrt(d) + 1e-7


def _data(rng, shape, levels):
    if levels is None:
        return rng.standard_normal(shape).astype(np.float32)
    return (rng.integers(0, levels, size=shape) / levels - 0.5).astype(np.float32)


FLOAT_CASES = [  # (corpus dtype, metric)
    ("float32", "dot"), ("float32", "cos"), ("float32", "l2"),
    ("float16", "dot"), ("bfloat16", "cos"), ("float16", "l2"), ("bfloat16", "dot"),
]


@pytest.mark.parametrize("dtype,metric", FLOAT_CASES)
@pytest.mark.parametrize("nq,d", [(1, 37), (7, 100), (64, 385)])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("levels", [None, 4])
def test_float_search(rng, dtype, metric, nq, d, k, levels):
    q = _data(rng, (nq, d), levels)
    c = torch.from_numpy(_data(rng, (N, d), levels)).to(getattr(torch, dtype))
    c_exact = c.float().numpy()  # the values the corpus holds
    corpus = c if dtype == "bfloat16" else c.numpy()
    scores, indices = ec.search(q, corpus, k=k, metric=metric)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32
    full = _full_scores(q, c_exact, metric)
    assert_float_topk(scores, indices, full, k, metric == "l2", _float_tol(q, c_exact, metric))


@pytest.mark.parametrize("metric", ["dot", "cos", "l2"])
@pytest.mark.parametrize("nq,d", [(1, 33), (7, 100), (64, 385)])
@pytest.mark.parametrize("k", KS)
def test_int8_asymmetric_equals_dequantized_float_search(rng, metric, nq, d, k):
    x = rng.standard_normal((N, d)).astype(np.float32)
    ranges = np.stack([x.min(0), x.max(0)]).astype(np.float32)
    ranges[:, 3] = 0.25  # a zero-width dimension: step 1, as sentence-transformers
    codes = rng.integers(-128, 128, size=(N, d), dtype=np.int8)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    scores, indices = ec.search(q, codes, k=k, metric=metric, ranges=ranges)
    deq = _dequantize(codes, ranges)
    full = _full_scores(q, deq, metric)
    assert_float_topk(scores, indices, full, k, metric == "l2", _float_tol(q, deq, metric))


def test_native_affine_dequantisation_matches_quantize_module(rng):
    """The (offset, scale) form the native kernels use equals quantize.dequantize to float32 rounding."""
    from embedcore.ops.quantize import dequantize
    from embedcore.ops.search import _int8_affine

    codes = rng.integers(-128, 128, size=(50, 19), dtype=np.int8)
    ranges = np.stack([rng.uniform(-2, 0, 19), rng.uniform(0, 2, 19)]).astype(np.float32)
    ranges[:, 5] = 1.0  # zero width: step 1
    offset, scale = _int8_affine(ranges)
    np.testing.assert_array_equal((codes * scale + offset).astype(np.float32), dequantize(codes, ranges))


def _int_reference_check(scores, indices, q, c, k, metric):
    es, ei = search_reference(q, c, k, metric)
    assert scores.dtype == es.dtype
    if es.dtype == np.int32:
        np.testing.assert_array_equal(scores, es)
        np.testing.assert_array_equal(indices, ei)  # bit-identical, tie rule included
    else:
        full = _full_scores(q.astype(np.float64), c.astype(np.float64), metric)
        assert_float_topk(scores, indices, full, k, False, 1e-6)


@pytest.mark.parametrize("metric", ["dot", "l2", "cos"])
@pytest.mark.parametrize("nq,d", [(1, 33), (7, 100), (64, 385)])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("levels", [None, 3])
def test_int8_symmetric(rng, metric, nq, d, k, levels):
    lo, hi = (-128, 128) if levels is None else (-1, levels - 1)
    q = rng.integers(lo, hi, size=(nq, d), dtype=np.int8)
    c = rng.integers(lo, hi, size=(N, d), dtype=np.int8)
    c[:3] = -128  # extremes: -128 * -128 sums must not overflow
    scores, indices = ec.search(q, c, k=k, metric=metric)
    _int_reference_check(scores, indices, q, c, k, metric)


def _hamming_numpy(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.unpackbits(q.view(np.uint8)[:, None, :] ^ c.view(np.uint8)[None], axis=-1).sum(-1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("nq,nbytes", [(1, 5), (7, 48), (64, 13), (7, 130), (9, 300)])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("levels", [None, 2])
def test_hamming(rng, dtype, nq, nbytes, k, levels):
    # levels=2: bytes from {0, 1}: distances take a handful of values, so ties everywhere.
    high = 256 if levels is None else levels
    ub_q = rng.integers(0, high, size=(nq, nbytes), dtype=np.uint8)
    ub_c = rng.integers(0, high, size=(N, nbytes), dtype=np.uint8)
    if dtype == np.int8:  # sentence-transformers' binary: ubinary - 128
        q = (ub_q.astype(np.int16) - 128).astype(np.int8)
        c = (ub_c.astype(np.int16) - 128).astype(np.int8)
    else:
        q, c = ub_q, ub_c
    scores, indices = ec.search(q, c, k=k, metric="hamming")
    full = _hamming_numpy(ub_q, ub_c)
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, order, axis=1))
    assert scores.dtype == np.int32


def test_torch_in_torch_out_and_1d_query(rng):
    c = torch.from_numpy(rng.standard_normal((300, 24)).astype(np.float32))
    q = c[17].clone()
    scores, indices = ec.search(q, c, k=5, metric="cos")
    assert isinstance(scores, torch.Tensor) and scores.shape == (5,) and indices.dtype == torch.int64
    assert int(indices[0]) == 17 and abs(float(scores[0]) - 1.0) < 1e-6


def test_non_contiguous_inputs_are_read_correctly(rng):
    base = rng.standard_normal((40, 600)).astype(np.float32)
    corpus = base.T[::2]  # (300, 40), strided
    q = base.T[1:8:3]
    scores, indices = ec.search(q, corpus, k=6, metric="dot")
    full = _full_scores(np.ascontiguousarray(q), np.ascontiguousarray(corpus), "dot")
    assert_float_topk(scores, indices, full, 6, False, 1e-4)


def test_zero_vectors_cos(rng):
    c = rng.standard_normal((50, 9)).astype(np.float32)
    c[[4, 7]] = 0
    q = -c[:1]
    scores, indices = ec.search(q, c, k=50, metric="cos")
    full = _full_scores(q, c, "cos")
    assert_float_topk(scores, indices, full, 50, False, 1e-6)


# -- bad input ------------------------------------------------------------------------------------

def test_bad_input(rng):
    c = rng.standard_normal((20, 8)).astype(np.float32)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="corpus has dim 8, queries have dim 6"):
        ec.search(q[:, :6], c)
    with pytest.raises(ValueError, match=r"k must be in \[1, 20\]"):
        ec.search(q, c, k=21)
    with pytest.raises(ValueError, match=r"k must be in \[1, 20\]"):
        ec.search(q, c, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        ec.search(q, c, k=2.0)
    with pytest.raises(ValueError, match="Invalid metric 'ip'"):
        ec.search(q, c, metric="ip")
    with pytest.raises(ValueError, match="corpus is empty"):
        ec.search(q, c[:0], k=1)
    with pytest.raises(TypeError, match="queries must be a numpy array or a torch tensor"):
        ec.search(q.tolist(), c)
    with pytest.raises(ValueError, match="corpus must be 2-D"):
        ec.search(q, c[0])
    with pytest.raises(TypeError, match="hamming needs packed bits"):
        ec.search(q, c, metric="hamming")
    with pytest.raises(TypeError, match="hamming needs packed bits"):
        ec.search(q.view(np.uint8), c.view(np.int8), metric="hamming")
    with pytest.raises(ValueError, match="need ranges"):
        ec.search(q, c.astype(np.int8))
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 8\)"):
        ec.search(q, c.astype(np.int8), ranges=np.zeros((2, 7), np.float32))
    with pytest.raises(TypeError, match="corpus has unsupported dtype int32"):
        ec.search(q, c.astype(np.int32))


@pytest.mark.parametrize("where", ["queries", "corpus"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_input_is_rejected(rng, where, value):
    c = rng.standard_normal((5000, 16)).astype(np.float32)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    (q if where == "queries" else c)[1, 3] = value
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        ec.search(q, c, k=3, metric="dot")


# -- every ISA, thread counts, the device (PyTorch) path ------------------------------------------

def _case(rng, kind: str, nq: int, n: int, d: int, levels: int | None = None):
    """(queries, corpus, ranges) of one format; levels draws from a few values (heavy ties)."""
    if kind == "hamming":
        high = 256 if levels is None else levels
        return (rng.integers(0, high, size=(nq, d), dtype=np.uint8),
                rng.integers(0, high, size=(n, d), dtype=np.uint8), None)
    if kind == "int8":
        lo, hi = (-128, 128) if levels is None else (-1, levels - 1)
        return (rng.integers(lo, hi, size=(nq, d), dtype=np.int8),
                rng.integers(lo, hi, size=(n, d), dtype=np.int8), None)
    q = _data(rng, (nq, d), levels)
    if kind == "int8_asym":
        ranges = np.stack([np.full(d, -2.0), np.full(d, 2.0)]).astype(np.float32)
        return q, rng.integers(-128, 128, size=(n, d), dtype=np.int8), ranges
    return q, _data(rng, (n, d), levels).astype(kind), None


def _check_any(scores, indices, q, c, ranges, k, metric):
    """Bit-identical for integer scores, the float helper otherwise."""
    es, ei = search_reference(q, c, k, metric, ranges)
    if es.dtype == np.int32:
        np.testing.assert_array_equal(np.asarray(scores), es)
        np.testing.assert_array_equal(np.asarray(indices), ei)
        return
    c_exact = _dequantize(c, ranges) if ranges is not None else c
    qf, cf = q.astype(np.float64), c_exact.astype(np.float64)
    tol = _float_tol(qf, cf, metric) if q.dtype.kind == "f" else 1e-6
    assert_float_topk(np.asarray(scores), np.asarray(indices), _full_scores(qf, cf, metric), k,
                      metric == "l2", tol)


ISA_CASES = [("float32", "dot"), ("float32", "cos"), ("float32", "l2"), ("float16", "dot"),
             ("int8_asym", "dot"), ("int8_asym", "cos"), ("int8", "dot"), ("int8", "l2"), ("int8", "cos"),
             ("hamming", "hamming")]


@pytest.mark.parametrize("kind,metric", ISA_CASES)
@pytest.mark.parametrize("nq,d", [(3, 19), (20, 70)])
def test_every_isa(isa, rng, kind, metric, nq, d):
    q, c, ranges = _case(rng, kind, nq, 700, d, levels=3)
    for k in (1, 25, 700):
        scores, indices = ec.search(q, c, k=k, metric=metric, ranges=ranges)
        _check_any(scores, indices, q, c, ranges, k, metric)


@pytest.mark.parametrize("kind,metric,nq,n,d", [
    ("float32", "dot", 3, 24_000, 100),    # corpus split across threads, heaps merged
    ("float32", "cos", 20, 24_000, 100),   # 3 query blocks: corpus split
    ("float32", "l2", 64, 3_000, 100),     # 8 query blocks: queries split
    ("bfloat16", "dot", 64, 6_000, 100),
    ("int8", "l2", 64, 3_000, 385),
    ("int8_asym", "dot", 5, 24_000, 385),
    ("hamming", "hamming", 64, 9_000, 130),
    ("hamming", "hamming", 3, 70_000, 130),
    ("hamming", "hamming", 8, 90_000, 100),  # fast-scan tables, corpus split
    ("hamming", "hamming", 70, 30_000, 144),  # fast-scan tables, query blocks split
    ("float32", "cos", 1, 44_000, 384),    # 1-2 queries split the corpus from 64 MB: fused-norm cos
    ("float32", "dot", 2, 44_000, 384),    # 1-2 queries, streaming kernel, corpus split
])
def test_one_and_two_threads_agree_bit_for_bit(rng, monkeypatch, kind, metric, nq, n, d):
    if kind == "bfloat16":
        q, c, ranges = _case(rng, "float32", nq, n, d, levels=5)
        c = torch.from_numpy(c).to(torch.bfloat16)
    else:
        q, c, ranges = _case(rng, kind, nq, n, d, levels=5)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("EMBEDCORE_NUM_THREADS", threads)
        results.append(ec.search(q, c, k=50, metric=metric, ranges=ranges))
    np.testing.assert_array_equal(np.asarray(results[0][0]), np.asarray(results[1][0]))
    np.testing.assert_array_equal(np.asarray(results[0][1]), np.asarray(results[1][1]))


@pytest.mark.parametrize("kind,metric", [*ISA_CASES, ("int8_asym", "l2"), ("bfloat16", "cos")])
@pytest.mark.parametrize("levels", [None, 3])
def test_torch_device_path_on_cpu(rng, kind, metric, levels):
    """The path CUDA tensors take (PyTorch scores + int64-key top-k), run on CPU tensors."""
    q, c, ranges = _case(rng, "float32" if kind == "bfloat16" else kind, 7, 900, 37, levels)
    ct = torch.from_numpy(c)
    if kind == "bfloat16":
        ct = ct.to(torch.bfloat16)
        c = ct.float().numpy()  # the values the corpus holds
    fmt = search_kind(q.dtype.name, str(ct.dtype).removeprefix("torch."), metric, ranges is not None)
    for k in (1, 10, 900):
        scores, indices = _search_torch(torch.from_numpy(q), ct, k, metric, fmt, ranges)
        assert indices.dtype == torch.int64
        _check_any(scores.numpy(), indices.numpy(), q, c, ranges, k, metric)


def test_forced_reference_backend_agrees(rng, monkeypatch):
    q, c, _ = _case(rng, "int8", 4, 500, 33, levels=3)
    native = ec.search(q, c, k=20, metric="l2")
    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    forced = ec.search(q, c, k=20, metric="l2")
    np.testing.assert_array_equal(native[0], forced[0])
    np.testing.assert_array_equal(native[1], forced[1])


@pytest.mark.cuda
@pytest.mark.parametrize("kind,metric", ISA_CASES)
def test_cuda_matches_reference(rng, kind, metric):
    q, c, ranges = _case(rng, kind, 9, 5000, 48, levels=3)
    for k in (1, 10, 4096):
        scores, indices = ec.search(torch.from_numpy(q).cuda(), torch.from_numpy(c).cuda(), k=k,
                                    metric=metric, ranges=ranges)
        assert scores.is_cuda and indices.is_cuda
        _check_any(scores.cpu().numpy(), indices.cpu().numpy(), q, c, ranges, k, metric)


def test_cuda_extension_exposes_the_search_kernels():
    """CI builds embedcore._cuda with nvcc: the score kernels must be bound (they run only on a GPU)."""
    ext = _backend.cuda_ext()
    if ext is None:
        pytest.skip("embedcore._cuda is not built (no nvcc at install time)")
    assert callable(ext.hamming_scores) and callable(ext.int8_dot_scores)
    with pytest.raises(ValueError, match="bad sizes"):
        ext.hamming_scores(0, 0, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("dtype,metric", [(np.float32, "cos"), (np.int8, "l2"), (np.uint8, "hamming")])
def test_empty_query_batch(rng, dtype, metric):
    c = rng.integers(0, 100, size=(40, 6)).astype(dtype)
    scores, indices = ec.search(np.zeros((0, 6), dtype), c, k=5, metric=metric)
    assert scores.shape == indices.shape == (0, 5)


def test_int8_ranges_cache_follows_the_ranges(rng):
    # The native path reuses the checked ranges of the previous call: a changed (or bad) array must
    # not hit it.
    x = rng.standard_normal((300, 24)).astype(np.float32)
    ranges = np.stack([x.min(0), x.max(0)]).astype(np.float32)
    codes = ec.quantize(x, "int8", ranges=ranges)
    q = rng.standard_normal((3, 24)).astype(np.float32)
    for r in (ranges, ranges * 2, ranges.astype(np.float64), ranges):
        scores, indices = ec.search(q, codes, k=7, metric="dot", ranges=r)
        _check_any(scores, indices, q, codes, r.astype(np.float32), 7, "dot")
    bad = ranges.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="ranges contains NaN"):
        ec.search(q, codes, k=7, metric="dot", ranges=bad)
    bad[0, 3] = bad[1, 3] + 1
    with pytest.raises(ValueError, match="minimum"):
        ec.search(q, codes, k=7, metric="dot", ranges=bad)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_topk_split_rows_agree(rng, threads):
    # Small top-k problems stay on one thread; a row long enough to split across threads (ties
    # straddling the chunks) must give the single-thread answer.
    native = _backend.require_native()
    scores = rng.integers(0, 3, size=(1, 1_200_000)).astype(np.float32)
    values, indices = native.topk_f32(scores, 50, True, threads)
    order = np.argsort(-scores[0], kind="stable")[:50]
    np.testing.assert_array_equal(indices[0], order)
    np.testing.assert_array_equal(values[0], scores[0, order])


@pytest.mark.parametrize("nq,n,nbytes", [(4, 1, 1), (5, 67, 5), (33, 130, 48), (6, 75, 249), (4, 40, 600),
                                         (4, 40, 1100)])
def test_hamming_query_blocks_every_isa(rng, isa, nq, n, nbytes):
    # Query blocks take the transposed tiles (AVX2: fast-scan nibbles up to 1024 bytes, VPSHUFB counts
    # over 4-row words beyond, flushed every 31 words; AVX-512: VPOPCNTQ): partial words, partial row
    # groups, long codes, ties.
    q = rng.integers(0, 256, size=(nq, nbytes), dtype=np.uint8)
    c = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    c[::3] = q[0]
    c[1::5] = 255
    scores, indices = ec.search(q, c, k=n, metric="hamming")
    es, ei = search_reference(q, c, n, "hamming")
    np.testing.assert_array_equal(scores, es)
    np.testing.assert_array_equal(indices, ei)


@pytest.mark.parametrize("nq", [1, 7, 8, 9, 13, 33, 70])
@pytest.mark.parametrize("n,nbytes", [(1, 1), (31, 3), (32, 16), (33, 17), (64, 47), (65, 48), (97, 40),
                                      (129, 64), (200, 100), (70, 32), (70, 96), (70, 128), (66, 600)])
def test_hamming_fast_scan_every_isa(rng, isa, nq, n, nbytes):
    # From 8 queries AVX2 scores nibbles of 32-row groups by table lookups (4-query blocks over whole
    # 64-row tiles, one query at a time otherwise), fewer queries take the popcount kernels (unrolled
    # for 32/48/64/96/128 bytes): partial groups and tiles, 16-byte chunk padding, byte sums widened
    # every 63 nibbles, ties from a few byte values.
    levels = rng.integers(0, 256, size=3, dtype=np.uint8)
    q = levels[rng.integers(0, 3, size=(nq, nbytes))]
    c = levels[rng.integers(0, 3, size=(n, nbytes))]
    c[::7] = q[0]
    for k in sorted({1, min(10, n), n}):
        scores, indices = ec.search(q, c, k=k, metric="hamming")
        es, ei = search_reference(q, c, k, "hamming")
        np.testing.assert_array_equal(scores, es)
        np.testing.assert_array_equal(indices, ei)


@pytest.mark.parametrize("nbytes", [1024, 1025])
def test_hamming_fast_scan_widest_codes(rng, isa, nbytes):
    # 1024 bytes is the widest fast-scan code (all-ones vs zeros: the largest 16-bit sums); wider
    # codes take the word kernels.
    q = np.zeros((9, nbytes), dtype=np.uint8)
    q[1::2] = 255
    c = rng.integers(0, 256, size=(70, nbytes), dtype=np.uint8)
    c[::4], c[1::4] = 255, 0
    scores, indices = ec.search(q, c, k=70, metric="hamming")
    es, ei = search_reference(q, c, 70, "hamming")
    assert scores.max() == 8 * nbytes
    np.testing.assert_array_equal(scores, es)
    np.testing.assert_array_equal(indices, ei)


STREAM_KINDS = [("float32", "dot"), ("float32", "l2"), ("float32", "cos"), ("float16", "dot"),
                ("int8_asym", "dot"), ("int8_asym", "l2")]


@pytest.mark.parametrize("kind,metric", STREAM_KINDS)
@pytest.mark.parametrize("nq", [1, 2, 3])
@pytest.mark.parametrize("n,d", [(1, 1), (3, 17), (4, 16), (5, 3), (7, 37), (8, 64), (8, 100), (9, 385),
                                 (63, 16), (64, 33), (65, 385), (68, 7), (68, 32), (72, 100), (129, 31),
                                 (200, 48)])
def test_stream_kernels_every_isa(rng, isa, kind, metric, nq, n, d):
    # One or two queries stream rows in groups of 4 or 8 and prefetch the next group (AVX-512 by
    # 256-bit halves where dims are whole 16-float steps; cos sums row squares in the same pass):
    # partial groups, tiles and corpora ending right after a group (no prefetch past the last row),
    # odd dims (masked tails), ties from a few levels.
    q, c, ranges = _case(rng, kind, nq, n, d, levels=3)
    for k in sorted({1, min(10, n), n}):
        scores, indices = ec.search(q, c, k=k, metric=metric, ranges=ranges)
        _check_any(scores, indices, q, c, ranges, k, metric)


@pytest.mark.parametrize("kind,metric", STREAM_KINDS)
@pytest.mark.parametrize("n,d", [(70, 37), (300, 100)])
def test_a_query_scores_the_same_alone_and_in_a_batch(rng, isa, kind, metric, n, d):
    # A pair goes through the same arithmetic in every micro-kernel (1 or 2 streamed queries, the
    # many-query walk): each query's result is bit-identical whatever batch it comes in.
    q, c, ranges = _case(rng, kind, 9, n, d)
    full = ec.search(q, c, k=n, metric=metric, ranges=ranges)
    for lo, hi in [(0, 1), (4, 5), (8, 9), (2, 4), (7, 9), (0, 3), (1, 6)]:
        part = ec.search(q[lo:hi], c, k=n, metric=metric, ranges=ranges)
        np.testing.assert_array_equal(np.asarray(part[0]), np.asarray(full[0])[lo:hi])
        np.testing.assert_array_equal(np.asarray(part[1]), np.asarray(full[1])[lo:hi])
