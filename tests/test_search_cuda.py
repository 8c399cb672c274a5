"""Fused CUDA search + block top-k (embedcore.ops.search_cuda, csrc/cuda/topk_search.cu).

The `cuda` tests compare with the float64/int64 numpy reference on a GPU. The others run anywhere the
extension is built: the bindings, host-side argument checks (no launch), the grid sizing and a
ptxas resource check of the kernels.

ptxas figures (CUDA 13.0, -O3; registers per thread, 0 bytes stack frame and 0 spills everywhere;
shared memory is dynamic only, at most 48 KiB: per query, kp kept keys + max(kp, 512) buffered keys +
the staged query; e.g. 7.3 KiB for one fp16 768-dim query with k <= 16):
    format    <format, queries>   sm_80 (1 / 8 queries)   sm_90 (1 / 8 queries)
    hamming   <0, 1|8>            56 / 70                 56 / 64
    int8      <1, 1|8>            48 / 64                 46 / 56
    float16   <2, 1|8>            64 / 72                 64 / 74
    bfloat16  <3, 1|8>            64 / 72                 64 / 74
    float32   <4, 1|8>            59 / 62                 64 / 70
(launch bounds: <= 64 registers for 1 query, >= 4 blocks of 256 threads per SM; <= 85 for 8)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from embedcore import _backend
from embedcore.ops import search_cuda as sc
from embedcore.ops.search import search_reference

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "cuda" / "topk_search.cu"
INVALID = "invalid argument"


def _ext():
    ext = _backend.cuda_ext()
    if ext is None:
        pytest.skip("embedcore._cuda is not built (no nvcc at install time)")
    return ext


# -- host-side checks (any machine with the extension built) ------------------------------------


def test_extension_exposes_the_fused_entry_points():
    ext = _ext()
    assert callable(ext.fused_topk) and callable(ext.topk_plan) and callable(ext.topk_blocks_per_sm)
    assert set(ext.TOPK_FORMATS) == {"hamming", "int8", "float16", "bfloat16", "float32"}
    assert set(ext.TOPK_METRICS) == {"dot", "cos", "l2", "hamming"}
    assert ext.TOPK_MAX_K == 1024


@pytest.mark.parametrize("k,kp", [(1, 1), (2, 2), (10, 16), (16, 16), (17, 32), (1000, 1024), (1024, 1024)])
def test_plan_rounds_k_up_to_a_power_of_two(k, kp):
    ext = _ext()
    plan = ext.topk_plan(ext.TOPK_FORMATS["float16"], ext.TOPK_METRICS["dot"], 100, 768, k)
    assert plan["kp"] == kp
    assert 1 <= plan["queries_per_block"] <= 8
    assert plan["shared_bytes"] <= 48 * 1024


def test_plan_sizes_query_groups():
    ext = _ext()
    f16, dot = ext.TOPK_FORMATS["float16"], ext.TOPK_METRICS["dot"]
    assert ext.topk_plan(f16, dot, 1, 768, 10)["queries_per_block"] == 1
    assert ext.topk_plan(f16, dot, 3, 768, 10)["queries_per_block"] == 3
    assert (
        ext.topk_plan(ext.TOPK_FORMATS["hamming"], ext.TOPK_METRICS["hamming"], 100, 128, 10)[
            "queries_per_block"
        ]
        == 8
    )
    # 1024 kept + 1024 buffered keys: two queries fit in 48 KiB with a 768-dim float32 query each
    assert ext.topk_plan(f16, dot, 100, 768, 1024)["queries_per_block"] == 2


@pytest.mark.parametrize(
    "fmt,metric,width,k",
    [
        ("float16", "dot", 768, 0),
        ("float16", "dot", 768, 1025),
        ("hamming", "dot", 32, 10),
        ("float32", "hamming", 32, 10),
        ("int8", "cos", 64, 10),
        ("int8", "l2", 33026, 10),
        ("float32", "dot", 0, 10),
        ("float32", "dot", 12289, 1024),  # a float32 query no longer fits next to 16 KiB of keys
    ],
)
def test_plan_rejects_what_the_kernels_do_not_cover(fmt, metric, width, k):
    ext = _ext()
    assert ext.topk_plan(ext.TOPK_FORMATS[fmt], ext.TOPK_METRICS[metric], 4, width, k) is None


# Valid arguments (fake but non-null, 256-aligned device pointers); each case breaks one of them.
_GOOD = dict(
    format=2,
    metric=0,
    q_ptr=256,
    c_ptr=512,
    nq=3,
    n=5000,
    width=64,
    k=10,
    chunk=1024,
    out_ptr=768,
    nonfinite_ptr=1024,
    stream=0,
)


@pytest.mark.parametrize(
    "change",
    [
        {"k": 0},
        {"k": 1025},
        {"k": 10, "n": 9},  # k > N
        {"n": 0, "k": 1},
        {"n": 2**31},
        {"chunk": 0},
        {"width": 0},
        {"nq": -1},
        {"format": 7},
        {"format": 0},  # hamming bits with metric dot
        {"metric": 3},  # a float corpus with metric hamming
        {"format": 1, "metric": 1},  # int8 cos
        {"q_ptr": 0},
        {"c_ptr": 0},
        {"out_ptr": 0},
        {"nonfinite_ptr": 0},  # float formats report non-finite scores
    ],
)
def test_invalid_arguments_are_rejected_before_any_launch(change):
    """Checked on the host before any CUDA call: the fake pointers are never touched, so this runs
    with or without a GPU and returns cudaErrorInvalidValue as a RuntimeError."""
    ext = _ext()
    with pytest.raises(RuntimeError, match=INVALID):
        ext.fused_topk(**{**_GOOD, **change})


def test_empty_query_batch_launches_nothing():
    ext = _ext()
    ext.fused_topk(**{**_GOOD, "nq": 0, "q_ptr": 0, "out_ptr": 0})


def test_valid_arguments_without_a_device_fail_cleanly():
    """Past validation, the launch itself reports the missing driver/device (no crash)."""
    ext = _ext()
    if ext.device_count() > 0:
        pytest.skip("a device is present: the fake pointers must not be launched on")
    with pytest.raises(RuntimeError) as info:
        ext.fused_topk(**_GOOD)
    assert INVALID not in str(info.value)


def test_cpu_tensors_and_unsupported_inputs_give_none():
    import torch

    q, c = torch.zeros(2, 8), torch.zeros(50, 8)
    assert sc.search_cuda(q, c, 5, "dot") is None
    assert sc.search_cuda(q.numpy(), c.numpy(), 5, "dot") is None
    with pytest.raises(ValueError, match="Invalid metric"):
        sc.search_cuda(q, c, 5, "cosine")


@pytest.mark.parametrize(
    "n,groups,min_rows,slots,expected",
    [
        (700_000, 1, 1024, 660, 660),  # ~1 GB of 768-dim fp16: exactly one wave
        (7_000_000, 1, 1024, 660, 2640),  # capped at 4 waves
        (5_000, 1, 1024, 660, 5),  # small corpus: chunks of >= 1024 rows
        (1_000_000, 1250, 1024, 660, 3),  # many query groups already fill the device
        (100, 1, 1024, 660, 1),
    ],
)
def test_grid_is_sized_in_whole_waves(n, groups, min_rows, slots, expected):
    assert sc._n_blocks(n, groups, min_rows, slots) == expected


def test_cuda_backend_dispatch(monkeypatch):
    """EMBEDCORE_GPU_SEARCH=cuda asks the fused kernels first (not for float x int8 codes, which they
    do not cover) and keeps the general path when they decline; other values never ask them."""
    import torch

    from embedcore.ops import search as search_op

    asked = []

    def fake(queries, corpus, k, metric):
        asked.append((str(corpus.dtype), k, metric))
        return None  # declined: the general path answers

    monkeypatch.setattr(sc, "search_cuda", fake)
    gen = np.random.default_rng(5)
    q = torch.from_numpy(gen.integers(-3, 4, size=(2, 20)).astype(np.float32))
    c = torch.from_numpy(gen.integers(-3, 4, size=(60, 20)).astype(np.float32))
    expected = search_reference(q.numpy(), c.numpy(), 4, "dot")
    monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", "cuda")
    scores, idx = search_op._search_torch(q, c, 4, "dot", "float", None)
    np.testing.assert_array_equal(scores.numpy(), expected[0])
    np.testing.assert_array_equal(idx.numpy(), expected[1])
    assert asked == [("torch.float32", 4, "dot")]
    codes = torch.from_numpy(gen.integers(-128, 128, size=(60, 20)).astype(np.int8))
    ranges = np.stack([np.full(20, -1.0), np.full(20, 1.0)]).astype(np.float32)
    search_op._search_torch(q, codes, 4, "dot", "int8_asym", ranges)
    assert len(asked) == 1
    for value in ("auto", "torch"):
        monkeypatch.setenv("EMBEDCORE_GPU_SEARCH", value)
        search_op._search_torch(q, c, 4, "dot", "float", None)
    assert len(asked) == 1


def _ptxas_report(arch: str) -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [
        nvcc,
        "-c",
        str(SOURCE),
        "-o",
        "/dev/null",
        "-O3",
        "-std=c++17",
        "--expt-relaxed-constexpr",
        "-I",
        str(SOURCE.parent),
        "-gencode",
        f"arch=compute_{arch},code=sm_{arch}",
        "-Xptxas",
        "-v",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("arch", ["80", "90"])
def test_fused_kernels_do_not_spill(arch):
    """ptxas -v: every fused_topk_kernel instance without stack frame or spills; the 1-query kernels
    within 64 registers (>= 4 resident 256-thread blocks per SM for the bandwidth-bound case)."""
    report = _ptxas_report(arch)
    entries = []
    for chunk in report.split("Compiling entry function '")[1:]:
        name = chunk.split("'", 1)[0]
        if "fused_topk_kernel" not in name:
            continue
        frame = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", chunk
        )
        registers = re.search(r"Used (\d+) registers", chunk)
        assert frame and registers, chunk
        entries.append((name, [int(x) for x in frame.groups()], int(registers.group(1))))
    assert len(entries) == 10, report  # 5 formats x (1, 8) queries per block
    for name, frame, registers in entries:
        assert frame == [0, 0, 0], (name, frame)
        if re.search(r"Li\d+ELi1E", name):
            assert registers <= 64, (name, registers)


# -- GPU (compared with the numpy reference) ----------------------------------------------------


def _run(q, c, k, metric, *, unaligned=False):
    """search_cuda on device copies of q (numpy) and c (numpy or CPU tensor, e.g. bfloat16) ->
    numpy (scores, indices)."""
    import torch

    tq = torch.from_numpy(q).cuda()
    tc = c.cuda() if isinstance(c, torch.Tensor) else torch.from_numpy(c).cuda()
    if unaligned:  # a base pointer off 16-byte alignment: element loads instead of 16-byte vectors
        flat = torch.empty(tc.numel() + 1, dtype=tc.dtype, device=tc.device)
        flat[1:] = tc.reshape(-1)
        tc = flat[1:].view(tc.shape)
    out = sc.search_cuda(tq, tc, k, metric)
    assert out is not None
    scores, indices = out
    assert scores.is_cuda and indices.is_cuda and indices.dtype == torch.int64
    return scores.cpu().numpy(), indices.cpu().numpy()


def _check_exact(q, c_ref, got, k, metric):
    rs, ri = search_reference(q, c_ref, k, metric)
    np.testing.assert_array_equal(got[1], ri)
    np.testing.assert_array_equal(got[0], rs)
    assert got[0].dtype == rs.dtype


def _check_close(q, c_ref, got, k, metric, atol):
    """Scores within atol of the reference's; each returned row scores within atol of the k-th best
    (near-ties may swap order); indices unique per query."""
    scores, indices = got
    rs, _ = search_reference(q, c_ref, k, metric)
    np.testing.assert_allclose(scores, rs, atol=atol, rtol=0)
    full, order = search_reference(q, c_ref, c_ref.shape[0], metric)
    for i in range(len(q)):
        true = np.empty(c_ref.shape[0])
        true[order[i]] = full[i]
        picked = true[indices[i]]
        kth = rs[i, -1]
        assert (picked >= kth - atol).all() if metric in ("dot", "cos") else (picked <= kth + atol).all()
        assert len(set(indices[i].tolist())) == k


HAMMING_SHAPES = [(3, 5003, 32), (9, 4099, 33), (1, 70001, 96), (20, 3000, 7)]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("nq,n,nbytes", HAMMING_SHAPES)
def test_hamming_matches_reference(rng, dtype, nq, n, nbytes):
    distinct = rng.integers(0, 256, size=(40, nbytes)).astype(np.uint8).view(dtype)
    c = distinct[rng.integers(0, 40, size=n)]  # heavy ties: 40 distinct rows
    q = rng.integers(0, 256, size=(nq, nbytes)).astype(np.uint8).view(dtype)
    for k in (1, 10, 1024):
        _check_exact(q, c, _run(q, c, k, "hamming"), k, "hamming")
    _check_exact(q, c, _run(q, c, 10, "hamming", unaligned=True), 10, "hamming")


@pytest.mark.cuda
@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("nq,n,dim", [(1, 5003, 384), (9, 4099, 100), (3, 20011, 17), (20, 3000, 7)])
def test_int8_matches_reference(rng, metric, nq, n, dim):
    c = rng.integers(-3, 4, size=(n, dim)).astype(np.int8)  # few levels: many equal scores
    q = rng.integers(-3, 4, size=(nq, dim)).astype(np.int8)
    for k in (1, 10, 1024):
        _check_exact(q, c, _run(q, c, k, metric), k, metric)
    _check_exact(q, c, _run(q, c, 10, metric, unaligned=True), 10, metric)


FLOAT_DTYPES = ["float16", "bfloat16", "float32"]


def _float_corpus(rng, n, dim, dtype, levels):
    """Corpus tensor of small integers (exact in every dtype, sums exact in float32) and its float64
    numpy twin for the reference."""
    import torch

    values = rng.integers(-levels, levels + 1, size=(n, dim)).astype(np.float32)
    return torch.from_numpy(values).to(getattr(torch, dtype)), values


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("nq,n,dim", [(1, 70001, 768), (3, 5003, 64), (9, 4099, 37), (1, 3000, 8)])
def test_float_integer_valued_is_exact(rng, dtype, metric, nq, n, dim):
    """Integer-valued inputs make every float32 sum exact, so ties are real and the answer must equal
    the reference's index for index."""
    tc, c = _float_corpus(rng, n, dim, dtype, 2)
    q = rng.integers(-2, 3, size=(nq, dim)).astype(np.float32)
    for k in (1, 10, 1024):
        _check_exact(q, c, _run(q, tc, k, metric), k, metric)
    _check_exact(q, c, _run(q, tc, 10, metric, unaligned=True), 10, metric)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,atol", [("float16", 2e-5), ("bfloat16", 2e-5), ("float32", 2e-5)])
