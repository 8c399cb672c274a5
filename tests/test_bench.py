"""The benchmark runner (``embedcore bench``) on synthetic pytest-benchmark JSON, one real run of a
tiny benchmark file through the runner, and ``benchmarks/gpu_suite.py --dry-run`` in a subprocess."""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedcore import bench

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = {"embedcore": "0.1.0", "numpy": "2.0"}


def _bench(group, provider, median, op="search", shape="200000x384 nq=1", data=None, **extra):
    """One entry of pytest-benchmark's JSON, as `--benchmark-json --benchmark-save-data` writes it."""
    data = data if data is not None else [median * f for f in (0.9, 0.95, 1.0, 1.05, 1.1)]
    return {
        "group": group,
        "name": f"test_{op}[{provider}]",
        "fullname": f"benchmarks/bench_{op}.py::test_{op}[{provider}]",
        "extra_info": {"op": op, "provider": provider, "shape": shape, "dtype": "float32",
                       "metric": "latency", **extra},
        "stats": {"median": median, "q1": min(data, default=median), "q3": max(data, default=median),
                  "rounds": len(data), "data": data},
    }


def _rows(*benchmarks):
    return bench.load_rows({"benchmarks": list(benchmarks)}, device="cpu: test", versions=VERSIONS,
                           timestamp="2026-11-26T00:00:00Z")


def test_ratio_is_best_baseline_over_embedcore_and_goal_is_judged():
    rows = _rows(
        _bench("search: f32 1q", "embedcore", 2e-3, goal=1.3),
        _bench("search: f32 1q", "faiss", 3e-3),
        _bench("search: f32 1q", "numpy", 2.5e-3),  # the fastest baseline is the one compared
        _bench("search: f32 64q", "embedcore", 4e-3, shape="200000x384 nq=64", goal=1.25),
        _bench("search: f32 64q", "numpy", 4.4e-3, shape="200000x384 nq=64"),
    )
    first, second = bench.summarize(rows)
    assert first["baseline"] == "numpy"
    assert first["ratio"] == pytest.approx(1.25)
    assert first["goal"] == 1.3 and first["met"] is False
    assert second["ratio"] == pytest.approx(1.1) and second["met"] is False
    rows[3]["goal"] = 1.1
    assert bench.summarize(rows)[1]["met"] is True  # ratio == goal meets it
    assert bench.goal_line(bench.summarize(rows)) == "goals met: 1/2 (missed: search f32 1q float32)"


def test_rows_keep_the_rest_of_extra_info(tmp_path):
    rows = _rows(
        _bench("encode: exact", "embedcore", 2.0, op="encode", goal=1.25, paired_ratio=1.4, mean_cosine=1.0),
        _bench("encode: exact", "st-onnx", 3.0, op="encode", threads=2),
    )
    assert rows[0]["extra"] == {"paired_ratio": 1.4, "mean_cosine": 1.0}
    assert rows[1]["extra"] == {"threads": 2}
    assert rows[0]["goal"] == 1.25 and "goal" not in rows[0]["extra"]
    meta = {"machine": bench.machine_info(), "timestamp": "2026-11-26T00:00:00Z", "quick": True,
            "files": ["bench_encode.py"], "pytest_exit_code": 0, "duration_s": 1.0,
            "load_average": {"before": 1.0, "after": 1.0}}
    bench.write_results(rows, bench.summarize(rows), tmp_path, meta)
    saved = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["extra"] for r in saved] == [r["extra"] for r in rows]


def test_goal_against_a_named_baseline_adds_a_line():
    rows = _rows(
        _bench("search: f32 1q", "embedcore", 2e-3, goal=1.3, goal_vs="faiss"),
        _bench("search: f32 1q", "faiss", 3e-3),
        _bench("search: f32 1q", "numpy", 2.1e-3),
    )
    fastest, named = bench.summarize(rows)
    assert (fastest["baseline"], fastest["goal"], fastest["met"]) == ("numpy", None, None)
    assert fastest["ratio"] == pytest.approx(1.05)
    assert (named["baseline"], named["goal"], named["met"]) == ("faiss", 1.3, True)
    assert named["ratio"] == pytest.approx(1.5)
    rows[1]["median"] = 1e-3  # the named baseline is the fastest: one line, judged on it
    (only,) = bench.summarize(rows)
    assert (only["baseline"], only["met"]) == ("faiss", False)


