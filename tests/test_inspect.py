"""ec.inspect: every figure against a brute-force numpy computation, duplicates with heavy ties."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embedcore as ec
from embedcore.inspection import format_report, save_report


def unit(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64 / np.linalg.norm(x64, axis=1, keepdims=True)


def brute_groups(x: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected components of the full cosine >= threshold graph, by breadth-first search."""
    u = unit(x)
    adjacent = (u @ u.T) >= threshold
    seen = np.zeros(len(x), bool)
    groups = []
    for start in range(len(x)):
        if seen[start]:
            continue
        member = np.zeros(len(x), bool)
        member[start] = True
        frontier = member.copy()
        while frontier.any():
            frontier = adjacent[frontier].any(0) & ~member
            member |= frontier
        seen |= member
        if member.sum() > 1:
            groups.append(np.flatnonzero(member).tolist())
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def test_anisotropy_and_effective_rank_match_numpy(rng):
    x = (rng.normal(size=(301, 37)) + 0.5).astype(np.float32)
    report = ec.inspect(x, n_clusters=0)
    u = unit(x)
    sims = u @ u.T
    assert report["anisotropy"] == pytest.approx((sims.sum() - np.trace(sims)) / (301 * 300), abs=1e-9)
    eig = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))
    assert report["effective_rank"] == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=1e-9)
    assert report["spectrum"] == pytest.approx(
        sorted(np.clip(eig, 0, None), reverse=True), rel=1e-6, abs=1e-12
    )
    assert report["norms"]["mean"] == pytest.approx(np.linalg.norm(x.astype(np.float64), axis=1).mean())


def test_effective_rank_spans_a_line_to_an_isotropic_cloud(rng):
    line = np.outer(rng.normal(size=500), rng.normal(size=16)) + 1e-4 * rng.normal(size=(500, 16))
    assert ec.inspect(line.astype(np.float32), n_clusters=0)["effective_rank"] < 1.01
    cloud = rng.normal(size=(4000, 16)).astype(np.float32)
    assert ec.inspect(cloud, n_clusters=0)["effective_rank"] > 15


def test_dead_dimensions_are_the_constant_ones(rng):
    x = rng.normal(size=(200, 12)).astype(np.float32)
    x[:, 3], x[:, 7] = 0.25, 0.0
    report = ec.inspect(x, n_clusters=0)
    assert report["dead_dimensions"] == [3, 7]
    assert report["dimension_variance"][3] == 0 and len(report["dimension_variance"]) == 12


def test_k_occurrence_and_hubness_match_brute_force(rng):
    x = rng.normal(size=(257, 9)).astype(np.float32)
    k = 5
    report = ec.inspect(x, k=k, n_clusters=0, n_hubs=4)
    sims = unit(x) @ unit(x).T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    counts = np.bincount(neighbours.ravel(), minlength=257)
    assert report["k_occurrence"] == counts.tolist()
    skew = np.mean((counts - counts.mean()) ** 3) / counts.std() ** 3
    assert report["hubness_skew"] == pytest.approx(skew, rel=1e-9)
    assert [h["id"] for h in report["hubs"]] == np.argsort(-counts, kind="stable")[:4].tolist()
    assert report["antihubs"] == int((counts == 0).sum())


def test_near_duplicate_groups_are_exact_with_heavy_ties(rng):
    base = rng.normal(size=(300, 24)).astype(np.float32)
    base[10:45] = base[5]  # 36 exact copies: far more than k neighbours, all tied
    base[100:103] = base[99] + 1e-3 * rng.normal(size=(3, 24)).astype(np.float32)  # near copies
    base[200] = base[201] * 3.0  # same direction, other norm
    report = ec.inspect(base, k=4, duplicate_threshold=0.99, n_clusters=0)
    expected = brute_groups(base, 0.99)
    assert report["near_duplicate_groups"] == expected
    assert expected[0] == [5, *range(10, 45)] and [200, 201] in expected


def test_a_low_threshold_links_everything_with_widening(rng):
    x = (rng.normal(size=(150, 6)) + 4).astype(np.float32)  # all in one narrow cone
    report = ec.inspect(x, k=3, duplicate_threshold=0.5, n_clusters=0)
    assert report["near_duplicate_groups"] == brute_groups(x, 0.5)


