"""``embedcore tune`` and ``embedcore inspect``: outputs, --apply builds the index, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedcore import cli
from embedcore.index import Index


@pytest.fixture
def embeddings(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(15, 24))
    x = (centres[rng.integers(0, 15, 700)] + 0.6 * rng.normal(size=(700, 24))).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, str(path)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_tune_writes_outputs_and_applies_the_recommendation(embeddings, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    x, path = embeddings
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["tune", "--embeddings", path, "--output-dir", str(out), "--apply", str(tmp_path / "idx"),
                     "--latency-queries", "3", "--multipliers", "2,4", "--target-recall", "0.9"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "recommended:" in printed and "binary + int8 x4" in printed
    data = json.loads((out / "tune.json").read_text())
    assert {p.name for p in out.iterdir()} == {"tune.csv", "tune.json", "tune.png"}
    best = data["best"]
    index = Index.load(tmp_path / "idx")
    assert (index.precision, index.rescore, len(index)) == (best["precision"], best["rescore"], 700)
    expected = Index.from_tune(best, x)
    q = x[:5] + 0.01
    assert np.array_equal(index.search(q, 5)[1], expected.search(q, 5)[1])


def test_tune_json_output(embeddings, capsys):
    _, path = embeddings
    assert (
        cli.main(["tune", "--embeddings", path, "--json", "--latency-queries", "2", "--multipliers", "1"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["query_source"] == "held-out" and data["n_queries"] == 350 and len(data["rows"]) == 6


def test_inspect_prints_the_report_and_writes_json(embeddings, tmp_path, capsys):
    _, path = embeddings
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"document {i}" for i in range(700)))
    code = cli.main(["inspect", "--embeddings", path, "--texts", str(texts), "--output-dir", str(tmp_path),
                     "--no-plot", "--clusters", "3"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "anisotropy" in printed and "top hubs" in printed and "document" in printed
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert report["n"] == 700 and len(report["clusters"]) == 3
    assert not (tmp_path / "inspect.png").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["tune", "--target-recall", "1.5"], "target_recall must be in (0, 1)"),
        (["tune", "--target-recall", "0.999"], "held-out queries"),
        (["tune", "--generator", "/nonexistent/lm"], "generator= writes queries from the corpus texts"),
        (["tune", "--truncate-dims", "100"], "truncate_dims holds 100"),
        (["tune", "--output-dir", "/nonexistent/dir"], "--output-dir /nonexistent/dir: no such folder"),
        (["inspect", "--duplicate-threshold", "2"], "duplicate_threshold"),
        (["inspect", "--clusters", "900"], "n_clusters=900 exceeds"),
        (["inspect", "-k", "0"], "-k must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(embeddings, args, fragment, capsys):
    _, path = embeddings
    assert cli.main([*args, "--embeddings", path]) == 2
    assert fragment in error_line(capsys)


def test_a_generator_that_is_not_a_causal_lm_is_one_line(embeddings, tmp_path, capsys):
    _, path = embeddings
    assert cli.main(["inspect", "--embeddings", path, "--generator", str(tmp_path)]) == 2
    assert "generator= names clusters from their texts" in error_line(capsys)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"document {i}" for i in range(700)))
    assert (
        cli.main(["inspect", "--embeddings", path, "--texts", str(texts), "--generator", str(tmp_path)]) == 2
    )
    assert "is not a transformers checkpoint" in error_line(capsys)
