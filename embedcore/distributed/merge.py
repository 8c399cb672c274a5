"""Merging per-shard top-k lists into the top-k of one index over all rows (numpy only).

The global tie rule of :class:`embedcore.Index`: results are ordered by score (largest first for
similarities, smallest first for distances), equal scores by the lower global storage row. Every
shard returns its own exact top-k in that order with global rows, so the union of the shards'
lists holds the global top-k, and a stable sort on (score, row) restores the global order.

A rescoring index takes its candidates from the scan of all rows, then rescores them. To return
exactly what one index returns, each shard sends its scan top-``m`` (scan scores, rows) together with
the rescored score of each of those candidates; :func:`merge_rescored` first keeps the global scan
top-``m`` (the candidates one index would have taken), then the top-k of their rescored scores.
"""

from __future__ import annotations

import numpy as np


def _order(scores: np.ndarray, rows: np.ndarray, largest: bool) -> np.ndarray:
    """(nq, c) positions sorting each query's entries by score (best first), then by lower row."""
    key = -scores.astype(np.float64) if largest else scores.astype(np.float64)
    return np.lexsort((rows, key), axis=-1)


def merge_topk(
    scores: list[np.ndarray], rows: list[np.ndarray], ids: list[np.ndarray], k: int, largest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k from per-shard top lists.

    Args:
        scores, rows, ids: one (nq, k_s) array per shard: scores, global storage rows (int64) and
            user ids of each shard's top ``k_s`` (any order).
        k: results per query, at most ``sum(k_s)``.
        largest: True for similarities (best = largest), False for distances.

    Returns:
        (scores, ids): (nq, k) arrays of the shards' dtypes, best first, ties to the lower row.
    """
    s, r, i = np.concatenate(scores, 1), np.concatenate(rows, 1), np.concatenate(ids, 1)
    top = _order(s, r, largest)[:, :k]
    return np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)


def merge_rescored(
    scan_scores: list[np.ndarray],
    rows: list[np.ndarray],
    ids: list[np.ndarray],
    rescored: list[np.ndarray],
    m: int,
    k: int,
    scan_largest: bool,
    rescore_largest: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k of a rescoring index from per-shard scan candidates.

    Args:
        scan_scores, rows, ids, rescored: one (nq, m_s) array per shard: each shard's scan top
            ``m_s = min(m, shard rows)`` with scan scores, global rows, user ids and the rescored
            score of each candidate.
        m: candidates the single index takes from its scan (``min(k * multiplier, N)``).
        k: results per query, ``k <= m``.
        scan_largest, rescore_largest: whether larger is better for the scan / rescored scores.

    Returns:
        (scores, ids): (nq, k) rescored scores and ids, best first, ties to the lower row.
    """
    s, r = np.concatenate(scan_scores, 1), np.concatenate(rows, 1)
    i, x = np.concatenate(ids, 1), np.concatenate(rescored, 1)
    cand = _order(s, r, scan_largest)[:, :m]
    r, i, x = (np.take_along_axis(a, cand, 1) for a in (r, i, x))
    top = _order(x, r, rescore_largest)[:, :k]
    return np.take_along_axis(x, top, 1), np.take_along_axis(i, top, 1)
