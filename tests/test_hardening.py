"""Hostile inputs: overflowing cosines, integer extremes, odd tensors, thread and ISA invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedcore as ec
from embedcore import persist
from embedcore.index import Index, semantic_search
from embedcore.ops.search import search_reference


@pytest.mark.parametrize("nq", [1, 2, 3])  # 1-2 queries: the fused score + norm pass
@pytest.mark.parametrize("big", [1e18, 3e37])
def test_cos_of_rows_with_huge_values_matches_the_reference(big, nq, rng):
    c = rng.standard_normal((40, 9)).astype(np.float32)
    q = rng.standard_normal((nq, 9)).astype(np.float32)
    c[0] = q[0] * big  # the best match of query 0, with a float32 square sum of inf
    c[7] = big
    scores, ids = ec.search(q, c, 6, "cos")
    ref_scores, ref_ids = search_reference(q, c, 6, "cos")
    assert ids[0, 0] == 0
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    hits = semantic_search(q, c, top_k=6)
    assert [h["corpus_id"] for h in hits[0]] == ref_ids[0].tolist()
    # float64 queries far beyond float32 normalise like any others.
    s64, i64 = ec.search(q.astype(np.float64) * 1e200, c, 6, "cos")
    np.testing.assert_array_equal(i64, ids)
    np.testing.assert_allclose(s64, scores, atol=1e-6)


@pytest.mark.parametrize("nq", [1, 3])
def test_cos_of_a_corpus_with_nan_still_raises(nq, rng):
    c = rng.standard_normal((40, 9)).astype(np.float32)
    c[5, 2] = np.nan
    c[6] = 1e30  # a rescalable row does not hide the NaN
    with pytest.raises(ValueError, match="NaN or infinity"):
        ec.search(rng.standard_normal((nq, 9)).astype(np.float32), c, 3, "cos")


def test_cos_normal_rows_are_unchanged_bit_for_bit(rng):
    c = rng.standard_normal((50, 17)).astype(np.float32)
    q = rng.standard_normal((4, 17)).astype(np.float32)
    from embedcore import _backend

    q64 = q.astype(np.float64)
    unit = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)).astype(np.float32)
    native = _backend.require_native()
    expected = native.search_float(unit, c, "f32", "cos", 5, 1, None, None)
    got = ec.search(q, c, 5, "cos")
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_float64_queries_beyond_float32_are_blamed_on_the_queries():
    c = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="queries holds float64 values beyond the float32 range"):
        ec.search(np.full((1, 4), 1e39), c, 1, "dot")


def test_pool_to_codes_of_a_tensor_that_requires_grad():
    hidden = torch.randn(2, 3, 8, requires_grad=True)
    codes = ec.pool(hidden, None, precision="binary")
    np.testing.assert_array_equal(codes, ec.pool(hidden.detach(), None, precision="binary"))
    ec.pool(hidden, None).sum().backward()  # float precision keeps autograd
    assert hidden.grad is not None


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_topk_names_the_unsupported_64_bit_dtypes(dtype):
    with pytest.raises(TypeError, match=r"unsupported dtype (u?int64) \(64-bit integers .*supported: "):
        ec.topk(np.arange(10, dtype=dtype).reshape(2, 5), 2)


def test_default_ids_past_int64_and_uint64_removals():
    idx = Index(4)
    idx.add(np.ones((1, 4), np.float32), ids=[2**63 - 1])
    with pytest.raises(ValueError, match="int64 maximum; pass ids explicitly"):
        idx.add(np.ones((1, 4), np.float32))
    idx.add(np.ones((1, 4), np.float32), ids=[-1])
    with pytest.raises(ValueError, match="ids must fit in int64"):
        idx.remove(np.array([2**64 - 1], np.uint64))
    assert len(idx) == 2  # id -1 is still there


def test_thread_count_over_the_limit(monkeypatch):
    monkeypatch.setenv("EMBEDCORE_NUM_THREADS", str(2**31))
    with pytest.raises(ValueError, match=r"EMBEDCORE_NUM_THREADS must be an integer in \[1, 4096\]"):
        ec.search(np.ones((1, 4), np.float32), np.ones((3, 4), np.float32), 1)


def test_bad_devices_and_tensor_kinds():
    with pytest.raises(ValueError, match="Invalid device 'nonsense'"):
        Index(4, device="nonsense")
    meta, sparse = torch.ones(3, 4, device="meta"), torch.ones(3, 4).to_sparse()
    for call, name in [
        (lambda t: ec.search(t, t, 1), "queries"),
        (lambda t: ec.quantize(t, "int8"), "embeddings"),
        (lambda t: ec.topk(t, 1), "scores"),
        (lambda t: Index(4).add(t), "embeddings"),
        (lambda t: ec.pool(t[None], None), "hidden"),
    ]:
        with pytest.raises(ValueError, match=f"{name} is on the meta device"):
            call(meta)
        with pytest.raises(TypeError, match=rf"{name} is a torch.sparse_coo tensor"):
            call(sparse)


def test_quantize_rejects_ragged_lists_and_scalars():
    with pytest.raises(ValueError, match=r"embeddings\[1\] has shape \(3,\)"):
        ec.quantize([np.ones(2, np.float32), np.ones(3, np.float32)], "int8")
    with pytest.raises(ValueError, match=r"embeddings must be \(n, dim\) or \(dim,\), got shape \(\)"):
        ec.quantize(np.array(1.0, np.float32), "binary")


def test_mapped_file_truncated_after_load_is_caught_not_a_crash(rng, tmp_path):
    path = tmp_path / "idx"
    idx = Index(16)
    idx.add(rng.standard_normal((3000, 16)).astype(np.float32))
    idx.save(path)
    loaded = Index.load(path)  # memory-mapped
    codes = persist.current_folder(path) / "codes.npy"
    with open(codes, "r+b") as f:
        f.truncate(4096)
    for call in (loaded.verify, lambda: loaded.add(np.ones((1, 16), np.float32)), lambda: loaded.save(path)):
        with pytest.raises(persist.CorruptFolderError, match=r"codes\.npy shrank after it was memory-mapped"):
            call()
    # A mapped version deleted by later saves is still whole: its mapping keeps the file alive.
    other = tmp_path / "other"
    idx.save(other)
    reloaded = Index.load(other)
    idx.save(other)
    idx.save(other)
    assert not (persist.current_folder(other).parent / "v00000001").exists()
    reloaded.verify()
    assert len(reloaded.search(np.ones((1, 16), np.float32), 3)[1][0]) == 3


def _all_metric_cases(rng):
    n, d = 301, 70
    f = rng.standard_normal((n, d)).astype(np.float32)
    qf = rng.standard_normal((9, d)).astype(np.float32)
    i8 = rng.integers(-3, 3, (n, d), dtype=np.int8)  # heavy ties
    qi8 = rng.integers(-3, 3, (9, d), dtype=np.int8)
    u8 = rng.integers(0, 4, (n, 12), dtype=np.uint8)
    qu8 = rng.integers(0, 4, (9, 12), dtype=np.uint8)
    return {
        "f32-cos": (qf, f, "cos"), "f32-l2": (qf, f, "l2"), "f32-dot": (qf, f, "dot"),
        "i8-dot": (qi8, i8, "dot"), "i8-l2": (qi8, i8, "l2"), "hamming": (qu8, u8, "hamming"),
    }


def test_results_do_not_depend_on_the_thread_count(rng, monkeypatch):
    for name, (q, c, metric) in _all_metric_cases(rng).items():
        results = []
        for threads in (1, 2, 3, 7):
            monkeypatch.setenv("EMBEDCORE_NUM_THREADS", str(threads))
            results.append(ec.search(q, c, 25, metric))
        for scores, ids in results[1:]:
            np.testing.assert_array_equal(scores, results[0][0], err_msg=name)
            np.testing.assert_array_equal(ids, results[0][1], err_msg=name)


def test_integer_metrics_are_bit_identical_across_isa_levels(rng):
    from embedcore import _backend

    native = _backend.require_native()
    before = native.isa()
    cases = {k: v for k, v in _all_metric_cases(rng).items() if not k.startswith("f32")}
    try:
        per_isa = {}
        for level in native.available_isas():
            native.set_isa(level)
            per_isa[level] = {name: ec.search(q, c, 25, metric) for name, (q, c, metric) in cases.items()}
    finally:
        native.set_isa(before)
    first = next(iter(per_isa.values()))
    for level, results in per_isa.items():
        for name, (scores, ids) in results.items():
            ref_scores, ref_ids = search_reference(*cases[name][:2], 25, cases[name][2])
            np.testing.assert_array_equal(scores, ref_scores, err_msg=f"{level} {name}")
            np.testing.assert_array_equal(ids, ref_ids, err_msg=f"{level} {name}")
            np.testing.assert_array_equal(ids, first[name][1])
