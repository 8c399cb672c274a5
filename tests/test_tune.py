"""ec.tune: recall, bounds, bytes and the recommendation are computed, checked against numpy."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

import embedcore as ec
from embedcore.tuning import COLUMNS, matryoshka_dims, min_queries, pareto_front, wilson_bounds

K = 10


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20, noise: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64 / np.linalg.norm(x64, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1] for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def swept():
    corpus, queries = clustered(1203, 40, seed=1), clustered(300, 40, seed=2)
    result = ec.tune(corpus, queries, k=K, target_recall=0.9, latency_queries=5, multipliers=(1, 3, 7))
    return corpus, queries, result


def row(result, name):
    (match,) = [r for r in result.rows if r["name"] == name]
    return match


# ---------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("mean,n", [(0.5, 10), (0.9, 100), (0.97, 1000), (0.0, 50), (1.0, 7)])
def test_wilson_bounds_match_the_closed_form(mean, n):
    z = NormalDist().inv_cdf(0.95)
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n))
    low, high = wilson_bounds(mean, n, 0.95)
    assert low == pytest.approx(max(0, centre - half), abs=1e-12)
    assert high == pytest.approx(min(1, centre + half), abs=1e-12)
    assert low <= mean <= high


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_min_queries_is_the_smallest_count_perfect_recall_confirms(target):
    n = min_queries(target)
    assert wilson_bounds(1.0, n)[0] >= target
    assert n == 1 or wilson_bounds(1.0, n - 1)[0] < target


def test_min_queries_for_095_is_52():
    assert min_queries(0.95, 0.95) == 52  # n / (n + 1.645**2) >= 0.95


def test_pareto_front_keeps_the_undominated_rows():
    rows = [{"b": 4, "recall": 1.0}, {"b": 1, "recall": 0.5}, {"b": 2, "recall": 0.4}]
    rows.append({"b": 3, "recall": 0.9})
    assert [r["b"] for r in pareto_front(rows, "b")] == [1, 3, 4]


# ---------------------------------------------------------------------------- the sweep


def test_rows_hold_every_configuration_and_column(swept):
    _, _, result = swept
    names = [r["name"] for r in result.rows]
    assert names == [
        "float32", "float16", "int8 asymmetric", "int8 symmetric", "binary",
        "binary + int8 x1", "binary + int8 x3", "binary + int8 x7",
    ]  # fmt: skip
    for r in result.rows:
        assert set(COLUMNS) <= set(r)
        assert r["recall_low"] <= r["recall"] <= r["recall_high"]
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert (result.n_queries, result.n_corpus, result.dim, result.query_source) == (300, 1203, 40, "given")


def test_recall_matches_a_numpy_reference(swept):
    corpus, queries, result = swept
    c, q = unit(corpus), unit(queries)
    truth = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :K]
    assert row(result, "float32")["recall"] == 1.0
    # binary: Hamming distance of the sign bits, ties toward the lower row (stable sort)
    hamming = ((q > 0)[:, None, :] != (c > 0)[None, :, :]).sum(2)
    expected = recall(np.argsort(hamming, axis=1, kind="stable")[:, :K], truth)
    assert row(result, "binary")["recall"] == pytest.approx(expected, abs=1e-12)
    # int8 asymmetric: float queries against the dequantised codes (ranges from the unit corpus)
    lo, hi = c.min(0).astype(np.float32), c.max(0).astype(np.float32)
    ranges = np.stack([lo, hi])
    deq = ec.dequantize(ec.quantize(c.astype(np.float32), "int8", ranges=ranges), ranges).astype(np.float64)
    expected = recall(np.argsort(-(q @ deq.T), axis=1, kind="stable")[:, :K], truth)
    assert row(result, "int8 asymmetric")["recall"] == pytest.approx(expected, abs=0.002)
    # rescoring only adds candidates: recall grows with the multiplier
    rescored = [row(result, f"binary + int8 x{m}")["recall"] for m in (1, 3, 7)]
    assert rescored == sorted(rescored) and rescored[-1] > row(result, "binary")["recall"]


def test_bytes_per_vector_are_the_stored_bytes(swept):
    _, _, result = swept
    n, dim = 1203, 40
    assert row(result, "float32")["bytes_per_vector"] == 4 * dim
    assert row(result, "float16")["bytes_per_vector"] == 2 * dim
    assert row(result, "binary")["bytes_per_vector"] == dim / 8
    assert row(result, "int8 asymmetric")["bytes_per_vector"] == pytest.approx(dim + 2 * 4 * dim / n)
    assert row(result, "binary + int8 x3")["bytes_per_vector"] == pytest.approx(dim / 8 + dim + 8 * dim / n)


def test_best_is_the_cheapest_row_whose_lower_bound_meets_the_target(swept):
    _, _, result = swept
    passing = [r for r in result.rows if r["recall_low"] >= 0.9]
    assert result.best is not None and result.best in passing
    assert result.best["bytes_per_vector"] == min(r["bytes_per_vector"] for r in passing)
    assert "recommended" in result.summary() and "*" in result.table()


def test_a_strict_target_leaves_only_the_precise_configurations():
    corpus, queries = clustered(800, 16, noise=3.0), clustered(600, 16, seed=5, noise=3.0)
    result = ec.tune(corpus, queries, k=K, target_recall=0.995, latency_queries=2, multipliers=(1,))
    # 600 queries: exact float32 (recall 1) proves 600 / (600 + z**2) > 0.995; binary cannot
    assert row(result, "float32")["recall_low"] >= 0.995
    assert result.best is not None and result.best["precision"] in ("float32", "float16", "int8")
    assert row(result, "binary")["recall_low"] < 0.995


def test_no_recommendation_is_reported_and_cannot_be_built(swept):
    corpus, _, result = swept
    none = dataclasses.replace(result, best=None, target_recall=0.9999)
    assert none.summary().startswith("no configuration reaches recall@10 >= 0.9999")
    assert "*" not in none.table()
    with pytest.raises(ValueError, match="recommends no configuration"):
        ec.Index.from_tune(none, corpus)


def test_held_out_queries_are_left_out_of_the_corpus():
    corpus = clustered(400, 24)
    result = ec.tune(corpus, k=5, target_recall=0.9, n_queries=100, latency_queries=2, multipliers=(2,))
    assert (result.n_queries, result.n_corpus) == (100, 300)
    # no query finds itself: float32 recall is 1 against the truth over the remaining rows
    assert result.rows[0]["recall"] == 1.0


def test_truncate_dims_add_rows_measured_against_the_full_dim(swept):
    corpus, queries, _ = swept
    result = ec.tune(corpus, queries, k=K, target_recall=0.9, truncate_dims=(20, 40), latency_queries=2,
                     multipliers=(2,))  # fmt: skip
    cut = [r for r in result.rows if r["truncate_dim"] == 20]
    assert cut[0]["name"] == "float32 @20" and len(result.rows) == 2 * len(cut)
    c, q = unit(corpus), unit(queries)
    truth = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :K]
    found = np.argsort(-(unit(queries[:, :20]) @ unit(corpus[:, :20]).T), axis=1, kind="stable")[:, :K]
    assert cut[0]["recall"] == pytest.approx(recall(found, truth), abs=0.002)
    assert cut[0]["recall"] < 1.0 and cut[0]["bytes_per_vector"] == 80


def test_matryoshka_dims_come_from_the_model_card(tmp_path):
    (tmp_path / "README.md").write_text('loss: {"matryoshka_dims": [768, 512, 256, 128], "x": 1}')
    assert matryoshka_dims(tmp_path) == (768, 512, 256, 128)
    (tmp_path / "README.md").write_text("no Matryoshka training here")
    assert matryoshka_dims(tmp_path) == ()


def test_from_tune_builds_the_row(swept):
    corpus, _, result = swept
    for r in result.rows:
        index = ec.Index.from_tune(r, corpus)
        assert (index.precision, index.rescore, index.dim) == (r["precision"], r["rescore"], 40)
        assert index.nbytes / len(index) == pytest.approx(r["bytes_per_vector"])
    best = ec.Index.from_tune(result, corpus)  # a TuneResult means its best row
    assert best.precision == result.best["precision"]
    truncated = dict(result.rows[0], truncate_dim=8)
    index = ec.Index.from_tune(truncated, corpus)
    assert index.dim == 8 and index.metadata["truncate_dim"] == 8
    with pytest.raises(ValueError, match="above the corpus dim"):
        ec.Index.from_tune(dict(result.rows[0], truncate_dim=41), corpus)
    with pytest.raises(ValueError, match="lacks"):
        ec.Index.from_tune({"precision": "int8"}, corpus)


def test_save_writes_csv_json_and_png(swept, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, result = swept
    paths = result.save(tmp_path)
    assert [p.name for p in paths] == ["tune.csv", "tune.json", "tune.png"]
    with open(paths[0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows) and list(rows[0]) == list(COLUMNS)
    data = json.loads(paths[1].read_text())
    assert data["best"] == result.best and data["n_queries"] == 300
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("target", [1.0, 1.5, 0, -0.1, True, "0.9"])
def test_target_outside_the_open_unit_interval_is_refused(target):
    with pytest.raises(ValueError, match="target_recall"):
        ec.tune(clustered(300, 8), target_recall=target)


def test_too_few_queries_are_refused_with_the_count_needed():
    with pytest.raises(ValueError, match="at least 52 queries"):
        ec.tune(clustered(300, 8), clustered(51, 8, seed=3), target_recall=0.95)
    with pytest.raises(ValueError, match="held-out queries"):
        ec.tune(clustered(100, 8), target_recall=0.95)  # 50 held-out rows < 52


def test_bad_shapes_and_types_name_the_argument():
    corpus = clustered(300, 8)
    with pytest.raises(ValueError, match="corpus has dim 8, queries have dim 9"):
        ec.tune(corpus, clustered(100, 9))
    with pytest.raises(ValueError, match="corpus must be a non-empty 2-D"):
        ec.tune(corpus[0])
    with pytest.raises(TypeError, match="corpus must hold floats"):
        ec.tune(corpus.astype(np.int32))
    with pytest.raises(ValueError, match="NaN"):
        ec.tune(np.full((300, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="pass model="):
        ec.tune(["a text", "another"])
    with pytest.raises(ValueError, match="k must be a positive int"):
        ec.tune(corpus, k=0)
    with pytest.raises(ValueError, match="truncate_dims holds 9"):
        ec.tune(corpus, truncate_dims=(9,))
    with pytest.raises(ValueError, match="zero vector"):
        ec.tune(np.vstack([np.zeros((1, 8), np.float32), corpus]), corpus[:100])
