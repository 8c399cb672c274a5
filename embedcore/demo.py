"""``embedcore demo``: the main job, end to end on the bundled model and corpus.

1. Encodes the bundled English Wikipedia summaries (~10,000) with the bundled all-MiniLM-L6-v2 via
   :class:`embedcore.Embedder`, and the articles' short descriptions (e.g. "1968 film by Stanley
   Kubrick") as queries. Embeddings are cached on disk, keyed by model files, texts and embedcore
   version, and written atomically; the second run reuses them.
2. Builds a binary index with int8 rescoring (cached on disk too, loaded memory-mapped) and
   float32, int8 and binary indexes for comparison.
3. Prints recall@10 against exact float search for each format, single-query latency (median, with
   the mean in parentheses) of embedcore, FAISS (IndexFlatIP, IndexScalarQuantizer 8-bit,
   IndexBinaryFlat) and numpy on the same data, timed interleaved query by query so that load on a
   shared machine hits all three alike, the ratio of the medians, index bytes per vector, encode
   throughput, the smallest rescore multiplier that reaches a requested recall (estimated on
   corpus rows used as queries), and the configuration ``embedcore tune`` recommends for the
   requested recall with the description queries.
4. Times the whole retrieval loop, query text -> top-10 ids, against sentence-transformers' fastest
   installed exact backend (``embedcore.peers``) + FAISS IndexFlatIP.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

K = 10
RESCORE_MULTIPLIERS = (1, 4, 10)
_EMBEDDINGS = "embedcore.embeddings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``embedcore demo`` options to ``parser``."""
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="use the first N summaries (by title) instead of all ~10,000 (quick runs)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=1000,
        metavar="N",
        help="how many article descriptions to run as queries (default: 1000)",
    )
    parser.add_argument(
        "--latency-queries",
        type=int,
        default=200,
        metavar="N",
        help="queries timed one at a time for the latency columns (default: 200)",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        metavar="R",
        help="recall@10 the rescore multiplier is tuned for (default: 0.95)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="where embeddings and the index are cached (default: $EMBEDCORE_CACHE, "
        "else $XDG_CACHE_HOME/embedcore, else ~/.cache/embedcore)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")


def default_cache_dir() -> Path:
    """``$EMBEDCORE_CACHE``, else ``$XDG_CACHE_HOME/embedcore``, else ``~/.cache/embedcore``."""
    if os.environ.get("EMBEDCORE_CACHE"):
        return Path(os.environ["EMBEDCORE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedcore"


def _model_fingerprint(model: Path) -> str:
    """A digest of the model folder: small files by content, large weight files by size and mtime."""
    from embedcore.persist import sha256_file

    digest = hashlib.sha256()
    for file in sorted(p for p in model.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(str(file.relative_to(model)).encode())
        digest.update(
            sha256_file(file).encode()
            if stat.st_size < 1 << 20
            else f"{stat.st_size}:{stat.st_mtime_ns}".encode()
        )
    return digest.hexdigest()


def _texts_key(model_key: str, texts: list[str], what: str) -> str:
    from embedcore import __version__

    digest = hashlib.sha256(f"{__version__}\0{model_key}\0{what}\0{len(texts)}".encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    return digest.hexdigest()[:24]


class _Encoder:
    """Encodes through one lazily loaded Embedder, with embeddings cached under ``cache``."""

    def __init__(self, model: Path, cache: Path, batch_size: int) -> None:
        self.model, self.cache, self.batch_size = model, cache, batch_size
        self.model_key = _model_fingerprint(model)
        self._embedder: Any = None

    def encode(self, texts: list[str], what: str) -> tuple[np.ndarray, float, bool]:
        """(embeddings (n, dim) float32, texts/s of the encode that made them, from cache?)."""
        from embedcore.persist import CorruptFolderError, load_folder, save_folder

        folder = self.cache / f"{what}-{_texts_key(self.model_key, texts, what)}"
        if folder.exists():
            try:
                manifest, arrays = load_folder(folder, _EMBEDDINGS, mmap=False)
                return arrays["embeddings"], float(manifest["metadata"]["texts_per_second"]), True
            except (CorruptFolderError, OSError, KeyError, TypeError) as exc:
                print(f"  cache {folder} is unusable ({exc}); encoding again")
        if self._embedder is None:
            from embedcore.models.embedder import Embedder

            self._embedder = Embedder.from_pretrained(str(self.model))
        start = time.perf_counter()
        emb = np.asarray(
            self._embedder.encode(texts, batch_size=self.batch_size, show_progress_bar=True), dtype=np.float32
        )
        rate = len(texts) / (time.perf_counter() - start)
        save_folder(folder, _EMBEDDINGS, {"embeddings": emb}, {"texts_per_second": rate, "count": len(texts)})
        return emb, rate, False


def _exact_top_ids(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Ground truth: cosine top-K ids by float64 numpy brute force, ties toward the lower id."""
    q = queries.astype(np.float64)
    c = corpus.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :K]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth)]))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Runs the body with FAISS's OpenMP and, when threadpoolctl is installed, every BLAS/OpenMP
    pool (numpy's OpenBLAS included) at one thread, as embedcore searches a single query.

    Several thread pools on a small shared machine stall one another (each spins its idle workers
    after a call): interleaved single-query timings at the default thread counts measure those
    stalls, not the searches.
    """
    with contextlib.ExitStack() as stack:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            stack.callback(faiss.omp_set_num_threads, before)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            stack.enter_context(threadpool_limits(1))
        yield


def _latencies_ms(
    fns: list[Callable[[np.ndarray], Any] | None], queries: np.ndarray
) -> list[tuple[float, float] | None]:
    """(median, mean) wall time in milliseconds of each function over single queries, timed
    interleaved: every query runs through all functions before the next query (the order rotating
    from query to query), so a load spike on a shared machine hits them alike. Each timed call
    directly follows an untimed call of the same function on the same query: every function is timed
    with its own data in cache, as in a loop of searches, not just after another library's scan
    evicted it. None for a missing function.

    Args:
        fns: functions taking a (1, dim) float32 query (None entries are skipped).
        queries: (nq, dim) float32 queries.
    """
    live = [i for i, fn in enumerate(fns) if fn is not None]
    times: dict[int, list[float]] = {i: [] for i in live}
    for j in range(len(queries)):
        q = queries[j : j + 1]
        shift = j % max(1, len(live))
        for i in live[shift:] + live[:shift]:
            fns[i](q)
            start = time.perf_counter()
            fns[i](q)
            times[i].append(time.perf_counter() - start)
    return [
        (1e3 * float(np.median(times[i])), 1e3 * float(np.mean(times[i]))) if i in times else None
        for i in range(len(fns))
    ]


def _numpy_top(scores: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    keys = -scores if largest else scores
    part = np.argpartition(keys, k - 1)[:k]
    return part[np.argsort(keys[part], kind="stable")]


def baselines(
    corpus: np.ndarray, ranges: np.ndarray
) -> tuple[dict[str, tuple[Callable | None, Callable]], Any]:
    """Single-query top-10 search with FAISS and with numpy over the same vectors (shared with
    ``benchmarks/bench_index.py``).

    Args:
        corpus: (n, dim) float32 unit vectors.
        ranges: (2, dim) float32 int8 quantization ranges.

    Returns:
        (functions, flat): method key ("float32", "int8", "binary", "x1", "x4", "x10") -> (FAISS
        function or None when FAISS is not installed, numpy function), each taking a (1, dim)
        float32 query; and FAISS's IndexFlatIP (or None). FAISS: IndexFlatIP, IndexScalarQuantizer
        QT_8bit, IndexBinaryFlat (+ numpy rescoring of the dequantised int8 candidates).
    """
    from embedcore.ops.quantize import dequantize, quantize

    bits = np.packbits(corpus > 0, axis=1)
    deq = dequantize(quantize(corpus, "int8", ranges=ranges), ranges)

    def numpy_hamming(q: np.ndarray, k: int) -> np.ndarray:
        return _numpy_top(np.bitwise_count(np.bitwise_xor(bits, np.packbits(q > 0, axis=1))).sum(1), k, False)

    def rescore(q: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # The dequantised int8 vectors, precomputed: the fastest numpy way to score candidates.
        return candidates[_numpy_top(deq[candidates] @ q[0], K)]

    numpy_fns = {
        "float32": lambda q: _numpy_top(corpus @ q[0], K),
        "int8": lambda q: _numpy_top(deq @ q[0], K),
        "binary": lambda q: numpy_hamming(q, K),
    }
    for m in RESCORE_MULTIPLIERS:
        numpy_fns[f"x{m}"] = lambda q, m=m: rescore(q, numpy_hamming(q, min(K * m, len(bits))))
    try:
        import faiss
    except ImportError:
        return {key: (None, fn) for key, fn in numpy_fns.items()}, None

    dim = corpus.shape[1]
    flat = faiss.IndexFlatIP(dim)
    flat.add(corpus)
    sq8 = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq8.train(corpus)
    sq8.add(corpus)
    binary = faiss.IndexBinaryFlat(dim)
    binary.add(bits)
    faiss_fns = {
        "float32": lambda q: flat.search(q, K),
        "int8": lambda q: sq8.search(q, K),
        "binary": lambda q: binary.search(np.packbits(q > 0, axis=1), K),
    }
    for m in RESCORE_MULTIPLIERS:
        faiss_fns[f"x{m}"] = lambda q, m=m: rescore(
            q, binary.search(np.packbits(q > 0, axis=1), min(K * m, len(bits)))[1][0]
        )
    return {key: (faiss_fns[key], fn) for key, fn in numpy_fns.items()}, flat


def _rescore_index(cache: Path, key: str, corpus: np.ndarray) -> tuple[Any, bool]:
    """The binary + int8 rescoring index: loaded memory-mapped from the cache, or built and saved."""
    from embedcore.index import Index
    from embedcore.persist import CorruptFolderError

    folder = cache / f"index-binary-int8-{key}"
    if folder.exists():
        try:
            return Index.load(folder, mmap=True), True
        except (CorruptFolderError, OSError) as exc:
            print(f"  cached index {folder} is unusable ({exc}); building it again")
    index = Index(corpus.shape[1], precision="binary", metric="cos", rescore="int8")
    index.add(corpus)
    index.save(folder)
    return Index.load(folder, mmap=True), False


def _loop_row(model: Path, cache: Path, texts: list[str], index: Any, faiss_flat: Any) -> str:
    """One line: text -> top-K ids p50 of embedcore (exact Embedder + float32 Index) against
    sentence-transformers' fastest installed exact backend + FAISS IndexFlatIP, timed interleaved."""
    import torch

    from embedcore import loop, peers

    if faiss_flat is None:
        return "retrieval loop: skipped (FAISS is not installed)"
    peer, threads = loop.exact_peer(), torch.get_num_threads()
    try:
        st = peers.load_peer(peer, model, threads, cache)
    except (ImportError, peers.PeerUnavailableError) as exc:
        return f"retrieval loop: skipped ({exc})"
    ours = loop.embedcore_loop(peers.load_embedder(model, "exact"), index, K)
    theirs = loop.peer_loop(st, lambda q: faiss_flat.search(q, K))
    (ec, _), (pe, _) = _latencies_ms([lambda t: ours(t[0]), lambda t: theirs(t[0])], texts)
    return (
        f"retrieval loop (query text -> top-{K} ids, float32 exact, {len(texts)} queries, {threads} "
        f"threads, p50): embedcore {ec:.2f} ms, {peer} + FAISS IndexFlatIP {pe:.2f} ms "
        f"({pe / ec:.2f}x; > 1: embedcore faster)"
    )


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _print_recommendation(corpus: np.ndarray, queries: np.ndarray, target: float) -> None:
    """Prints what ``embedcore tune`` recommends for this corpus with the description queries."""
    from embedcore.tuning import tune

    try:
        result = tune(corpus, queries, k=K, target_recall=target, latency_queries=50)
    except ValueError as exc:
        print(f"tune: {exc}")
        return
    print(f"tune ({len(result.rows)} configurations, {result.seconds:.1f} s): {result.summary()}")


def run(args: argparse.Namespace) -> int:
    """Runs the demo and prints its report; returns the exit code (0)."""
    from embedcore import _backend
    from embedcore.corpus import demo_model_path, load_wiki_summaries
    from embedcore.index import Index
    from embedcore.ops.quantize import quantize

    started = time.perf_counter()
    if args.limit is not None and args.limit < K + 1:
        raise ValueError(f"--limit must be at least {K + 1}, got {args.limit}")
    for name in ("queries", "latency_queries"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.target_recall <= 1:
        raise ValueError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    model = demo_model_path()
    rows = load_wiki_summaries(args.limit)
    corpus_texts = [r["extract"] for r in rows]
    query_texts = [r["description"] for r in rows if r["description"]][: args.queries]
    if not query_texts:
        raise ValueError("the selected summaries have no descriptions to use as queries")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    print(
        f"embedcore demo: {len(corpus_texts)} Wikipedia summaries, {len(query_texts)} description queries, "
        f"all-MiniLM-L6-v2, {_backend.num_threads()} threads; cache {cache}"
    )

    encoder = _Encoder(model, cache, args.batch_size)
    corpus, rate, corpus_cached = encoder.encode(corpus_texts, "corpus")
    queries, _, _ = encoder.encode(query_texts, "queries")
    n, dim = corpus.shape
    truth = _exact_top_ids(queries, corpus)

    rescoring, index_cached = _rescore_index(
        cache, _texts_key(encoder.model_key, corpus_texts, "index"), corpus
    )
    indexes = {p: Index(dim, precision=p, metric="cos") for p in ("float32", "int8", "binary")}
    for index in indexes.values():
        index.add(corpus)
    ranges = indexes["int8"].ranges
    base, faiss_flat = baselines(corpus, ranges)
    lat_q = queries[: args.latency_queries]

    def search_fn(index: Any, **kw: Any) -> Callable[[np.ndarray], Any]:
        return lambda q: index.search(q, K, **kw)

    methods = [
        ("float32", "float32 (exact)", indexes["float32"], search_fn(indexes["float32"])),
        ("int8", "int8 asymmetric", indexes["int8"], search_fn(indexes["int8"])),
        (
            "int8 symmetric",
            "int8 symmetric (ST-style)",
            indexes["int8"],
            lambda q: indexes["int8"].search(quantize(q, "int8", ranges=ranges), K),
        ),
        ("binary", "binary (Hamming)", indexes["binary"], search_fn(indexes["binary"])),
    ] + [
        (f"x{m}", f"binary + int8 rescore x{m}", rescoring, search_fn(rescoring, rescore_multiplier=m))
        for m in RESCORE_MULTIPLIERS
    ]
    table, recalls = [], {}
    for key, name, index, fn in methods:
        recalls[key] = _recall(fn(queries)[1], truth)
        faiss_fn, numpy_fn = base.get(key, (None, None))
        with one_thread():
            ours, theirs, plain = _latencies_ms([fn, faiss_fn, numpy_fn], lat_q)
        cell = lambda t: "-" if t is None else f"{t[0]:.3f} ({t[1]:.3f})"
        table.append(
            [
                name,
                f"{index.nbytes / len(index):.0f}",
                f"{recalls[key]:.4f}",
                cell(ours),
                cell(theirs),
                cell(plain),
                "-" if theirs is None else f"{theirs[0] / ours[0]:.2f}x",
            ]
        )

    header = ["method", "bytes/vec", "recall@10", "embedcore ms", "FAISS ms", "numpy ms", "FAISS/embedcore"]
    print(
        f"\nrecall@10 against exact float search; single-query latency in ms, median (mean) over "
        f"{len(lat_q)} queries, the three timed interleaved on the same queries, each at one thread "
        "and right after an untimed call of its own (warm cache); "
        "FAISS: IndexFlatIP, "
        "IndexScalarQuantizer QT_8bit, IndexBinaryFlat [+ numpy rescoring]; FAISS/embedcore: ratio "
        "of the medians (> 1: embedcore faster)\n"
    )
    print(_table(table, header))

    flat_scores, flat_ids = indexes["float32"].search(queries, K)
    same = None
    if faiss_flat is None:
        print("\nFAISS is not installed (pip install faiss-cpu): its columns are empty")
    else:
        faiss_scores, faiss_ids = faiss_flat.search(queries, K)
        same = int((faiss_ids == flat_ids).all(axis=1).sum())
        print(
            f"\nfloat32 vs FAISS IndexFlatIP: identical top-{K} ids for {same}/{len(queries)} queries, "
            f"max score difference {np.abs(faiss_scores - flat_scores).max():.2e}"
        )
    print(_loop_row(model, cache, query_texts[: args.latency_queries], indexes["float32"], faiss_flat))
    print(
        f"encode throughput: {rate:.1f} texts/s ({n} summaries, batch {args.batch_size}"
        f"{'; measured when the cache was made' if corpus_cached else ''})"
    )
    print(
        f"binary + int8 index: {'loaded memory-mapped from cache' if index_cached else 'built and saved'}, "
        f"{rescoring.nbytes / n:.0f} bytes per vector vs {4 * dim} for float32"
    )
    try:
        mult, estimate = rescoring.tune_rescore_multiplier(
            args.target_recall, k=K, sample_size=min(1000, n), embeddings=corpus
        )
        measured = _recall(rescoring.search(queries, K, rescore_multiplier=mult)[1], truth)
        print(
            f"smallest rescore multiplier reaching recall@{K} >= {args.target_recall} on "
            f"{min(1000, n)} corpus rows as queries: {mult} (estimated {estimate:.4f}; "
            f"on the description queries {measured:.4f})"
        )
    except ValueError as exc:
        print(f"rescore multiplier for recall {args.target_recall}: {exc}")
    _print_recommendation(corpus, queries, args.target_recall)
    checks = [
        *([("float32 ids == FAISS IndexFlatIP", same == len(queries))] if same is not None else []),
        (f"int8 asymmetric recall >= 0.99 ({recalls['int8']:.4f})", recalls["int8"] >= 0.99),
        (f"binary + int8 x4 recall >= 0.84 ({recalls['x4']:.4f})", recalls["x4"] >= 0.84),
        (f"binary + int8 x10 recall >= 0.94 ({recalls['x10']:.4f})", recalls["x10"] >= 0.94),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0