def test_thousands_of_identical_rows_widen_in_blocks(rng, monkeypatch):
    from embedcore import inspection

    monkeypatch.setattr(inspection, "_WIDEN_BLOCK", 5000)  # many blocks per widening step
    x = rng.normal(size=(1700, 10)).astype(np.float32)
    x[200:1500] = x[3]  # 1,301 tied copies
    x[1600:1700] = x[1599] * 2
    report = ec.inspect(x, k=3, duplicate_threshold=0.999, n_clusters=0)
    assert report["near_duplicate_groups"] == brute_groups(x, 0.999)
    assert len(report["near_duplicate_groups"][0]) == 1301


def test_precision_loss_and_int8_clipping(rng):
    x = rng.normal(size=(400, 32)).astype(np.float32)
    full = ec.inspect(x, n_clusters=0, calibration_size=400)["precision_loss"]
    assert full["int8_clipped_share_max"] == 0 and full["int8_calibration_rows"] == 400
    assert 0.999 < full["int8_mean_cos"] < 1 and full["float16_mean_cos"] > 0.99999
    u = unit(x)
    expected_binary = np.mean((u * np.sign(u)).sum(1) / np.sqrt(32))
    assert full["binary_mean_cos"] == pytest.approx(expected_binary, rel=1e-6)
    small = ec.inspect(x, n_clusters=0, calibration_size=20)["precision_loss"]
    assert small["int8_calibration_rows"] == 20 and 0 < small["int8_clipped_share_mean"] < 0.5
    assert small["int8_most_clipped_dimensions"][0][1] == pytest.approx(small["int8_clipped_share_max"])


def test_clusters_are_named_by_their_distinctive_words(rng):
    centres = 10 * np.eye(3, 16)
    labels = np.repeat([0, 1, 2], 40)
    x = (centres[labels] + rng.normal(size=(120, 16))).astype(np.float32)
    words = ["volcano lava eruption", "violin sonata orchestra", "striker goal football"]
    texts = [f"{words[c]} item{i} common" for i, c in enumerate(labels)]
    report = ec.inspect(x, texts, n_clusters=3)
    clusters = report["clusters"]
    assert sorted(c["size"] for c in clusters) == [40, 40, 40]
    for c in clusters:
        topic = labels[c["nearest_ids"][0]]
        assert set(c["name"].split(" / ")) == set(words[topic].split())
        assert all(labels[i] == topic for i in c["nearest_ids"])
        assert c["nearest_texts"][0] == texts[c["nearest_ids"][0]]


def test_report_text_and_files(rng, tmp_path):
    pytest.importorskip("matplotlib")
    x = rng.normal(size=(120, 8)).astype(np.float32)
    x[1] = x[0]
    texts = [f"text {i}" for i in range(120)]
    report = ec.inspect(x, texts, n_clusters=2)
    text = format_report(report, texts)
    assert "anisotropy" in text and "effective rank" in text and "duplicates [0, 1]: text 0" in text
    paths = save_report(report, tmp_path)
    assert json.loads(paths[0].read_text())["near_duplicate_groups"] == [[0, 1]]
    assert paths[1].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"embeddings": np.ones(5, np.float32)}, ValueError, "embeddings must be 2-D"),
        ({"embeddings": np.ones((1, 4), np.float32)}, ValueError, "n >= 2"),
        ({"embeddings": np.ones((4, 4), np.int64)}, TypeError, "embeddings must hold floats"),
        ({"embeddings": np.array([[1.0, np.nan], [1, 2]])}, ValueError, "NaN"),
        ({"embeddings": np.array([[0.0, 0.0], [1, 2]])}, ValueError, "row 0 is a zero vector"),
        ({"texts": ["a"]}, ValueError, "texts has 1 entries"),
        ({"n_clusters": 11}, ValueError, "n_clusters=11 exceeds"),
        ({"duplicate_threshold": 1.5}, ValueError, "duplicate_threshold"),
        ({"k": 0}, ValueError, "k must be"),
        ({"embeddings": [[1.0, 2.0]]}, TypeError, "embeddings must be a numpy array"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    args = {"embeddings": np.arange(20, dtype=np.float32).reshape(10, 2) + 1, **kwargs}
    with pytest.raises(error, match=match):
        ec.inspect(**args)
