"""ec.tune on real text: the recommendation keeps its target on queries the sweep never saw.

2,000 bundled Wikipedia summaries and their short descriptions as queries, encoded once per module
with the bundled all-MiniLM-L6-v2 (the demo extra; skipped without it) and cached in pytest's cache
folder: the first run encodes for minutes on two cores, later runs load the cache.
"""

from __future__ import annotations

import numpy as np
import pytest

import embedcore as ec

from corpus import load_summaries, minilm_path

N = 2000
K = 10


@pytest.fixture(scope="module")
def encoded(request, tmp_path_factory):
    """(corpus, queries) float32 embeddings, cached across sessions in pytest's cache folder by the
    demo's encoder (keyed by model files, texts and embedcore version; verified on load); in a
    temporary folder when pytest runs without its cache plugin."""
    from pathlib import Path

    from embedcore.demo import _Encoder

    rows = load_summaries(N)
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("embedcore-tune") if cache is not None else tmp_path_factory.mktemp("embedcore-tune")
    encoder = _Encoder(Path(minilm_path()), Path(folder), 64)
    corpus = encoder.encode([r["extract"] for r in rows], "corpus")[0]
    queries = encoder.encode([r["description"] for r in rows if r["description"]], "queries")[0]
    return corpus, queries


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_recommendation_meets_the_target_on_held_out_queries(encoded, target):
    corpus, queries = encoded
    order = np.random.default_rng(7).permutation(len(queries))
    half = len(order) // 2
    seen, unseen = queries[np.sort(order[:half])], queries[np.sort(order[half:])]
    assert len(seen) >= 600 and len(unseen) >= 600
    result = ec.tune(corpus, seen, k=K, target_recall=target, latency_queries=3)
    assert result.best is not None and result.best["recall_low"] >= target
    assert result.best["precision"] != "float32"  # the sweep found something cheaper than exact
    index = ec.Index.from_tune(result.best, corpus)
    found = index.search(unseen, K)[1]
    truth = ec.search(unseen, corpus, K, "cos")[1]
    held_out = np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth)])
    print(f"target {target}: {result.summary()}; unseen queries: {held_out:.4f}")
    assert held_out >= target, f"{result.best['name']}: {held_out:.4f} on unseen queries"


def test_tune_encodes_texts_and_apply_keeps_them(tmp_path, capsys):
    from embedcore import cli
    from embedcore.corpus import unpack_text

    rows = load_summaries(80)
    docs = [r["extract"][:300] for r in rows]
    queries = [r["title"] for r in rows][:40]
    result = ec.tune(docs, queries, model=minilm_path(), k=3, target_recall=0.9, latency_queries=2)
    assert (result.n_corpus, result.n_queries, result.dim, result.query_source) == (80, 40, 384, "given")
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(" ".join(d.split()) for d in docs))
    titles = tmp_path / "titles.txt"
    titles.write_text("\n".join(queries))
    args = ["tune", "--input", str(corpus), "--queries", str(titles), "--model", minilm_path(), "-k", "3",
            "--target-recall", "0.9", "--latency-queries", "2", "--apply", str(tmp_path / "idx")]  # fmt: skip
    assert cli.main(args) == 0
    assert "recommended:" in capsys.readouterr().out
    index = ec.Index.load(tmp_path / "idx")
    assert len(index) == 80 and index.metadata["model"] == minilm_path()
    store = index.extra_arrays
    assert unpack_text(store["doc_text"], store["doc_offsets"], 7) == " ".join(docs[7].split())