def test_groups_without_a_side_and_embedcore_variants():
    rows = _rows(
        _bench("encode: 2000 docs", "embedcore", 10.0, op="encode", goal=1.0),
        _bench("encode: 2000 docs", "embedcore-fast", 5.0, op="encode", goal=1.8),
        _bench("encode: 2000 docs", "sentence-transformers", 12.0, op="encode"),
        _bench("index: build", "faiss", 1.0, op="index"),  # baseline only
        _bench("attention: cpu", "embedcore", 1.0, op="attention"),  # embedcore only, no goal
    )
    exact, fast, baseline_only, ours_only = bench.summarize(rows)
    assert (exact["ratio"], exact["met"]) == (pytest.approx(1.2), True)
    assert (fast["provider"], fast["ratio"], fast["met"]) == ("embedcore-fast", pytest.approx(2.4), True)
    assert baseline_only["embedcore_median"] is None and baseline_only["ratio"] is None
    assert baseline_only["met"] is None and baseline_only["baseline"] == "faiss"
    assert ours_only["baseline"] is None and ours_only["ratio"] is None and ours_only["met"] is None
    cells = [bench.table_cells(line) for line in (fast, baseline_only)]
    assert cells[0][0] == "encode (embedcore-fast)" and cells[0][5:] == ["2.40x", "1.8x", "yes"]
    assert cells[1][2:] == ["faiss", "1 s", "-", "-", "-", "-"]


def test_rows_have_the_contract_fields_and_percentiles_from_raw_data():
    data = [float(x) for x in range(1, 12)]  # 1..11 s: p20 = 3, p80 = 9 (linear interpolation)
    (row,) = _rows(_bench("search: x", "embedcore", 6.0, data=data, goal=2))
    assert set(bench.ROW_FIELDS) <= set(row)
    assert (row["median"], row["p20"], row["p80"]) == (6.0, 3.0, 9.0)
    assert row["goal"] == 2.0 and row["device"] == "cpu: test" and row["versions"] == VERSIONS
    # Without raw data the quartiles stand in; without extra_info the group and name do.
    entry = _bench("pooling: 8x16", "numpy", 1.0, data=[])
    entry["extra_info"] = {}
    entry["stats"].update(q1=0.5, q3=2.0)
    (row,) = _rows(entry)
    assert (row["op"], row["provider"], row["p20"], row["p80"]) == ("pooling", "test_search[numpy]", 0.5, 2.0)


def test_quantile_matches_numpy():
    np = pytest.importorskip("numpy")
    values = [5.0, 1.0, 4.0, 2.5, 9.0, 7.0]
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert bench.quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
    with pytest.raises(ValueError):
        bench.quantile([], 0.5)


def test_format_time_units():
    assert [bench.format_time(t) for t in (2.5, 0.0123, 4.56e-5, 7e-8, None)] == \
        ["2.5 s", "12.3 ms", "45.6 µs", "70 ns", "-"]


def test_table_columns_and_alignment():
    rows = _rows(_bench("search: f32 1q", "embedcore", 2e-3, goal=1.3),
                 _bench("search: f32 1q", "faiss", 3e-3))
    lines = bench.format_table(bench.summarize(rows)).splitlines()
    assert lines[0].split("  ")[0] == "operation" and "met?" in lines[0]
    assert len(lines) == 3 and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["search", "f32", "1q", "float32", "faiss", "3", "ms", "2", "ms", "1.50x",
                                "1.3x", "yes"]


def test_table_names_a_comparison_by_its_group():
    # Groups are unique per comparison, shapes need not be (quantize: one shape, several precisions).
    rows = _rows(_bench("quantize: int8 1000x384", "embedcore", 1.0, op="quantize", shape="1000x384"),
                 _bench("quantize: binary 1000x384", "embedcore", 1.0, op="quantize", shape="1000x384"),
                 _bench("odd group", "embedcore", 1.0, op="quantize", shape="1000x384 float32"))
    assert [line["label"] for line in bench.summarize(rows)] == [
        "int8 1000x384 float32", "binary 1000x384 float32", "1000x384 float32"]


def test_write_results_files(tmp_path):
    rows = _rows(_bench("search: f32 1q", "embedcore", 2e-3, goal=1.3),
                 _bench("search: f32 1q", "faiss", 3e-3),
                 _bench("topk: 1x10", "numpy", 1e-4, op="topk"))
    meta = {"machine": bench.machine_info(), "timestamp": "2026-11-26T00:00:00Z", "quick": True,
            "files": ["bench_search.py"], "pytest_exit_code": 0, "duration_s": 12.0,
            "load_average": {"before": 1.5, "after": 2.25}, "commit": "0123456789ab"}
    paths = bench.write_results(rows, bench.summarize(rows), tmp_path, meta)
    assert sorted(p.name for p in paths) == ["results.csv", "results.json", "results.md", "search.png",
                                             "speedups.png", "topk.png"]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["quick"] is True and len(doc["rows"]) == 3 and doc["summary"][0]["met"] is True
    with (tmp_path / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[: len(bench.ROW_FIELDS)] == list(bench.ROW_FIELDS)
    assert table[0]["versions"] == "embedcore=0.1.0;numpy=2.0" and float(table[1]["median"]) == 3e-3
    md = (tmp_path / "results.md").read_text()
    assert "quick suite" in md and "| search | f32 1q float32 | faiss |" in md
    assert "![speedups](speedups.png)" in md and "before / after the run: 1.5 / 2.25" in md
    assert "code at 0123456789ab" in md
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths if p.suffix == ".png")


