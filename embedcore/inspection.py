"""``embedcore inspect``: what an embedding space looks like, computed with embedcore's own ops.

:func:`inspect` reports, for (n, dim) embeddings (cosine geometry: rows are scaled to unit length):

* ``anisotropy``: mean cosine over all distinct pairs, exactly, from ``|sum of unit rows|**2``
  (``(|s|**2 - n) / (n (n - 1))``), so no sample is needed. Near 0: directions spread out;
  near 1: every vector points the same way.
* ``effective_rank``: participation ratio of the covariance spectrum, ``(sum λ)**2 / sum λ**2``
  (1 for a line, ``dim`` for an isotropic cloud); ``spectrum`` holds the eigenvalues.
* ``dimension_variance`` and ``dead_dimensions`` (variance at most ``dead_tolerance`` times the
  mean variance).
* ``hubness_skew``: skewness of the k-occurrence ``N_k`` (how often each vector is among the others'
  k nearest neighbours, from exact search of the whole corpus), the top hubs (with texts) and the
  count of vectors nobody retrieves (``antihubs``).
* ``near_duplicate_groups``: connected groups of vectors with cosine >= ``duplicate_threshold``,
  exact over the whole corpus: each row's neighbour list is widened until its last neighbour falls
  below the threshold.
* ``norms``: min/mean/max/std of the raw row norms.
* ``precision_loss``: mean cosine to float32 of float16, int8 (ranges from a calibration sample of
  ``calibration_size`` rows, as an index takes them from its first add) and binary (sign) vectors,
  and per-dimension int8 clipping (share of values outside the calibration ranges).
* ``clusters`` (``n_clusters`` > 0): spherical k-means, assignment by exact search; each cluster's
  name is its most distinctive words (document frequency in the cluster times inverse document
  frequency) or, with a ``generator``, the LLM's name for its texts nearest the centroid.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from embedcore.ops.quantize import dequantize, quantization_ranges, quantize
from embedcore.ops.search import search
from embedcore.reports import save_figure, text_table, write_json

_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_STOPWORDS = frozenset(
    "the and for are was were with from that this which who whom whose has have had its his her their "
    "they them also not but been being into than then there these those such over under after before "
    "between during about other more most some any all one two can may will would could should what "
    "when where while known based first second new used use called".split()
)


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows float32, raw norms float64)."""
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        raise ValueError(f"embeddings row {int(zero[0])} is a zero vector; its direction is undefined")
    return (x64 / norms[:, None]).astype(np.float32), norms


def _skew(values: np.ndarray) -> float:
    v = values.astype(np.float64)
    sd = v.std()
    return 0.0 if sd == 0 else float(np.mean((v - v.mean()) ** 3) / sd**3)


def _neighbours(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) (n, k) of each row's k nearest other rows (cosine), the row itself left out."""
    scores, ids = search(unit, unit, min(k + 1, len(unit)), "dot")
    scores, ids = np.asarray(scores), np.asarray(ids)
    # An exact duplicate with a lower id ties with the row itself and comes first: drop the self
    # entry wherever it is (a stable sort moves it last), else the extra last neighbour.
    self_last = np.argsort(ids == np.arange(len(unit))[:, None], axis=1, kind="stable")
    keep = min(k, len(unit) - 1)
    return np.take_along_axis(scores, self_last, 1)[:, :keep], np.take_along_axis(ids, self_last, 1)[:, :keep]


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The union-find roots of the elements ``x`` (pointer chasing, vectorised)."""
    r = parent[x]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            return r
        r = up


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Joins the sets of each pair (a[i], b[i]) in place; a root always points to a smaller root."""
    while len(a):
        ra, rb = _roots(parent, a), _roots(parent, b)
        apart = ra != rb
        if not apart.any():
            return
        a, b = a[apart], b[apart]
        # Several pairs may hang one root under different roots: the smallest wins, the loop redoes the rest.
        np.minimum.at(parent, np.maximum(ra[apart], rb[apart]), np.minimum(ra[apart], rb[apart]))


