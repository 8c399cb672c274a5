"""``embedcore tune``: the cheapest index configuration that keeps a recall target, measured.

:func:`tune` sweeps, for the full dimension and each Matryoshka ``truncate_dim``:

=====================  =====================================================================
configuration          what is scanned (and rescored)
=====================  =====================================================================
float32                float32 vectors (at a truncated dim: exact there, not vs full dim)
float16                float16 vectors, float queries
int8 asymmetric        int8 codes, float queries against the dequantised codes
int8 symmetric         int8 codes, int8 query codes (sentence-transformers style)
binary                 sign bits, Hamming distance
binary + int8 xM       sign bits, then ``k * M`` candidates rescored with int8 vectors
=====================  =====================================================================

Each configuration is an :class:`embedcore.Index` built over the corpus and searched with the
queries; recall@k is the mean over queries of ``|found ∩ truth| / k``, where ``truth`` is exact
float32 search at the full dimension (:func:`embedcore.search`). Latency is single-query wall time
(p50, p99) of ``Index.search`` over the first ``latency_queries`` queries, each call after one untimed
warm-up call; bytes per vector is ``Index.nbytes / len(index)`` (codes, rescoring copy and ranges).

Confidence: queries are a sample, so each row carries ``recall_low``/``recall_high``, one-sided
Wilson score bounds at ``confidence`` with ``n`` = the number of queries. Per-query recall lies in
[0, 1], so its variance is at most ``p(1 - p)``: the Wilson bound for a proportion with mean ``p``
is the usual (normal-approximation) bound for it. Hits within one query are not independent, so
``n`` counts queries, never ``queries * k``. The recommendation is the row with the fewest bytes
per vector (then the lowest p50) whose ``recall_low`` reaches the target; with ``n`` queries even
perfect recall only proves ``n / (n + z**2)``, so fewer than :func:`min_queries` queries is refused.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from embedcore import _backend
from embedcore._arrays import check_array, cpu_numpy
from embedcore.index import METRICS, Index
from embedcore.ops.quantize import quantize
from embedcore.ops.search import search
from embedcore.reports import save_figure, text_table, write_csv, write_json

DEFAULT_MULTIPLIERS = (1, 2, 4, 8, 16)
COLUMNS = (
    "name",
    "precision",
    "truncate_dim",
    "rescore",
    "rescore_multiplier",
    "symmetric",
    "metric",
    "recall",
    "recall_low",
    "recall_high",
    "bytes_per_vector",
    "p50_ms",
    "p99_ms",
    "build_s",
)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def wilson_bounds(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper), each at ``confidence``, for a mean of ``n``
    samples in [0, 1]."""
    z2 = _z(confidence) ** 2
    denom = 1 + z2 / n
    centre = (mean + z2 / (2 * n)) / denom
    half = math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n)) * math.sqrt(z2) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def min_queries(target_recall: float, confidence: float = 0.95) -> int:
    """The fewest queries whose perfect recall has a Wilson lower bound >= ``target_recall``
    (``n / (n + z**2) >= target``); fewer cannot confirm the target whatever the results."""
    z2 = _z(confidence) ** 2
    n = max(1, math.ceil(z2 * target_recall / (1 - target_recall) - 1e-9))
    while n / (n + z2) < target_recall:  # float rounding at the edge
        n += 1
    return n


def matryoshka_dims(model_path: str | Path) -> tuple[int, ...]:
    """The Matryoshka dimensions a sentence-transformers model was trained with, read from its
    model card (``"matryoshka_dims": [...]`` of MatryoshkaLoss); empty when the card names none."""
    card = Path(model_path) / "README.md"
    if not card.is_file():
        return ()
    match = re.search(
        r'"matryoshka_dims"\s*:\s*\[([0-9,\s]+)\]', card.read_text(encoding="utf-8", errors="replace")
    )
    return (
        tuple(sorted({int(d) for d in match.group(1).split(",") if d.strip()}, reverse=True)) if match else ()
    )