@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
def test_float_random_within_tolerance(rng, dtype, atol, metric):
    """Unit-norm embeddings: fp32 accumulation of the dtype's exact values, compared with float64."""
    import torch

    c32 = rng.standard_normal((20011, 384)).astype(np.float32)
    c32 /= np.linalg.norm(c32, axis=1, keepdims=True)
    tc = torch.from_numpy(c32).to(getattr(torch, dtype))
    c = tc.float().numpy()  # the values the kernel reads
    q = rng.standard_normal((5, 384)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for k in (1, 10, 1024):
        _check_close(q, c, _run(q, tc, k, metric), k, metric, atol)


@pytest.mark.cuda
def test_one_query_many_blocks_matches_reference(rng):
    """The bandwidth case: one fp16 query over more rows than one wave of blocks holds."""
    tc, c = _float_corpus(rng, 1 << 20, 64, "float16", 3)
    q = rng.integers(-3, 4, size=(1, 64)).astype(np.float32)
    for k in (1, 10, 1024):
        _check_exact(q, c, _run(q, tc, k, "dot"), k, "dot")
    scores, indices = _run(q[0], tc, 10, "dot")  # 1-D query: 1-D results
    assert scores.shape == indices.shape == (10,)


@pytest.mark.cuda
def test_k_above_the_cap_and_unsupported_pairs_give_none(rng):
    import torch

    c = torch.zeros((3000, 16), dtype=torch.float16, device="cuda")
    q = torch.zeros((2, 16), dtype=torch.float32, device="cuda")
    assert sc.search_cuda(q, c, 1025, "dot") is None
    assert sc.search_cuda(q, c.double(), 10, "dot") is None
    ci = torch.zeros((3000, 16), dtype=torch.int8, device="cuda")
    assert sc.search_cuda(ci[:2], ci, 10, "cos") is None


@pytest.mark.cuda
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_raise(bad):
    import torch

    c = torch.ones((3000, 16), dtype=torch.float16, device="cuda")
    q = torch.ones((2, 16), dtype=torch.float32, device="cuda")
    c[1234, 5] = bad
    for metric in ("dot", "cos", "l2"):
        with pytest.raises(ValueError, match="corpus contains NaN"):
            sc.search_cuda(q, c, 10, metric)
    q[1, 3] = bad
    with pytest.raises(ValueError, match="queries contains NaN"):
        sc.search_cuda(q, c[:5], 3, "dot")


@pytest.mark.cuda
def test_empty_query_batch_on_the_device():
    import torch

    c = torch.ones((3000, 16), dtype=torch.float16, device="cuda")
    scores, indices = sc.search_cuda(torch.ones((0, 16), device="cuda"), c, 10, "dot")
    assert scores.shape == indices.shape == (0, 10)