# Largest (rows x neighbours) block searched at once while widening neighbour lists.
_WIDEN_BLOCK = 1 << 22


def _duplicate_groups(
    unit: np.ndarray, scores: np.ndarray, ids: np.ndarray, threshold: float
) -> list[list[int]]:
    """Connected groups (size >= 2, ids ascending, largest group first) of rows with cosine >= threshold."""
    n = len(unit)
    parent = np.arange(n)

    def link(rows: np.ndarray, s: np.ndarray, i: np.ndarray) -> None:
        r, col = np.nonzero(s >= threshold)
        _union(parent, rows[r], i[r, col])

    rows = np.arange(n)
    link(rows, scores, ids)
    # Rows whose whole neighbour list clears the threshold may have more such neighbours: widen
    # their lists (in blocks, so thousands of identical rows do not need an n x n result at once).
    width = scores.shape[1]
    todo = rows[scores[:, -1] >= threshold] if width else rows[:0]
    while len(todo) and width < n - 1:
        width = min(2 * width, n - 1)
        step = max(1, _WIDEN_BLOCK // width)
        still = []
        for start in range(0, len(todo), step):
            block = todo[start : start + step]
            s, i = _neighbours_of(unit, block, width)
            link(block, s, i)
            still.append(block[s[:, -1] >= threshold])
        todo = np.concatenate(still)
    roots = _roots(parent, rows)
    order = np.argsort(roots, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(roots[order])) + 1)
    return sorted((g.tolist() for g in groups if len(g) > 1), key=lambda g: (-len(g), g[0]))