def encode_texts(texts: list[str], model: str | Path, batch_size: int = 32) -> np.ndarray:
    """(len(texts), dim) float32 embeddings of ``texts`` with :class:`embedcore.Embedder`."""
    from embedcore.models.embedder import Embedder

    embedder = Embedder.from_pretrained(str(model))
    return np.asarray(embedder.encode(texts, batch_size=batch_size), dtype=np.float32)


def _is_texts(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(t, str) for t in x)


def _float_matrix(x: Any, name: str) -> np.ndarray:
    check_array(x, name)
    a = cpu_numpy(x, name)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (n, dim) array, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@dataclass
class TuneResult:
    """What :func:`tune` measured.

    Attributes:
        rows: one dict per configuration with the keys of :data:`COLUMNS`.
        best: the recommended row, or None when no row's ``recall_low`` reaches the target.
        target_recall, k, confidence: the request.
        n_queries, n_corpus, dim: the sample sizes and the full dimension.
        query_source: "given", "held-out" (corpus rows) or "generated".
        threads: embedcore's search threads during the timings.
        seconds: wall time of the whole sweep.
    """

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    target_recall: float
    k: int
    confidence: float
    n_queries: int
    n_corpus: int
    dim: int
    query_source: str
    threads: int
    seconds: float
    latency_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The rows as an aligned text table, the recommendation marked with ``*``."""
        body = [
            [
                ("* " if row is self.best else "  ") + row["name"],
                str(row["truncate_dim"]),
                f"{row['bytes_per_vector']:.1f}",
                f"{row['recall']:.4f}",
                f"[{row['recall_low']:.4f}, {row['recall_high']:.4f}]",
                f"{row['p50_ms']:.3f}",
                f"{row['p99_ms']:.3f}",
                f"{row['build_s']:.2f}",
            ]
            for row in self.rows
        ]
        pct = f"{self.confidence:.0%}"
        header = [
            "configuration",
            "dim",
            "bytes/vec",
            f"recall@{self.k}",
            f"{pct} bounds",
            "p50 ms",
            "p99 ms",
            "build s",
        ]
        return text_table(body, header)

    def summary(self) -> str:
        """One line: the recommendation with its measured recall and bound, or why there is none."""
        src = f"{self.n_queries} {self.query_source} queries"
        if self.best is None:
            top = max(self.rows, key=lambda r: r["recall_low"])
            return (
                f"no configuration reaches recall@{self.k} >= {self.target_recall} at {self.confidence:.0%} "
                f"confidence on {src}; the best lower bound is {top['recall_low']:.4f} ({top['name']})"
            )
        b = self.best
        return (
            f"recommended: {b['name']} at dim {b['truncate_dim']}: {b['bytes_per_vector']:.1f} bytes/vector, "
            f"recall@{self.k} {b['recall']:.4f} (>= {b['recall_low']:.4f} at {self.confidence:.0%} "
            f"confidence, target {self.target_recall}) on {src}, p50 {b['p50_ms']:.3f} ms"
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        keys = (
            "target_recall",
            "k",
            "confidence",
            "n_queries",
            "n_corpus",
            "dim",
            "query_source",
            "threads",
            "seconds",
            "latency_queries",
        )
        return {
            **{key: getattr(self, key) for key in keys},
            "best": self.best,
            "rows": self.rows,
            **self.extra,
        }

    def save(self, folder: str | Path, plot: bool = True) -> list[Path]:
        """Writes ``tune.csv``, ``tune.json`` and (``plot``) ``tune.png`` into an existing folder,
        each atomically. Returns the paths written."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        paths = [folder / "tune.csv", folder / "tune.json"]
        write_csv(paths[0], self.rows, COLUMNS)
        write_json(paths[1], self.to_dict())
        if plot:
            paths.append(folder / "tune.png")
            self.plot(paths[-1])
        return paths

    def plot(self, path: str | Path) -> None:
        """PNG of recall vs bytes per vector and recall vs p50 latency, Pareto fronts drawn."""

        def draw(axes: list[Any]) -> None:
            for ax, key, label in zip(axes, ("bytes_per_vector", "p50_ms"), ("bytes per vector", "p50 ms")):
                xs = [r[key] for r in self.rows]
                ys = [r["recall"] for r in self.rows]
                ax.scatter(xs, ys, s=18, color="tab:blue", label="configuration")
                front = pareto_front(self.rows, key)
                ax.plot(
                    [r[key] for r in front],
                    [r["recall"] for r in front],
                    color="tab:orange",
                    drawstyle="steps-post",
                    label="Pareto front",
                )
                ax.axhline(self.target_recall, color="gray", linestyle="--", linewidth=1, label="target")
                if self.best is not None:
                    ax.scatter(
                        [self.best[key]],
                        [self.best["recall"]],
                        marker="*",
                        s=160,
                        color="tab:red",
                        label="recommended",
                        zorder=3,
                    )
                ax.set_xscale("log")
                ax.set_xlabel(label)
                ax.set_ylabel(f"recall@{self.k}")
                ax.grid(True, alpha=0.3)
            axes[0].legend(loc="lower right", fontsize=8)

        save_figure(path, draw, ncols=2)


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """Rows no other row beats on both ``cost`` (lower) and recall (higher), by ascending cost."""
    front: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r[cost], -r["recall"])):
        if not front or row["recall"] > front[-1]["recall"]:
            front.append(row)
    return front