def test_default_folders_keep_full_results():
    assert bench.default_folder("t", quick=False, partial=False) == "t"
    assert bench.default_folder("t", quick=True, partial=False) == "t-quick"
    assert bench.default_folder("t", quick=False, partial=True) == "t-partial"


def test_machine_tag_is_a_folder_name():
    info = bench.machine_info()
    assert info["tag"] and all(c.isalnum() or c == "-" for c in info["tag"])
    assert info["tag"].endswith(f"-{os.cpu_count()}c")


def test_select_files_and_bad_names(tmp_path):
    for op in ("search", "pooling"):
        (tmp_path / f"bench_{op}.py").write_text("")
    assert bench.available_ops(tmp_path) == ["pooling", "search"]
    assert [p.name for p in bench.select_files(tmp_path, None)] == ["bench_pooling.py", "bench_search.py"]
    assert [p.name for p in bench.select_files(tmp_path, " search, ")] == ["bench_search.py"]
    with pytest.raises(bench.BenchError, match=r"in --only: serch; valid: pooling, search"):
        bench.select_files(tmp_path, "serch")
    with pytest.raises(bench.BenchError, match="--only names no operation"):
        bench.select_files(tmp_path, ",")


def test_missing_benchmark_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(bench.BenchError, match=r"no benchmark folder with bench_\*\.py at .*source checkout"):
        bench.find_benchmark_dir(str(tmp_path / "nowhere"))
    args = argparse.Namespace(quick=True, only=None, output=None, keyword=None, bench_dir=str(tmp_path))
    assert bench.run(args) == 2
    assert capsys.readouterr().err.startswith("embedcore bench: no benchmark folder")


def test_default_benchmark_folder_is_the_checkout():
    assert bench.find_benchmark_dir() == ROOT / "benchmarks"
    assert "topk" in bench.available_ops(ROOT / "benchmarks")


FAKE_BENCH = '''
from __future__ import annotations
import os
QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK") == "1"
def _work(n):
    return sum(range(n))
def test_fake_embedcore(benchmark):
    benchmark.group = "fake: quick" if QUICK else "fake: full"
    benchmark.extra_info.update(op="fake", provider="embedcore", shape="n=100", dtype="int", metric="time",
                                goal=1.0)
    benchmark(_work, 100)
def test_fake_baseline(benchmark):
    benchmark.group = "fake: quick" if QUICK else "fake: full"
    benchmark.extra_info.update(op="fake", provider="python", shape="n=100", dtype="int", metric="time")
    benchmark(_work, 20000)
'''


def test_run_end_to_end_on_a_tiny_suite(tmp_path, capsys):
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "bench_fake.py").write_text(FAKE_BENCH)
    (bench_dir / "bench_broken.py").write_text("import no_such_module_anywhere\n")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--only", "fake", "--bench-dir", str(bench_dir)])
    assert bench.run(args) == 0
    # A file that cannot even be imported fails the run, but the other files' results are kept.
    args = parser.parse_args(["--quick", "--bench-dir", str(bench_dir), "--output", str(tmp_path / "all")])
    assert bench.run(args) != 0
    assert json.loads((tmp_path / "all" / "results.json").read_text())["rows"]
    assert "some benchmarks failed" in (tmp_path / "all" / "results.md").read_text()
    out = capsys.readouterr().out
    out_dir = bench_dir / "results" / (bench.machine_info()["tag"] + "-quick-partial")
    assert f"wrote {out_dir / 'results.json'}" in out
    table = out[out.index("operation"):].splitlines()
    assert table[2].split()[:3] == ["fake", "quick", "int"] and table[2].split()[-1] == "yes"
    doc = json.loads((out_dir / "results.json").read_text())
    assert {r["group"] for r in doc["rows"]} == {"fake: quick"}  # EMBEDCORE_BENCH_QUICK reached the child
    assert doc["summary"][0]["baseline"] == "python" and doc["summary"][0]["ratio"] > 1.0
    assert all(r["rounds"] >= 3 and r["p20"] <= r["median"] <= r["p80"] for r in doc["rows"])
    assert doc["duration_s"] > 0 and set(doc["load_average"]) == {"before", "after"}
    assert "quick shapes, part of the suite only: bench_fake.py" in (out_dir / "results.md").read_text()


