"""End-to-end ``encode`` on the CPU, per fidelity tier: embedcore's Embedder against sentence-transformers
run the ways a CPU user would speed it up (``embedcore.peers``: torch fp32, ONNX Runtime, OpenVINO f32,
OpenVINO default, ONNX dynamic int8, OpenVINO static int8 calibrated on these texts).

Same model (the bundled all-MiniLM-L6-v2, max_seq_length as saved), same texts, same thread count,
one process. Two kinds of group per tier and thread count:

* ``encode: <tier>, <t> threads, ...``: seconds per ``encode`` of N Wikipedia summaries (2,000; 100
  with ``EMBEDCORE_BENCH_QUICK=1``) at batch 32 (texts/s = N / time). Goal: 1.25x the fastest peer of
  the tier.
* ``encode query: <tier>, <t> threads``: seconds per ``encode`` of one short query (an article's
  description, 2-10 words; each round the next one). Goal: 0.75x the latency of ST torch (exact) and
  of ST OpenVINO (near_exact), i.e. ratio >= 1.33.

A shared machine's load drifts between tests that run minutes apart, so each embedcore round also
runs, right before it, the peer it is judged against (the one its goal names, else the fastest peer
of its group so far), timed by hand: ``extra_info["paired_ratio"]`` is the median of the per-round
ratios (peer time / embedcore time), the comparison least moved by drift.

Every system's output of the timed run is compared with sentence-transformers' torch fp32 embeddings
of the same texts: ``extra_info`` holds mean/min cosine and max abs difference, and ``meets_tier``
(exact: max abs <= 1e-5; near_exact: mean >= 0.99995 and min >= 0.9999; int8: mean >= 0.995). embedcore
exact must be exact; a system below mean cosine 0.99 is a broken build and fails before its time counts.
embedcore loads each tier through ``Embedder.from_pretrained(path, fidelity=tier)``.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import numpy as np
import pytest
import torch

from embedcore import peers
from embedcore._spec import FIDELITIES
from embedcore.corpus import demo_model_path, load_wiki_summaries
from embedcore.demo import default_cache_dir

QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")
N_TEXTS = 100 if QUICK else 2000
BATCH = 32
ROUNDS = 1 if QUICK else 2
QUERY_ROUNDS = 15 if QUICK else 100
SHAPE = f"{N_TEXTS} wiki summaries, batch {BATCH}"
THROUGHPUT_THREADS = (2, 1)
LATENCY_THREADS = (1, 2)
TIER_BOUNDS = {"exact": "max abs <= 1e-5", "near_exact": "mean cos >= 0.99995, min >= 0.9999",
               "int8": "mean cos >= 0.995"}
LATENCY_GOAL_VS = {"exact": "st-torch", "near_exact": "st-openvino"}

_ROWS = load_wiki_summaries(N_TEXTS if QUICK else None)
TEXTS = [r["extract"] for r in _ROWS[:N_TEXTS]]
QUERIES = [r["description"] for r in _ROWS if 2 <= len(r["description"].split()) <= 10][:200]
_MODELS: dict[tuple[str, int], object] = {}
_REFERENCE: dict[str, np.ndarray] = {}
_FIDELITY: dict[str, dict[str, float]] = {}  # provider -> cosine stats of its throughput run
_MEDIANS: dict[tuple[str, str, int], dict[str, float]] = {}  # (kind, tier, threads) -> peer -> median


def _provider(tier: str) -> str:
    return "embedcore" if tier == "exact" else f"embedcore-{tier}"


def _model(provider: str, tier: str, threads: int):
    """Loaded once per (system, threads) and module: loading is not part of encode."""
    key = (provider, threads)
    if key not in _MODELS:
        path = demo_model_path()
        if provider.startswith("embedcore"):
            model = peers.load_embedder(path, tier)
        else:
            try:
                model = peers.load_peer(provider, path, threads, default_cache_dir(), calibration_texts=TEXTS)
            except peers.PeerUnavailableError as exc:
                pytest.skip(str(exc))
        _MODELS[key] = model
    return _MODELS[key]


def _reference() -> np.ndarray:
    """sentence-transformers' torch fp32 embeddings of TEXTS: what every tier is measured against."""
    if "texts" not in _REFERENCE:
        _REFERENCE["texts"] = _model("st-torch", "exact", 2).encode(TEXTS, batch_size=BATCH)
    return _REFERENCE["texts"]


def _meets_tier(tier: str, stats: dict[str, float]) -> bool:
    if tier == "exact":
        return stats["max_abs_diff"] <= 1e-5
    if tier == "near_exact":
        return stats["mean_cosine"] >= 0.99995 and stats["min_cosine"] >= 0.9999
    return stats["mean_cosine"] >= 0.995