def _latency_ms(fn: Any, queries: np.ndarray) -> tuple[float, float]:
    """(p50, p99) milliseconds of ``fn`` on single (1, dim) queries, each after one untimed call."""
    times = []
    for i in range(len(queries)):
        q = queries[i : i + 1]
        fn(q)
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.percentile(times, 50)), 1e3 * float(np.percentile(times, 99))


def _unit(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (x64 / np.linalg.norm(x64, axis=1, keepdims=True)).astype(np.float32)


def _configs(multipliers: tuple[int, ...]) -> list[tuple[str, str, str | None, int | None, bool]]:
    """(name, precision, rescore, multiplier, symmetric) of one dimension's sweep."""
    out = [
        ("float32", "float32", None, None, False),
        ("float16", "float16", None, None, False),
        ("int8 asymmetric", "int8", None, None, False),
        ("int8 symmetric", "int8", None, None, True),
        ("binary", "binary", None, None, False),
    ]
    return out + [(f"binary + int8 x{m}", "binary", "int8", m, False) for m in multipliers]


def _sweep_dim(
    corpus: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    t: int,
    k: int,
    metric: str,
    multipliers: tuple[int, ...],
    latency_queries: int,
    confidence: float,
    full_dim: int,
) -> list[dict[str, Any]]:
    """The rows of one truncated dimension ``t`` (corpus and queries already cut to ``t``)."""
    built: dict[tuple[str, str | None], tuple[Index, float]] = {}
    rows = []
    for name, precision, rescore, mult, symmetric in _configs(multipliers):
        if (precision, rescore) not in built:
            start = time.perf_counter()
            index = Index(t, precision, metric, rescore, mult or 1)
            index.add(corpus)
            built[precision, rescore] = (index, time.perf_counter() - start)
        index, build_s = built[precision, rescore]
        if symmetric:
            ranges = index.ranges

            def fn(q: np.ndarray, index: Index = index, ranges: Any = ranges) -> Any:
                # The query path a symmetric user runs: normalise (cos), quantise, scan the codes.
                q = _unit(q) if metric == "cos" else q
                return index.search(quantize(q, "int8", ranges=ranges), k)
        else:

            def fn(q: np.ndarray, index: Index = index, mult: int | None = mult) -> Any:
                return index.search(q, k, rescore_multiplier=mult)

        found = fn(queries)[1]
        hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1) / k
        recall = float(hits.mean())
        low, high = wilson_bounds(recall, len(queries), confidence)
        p50, p99 = _latency_ms(fn, queries[:latency_queries])
        rows.append(
            {
                "name": name if t == full_dim else f"{name} @{t}",
                "precision": precision,
                "truncate_dim": t,
                "rescore": rescore,
                "rescore_multiplier": mult,
                "symmetric": symmetric,
                "metric": metric,
                "recall": recall,
                "recall_low": low,
                "recall_high": high,
                "bytes_per_vector": index.nbytes / len(index),
                "p50_ms": p50,
                "p99_ms": p99,
                "build_s": build_s,
            }
        )
    return rows


