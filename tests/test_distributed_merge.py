"""The merge rules of the sharded index (pure numpy) and the package without Ray installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from embedcore.distributed import merge


def _split(n: int, shards: int) -> list[tuple[int, int]]:
    from embedcore.distributed.sharded_index import _bounds

    return _bounds(n, shards)


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_merge_topk_equals_global_sort_with_heavy_ties(largest, shards):
    rng = np.random.default_rng(shards)
    nq, n, k = 7, 53, 11
    scores = rng.integers(0, 4, (nq, n)).astype(np.float32)  # many equal scores
    key = -scores if largest else scores
    order = np.lexsort((np.broadcast_to(np.arange(n), (nq, n)), key), axis=-1)  # ties: lower row
    expected_rows = order[:, :k]
    parts_s, parts_r, parts_i = [], [], []
    for a, b in _split(n, shards):
        local = scores[:, a:b]
        lkey = -local if largest else local
        top = np.lexsort((np.broadcast_to(np.arange(b - a), local.shape), lkey), axis=-1)[:, : min(k, b - a)]
        parts_s.append(np.take_along_axis(local, top, 1))
        parts_r.append(top + a)
        parts_i.append(top + a + 1000)  # ids differ from rows
    s, ids = merge.merge_topk(parts_s, parts_r, parts_i, k, largest)
    np.testing.assert_array_equal(ids, expected_rows + 1000)
    np.testing.assert_array_equal(s, np.take_along_axis(scores, expected_rows, 1))


def test_merge_rescored_keeps_the_global_candidates_only():
    # Shard 1's second candidate has the best rescored score, but it is not among the global scan
    # top-2, so one index would never rescore it: the merge must not return it.
    scan = [np.array([[0, 1]]), np.array([[0, 5]])]  # Hamming: smaller first
    rows = [np.array([[0, 1]]), np.array([[2, 3]])]
    rescored = [np.array([[0.5, 0.4]], np.float32), np.array([[0.6, 0.9]], np.float32)]
    s, ids = merge.merge_rescored(
        scan, rows, rows, rescored, m=2, k=1, scan_largest=False, rescore_largest=True
    )
    assert ids.tolist() == [[2]] and s.tolist() == [[np.float32(0.6)]]
    # Equal scan scores at the cut: the lower row is the candidate (as in one index).
    scan = [np.array([[3]]), np.array([[3]])]
    rows = [np.array([[4]]), np.array([[9]])]
    rescored = [np.array([[0.1]], np.float32), np.array([[0.9]], np.float32)]
    _, ids = merge.merge_rescored(
        scan, rows, rows, rescored, m=1, k=1, scan_largest=False, rescore_largest=True
    )
    assert ids.tolist() == [[4]]


def test_without_ray_the_package_imports_and_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives: ImportError
    import embedcore as ec
    from embedcore.distributed._ray import MissingRayError, require_ray

    with pytest.raises(MissingRayError, match=r"pip install 'embedcore\[ray\]'"):
        require_ray()
    with pytest.raises(ImportError, match=r"embedcore\[ray\]"):
        ec.distributed.encode(["a"], "model")
    with pytest.raises(ImportError, match=r"embedcore\[ray\]"):
        ec.distributed.ShardedIndex.load("missing")
    assert "ShardedIndex" in dir(ec.distributed)


@pytest.mark.parametrize(
    "kwargs", [{"precision": "float32"}, {"precision": "binary", "rescore": "int8"}, {"precision": "int8"}]
)
def test_index_scan_is_the_first_stage_of_search(kwargs):
    from embedcore.index import Index

    rng = np.random.default_rng(2)
    emb = rng.integers(-2, 3, (80, 19)).astype(np.float32)
    emb[np.abs(emb).sum(1) == 0, 0] = 1
    queries = emb[:5] + 0.25
    index = Index(19, **kwargs)
    index.add(emb, ids=np.arange(80)[::-1] * 2)  # ids that do not follow storage order
    scores, ids = index.scan(queries, 12)
    if index.rescore is None:
        want = index.search(queries, 12)
        np.testing.assert_array_equal(ids, want[1])
        np.testing.assert_array_equal(scores, want[0])
    else:
        # A search with multiplier 1 rescores exactly the scan's candidates.
        _, rescored = index.search(queries, 12, rescore_multiplier=1)
        assert all(set(a) == set(b) for a, b in zip(ids.tolist(), rescored.tolist()))
        # Sign bits (normalising for cos keeps signs): Hamming distances by brute force.
        bits, codes = np.packbits(queries > 0, axis=-1), np.packbits(emb > 0, axis=-1)
        dist = np.unpackbits(bits[:, None, :] ^ codes[None, :, :], axis=-1).sum(-1)
        rows = 79 - ids // 2
        np.testing.assert_array_equal(scores, np.take_along_axis(dist, rows, 1))
        assert (np.diff(scores, axis=1) >= 0).all()
    with pytest.raises(ValueError, match="k must be"):
        index.scan(queries, 81)
