"""embedcore.Index and semantic_search against numpy brute force (and sentence-transformers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedcore as ec
from embedcore.index import RESCORE_MODES, Index

from helpers import assert_close

DIM = 37  # not a multiple of 8: the packed sign bits end in a padded byte
# Every (precision, rescore) pair the index supports.
CONFIGS = [(p, r) for p, modes in RESCORE_MODES.items() for r in modes]


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dequantize_np(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Independent numpy dequantisation: the lower edge of each of sentence-transformers' buckets."""
    steps = (ranges[1] - ranges[0]) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps)
    return (codes.astype(np.float64) + 128) * steps.astype(np.float64) + ranges[0].astype(np.float64)


def _hamming(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    qb, cb = np.packbits(q > 0, axis=1), np.packbits(c > 0, axis=1)
    return np.bitwise_count(qb[:, None, :] ^ cb[None, :, :]).sum(-1).astype(np.int64)


def _pair_scores(q: np.ndarray, v: np.ndarray, metric: str) -> np.ndarray:
    """float64 (nq, n) scores of queries against vectors; squared distances for l2."""
    if metric == "l2":
        return (q * q).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * q @ v.T
    return q @ v.T


def _reference(x, q, precision, rescore, metric, k, mult, ranges):
    """Brute force: the full score matrix of the scanned format (and rescoring), then sort.

    Returns the reference score matrix (nq, n) the returned scores must come from, and for each
    query the sorted best-k values; ``None`` candidates means every row was eligible.
    """
    if metric == "cos":
        x, q = _unit(x), _unit(q)
    x, q = x.astype(np.float32).astype(np.float64), q.astype(np.float32).astype(np.float64)
    ascending = metric == "l2"
    if precision == "float16":
        scan = _pair_scores(q, x.astype(np.float16).astype(np.float64), metric)
    elif precision == "int8":
        scan = _pair_scores(q, _dequantize_np(_st_int8(x, ranges), ranges), metric)
    elif precision == "binary":
        scan, ascending = _hamming(q, x), True
    else:
        scan = _pair_scores(q, x, metric)
    if rescore is None:
        return scan, ascending, None
    rows = np.argsort(scan if ascending else -scan, axis=1, kind="stable")[:, : min(k * mult, len(x))]
    vectors = x if rescore == "float32" else _dequantize_np(_st_int8(x, ranges), ranges)
    return _pair_scores(q, vectors, metric), metric == "l2", rows


def _st_int8(x: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    from sentence_transformers.util.quantization import quantize_embeddings

    # sentence-transformers clips bucket indexes to [0, 255]: values beyond the ranges go to the end buckets.
    return quantize_embeddings(x.astype(np.float32), "int8", ranges=ranges)


def _check_results(scores, ids, ref, ascending, candidates, k, atol, id_of_row):
    """Returned scores equal the reference scores of the returned ids, and are the best k."""
    scores, ids = np.asarray(scores, np.float64), np.asarray(ids)
    row_of_id = {int(i): r for r, i in enumerate(id_of_row)}
    rows = np.vectorize(row_of_id.__getitem__)(ids)
    assert_close(scores, np.take_along_axis(ref, rows, axis=1), atol=atol, name="scores")
    for qi in range(len(ref)):
        pool = ref[qi] if candidates is None else ref[qi, candidates[qi]]
        if candidates is not None:
            assert set(rows[qi]) <= set(candidates[qi].tolist()), "a result outside the scan's candidates"
        best = np.sort(pool)[:k] if ascending else -np.sort(-pool)[:k]
        assert_close(scores[qi], best, atol=atol, name=f"best-{k} values of query {qi}")
        assert len(set(rows[qi])) == k


@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
@pytest.mark.parametrize(("precision", "rescore"), CONFIGS)
def test_search_equals_brute_force(precision, rescore, metric, rng):
    x = rng.standard_normal((300, DIM)).astype(np.float32)
    q = rng.standard_normal((7, DIM)).astype(np.float32)
    idx = Index(DIM, precision, metric, rescore, rescore_multiplier=3)
    idx.add(x[:200])
    idx.add(x[200:])  # a second add: int8 ranges stay those of the first
    k = 10
    scores, ids = idx.search(q, k)
    assert scores.shape == ids.shape == (7, k) and ids.dtype == np.int64
    ranges = idx.ranges
    if precision == "int8" or rescore == "int8":
        first = _unit(x[:200]) if metric == "cos" else x[:200]
        assert_close(ranges, np.stack([first.min(0), first.max(0)]), atol=1e-6, name="ranges")
    ref, ascending, candidates = _reference(x, q, precision, rescore, metric, k, 3, ranges)
    atol = 2e-3 if metric != "cos" else 2e-5
    _check_results(scores, ids, ref, ascending, candidates, k, atol, idx.ids)
    if precision == "binary" and rescore is None:
        # Integer distances: the order, ties included (toward the earlier row), is exactly the stable sort.
        np.testing.assert_array_equal(ids, np.argsort(ref, axis=1, kind="stable")[:, :k])


def test_float_index_equals_faiss_flat_ip(rng):
    faiss = pytest.importorskip("faiss")
    x = _unit(rng.standard_normal((500, 64))).astype(np.float32)
    q = _unit(rng.standard_normal((20, 64))).astype(np.float32)
    idx = Index(64, "float32", "cos")
    idx.add(x)
    flat = faiss.IndexFlatIP(64)
    flat.add(x)
    d, i = flat.search(q, 10)
    scores, ids = idx.search(q, 10)
    np.testing.assert_array_equal(ids, i)
    assert_close(scores, d, atol=1e-5)


def test_heavy_ties_break_toward_earlier_vectors(rng):
    # Four distinct vectors, each stored many times: every score is tied with its copies.
    base = rng.standard_normal((4, DIM)).astype(np.float32)
    which = rng.integers(0, 4, 120)
    for precision, rescore in CONFIGS:
        idx = Index(DIM, precision, "dot", rescore, rescore_multiplier=2)
        idx.add(base[which], ids=np.arange(1000, 1120))
        scores, ids = idx.search(base, 40)
        for s_row, i_row in zip(scores, ids):
            copies = which[i_row - 1000]
            for a in range(len(i_row) - 1):
                if copies[a] == copies[a + 1] or s_row[a] == s_row[a + 1]:
                    assert s_row[a] == s_row[a + 1] or copies[a] != copies[a + 1], (precision, rescore)
                if s_row[a] == s_row[a + 1]:
                    assert i_row[a] < i_row[a + 1], f"{precision}/{rescore}: tie not in storage order"


def test_ids_custom_default_and_remove(rng):
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    idx = Index(DIM, "float32", "dot")
    idx.add(x[:20], ids=np.arange(100, 120))
    idx.add(x[20:30])  # defaults continue after the largest id
    np.testing.assert_array_equal(idx.ids[20:], np.arange(120, 130))
    with pytest.raises(ValueError, match="duplicates"):
        idx.add(x[30:32], ids=[7, 7])
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(x[30:32], ids=[5, 105])
    assert len(idx) == 30  # failed adds change nothing
    assert idx.remove([100, 125]) == 2
    with pytest.raises(KeyError, match="100"):
        idx.remove([100])
    assert len(idx) == 28
    kept = np.delete(np.arange(30), [0, 25])
    _scores, ids = idx.search(x[:3], 28)
    ref = x[:3].astype(np.float64) @ x[kept].T.astype(np.float64)
    expected_ids = idx.ids[np.argsort(-ref, axis=1, kind="stable")]
    np.testing.assert_array_equal(ids, expected_ids)
    # Removing every vector leaves an empty index that refuses to search.
    idx.remove(idx.ids.copy())
    with pytest.raises(ValueError, match="empty"):
        idx.search(x[:1], 1)
    idx.add(x[:2])
    np.testing.assert_array_equal(idx.ids, [130, 131])


def test_int8_ranges_fixed_at_first_add_and_int8_queries_are_symmetric(rng):
    x = rng.standard_normal((100, DIM)).astype(np.float32)
    idx = Index(DIM, "int8", "dot")
    idx.add(x[:50])
    ranges = idx.ranges
    idx.add(3 * x[50:])  # far outside the first ranges: clipped, the ranges do not move
    np.testing.assert_array_equal(idx.ranges, ranges)
    q8 = ec.quantize(x[:5], "int8", ranges=ranges)
    scores, ids = idx.search(q8, 10)
    codes = np.concatenate(
        [ec.quantize(x[:50], "int8", ranges=ranges), ec.quantize(3 * x[50:], "int8", ranges=ranges)]
    )
    assert codes.min() == -128 and codes.max() == 127
    ref = q8.astype(np.int64) @ codes.astype(np.int64).T
    np.testing.assert_array_equal(ids, np.argsort(-ref, axis=1, kind="stable")[:, :10])
    np.testing.assert_array_equal(scores, np.take_along_axis(ref, ids, axis=1))
    # With metric cos, int8 queries are ranked by the cosine of the codes (sentence-transformers' way).
    cos_index = Index(DIM, "int8", "cos", ranges=ranges)
    cos_index.add(x[:50])
    q8 = ec.quantize(_unit(x[:5]).astype(np.float32), "int8", ranges=ranges)
    codes = ec.quantize(_unit(x[:50]).astype(np.float32), "int8", ranges=ranges).astype(np.float64)
    ref = _unit(q8.astype(np.float64)) @ _unit(codes).T
    scores, ids = cos_index.search(q8, 10)
    np.testing.assert_array_equal(ids, np.argsort(-ref, axis=1, kind="stable")[:, :10])
    assert_close(scores, np.take_along_axis(ref, ids, axis=1), atol=1e-6)
    # Given ranges are used from the first add on.
    fixed = Index(DIM, "int8", "dot", ranges=ranges * 2)
    fixed.add(x[:1])
    np.testing.assert_array_equal(fixed.ranges, ranges * 2)


def test_binary_packed_queries_and_tensors(rng):
    x = rng.standard_normal((80, DIM)).astype(np.float32)
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    idx = Index(DIM, "binary")
    idx.add(torch.from_numpy(x))
    s_float, i_float = idx.search(q, 5)
    s_bits, i_bits = idx.search(np.packbits(q > 0, axis=1), 5)
    np.testing.assert_array_equal(i_float, i_bits)
    np.testing.assert_array_equal(s_float, s_bits)
    _s_t, i_t = idx.search(torch.from_numpy(q), 5)
    assert isinstance(i_t, torch.Tensor) and i_t.dtype == torch.int64
    np.testing.assert_array_equal(i_t.numpy(), i_float)


def test_rescore_multiplier_override_and_saturation(rng):
    x = rng.standard_normal((40, DIM)).astype(np.float32)
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    idx = Index(DIM, "binary", "dot", rescore="float32", rescore_multiplier=1)
    idx.add(x)
    exact = Index(DIM, "float32", "dot")
    exact.add(x)
    # k * multiplier >= n: every vector is rescored, so the result is the exact one.
    np.testing.assert_array_equal(idx.search(q, 5, rescore_multiplier=8)[1], exact.search(q, 5)[1])
    assert idx.rescore_multiplier == 1


def test_tune_rescore_multiplier_picks_the_smallest_reaching_target(rng):
    n, k, target = 300, 10, 0.9
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    idx = Index(DIM, "binary", "cos", rescore="int8", rescore_multiplier=1)
    idx.add(x)
    xu = _unit(x)
    truth = np.argsort(-(xu @ xu.T), axis=1, kind="stable")
    hamming = np.argsort(_hamming(x, x), axis=1, kind="stable")
    deq = _dequantize_np(_st_int8(xu, idx.ranges), idx.ranges)

    def recall(mult: int) -> float:
        # Every row as a query, itself left out: k * mult + 1 candidates, rescored, best k others.
        hits = 0
        for i in range(n):
            cand = hamming[i, : k * mult + 1]
            best = cand[np.argsort(-(deq[cand] @ xu[i]), kind="stable")]
            hits += len(np.intersect1d(best[best != i][:k], truth[i][truth[i] != i][:k]))
        return hits / (k * n)

    mult, estimate = idx.tune_rescore_multiplier(target, k=k, sample_size=n, embeddings=x)
    assert idx.rescore_multiplier == mult
    assert estimate >= target
    assert abs(recall(mult) - estimate) <= 0.005
    for smaller in (m for m in (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20) if m < mult):
        assert recall(smaller) < target + 0.005, f"multiplier {smaller} already reaches the target"
    with pytest.raises(ValueError, match="rescore=None"):
        Index(DIM, "binary").tune_rescore_multiplier(0.9)
    with pytest.raises(ValueError, match="target_recall"):
        idx.tune_rescore_multiplier(1.5)
    with pytest.raises(ValueError, match="embeddings has 5 rows"):
        idx.tune_rescore_multiplier(0.9, embeddings=x[:5])


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("score", ["cos", "dot"])
def test_semantic_search_equals_sentence_transformers(as_tensor, score, rng):
    from sentence_transformers import util

    corpus = rng.standard_normal((120, DIM)).astype(np.float32)
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    fn = util.cos_sim if score == "cos" else util.dot_score
    expected = util.semantic_search(
        torch.from_numpy(queries), torch.from_numpy(corpus), top_k=15, score_function=fn
    )
    args = (torch.from_numpy(queries), torch.from_numpy(corpus)) if as_tensor else (queries, corpus)
    for got in (ec.semantic_search(*args, top_k=15, score_function=score), ec.semantic_search(*args, 15, fn)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert [h["corpus_id"] for h in g] == [h["corpus_id"] for h in e]
            assert_close([h["score"] for h in g], [h["score"] for h in e], atol=1e-5)
    # top_k beyond the corpus is capped, as in sentence-transformers; a 1-D query is one query.
    assert len(ec.semantic_search(queries[0], corpus[:4], top_k=10)) == 1
    assert len(ec.semantic_search(queries[0], corpus[:4], top_k=10)[0]) == 4


def test_bad_input_is_rejected_with_the_argument_named(rng):
    x = rng.standard_normal((10, DIM)).astype(np.float32)
    with pytest.raises(ValueError, match="precision"):
        Index(DIM, "int4")
    with pytest.raises(ValueError, match="metric"):
        Index(DIM, metric="hamming")
    with pytest.raises(ValueError, match="rescore"):
        Index(DIM, "int8", rescore="int8")
    with pytest.raises(ValueError, match="rescore"):
        Index(DIM, "float32", rescore="float32")
    with pytest.raises(ValueError, match="dim"):
        Index(0)
    with pytest.raises(ValueError, match="rescore_multiplier"):
        Index(DIM, "binary", rescore="int8", rescore_multiplier=0)
    with pytest.raises(ValueError, match="ranges"):
        Index(DIM, "float32", ranges=np.zeros((2, DIM), np.float32))
    with pytest.raises(ValueError, match="ranges"):
        Index(DIM, "int8", ranges=np.zeros((2, DIM + 1), np.float32))
    idx = Index(DIM, "int8")
    with pytest.raises(ValueError, match="at least 2 rows"):
        idx.add(x[:1])
    with pytest.raises(ValueError, match="embeddings has dim 38, the index has dim 37"):
        idx.add(np.zeros((3, DIM + 1), np.float32))
    with pytest.raises(TypeError, match="embeddings must hold floats"):
        idx.add(x.astype(np.int32))
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        idx.add(bad)
    with pytest.raises(ValueError, match="row 2 is a zero vector"):
        idx.add(np.where(np.arange(10)[:, None] == 2, 0, x))
    with pytest.raises(ValueError, match="empty"):
        idx.search(x[:1], 1)
    idx.add(x)
    with pytest.raises(ValueError, match="queries has dim 36"):
        idx.search(x[:2, :-1], 3)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(x[:2], 11)
    with pytest.raises(ValueError, match="2-D"):
        idx.search(x[0], 3)
    with pytest.raises(TypeError, match="queries must be a numpy array"):
        idx.search(x.tolist(), 3)
    with pytest.raises(TypeError, match="uint8 queries"):
        idx.search(np.zeros((1, 5), np.uint8), 3)
    with pytest.raises(TypeError, match="ids must be integers"):
        idx.add(x, ids=np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="ids must have shape"):
        idx.add(x, ids=np.arange(100, 105))
    with pytest.raises(ValueError, match="score_function"):
        ec.semantic_search(x, x, score_function="l1")


def _host_and_device(precision, rescore, metric, x, device):
    """The same vectors in a host index and a device index (added in two parts, ids given)."""
    host = Index(DIM, precision, metric, rescore, rescore_multiplier=3)
    dev = Index(DIM, precision, metric, rescore, rescore_multiplier=3, device=device)
    ids = np.arange(1000, 1000 + len(x))
    host.add(x[:50], ids=ids[:50])
    host.add(x[50:], ids=ids[50:])
    t = torch.from_numpy(x).to(device)
    dev.add(t[:50], ids=torch.from_numpy(ids[:50]))
    dev.add(t[50:], ids=ids[50:])
    return host, dev


def _assert_same_results(host_result, device_result, device):
    for h, d in zip(host_result, device_result):
        assert isinstance(d, torch.Tensor) and d.device.type == torch.device(device).type
        np.testing.assert_array_equal(d.cpu().numpy(), h)


@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
@pytest.mark.parametrize(("precision", "rescore"), CONFIGS)
def test_device_index_on_cpu_tensors_equals_host_index(precision, rescore, metric, rng, tmp_path):
    # device="cpu" runs the whole device code path (torch storage, ec.quantize and ec.search on
    # tensors, rescoring on tensors) and must give exactly the host index's results.
    x = rng.standard_normal((130, DIM)).astype(np.float32)
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    host, dev = _host_and_device(precision, rescore, metric, x, "cpu")
    assert isinstance(dev._codes.view(), torch.Tensor) and isinstance(dev.ids, torch.Tensor)
    np.testing.assert_array_equal(dev._codes.view().numpy(), host._codes.view())
    if host.ranges is not None:
        np.testing.assert_array_equal(dev.ranges, host.ranges)
    assert dev.nbytes == host.nbytes
    _assert_same_results(host.search(q, 7), dev.search(torch.from_numpy(q), 7), "cpu")
    kw = {"rescore_multiplier": 5}
    _assert_same_results(host.search(q, 4, **kw), dev.search(q, 4, **kw), "cpu")
    if precision == "binary" and rescore is None:
        bits = np.packbits(q > 0, axis=1)
        _assert_same_results(host.search(bits, 6), dev.search(torch.from_numpy(bits), 6), "cpu")
    if precision == "int8" and rescore is None:
        codes = ec.quantize(q, "int8", ranges=host.ranges)
        _assert_same_results(host.search(codes, 6), dev.search(codes, 6), "cpu")
    assert host.remove([1003, 1100]) == dev.remove(torch.tensor([1003, 1100])) == 2
    np.testing.assert_array_equal(dev.ids.numpy(), host.ids)
    _assert_same_results(host.search(q, 7), dev.search(q, 7), "cpu")
    # save() writes host copies in the same format; load(device=...) moves them back.
    dev.save(tmp_path / "dev")
    host.save(tmp_path / "host")
    for name in ("ids", "codes", "rescore_vectors", "ranges"):
        if (tmp_path / "host" / f"{name}.npy").exists():
            np.testing.assert_array_equal(np.load(tmp_path / "dev" / f"{name}.npy"),
                                          np.load(tmp_path / "host" / f"{name}.npy"))
    loaded = Index.load(tmp_path / "dev", device="cpu")
    assert loaded.device == torch.device("cpu") and repr(loaded) == repr(host)
    _assert_same_results(host.search(q, 7), loaded.search(q, 7), "cpu")
    back = Index.load(tmp_path / "dev").to("cpu").to(None)
    assert back.device is None and isinstance(back.ids, np.ndarray)
    for h, b in zip(host.search(q, 7), back.search(q, 7)):
        np.testing.assert_array_equal(b, h)
    if rescore is not None:
        assert host.tune_rescore_multiplier(0.5, k=3, sample_size=40) == dev.tune_rescore_multiplier(
            0.5, k=3, sample_size=40
        )


def test_device_index_checks_input_like_the_host_index(rng):
    idx = Index(DIM, "binary", "cos", rescore="int8", device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        idx.add(torch.full((3, DIM), float("nan")))
    with pytest.raises(ValueError, match="zero vector"):
        idx.add(torch.zeros((3, DIM)))
    with pytest.raises(TypeError, match="floats"):
        idx.add(torch.ones((3, DIM), dtype=torch.int32))
    with pytest.raises(ValueError, match="dim"):
        idx.add(torch.ones((3, DIM + 1)))
    assert len(idx) == 0
    idx.add(torch.from_numpy(rng.standard_normal((20, DIM)).astype(np.float32)))
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(torch.ones((1, DIM)), ids=[3])
    with pytest.raises(ValueError, match="NaN"):
        idx.search(torch.full((1, DIM), float("inf")), 3)
    with pytest.raises(TypeError, match="float queries"):
        idx.search(torch.zeros((1, DIM), dtype=torch.int8), 3)
    with pytest.raises(KeyError):
        idx.remove([99])


def test_dequantised_rescoring_cache_limit_gives_the_same_results(rng, monkeypatch):
    import embedcore.index as index_module

    x = rng.standard_normal((200, DIM)).astype(np.float32)
    q = rng.standard_normal((6, DIM)).astype(np.float32)
    cached = Index(DIM, "binary", "cos", rescore="int8")
    cached.add(x)
    expected = cached.search(q, 5)
    assert cached._deq is not None
    monkeypatch.setattr(index_module, "DEQUANT_CACHE_BYTES", 0)
    uncached = Index(DIM, "binary", "cos", rescore="int8")
    uncached.add(x)
    got = uncached.search(q, 5)
    assert uncached._deq is None
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    # An add after a search drops the cache: the new vectors are rescored too.
    cached.add(q, ids=np.arange(500, 506))
    assert (cached.search(q, 1)[1][:, 0] == np.arange(500, 506)).all()


@pytest.mark.cuda
@pytest.mark.parametrize(("precision", "rescore"), CONFIGS)
def test_cuda_index_matches_host_index(precision, rescore, rng, tmp_path):
    # Never run on the development machine (no GPU). Scores of float formats come from cuBLAS, so
    # they may differ from the CPU's in the last bits: compare with a tolerance, ids where exact.
    x = rng.standard_normal((3000, DIM)).astype(np.float32)
    q = rng.standard_normal((9, DIM)).astype(np.float32)
    host, dev = _host_and_device(precision, rescore, "cos", x, "cuda")
    assert dev._codes.view().is_cuda and dev.ids.is_cuda
    np.testing.assert_array_equal(dev._codes.view().cpu().numpy(), host._codes.view())
    (hs, hi), (ds, di) = host.search(q, 10), dev.search(torch.from_numpy(q).cuda(), 10)
    assert ds.is_cuda and di.is_cuda
    assert_close(ds.cpu().numpy(), hs, atol=1e-5, name="scores")
    if precision == "binary" and rescore is None:
        np.testing.assert_array_equal(di.cpu().numpy(), hi)
    dev.save(tmp_path / "dev")
    loaded = Index.load(tmp_path / "dev", device="cuda")
    np.testing.assert_array_equal(loaded.search(q, 10)[1].cpu().numpy(), di.cpu().numpy())


@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("rows", [1, 3])
def test_cos_queries_with_nan_inf_or_zero_rows_are_rejected(device, rows, rng):
    idx = Index(DIM, "float32", "cos", device=device)
    idx.add(rng.standard_normal((20, DIM)).astype(np.float32))
    for bad, match in ((np.nan, "NaN"), (np.inf, "NaN or infinity"), (-np.inf, "NaN or infinity")):
        q = rng.standard_normal((rows, DIM)).astype(np.float32)
        q[rows - 1, 5] = bad
        with pytest.raises(ValueError, match=match):
            idx.search(q, 3)
    q = rng.standard_normal((rows, DIM)).astype(np.float32)
    q[rows - 1] = 0
    with pytest.raises(ValueError, match=f"row {rows - 1} is a zero vector"):
        idx.search(q, 3)
    # float64 values beyond float32's range become infinity, and are rejected as such.
    with pytest.raises(ValueError, match="NaN or infinity"):
        idx.search(np.full((rows, DIM), 1e300), 3)


@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
@pytest.mark.parametrize("rescore", [None, "int8", "float32"])
def test_single_query_fast_path_equals_general_path(rescore, metric, rng, tmp_path, monkeypatch):
    # A one-row float32 numpy query on a host binary index takes Index._search_one_binary; the
    # general path (_float_rows + _search_rows, through ec.search) must give identical scores and ids.
    # Heavy ties: few distinct vectors (small integers), each stored many times, so Hamming distances
    # and rescoring scores tie across copies.
    base = rng.integers(-2, 3, (6, DIM)).astype(np.float32)
    base[base == 0] = 1  # no zero rows under cos
    x = base[rng.integers(0, 6, 150)]
    queries = np.concatenate([base, rng.integers(-2, 3, (8, DIM)).astype(np.float32) + 0.5])
    idx = Index(DIM, "binary", metric, rescore, rescore_multiplier=3)
    idx.add(x, ids=rng.permutation(np.arange(1000, 1150)))
    idx.remove(idx.ids[::7])
    idx.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")  # memory-mapped, read-only arrays

    def general(index, q, k, mult):
        scores, rows = index._search_rows(index._float_rows(q, "queries"), k, k * mult)
        return scores, index.ids[rows]

    calls = []
    original = Index._search_one_binary
    monkeypatch.setattr(Index, "_search_one_binary", lambda self, *a: calls.append(1) or original(self, *a))
    n = len(idx)
    for index in (idx, loaded):
        for q in queries:
            for k, mult in ((1, 1), (10, 3), (n // 3 + 1, 3), (n, 1)):
                got = index.search(q[None], k, rescore_multiplier=mult)
                want = general(index, q[None], k, mult)
                assert got[0].dtype == want[0].dtype
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                # ... and the row of a batched search (general path) is the same.
                batch = index.search(queries[:2] if q is queries[0] else np.stack([queries[0], q]), k,
                                     rescore_multiplier=mult)
                np.testing.assert_array_equal(batch[0][-1], got[0][0])
                np.testing.assert_array_equal(batch[1][-1], got[1][0])
    assert calls  # the fast path ran
    # Storage order breaks ties on the fast path too.
    scores, ids = idx.search(base[:1], n)
    order = {int(i): r for r, i in enumerate(idx.ids)}
    for a in range(n - 1):
        if scores[0, a] == scores[0, a + 1]:
            assert order[int(ids[0, a])] < order[int(ids[0, a + 1])]
    # EMBEDCORE_BACKEND=torch: the fast path falls back to the general path (the reference).
    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    for e, g in zip(general(idx, queries[:1], 10, 3), idx.search(queries[:1], 10)):
        np.testing.assert_array_equal(g, e)


def test_single_query_fast_path_checks_input(rng):
    idx = Index(DIM, "binary", "cos", rescore="int8")
    idx.add(rng.standard_normal((30, DIM)).astype(np.float32))
    for bad, match in ((np.nan, "NaN"), (np.inf, "NaN or infinity")):
        q = rng.standard_normal((1, DIM)).astype(np.float32)
        q[0, 3] = bad
        with pytest.raises(ValueError, match=match):
            idx.search(q, 3)
    with pytest.raises(ValueError, match="row 0 is a zero vector"):
        idx.search(np.zeros((1, DIM), np.float32), 3)
    with pytest.raises(ValueError, match=f"has dim {DIM + 1}, the index has dim {DIM}"):
        idx.search(np.ones((1, DIM + 1), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(np.ones((1, DIM), np.float32), 31)
    # A non-contiguous row gives the values of its contiguous copy.
    wide = rng.standard_normal((1, 2 * DIM)).astype(np.float32)
    for e, g in zip(idx.search(np.ascontiguousarray(wide[:, ::2]), 5), idx.search(wide[:, ::2], 5)):
        np.testing.assert_array_equal(g, e)