def _neighbours_of(unit: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_neighbours` for a subset of rows (their own entries left out)."""
    scores, ids = search(np.ascontiguousarray(unit[rows]), unit, k + 1, "dot")
    scores, ids = np.asarray(scores), np.asarray(ids)
    self_last = np.argsort(ids == rows[:, None], axis=1, kind="stable")
    return np.take_along_axis(scores, self_last, 1)[:, :k], np.take_along_axis(ids, self_last, 1)[:, :k]


def _mean_cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = np.einsum("ij,ij->i", a64, b64)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.mean(num / np.where(den == 0, 1, den)))


def _precision_loss(unit: np.ndarray, calibration_size: int, rng: np.random.Generator) -> dict[str, Any]:
    n = len(unit)
    calib = unit if calibration_size >= n else unit[np.sort(rng.choice(n, calibration_size, replace=False))]
    ranges = np.asarray(quantization_ranges(calib), dtype=np.float32)
    deq = np.asarray(dequantize(quantize(unit, "int8", ranges=ranges), ranges))
    clipped = ((unit < ranges[0]) | (unit > ranges[1])).mean(axis=0)
    worst = np.argsort(-clipped, kind="stable")[:5]
    return {
        "float16_mean_cos": _mean_cos(unit, unit.astype(np.float16)),
        "int8_mean_cos": _mean_cos(unit, deq),
        "binary_mean_cos": _mean_cos(unit, np.where(unit > 0, 1.0, -1.0)),
        "int8_calibration_rows": len(calib),
        "int8_clipped_share_mean": float(clipped.mean()),
        "int8_clipped_share_max": float(clipped.max()),
        "int8_most_clipped_dimensions": [[int(d), float(clipped[d])] for d in worst if clipped[d] > 0],
    }


def _kmeans(unit: np.ndarray, n_clusters: int, rng: np.random.Generator, iterations: int = 15) -> tuple:
    """Spherical k-means: (unit centroids (c, dim), assignment (n,)); assignment by exact search."""
    centroids = unit[np.sort(rng.choice(len(unit), n_clusters, replace=False))].copy()
    assign = np.full(len(unit), -1)
    for _ in range(iterations):
        new = np.asarray(search(unit, centroids, 1, "dot")[1])[:, 0]
        if np.array_equal(new, assign):
            break
        assign = new
        for c in range(n_clusters):
            members = unit[assign == c]
            if len(members):  # an emptied cluster keeps its old centroid
                s = members.astype(np.float64).sum(0)
                norm = np.linalg.norm(s)
                if norm > 0:
                    centroids[c] = (s / norm).astype(np.float32)
    return centroids, assign


def _distinctive_words(texts: list[str], assign: np.ndarray, n_clusters: int, top: int = 3) -> list[str]:
    words = [set(_WORD.findall(t.lower())) - _STOPWORDS for t in texts]
    df = Counter(w for ws in words for w in ws)
    n = len(texts)
    names = []
    for c in range(n_clusters):
        members = np.flatnonzero(assign == c)
        dfc = Counter(w for i in members for w in words[i])
        # Words in at least two members (one document's quirks are no name), ranked by tf-idf.
        scored = sorted(
            ((cnt / max(len(members), 1) * math.log(n / df[w]), w) for w, cnt in dfc.items() if cnt >= 2),
            key=lambda s: (-s[0], s[1]),
        )
        names.append(" / ".join(w for _, w in scored[:top]) or f"cluster {c}")
    return names


def _clusters(
    unit: np.ndarray,
    texts: list[str] | None,
    n_clusters: int,
    rng: np.random.Generator,
    generator: Any,
    template: str | None,
) -> list[dict[str, Any]]:
    centroids, assign = _kmeans(unit, n_clusters, rng)
    nearest = np.asarray(search(centroids, unit, min(5, len(unit)), "dot")[1])
    sizes = np.bincount(assign, minlength=n_clusters)
    if texts is None:
        names = [f"cluster {c}" for c in range(n_clusters)]
    elif generator is not None:
        from embedcore.generate import CLUSTER_TEMPLATE, load_generator

        groups = [[texts[i] for i in row] for row in nearest]
        written = load_generator(generator).name_groups(groups, template or CLUSTER_TEMPLATE)
        fallback = _distinctive_words(texts, assign, n_clusters)
        names = [w or f for w, f in zip(written, fallback)]
    else:
        names = _distinctive_words(texts, assign, n_clusters)
    return [
        {
            "cluster": int(c),
            "name": names[c],
            "size": int(sizes[c]),
            "nearest_ids": [int(i) for i in nearest[c]],
            **({"nearest_texts": [texts[i] for i in nearest[c]]} if texts is not None else {}),
        }
        for c in np.argsort(-sizes, kind="stable")
    ]


def _check(embeddings: Any, texts: Any, k: Any, threshold: Any, n_clusters: Any) -> np.ndarray:
    from embedcore._arrays import check_array, cpu_numpy

    check_array(embeddings, "embeddings")
    x = cpu_numpy(embeddings, "embeddings")
    if x.dtype.kind != "f":
        raise TypeError(f"embeddings must hold floats, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be 2-D (n, dim) with n >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contains NaN or infinity")
    if texts is not None and (
        not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts)
    ):
        raise TypeError("texts must be a list of strings")
    if texts is not None and len(texts) != len(x):
        raise ValueError(f"texts has {len(texts)} entries, embeddings has {len(x)} rows")
    for name, value in (("k", k), ("n_clusters", n_clusters)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (name == "k"):
            raise ValueError(f"{name} must be an int >= {int(name == 'k')}, got {value!r}")
    if n_clusters > len(x):
        raise ValueError(f"n_clusters={n_clusters} exceeds the {len(x)} embeddings")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"duplicate_threshold must be a cosine in [-1, 1], got {threshold!r}")
    return x


def inspect(
    embeddings: Any,
    texts: list[str] | None = None,
    *,
    k: int = 10,
    duplicate_threshold: float = 0.98,
    dead_tolerance: float = 1e-4,
    n_hubs: int = 10,
    n_clusters: int | None = None,
    calibration_size: int = 1000,
    generator: Any = None,
    cluster_template: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Health report of an embedding space (see the module docstring for each figure).

    Args:
        embeddings: (n, dim) float numpy array or CPU tensor, n >= 2, no zero rows.
        texts: optional n texts, shown with hubs, duplicates and clusters.
        k: neighbours per vector for the k-occurrence (hubness).
        duplicate_threshold: cosine at or above which two vectors are near-duplicates.
        dead_tolerance: a dimension is dead when its variance is at most this times the mean.
        n_hubs: hubs listed.
        n_clusters: k-means clusters named (0: none; default: 8, at most n).
        calibration_size: rows the int8 ranges are taken from.
        generator: a causal LM folder (or Generator) that names the clusters (needs ``texts``).
        cluster_template: prompt with ``{texts}``; default :data:`embedcore.generate.CLUSTER_TEMPLATE`.
        seed: seed of the samples and the k-means start.

    Returns:
        A JSON-able dict with ``anisotropy``, ``effective_rank``, ``spectrum``, ``dimension_variance``,
        ``dead_dimensions``, ``hubness_skew``, ``k_occurrence``, ``hubs``, ``antihubs``,
        ``near_duplicate_groups``, ``norms``, ``precision_loss``, ``clusters``, ``seconds``.
    """
    started = time.perf_counter()
    x = _check(embeddings, texts, k, duplicate_threshold, 0 if n_clusters is None else n_clusters)
    if n_clusters is None:
        n_clusters = min(8, len(x))
    if generator is not None:
        if texts is None:
            raise ValueError("generator= names clusters from their texts: pass texts")
        from embedcore.generate import load_generator

        generator = load_generator(generator)  # a bad path fails before the work, not after
    rng = np.random.default_rng(seed)
    unit, norms = _unit_rows(x)
    n, dim = unit.shape
    total = unit.astype(np.float64).sum(0)
    anisotropy = float((total @ total - n) / (n * (n - 1)))
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    spectrum = np.clip(np.linalg.eigvalsh(centred.T @ centred / max(n - 1, 1))[::-1], 0, None)
    variance = centred.var(axis=0)
    dead = (
        np.flatnonzero(variance <= dead_tolerance * variance.mean())
        if variance.mean() > 0
        else np.arange(dim)
    )
    scores, ids = _neighbours(unit, int(k))
    occurrence = np.bincount(ids.ravel(), minlength=n)
    hubs = np.argsort(-occurrence, kind="stable")[: max(0, int(n_hubs))]
    groups = _duplicate_groups(unit, scores, ids, float(duplicate_threshold))
    power = float((spectrum**2).sum())
    return {
        "n": n,
        "dim": dim,
        "anisotropy": anisotropy,
        "effective_rank": float(spectrum.sum() ** 2 / power) if power > 0 else 0.0,
        "spectrum": spectrum.tolist(),
        "dimension_variance": variance.tolist(),
        "dead_dimensions": [int(d) for d in dead],
        "k": int(k),
        "hubness_skew": _skew(occurrence),
        "k_occurrence": occurrence.tolist(),
        "hubs": [
            {
                "id": int(i),
                "k_occurrence": int(occurrence[i]),
                **({"text": texts[i]} if texts is not None else {}),
            }
            for i in hubs
        ],
        "antihubs": int((occurrence == 0).sum()),
        "duplicate_threshold": float(duplicate_threshold),
        "near_duplicate_groups": groups,
        "norms": {
            "min": float(norms.min()),
            "mean": float(norms.mean()),
            "max": float(norms.max()),
            "std": float(norms.std()),
        },
        "precision_loss": _precision_loss(unit, int(calibration_size), rng),
        "clusters": _clusters(unit, texts, int(n_clusters), rng, generator, cluster_template)
        if n_clusters
        else [],
        "seconds": time.perf_counter() - started,
    }


def format_report(report: dict[str, Any], texts: list[str] | None = None, width: int = 90) -> str:
    """A short text report of an :func:`inspect` dict."""

    def clip(t: str) -> str:
        t = " ".join(t.split())
        return t if len(t) <= width else t[: width - 3] + "..."

    loss = report["precision_loss"]
    groups = report["near_duplicate_groups"]
    lines = [
        f"{report['n']} vectors x {report['dim']} dims (inspected in {report['seconds']:.1f} s)",
        f"anisotropy (mean pairwise cosine, all pairs): {report['anisotropy']:.4f}",
        f"effective rank (participation ratio): {report['effective_rank']:.1f} of {report['dim']}",
        f"dead dimensions: {len(report['dead_dimensions'])} {report['dead_dimensions'][:20]}",
        f"norms: min {report['norms']['min']:.4f}, mean {report['norms']['mean']:.4f}, "
        f"max {report['norms']['max']:.4f}, std {report['norms']['std']:.4f}",
        f"hubness: skew of {report['k']}-occurrence {report['hubness_skew']:.2f}; "
        f"{report['antihubs']} vectors are nobody's neighbour",
        f"near-duplicate groups (cosine >= {report['duplicate_threshold']}): {len(groups)} groups, "
        f"{sum(len(g) for g in groups)} vectors",
        f"precision loss, mean cosine to float32: float16 {loss['float16_mean_cos']:.6f}, int8 "
        f"{loss['int8_mean_cos']:.6f}, binary {loss['binary_mean_cos']:.4f}; int8 clipping "
        f"(ranges from {loss['int8_calibration_rows']} rows): mean {loss['int8_clipped_share_mean']:.2e}, "
        f"worst dimension {loss['int8_clipped_share_max']:.2e}",
    ]
    with_text = any("text" in h for h in report["hubs"])
    hub_rows = [
        [str(h["id"]), str(h["k_occurrence"])] + ([clip(h["text"])] if with_text else [])
        for h in report["hubs"]
    ]
    if hub_rows:
        lines += [
            "",
            "top hubs:",
            text_table(hub_rows, ["id", "N_k"] + (["text"] if with_text else []), (0, 2)),
        ]
    for g in groups[:5]:
        shown = ", ".join(str(i) for i in g[:8]) + (" ..." if len(g) > 8 else "")
        example = f": {clip(texts[g[0]])}" if texts is not None else ""
        lines.append(f"duplicates [{shown}]{example}")
    if report["clusters"]:
        rows = [[str(c["cluster"]), str(c["size"]), clip(c["name"])] for c in report["clusters"]]
        lines += ["", "clusters:", text_table(rows, ["cluster", "size", "name"], (0, 2))]
    return "\n".join(lines)


def save_report(report: dict[str, Any], folder: str | Path, plot: bool = True) -> list[Path]:
    """Writes ``inspect.json`` and (``plot``) ``inspect.png`` (spectrum, k-occurrence histogram)
    into an existing folder, atomically. Returns the paths written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    paths = [folder / "inspect.json"]
    write_json(paths[0], report)
    if plot:
        paths.append(folder / "inspect.png")

        def draw(axes: list[Any]) -> None:
            spectrum = np.asarray(report["spectrum"])
            positive = spectrum[spectrum > 0]
            axes[0].plot(np.arange(1, len(positive) + 1), positive)
            axes[0].set_yscale("log")
            axes[0].set_xlabel("component")
            axes[0].set_ylabel("variance (eigenvalue)")
            axes[0].set_title(f"spectrum, effective rank {report['effective_rank']:.1f}")
            occurrence = np.asarray(report["k_occurrence"])
            axes[1].hist(occurrence, bins=min(50, int(occurrence.max()) + 1), log=True)
            axes[1].set_xlabel(f"{report['k']}-occurrence")
            axes[1].set_ylabel("vectors")
            axes[1].set_title(f"hubness, skew {report['hubness_skew']:.2f}")

        save_figure(paths[1], draw, ncols=2)
    return paths