def _check_request(target_recall: Any, confidence: Any, k: Any, metric: Any, multipliers: Any) -> tuple:
    for name, value in (("target_recall", target_recall), ("confidence", confidence)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            hint = " (1.0 cannot be confirmed from sampled queries; exact float32 search gives it)"
            raise ValueError(
                f"{name} must be in (0, 1), got {value!r}{hint if name == 'target_recall' else ''}"
            )
    if metric not in METRICS:
        raise ValueError(f"Invalid metric {metric!r}; valid: {METRICS}")
    mults = tuple(sorted({_positive(m, "multipliers") for m in multipliers}))
    return float(target_recall), float(confidence), _positive(k, "k"), mults


def _queries(
    corpus: np.ndarray,
    texts: list[str] | None,
    queries: Any,
    model: Any,
    n_queries: int,
    generator: Any,
    query_template: str | None,
    rng: np.random.Generator,
    need: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(corpus the sweep searches, queries, source): given, generated, or held-out corpus rows."""
    n = len(corpus)
    if queries is not None:
        if generator is not None:
            raise ValueError("pass either queries or generator, not both")
        if _is_texts(queries):
            if model is None:
                raise ValueError("queries are texts: pass model= to encode them")
            queries = encode_texts(list(queries), model, batch_size)
        q = _float_matrix(queries, "queries")
        if q.shape[1] != corpus.shape[1]:
            raise ValueError(f"corpus has dim {corpus.shape[1]}, queries have dim {q.shape[1]}")
        return corpus, q, "given"
    if generator is not None:
        if texts is None or model is None:
            raise ValueError(
                "generator= writes queries from the corpus texts: pass the corpus as texts and model="
            )
        from embedcore.generate import QUERY_TEMPLATE, load_generator

        count = min(n_queries, n)
        if count < need:
            raise ValueError(
                f"{count} generated queries cannot confirm the target: at least {need} are needed"
            )
        docs = [texts[i] for i in np.sort(rng.choice(n, count, replace=False))]
        written = load_generator(generator).write_queries(docs, query_template or QUERY_TEMPLATE)
        return corpus, encode_texts(written, model, batch_size), "generated"
    # Held-out rows: removed from the corpus the sweep searches, so no query finds itself.
    count = min(n_queries, n // 2)
    if count < need:
        raise ValueError(
            f"a corpus of {n} rows gives {count} held-out queries (at most half the rows); "
            f"at least {need} are needed: pass queries or a larger corpus"
        )
    held = np.zeros(n, bool)
    held[rng.choice(n, count, replace=False)] = True
    return np.ascontiguousarray(corpus[~held]), np.ascontiguousarray(corpus[held]), "held-out"


def tune(
    corpus: Any,
    queries: Any = None,
    *,
    k: int = 10,
    target_recall: float = 0.95,
    confidence: float = 0.95,
    metric: str = "cos",
    model: str | Path | None = None,
    truncate_dims: Any = None,
    multipliers: Any = DEFAULT_MULTIPLIERS,
    n_queries: int = 1000,
    latency_queries: int = 200,
    generator: Any = None,
    query_template: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    texts: list[str] | None = None,
) -> TuneResult:
    """Measures every index configuration on the corpus and recommends the cheapest that keeps recall.

    Args:
        corpus: (n, dim) float embeddings (numpy or CPU tensor), or a list of texts with ``model``.
        queries: (nq, dim) float query embeddings, a list of query texts (with ``model``), or None:
            queries written by ``generator`` for sampled documents, else ``n_queries`` held-out
            corpus rows (removed from the searched corpus; at most half of it).
        k: recall@k is measured (>= 1, < corpus rows).
        target_recall: in (0, 1): the recall the recommendation must keep, at ``confidence``.
        confidence: in (0, 1): level of the one-sided Wilson bounds.
        metric: cos, dot or l2 (as :class:`embedcore.Index`).
        model: sentence-transformers model folder or name, to encode texts; its model card's
            Matryoshka dimensions are swept when ``truncate_dims`` is None.
        truncate_dims: dims below the full one to sweep too (Matryoshka models only: truncating
            other models loses much recall); None reads them from ``model``, () sweeps none.
        multipliers: rescoring multipliers for binary + int8 rescoring.
        n_queries: held-out or generated queries when ``queries`` is None.
        latency_queries: queries timed one at a time per configuration (>= 1).
        generator: a causal LM folder (or :class:`embedcore.generate.Generator`) that writes queries.
        query_template: prompt with ``{text}``; default :data:`embedcore.generate.QUERY_TEMPLATE`.
        batch_size: texts per forward pass when encoding.
        seed: seed of the held-out/generated sample.
        texts: the corpus texts when ``corpus`` is embeddings (for ``generator``).

    Returns:
        A :class:`TuneResult`; ``.best`` is None when no configuration's lower bound reaches the target.

    Raises:
        ValueError: a bad argument, mismatched dims, or fewer queries than :func:`min_queries`.
        TypeError: non-float embeddings.
    """
    started = time.perf_counter()
    target_recall, confidence, k, mults = _check_request(target_recall, confidence, k, metric, multipliers)
    n_queries, latency_queries = (
        _positive(n_queries, "n_queries"),
        _positive(latency_queries, "latency_queries"),
    )
    need = min_queries(target_recall, confidence)
    if texts is not None and (not _is_texts(texts) or len(texts) != len(corpus)):
        raise ValueError(f"texts must be a list of {len(corpus)} strings, one per corpus row")
    if _is_texts(corpus):
        if model is None:
            raise ValueError("corpus is a list of texts: pass model= to encode it")
        texts = list(corpus)
        if not texts:
            raise ValueError("corpus holds no texts")
        corpus = encode_texts(texts, model, batch_size)
    corpus = _float_matrix(corpus, "corpus")
    dim = corpus.shape[1]
    if truncate_dims is None:
        truncate_dims = matryoshka_dims(model) if model is not None and Path(str(model)).is_dir() else ()
    dims = [dim]
    for t in sorted({_positive(t, "truncate_dims") for t in truncate_dims}, reverse=True):
        if t > dim:
            raise ValueError(f"truncate_dims holds {t}, above the embedding dim {dim}")
        if t < dim:
            dims.append(t)
    rng = np.random.default_rng(seed)
    searched, q, source = _queries(
        corpus, texts, queries, model, n_queries, generator, query_template, rng, need, batch_size
    )
    if len(q) < need:
        raise ValueError(
            f"{len(q)} queries cannot confirm recall {target_recall} at {confidence:.0%} confidence: "
            f"even perfect results prove at most {len(q) / (len(q) + _z(confidence) ** 2):.4f}; "
            f"at least {need} queries are needed"
        )
    if k >= len(searched):
        raise ValueError(f"k={k} must be below the number of corpus rows searched ({len(searched)})")
    if metric == "cos":
        for name, x in (("corpus", searched), ("queries", q)):
            zero = np.flatnonzero(~np.any(x != 0, axis=1))
            if len(zero):
                raise ValueError(
                    f"{name} row {int(zero[0])} is a zero vector; its cosine similarity is undefined"
                )
    # Ground truth: exact float32 search at the full dimension.
    truth = np.asarray(search(q, searched, k, metric)[1])
    rows: list[dict[str, Any]] = []
    for t in dims:
        c, qt = (
            (np.ascontiguousarray(searched[:, :t]), np.ascontiguousarray(q[:, :t]))
            if t < dim
            else (searched, q)
        )
        rows += _sweep_dim(c, qt, truth, t, k, metric, mults, min(latency_queries, len(q)), confidence, dim)
    passing = [r for r in rows if r["recall_low"] >= target_recall]
    best = min(passing, key=lambda r: (r["bytes_per_vector"], r["p50_ms"])) if passing else None
    return TuneResult(
        rows=rows,
        best=best,
        target_recall=target_recall,
        k=k,
        confidence=confidence,
        n_queries=len(q),
        n_corpus=len(searched),
        dim=dim,
        query_source=source,
        threads=_backend.num_threads(),
        seconds=time.perf_counter() - started,
        latency_queries=min(latency_queries, len(q)),
    )