def _cases() -> list[tuple[str, str, int, str]]:
    cases = []
    for kind, thread_counts in (("throughput", THROUGHPUT_THREADS), ("query", LATENCY_THREADS)):
        for threads in thread_counts:
            for tier in FIDELITIES:
                cases += [(kind, tier, threads, p) for p in (*peers.PEERS[tier], _provider(tier))]
    return cases


CASES = _cases()


@pytest.fixture
def threads_set(request):
    """Sets torch's thread count for one benchmark and restores it after."""
    before = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind,tier,threads,provider", CASES,
                         ids=[f"{k}-{t}-{n}t-{p}" for k, t, n, p in CASES])
def test_encode(benchmark, threads_set, kind, tier, threads, provider):
    reference = _reference()
    threads_set(threads)
    model = _model(provider, tier, threads)
    ours = provider.startswith("embedcore")
    info = dict(op="encode", provider=provider, dtype="float32", threads=threads, tier=tier,
                tier_bound=TIER_BOUNDS[tier])
    plural = "s" * (threads > 1)
    peer_medians = _MEDIANS.setdefault((kind, tier, threads), {})
    paired = None
    if ours and peer_medians:  # the peer to run right before each round: the named one, else the fastest
        paired = LATENCY_GOAL_VS.get(tier) if kind == "query" else None
        paired = paired if paired in peer_medians else min(peer_medians, key=peer_medians.get)
    peer_times: list[float] = []

    def run_paired(*args: object, **kwargs: object) -> None:
        if paired is not None:
            peer = _model(paired, tier, threads)
            start = time.perf_counter()
            peer.encode(*args, **kwargs)
            peer_times.append(time.perf_counter() - start)

    if kind == "throughput":
        model.encode(TEXTS[:BATCH], batch_size=BATCH)  # warm-up: first-call allocations, lazy imports
        benchmark.group = f"encode: {tier}, {threads} thread{plural}, all-MiniLM-L6-v2, {SHAPE}"
        info.update(shape=SHAPE, metric="time per encode", texts=N_TEXTS)
        if ours:
            info["goal"] = 1.25
        benchmark.extra_info.update(info)

        def setup():
            run_paired(TEXTS, batch_size=BATCH)
            return (TEXTS,), dict(batch_size=BATCH)

        out = benchmark.pedantic(model.encode, setup=setup, rounds=ROUNDS)
        assert out.shape == reference.shape
        benchmark.extra_info["texts_per_second"] = N_TEXTS / benchmark.stats.stats.median
        _FIDELITY[provider] = peers.cosine_stats(out, reference)
    else:
        queries = itertools.cycle(QUERIES)
        benchmark.group = f"encode query: {tier}, {threads} thread{plural}, one short text"
        info.update(op="encode query", shape="1 query of 2-10 words", metric="time per query")
        if ours and tier in LATENCY_GOAL_VS:
            info.update(goal=round(1 / 0.75, 3), goal_vs=LATENCY_GOAL_VS[tier])
        benchmark.extra_info.update(info)

        def setup():
            query = next(queries)
            run_paired(query)
            return (query,), {}

        benchmark.pedantic(model.encode, setup=setup, rounds=QUERY_ROUNDS, warmup_rounds=3)
        if provider not in _FIDELITY:  # fidelity on (some of) the summaries, untimed
            out = model.encode(TEXTS[:100], batch_size=BATCH)
            _FIDELITY[provider] = peers.cosine_stats(out, reference[:100])
    if not ours:
        peer_medians[provider] = benchmark.stats.stats.median
    elif peer_times:
        # Load drifts between tests minutes apart; rounds run back to back with the peer do not.
        ours_times = benchmark.stats.stats.data[-len(peer_times):]
        benchmark.extra_info.update(
            paired_with=paired, paired_peer_median=statistics.median(peer_times),
            paired_ratio=statistics.median(p / e for p, e in zip(peer_times[-len(ours_times):], ours_times)))
    stats = _FIDELITY[provider]
    benchmark.extra_info.update(stats, meets_tier=_meets_tier(tier, stats))
    # A fast wrong result must not enter the table.
    if provider == "embedcore":
        assert stats["max_abs_diff"] <= 1e-5, f"embedcore exact differs by {stats['max_abs_diff']:.2e}"
    assert stats["mean_cosine"] >= 0.99, f"{provider}: mean cosine {stats['mean_cosine']:.4f} < 0.99"