@functools.cache
def _gpu_suite():
    """benchmarks/gpu_suite.py as a module (registered first: its dataclass resolves names through it)."""
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_code_rules():
    """The suite's comparison rules reject what they must: they are what a GPU run relies on."""
    torch = pytest.importorskip("torch")
    gs = _gpu_suite()
    starts, steps = torch.zeros(3), torch.ones(3)
    x = torch.tensor([[0.9999995, 2.5, 7.0]])  # pos 1.0 (at an edge), 2.5 (mid-bucket), 7.0 (edge)
    ref = torch.tensor([[0, 2, 7]], dtype=torch.uint8)
    def codes(*values):
        return torch.tensor([values], dtype=torch.uint8)

    assert "1 codes off by 1" in gs.check_codes(torch, "t", codes(1, 2, 7), ref, "uint8", x, starts, steps)
    with pytest.raises(AssertionError, match="away from a bucket edge"):
        gs.check_codes(torch, "t", codes(0, 3, 7), ref, "uint8", x, starts, steps)
    with pytest.raises(AssertionError, match="differs by 2"):
        gs.check_codes(torch, "t", codes(0, 2, 9), ref, "uint8", x, starts, steps)
    signs = torch.tensor([[1e-7, -0.5, 0.3, 0.2, -0.1, 0.4, -0.9, 0.6, 0.7]])  # 9 values: 2 bytes
    packed = torch.tensor([[0b10110101, 0b10000000]], dtype=torch.uint8)
    flipped_small = torch.tensor([[0b00110101, 0b10000000]], dtype=torch.uint8)  # bit of 1e-7
    flipped_large = torch.tensor([[0b11110101, 0b10000000]], dtype=torch.uint8)  # bit of -0.5
    assert "1 bits differ" in gs.check_codes(torch, "t", flipped_small, packed, "ubinary", signs)
    with pytest.raises(AssertionError, match="sign bits differ away from zero"):
        gs.check_codes(torch, "t", flipped_large, packed, "ubinary", signs)
    with pytest.raises(AssertionError, match="off"):
        gs.check_codes(torch, "t", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.001]), "float32",
                       torch.tensor([1.0, 2.001]))


def test_gpu_suite_topk_rules():
    np = pytest.importorskip("numpy")
    gs = _gpu_suite()
    ref_s, ref_i = np.array([[5.0, 5.0, 3.0]]), np.array([[2, 7, 1]])
    assert gs.check_topk("t", ref_s, ref_i, ref_s, ref_i, ascending=False, tol=0).startswith("exact")
    with pytest.raises(AssertionError, match="index 7 at"):  # ties must break toward the lower index
        gs.check_topk("t", ref_s, np.array([[7, 2, 1]]), ref_s, ref_i, ascending=False, tol=0)
    # With a tolerance, near-ties may swap, a clearly better index may not go missing.
    gs.check_topk("t", ref_s, np.array([[7, 2, 1]]), ref_s, ref_i, ascending=False, tol=1e-6)
    with pytest.raises(AssertionError, match="misses indices"):
        gs.check_topk("t", ref_s, np.array([[2, 9, 1]]), ref_s, ref_i, ascending=False, tol=1e-6)


def test_gpu_suite_summary_judges_both_goals():
    gs = _gpu_suite()
    rows = _rows(_bench("pooling: x", "embedcore", 1.0, op="pooling", goal=3.0),
                 _bench("pooling: x", "torch-eager", 4.0, op="pooling"))
    rows[0].update(achieved=2000.0, unit="GB/s", ceiling_fraction=0.6, ceiling_goal=0.8)
    (line,) = gs.summary_lines(rows)
    assert line["ratio"] == pytest.approx(4.0) and line["met"] is False  # ratio met, bandwidth missed
    rows[0]["ceiling_fraction"] = 0.85
    assert gs.summary_lines(rows)[0]["met"] is True
    assert "3x, 80%" in gs.format_summary(gs.summary_lines(rows))


def test_gpu_suite_dry_run(tmp_path):
    """The GPU suite's correctness checks and timing code, tiny shapes, Triton interpreter, CPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run",
                           "--output", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "dry run: all correctness checks passed" in proc.stdout
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["dry_run"] is True and doc["rows"] and not doc["notes"], doc["notes"]
    # Every section ran its checks: none was skipped as "not available".
    assert {c["section"] for c in doc["checks"]} == {*_gpu_suite().SECTIONS, "dispatch"}
    # Every Triton kernel (a launched @triton.jit function, named *_kernel) is reached by some check.
    kernels = {name for names in doc["triton_kernels"].values() for name in names if name.endswith("_kernel")}
    assert kernels and kernels <= set(doc["launched"]["triton"]), kernels - set(doc["launched"]["triton"])
    assert all(set(bench.ROW_FIELDS) <= set(row) for row in doc["rows"])
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.png").exists()
