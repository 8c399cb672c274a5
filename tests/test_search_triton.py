"""The fused Triton search (kernels/similarity.py) against the numpy reference and the torch path.

CPU tensors under Triton's interpreter (tests/conftest.py); ``EMBEDCORE_GPU_SEARCH`` picks the device
backend of ``_search_torch``. Shapes stay small: the interpreter runs each tile op in numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_search import _case, _check_any

from embedcore._spec import TRITON_MAX_K, search_kind
from embedcore.ops import search as search_ops
from embedcore.ops.search import _search_torch, _topk_keys_torch, search_reference

similarity = pytest.importorskip("embedcore.kernels.similarity")

# (format, metric): every corpus format the device path takes.
CASES = [
    ("float32", "dot"), ("float32", "cos"), ("float32", "l2"),
    ("float16", "dot"), ("float16", "l2"), ("bfloat16", "cos"), ("bfloat16", "dot"),
    ("int8", "dot"), ("int8", "l2"), ("int8", "cos"),
    ("int8_asym", "dot"), ("int8_asym", "cos"), ("int8_asym", "l2"),
    ("hamming", "hamming"), ("binary", "hamming"),
]


def _inputs(rng, fmt: str, nq: int, n: int, levels: int | None):
    """(q, c, ranges, qt, ct): numpy inputs as the reference reads them (c holds the corpus' exact
    values) and the tensors the device path gets. Dims are not multiples of 8/16/32: 37 (float, int8)
    and 5 bytes = 40 bits (hamming)."""
    if fmt in ("hamming", "binary"):
        q, c, ranges = _case(rng, "hamming", nq, n, 5, levels)
        if fmt == "binary":  # sentence-transformers' binary: ubinary - 128
            q, c = (q.astype(np.int16) - 128).astype(np.int8), (c.astype(np.int16) - 128).astype(np.int8)
        return q, c, ranges, torch.from_numpy(q), torch.from_numpy(c)
    q, c, ranges = _case(rng, "float32" if fmt in ("float16", "bfloat16") else fmt, nq, n, 37, levels)
    ct = torch.from_numpy(c)
    if fmt in ("float16", "bfloat16"):
        ct = ct.to(getattr(torch, fmt))
        c = ct.float().numpy()
    return q, c, ranges, torch.from_numpy(q), ct


def _kind_of(qt, ct, metric, ranges):
    return search_kind(str(qt.dtype).removeprefix("torch."), str(ct.dtype).removeprefix("torch."), metric,
                 ranges is not None)


def _run(qt, ct, k, metric, ranges):
    return _search_torch(qt, ct, k, metric, _kind_of(qt, ct, metric, ranges), ranges)


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", "triton")


@pytest.mark.parametrize("fmt,metric", CASES)
@pytest.mark.parametrize("nq,n", [(1, 50), (7, 200)])
@pytest.mark.parametrize("levels", [None, 3])
def test_matches_reference(rng, triton_backend, fmt, metric, nq, n, levels):
    """N = 50: one partial tile; N = 200: several tiles, the last partial. levels=3: heavy ties."""
    q, c, ranges, qt, ct = _inputs(rng, fmt, nq, n, levels)
    for k in (1, 10, n):
        scores, indices = _run(qt, ct, k, metric, ranges)
        assert indices.dtype == torch.int64 and scores.shape == indices.shape == (nq, k)
        _check_any(scores.numpy(), indices.numpy(), q, c, ranges, k, metric)


@pytest.mark.parametrize("fmt,metric", [("float32", "dot"), ("float32", "l2"), ("bfloat16", "dot"),
                                        ("float16", "l2")])
def test_exact_float_scores_keep_the_tie_order(rng, triton_backend, fmt, metric):
    """Values from 4 levels (multiples of 1/4): every score is exact in fp32, so scores and the index
    order (lower index first among ties) equal the float64 reference bit for bit."""
    q, c, _, qt, ct = _inputs(rng, fmt, 7, 200, 4)
    for k in (1, 10, 200):
        scores, indices = _run(qt, ct, k, metric, None)
        es, ei = search_reference(q, c, k, metric)
        np.testing.assert_array_equal(indices.numpy(), ei)
        np.testing.assert_array_equal(scores.numpy(), es)


@pytest.fixture
def terms_used(monkeypatch):
    """The query term counts the Triton search picks."""
    picked = []
    real = similarity.query_terms

    def spy(q, dtype):
        picked.append(real(q, dtype))
        return picked[-1]

    monkeypatch.setattr(similarity, "query_terms", spy)
    return picked


def test_query_terms(rng):
    q = torch.from_numpy(rng.standard_normal((5, 37)).astype(np.float32))
    assert similarity.query_terms(q, torch.float32) == 0
    assert similarity.query_terms(q, torch.float16) == 2
    assert similarity.query_terms(q, torch.bfloat16) == 3
    for dtype in (torch.float16, torch.bfloat16):  # queries exact in the corpus dtype: one term
        assert similarity.query_terms(q.to(dtype).float(), dtype) == 1


@pytest.mark.parametrize("dtype,terms,bound,step", [(torch.float16, 2, 2.0**-22, 2.0**-25),
                                                    (torch.bfloat16, 3, 2.0**-24, 2.0**-134)])
def test_query_split_error(rng, dtype, terms, bound, step):
    """Rows of very different magnitudes (fp16: scaled per row first) rebuild from their terms to
    within ``bound`` of each value, plus half the dtype's smallest subnormal (``step``, before the
    unscaling for fp16) for residuals that underflow."""
    q = torch.from_numpy(rng.standard_normal((4, 300)).astype(np.float32))
    q *= torch.tensor([[1e-30], [1e-6], [1.0], [1e30]])
    if dtype == torch.float16:
        original = q
        q, unscale = similarity._fp16_scale(q)
        top = q.abs().amax(1)
        assert ((2.0**14 <= top) & (top < 2.0**15)).all()
        assert torch.equal(q * unscale[:, None], original)  # powers of two: exact both ways
    parts = similarity._split_queries(q, dtype, terms).view(4, terms, 300).double().sum(1)
    err = (parts - q.double()).abs()
    assert (err <= bound * q.double().abs() + step).all()


@pytest.mark.parametrize("fmt,metric,magnitude", [
    *((fmt, metric, 1.0) for fmt in ("float16", "bfloat16") for metric in ("dot", "cos", "l2")),
    ("float16", "dot", 1e6), ("float16", "l2", 1e6), ("float16", "dot", 1e-6), ("float16", "l2", 1e-6),
])
def test_16bit_corpus_fp32_queries(rng, triton_backend, terms_used, fmt, metric, magnitude):
    """Random fp32 queries (normalised for cos) against fp16/bf16 corpora: 2 fp16 / 3 bf16 terms,
    within the fp32 tolerance of the float64 reference. Queries of 1e6 (beyond fp16's 65504) and 1e-6
    (fp16 subnormals) rely on the per-row scaling for fp16."""
    q, c, ranges, qt, ct = _inputs(rng, fmt, 7, 200, None)
    q, qt = q * np.float32(magnitude), qt * magnitude
    for k in (1, 10, 200):
        scores, indices = _run(qt, ct, k, metric, ranges)
        _check_any(scores.numpy(), indices.numpy(), q, c, ranges, k, metric)
    assert set(terms_used) == {2 if fmt == "float16" else 3}


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_16bit_queries_one_term_exact(rng, triton_backend, terms_used, fmt, metric):
    """Queries in the corpus dtype take one term; on values from 4 levels every score is exact: scores
    and tie order equal the float64 reference bit for bit."""
    q, c, _, _, ct = _inputs(rng, fmt, 7, 200, 4)
    qt = torch.from_numpy(q).to(ct.dtype)
    for k in (1, 10, 200):
        scores, indices = _run(qt, ct, k, metric, None)
        es, ei = search_reference(q, c, k, metric)
        np.testing.assert_array_equal(indices.numpy(), ei)
        np.testing.assert_array_equal(scores.numpy(), es)
    assert set(terms_used) == {1}


def _keys(fmt, metric, qt, ct, k, ranges, splits=None):
    """(Triton keys, torch-path keys) (nq, k) int64 of one search."""
    kind = _kind_of(qt, ct, metric, ranges)
    if kind in ("float", "int8_asym"):
        qt = qt.float()
        if metric == "cos":
            qt = qt / torch.linalg.vector_norm(qt, dim=1, keepdim=True).clamp(min=1e-12)
    affine = None
    if kind == "int8_asym":
        offset, scale = search_ops._int8_affine(ranges)
        affine = (torch.from_numpy(offset.astype(np.float32)), torch.from_numpy(scale.astype(np.float32)))
    got, _ = similarity.search_fwd(qt, ct, k, metric, kind, affine, splits=splits)
    want, _ = _topk_keys_torch(qt, ct, k, metric, kind, affine)
    return got, want


@pytest.mark.parametrize("fmt,metric,levels", [
    ("float32", "l2", 4), ("bfloat16", "dot", 4), ("int8", "dot", 3), ("int8", "cos", 3),
    ("int8_asym", "l2", None), ("hamming", "hamming", 2), ("binary", "hamming", None),
])
@pytest.mark.parametrize("splits", [1, 3, 5])
def test_splits_give_the_torch_path_keys(rng, fmt, metric, levels, splits):
    """Any number of corpus splits (300 rows: tiles of 64, the last split short or empty) merges to
    the torch path's exact int64 keys: same scores, same tie order."""
    _, _, ranges, qt, ct = _inputs(rng, fmt, 7, 300, levels)
    for k in (1, 17):
        got, want = _keys(fmt, metric, qt, ct, k, ranges, splits)
        if fmt == "int8_asym":  # dequantised in registers, fp32 rounding may differ: compare indices
            np.testing.assert_array_equal(got & 0xFFFFFFFF, want & 0xFFFFFFFF)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("fmt,metric,levels", [("float32", "dot", 4), ("int8", "l2", 3),
                                               ("hamming", "hamming", 2)])
def test_k_at_the_cap(rng, fmt, metric, levels):
    _, _, ranges, qt, ct = _inputs(rng, fmt, 7, 300, levels)
    got, want = _keys(fmt, metric, qt, ct, TRITON_MAX_K, ranges, splits=2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="1 <= k <= 256"):
        similarity.search_fwd(qt, ct, TRITON_MAX_K + 1, metric, _kind_of(qt, ct, metric, ranges))


def test_cap_constants_agree():
    assert similarity.MAX_K == TRITON_MAX_K == 256


@pytest.fixture
def calls(monkeypatch):
    """Counts launches of the Triton search."""
    launched = []
    real = similarity.search_fwd

    def spy(*args, **kwargs):
        launched.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(similarity, "search_fwd", spy)
    return launched


def test_dispatch(rng, monkeypatch, calls):
    q, _, _, qt, ct = _inputs(rng, "int8", 3, 300, 3)
    monkeypatch.delenv("EMBEDCORE_GPU_SEARCH", raising=False)
    results = [_run(qt, ct, 20, "l2", None)]  # auto: Triton runs here (the interpreter)
    assert calls == [20]
    _run(qt, ct, TRITON_MAX_K + 1, "l2", None)  # above the cap: the torch path
    assert calls == [20]
    monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", "torch")
    results.append(_run(qt, ct, 20, "l2", None))
    assert calls == [20]
    monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", "triton")
    results.append(_run(qt, ct, 20, "l2", None))
    assert calls == [20, 20]
    for scores, indices in results[1:]:
        torch.testing.assert_close(scores, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(indices, results[0][1], rtol=0, atol=0)
    # float64 corpora stay on the torch path
    _run(torch.from_numpy(q.astype(np.float32)), ct.double(), 5, "dot", None)
    assert calls == [20, 20]


def test_auto_follows_forced_reference(rng, monkeypatch, calls):
    _, _, _, qt, ct = _inputs(rng, "float32", 3, 100, None)
    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    _run(qt, ct, 5, "dot", None)
    assert calls == []


@pytest.mark.parametrize("value", ["cudaa", "TRITONN", "1"])
def test_bad_backend_value(rng, monkeypatch, value):
    _, _, _, qt, ct = _inputs(rng, "float32", 3, 100, None)
    monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", value)
    with pytest.raises(ValueError, match="EMBEDCORE_GPU_SEARCH must be one of"):
        _run(qt, ct, 5, "dot", None)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the interpreter: inf - inf
@pytest.mark.parametrize("metric", ["dot", "cos", "l2"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_corpus_is_rejected(rng, triton_backend, metric, value):
    _, _, _, qt, ct = _inputs(rng, "float32", 3, 130, None)
    ct[129, 4] = value  # the last, partial tile
    with pytest.raises(ValueError, match="corpus contains NaN or inf"):
        _run(qt, ct, 5, metric, None)
    qt[1, 2] = value
    with pytest.raises(ValueError, match="queries contains NaN or inf"):
        _run(qt, ct, 5, metric, None)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_score_overflow_is_rejected(triton_backend):
    qt = torch.full((2, 20), 1e20)
    ct = torch.full((70, 20), 1e20)
    with pytest.raises(ValueError, match="overflows float32"):
        _run(qt, ct, 3, "dot", None)


@pytest.mark.parametrize("fmt,metric", [("float32", "cos"), ("int8", "l2"), ("hamming", "hamming")])
def test_empty_query_batch(rng, triton_backend, fmt, metric):
    _, _, _, qt, ct = _inputs(rng, fmt, 0, 40, None)
    scores, indices = _run(qt, ct, 5, metric, None)
    assert scores.shape == indices.shape == (0, 5)


def test_zero_vectors_cos(triton_backend):
    qt = torch.zeros((2, 20))
    qt[1, 0] = 1.0
    ct = torch.zeros((70, 20))
    ct[5, 0] = 2.0
    scores, indices = _run(qt, ct, 3, "cos", None)
    np.testing.assert_array_equal(indices.numpy(), [[0, 1, 2], [5, 0, 1]])
    np.testing.assert_array_equal(scores.numpy(), [[0, 0, 0], [1, 0, 0]])


# Compiled mode without a GPU: every block configuration and score variant lowers for sm_90 and sm_80
# (Triton's bundled ptxas), fits sm_80's shared memory and, for dims and strides that are multiples
# of 16 (the usual embedding widths), keeps to registers (no stack: cuobjdump's resource usage). Odd
# dims (scalar loads) must lower too. A subprocess per arch, without TRITON_INTERPRET.
_COMPILE_SCRIPT = r"""
import os, re, subprocess, sys
try:
    import triton.backends.nvidia as nvidia
    from embedcore.kernels.similarity import compile_ahead
except ImportError as exc:
    print(f"skip: {exc}")
    sys.exit(77)

arch = int(sys.argv[1])
cuobjdump = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
jobs = [  # (kind, metric, corpus dtype, k, aligned[, query terms]): each format and metric, each block
    # configuration, fp16/bf16 with their most query terms (2, 3) and one
    ("float", "dot", "fp32", 10, True), ("float", "cos", "fp16", 64, True),
    ("float", "l2", "bf16", 256, True), ("float", "l2", "fp16", 64, True, 1),
    ("float", "dot", "bf16", 128, True), ("int8_asym", "cos", "i8", 128, True),
    ("int8_asym", "l2", "i8", 1, True), ("int8", "dot", "i8", 16, True), ("int8", "l2", "i8", 256, True),
    ("int8", "cos", "i8", 100, True), ("hamming", "hamming", "u8", 256, True),
    ("hamming", "hamming", "u8", 10, True), ("float", "l2", "fp32", 10, False),
]
for job in jobs:
    kernel = compile_ahead(arch, *job)
    assert kernel.asm["ptx"] and kernel.asm["cubin"], job
    # sm_80's largest shared memory per block (163 KiB opt-in)
    assert kernel.metadata.shared <= 163 * 1024, (job, kernel.metadata.shared)
    usage = ""
    if job[4] and os.path.exists(cuobjdump):
        path = f"/tmp/embedcore_similarity_{os.getpid()}.cubin"
        with open(path, "wb") as fh:
            fh.write(kernel.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True,
                               text=True).stdout
        os.remove(path)
        assert re.search(r"STACK:0\b", usage), (job, usage)
    print(job, "shared", kernel.metadata.shared, " ".join(re.findall(r"(?:REG|STACK):\d+", usage)))
print("compiled", len(jobs))
"""


def test_kernels_compile_for_sm90_and_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = [subprocess.Popen([sys.executable, "-c", _COMPILE_SCRIPT, str(arch)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for arch in (90, 80)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode == 77:
            pytest.skip(out.strip())
        assert proc.returncode == 0, out[-2000:] + err[-4000:]
        assert "compiled 13" in out
