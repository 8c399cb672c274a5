"""``embedcore bench``: run the pytest-benchmark suite and report embedcore against its baselines.

The suite lives in ``benchmarks/bench_<op>.py`` of the source checkout (the package is installed
editable). Every benchmark sets ``benchmark.group`` (embedcore and its baselines on the same data
share a group) and ``benchmark.extra_info`` with ``op``, ``provider``, ``shape``, ``dtype``,
``metric`` and, on the embedcore row, an optional ``goal``: the speed ratio the operation targets, and
``goal_vs``: the baseline the goal names when it is not "the fastest" (e.g. FAISS).

Per group the runner compares each embedcore row with the fastest baseline::

    ratio = median(best baseline) / median(embedcore)      # > 1: embedcore is faster
    met   = ratio >= goal

A goal with ``goal_vs`` is judged on a second line against that baseline; the line against the
fastest baseline is still shown, without a goal.

and writes ``results.json``, ``results.csv``, ``results.md`` and PNG bar charts into
``benchmarks/results/<machine-tag>/`` (``<machine-tag>-quick`` for ``--quick``). Timings are medians
with 20/80 percentiles; ratios only compare rows of the same run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

QUICK_ENV = "EMBEDCORE_BENCH_QUICK"
ROW_FIELDS = ("op", "provider", "shape", "dtype", "metric", "median", "p20", "p80", "device", "versions",
              "timestamp")
# Distributions whose versions explain a timing: embedcore and every baseline it is measured against.
VERSIONED = ("embedcore", "torch", "triton", "numpy", "transformers", "sentence-transformers", "faiss-cpu",
             "faiss-gpu", "usearch", "onnxruntime", "openvino", "nncf", "pytest-benchmark")
_ROW_INFO = ("op", "provider", "shape", "dtype", "metric", "device", "goal", "goal_vs")
TABLE_COLUMNS = ("operation", "shape", "baseline", "baseline time", "embedcore time", "ratio", "goal", "met?")


class BenchError(Exception):
    """A usage problem reported as one line (missing benchmark folder, unknown --only name)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``embedcore bench`` options to ``parser``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"small shapes ({QUICK_ENV}=1) and fewer rounds: the suite in under 3 minutes")
    parser.add_argument("--only", metavar="OPS", default=None,
                        help="comma-separated operations to run, e.g. search,pooling (default: all)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="results folder (default: benchmarks/results/<machine-tag>[-quick][-partial]/)")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", default=None,
                        help="pytest -k expression to select benchmarks inside the chosen files")
    parser.add_argument("--bench-dir", metavar="DIR", default=None,
                        help="folder holding bench_*.py (default: benchmarks/ of the source checkout)")


def run(args: argparse.Namespace) -> int:
    """Runs the suite; prints the table and writes the results. Returns the process exit code.

    2 for a usage error, pytest's code when a benchmark failed (results of the others are still
    written), else 0. Goals that are not met are reported, not treated as failures.
    """
    try:
        bench_dir = find_benchmark_dir(args.bench_dir)
        files = select_files(bench_dir, args.only)
    except BenchError as exc:
        print(f"embedcore bench: {exc}", file=sys.stderr)
        return 2

    machine = machine_info()
    out_dir = Path(args.output) if args.output else bench_dir / "results" / default_folder(
        machine["tag"], args.quick, partial=bool(args.only or args.keyword))
    load_before, started = _load_average(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embedcore-bench-") as tmp:
        json_path = Path(tmp) / "pytest-benchmark.json"
        rc = run_pytest(files, json_path, quick=args.quick, keyword=args.keyword)
        if not json_path.exists():
            print(f"embedcore bench: pytest exited with code {rc} and wrote no benchmark data",
                  file=sys.stderr)
            return rc or 1
        data = json.loads(json_path.read_text())

    timestamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = load_rows(data, device=machine["device"], versions=package_versions(), timestamp=timestamp)
    if not rows:
        print("embedcore bench: no benchmark ran (check --only and -k)", file=sys.stderr)
        return rc or 1
    summary = summarize(rows)
    print()
    print(format_table(summary))
    print(goal_line(summary))
    # The load average says how busy the machine was: other processes make every timing noisier.
    meta = {"machine": machine, "timestamp": timestamp, "quick": bool(args.quick),
            "partial": bool(args.only or args.keyword), "files": [f.name for f in files],
            "pytest_exit_code": rc,
            "duration_s": round(time.perf_counter() - started, 1),
            "commit": _commit(data.get("commit_info") or {}),
            "load_average": {"before": load_before, "after": _load_average()}}
    for path in write_results(rows, summary, out_dir, meta):
        print(f"wrote {path}")
    if rc != 0:
        print(f"embedcore bench: pytest exited with code {rc}; some benchmarks failed (see above)",
              file=sys.stderr)
    return rc


# -- locating and running the suite ----------------------------------------------------------------


def find_benchmark_dir(explicit: str | None = None) -> Path:
    """The folder holding ``bench_*.py``: ``explicit``, else ``benchmarks/`` next to the package source.

    Raises:
        BenchError: the folder does not exist or holds no ``bench_*.py`` (a wheel install ships no
            benchmarks; they need a source checkout installed with ``pip install -e .[bench]``).
    """
    if explicit is not None:
        bench_dir = Path(explicit).resolve()
    else:
        import embedcore

        bench_dir = Path(embedcore.__file__).resolve().parent.parent / "benchmarks"
    if not bench_dir.is_dir() or not any(bench_dir.glob("bench_*.py")):
        raise BenchError(
            f"no benchmark folder with bench_*.py at {bench_dir}; the suite ships with the source "
            "checkout: clone embedcore, `pip install -e .[bench]`, then run `embedcore bench` "
            "(or pass --bench-dir)"
        )
    return bench_dir


def default_folder(tag: str, quick: bool, partial: bool) -> str:
    """``<tag>`` for the full suite, ``-quick`` / ``-partial`` suffixes otherwise: a quick or partial run
    never overwrites the results of a full one."""
    return tag + ("-quick" if quick else "") + ("-partial" if partial else "")


def available_ops(bench_dir: Path) -> list[str]:
    """Operation names of the suite: ``bench_<op>.py`` → ``<op>``, sorted."""
    return sorted(p.stem[len("bench_"):] for p in bench_dir.glob("bench_*.py"))


def select_files(bench_dir: Path, only: str | None) -> list[Path]:
    """The benchmark files for ``--only`` (comma-separated op names; None or empty: all).

    Raises:
        BenchError: a name is not an operation of the suite (the message lists the valid ones).
    """
    ops = available_ops(bench_dir)
    if not only:
        chosen = ops
    else:
        chosen = [name.strip() for name in only.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in ops]
        if unknown:
            raise BenchError(f"unknown operation(s) in --only: {', '.join(unknown)}; valid: {', '.join(ops)}")
        if not chosen:
            raise BenchError(f"--only names no operation; valid: {', '.join(ops)}")
    return [bench_dir / f"bench_{name}.py" for name in dict.fromkeys(chosen)]


def pytest_command(files: list[Path], json_path: Path, quick: bool, keyword: str | None = None) -> list[str]:
    """The pytest command line that runs ``files`` as benchmarks and writes their JSON with raw data."""
    cmd = [sys.executable, "-m", "pytest", *map(str, files), "--benchmark-only",
           f"--benchmark-json={json_path}", "--benchmark-save-data",
           "--benchmark-columns=median,iqr,rounds", "-o", "python_files=bench_*.py",
           "-p", "no:cacheprovider", "-q",
           "--continue-on-collection-errors"]  # one broken file must not sink the others' results
    if quick:  # fewer rounds: the shapes are small already, medians settle fast
        cmd += ["--benchmark-max-time=0.25", "--benchmark-min-rounds=3"]
    if keyword:
        cmd += ["-k", keyword]
    return cmd


def run_pytest(files: list[Path], json_path: Path, quick: bool, keyword: str | None = None) -> int:
    """Runs the benchmarks in a child pytest (output streams through) and returns its exit code."""
    env = dict(os.environ)
    if quick:
        env[QUICK_ENV] = "1"
    else:
        env.pop(QUICK_ENV, None)
    # The interpreter would time Triton kernels in Python on the CPU: meaningless as a benchmark.
    if env.pop("TRITON_INTERPRET", None) not in (None, "", "0"):
        print("embedcore bench: ignoring TRITON_INTERPRET for the benchmark run", file=sys.stderr)
    env.setdefault("HF_HUB_OFFLINE", "1")  # models come from local folders; never wait on the network
    cwd = files[0].parent.parent if files else None
    return subprocess.run(pytest_command(files, json_path, quick, keyword), env=env, cwd=cwd).returncode


# -- machine and versions --------------------------------------------------------------------------


def _cpu_brand() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)|\b(cpu|processor|\d+-core)\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU brand, logical cores, OS and the tag naming the results folder (e.g. ``x86_64-amd-epyc-2c``)."""
    brand = _cpu_brand()
    cores = os.cpu_count() or 1
    arch = platform.machine() or "unknown"
    return {
        "cpu": brand,
        "cores": cores,
        "arch": arch,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "device": f"cpu: {brand}, {cores} cores",
        "tag": f"{_slug(arch)}-{_slug(brand)}-{cores}c",
    }


def _commit(info: dict[str, Any]) -> str | None:
    """The checkout the suite ran on, from pytest-benchmark's commit_info: ``<id>`` or ``<id> (dirty)``."""
    if not info.get("id"):
        return None
    return info["id"][:12] + (" (uncommitted changes)" if info.get("dirty") else "")


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def package_versions() -> dict[str, str]:
    """Installed versions of embedcore and its baselines (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# -- turning pytest-benchmark JSON into rows and a table -------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    data = sorted(values)
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def load_rows(data: dict[str, Any], device: str, versions: dict[str, str],
              timestamp: str) -> list[dict[str, Any]]:
    """One row per benchmark of a pytest-benchmark JSON document.

    Times are seconds per call. p20/p80 come from the raw per-round data (``--benchmark-save-data``);
    without it they fall back to the quartiles. A benchmark that did not set ``op``/``provider``
    gets the group's prefix and the test name, so it still shows up.
    """
    rows = []
    for bench in data.get("benchmarks", []):
        info = dict(bench.get("extra_info") or {})
        stats = bench["stats"]
        samples = stats.get("data") or []
        group = bench.get("group") or bench["name"]
        goal = info.get("goal")
        rows.append({
            "op": str(info.get("op") or group.split(":")[0].strip()),
            "provider": str(info.get("provider") or bench["name"]),
            "shape": str(info.get("shape", "")),
            "dtype": str(info.get("dtype", "")),
            "metric": str(info.get("metric", "time")),
            "median": float(stats["median"]),
            "p20": float(quantile(samples, 0.2) if samples else stats["q1"]),
            "p80": float(quantile(samples, 0.8) if samples else stats["q3"]),
            "device": str(info.get("device") or device),
            "versions": versions,
            "timestamp": timestamp,
            "group": group,
            "name": bench.get("fullname") or bench["name"],
            "goal": None if goal is None else float(goal),
            "goal_vs": info.get("goal_vs"),
            "rounds": int(stats.get("rounds", len(samples))),
            # The rest of extra_info (fidelity, paired ratios, threads...): kept in results.json.
            "extra": {k: v for k, v in info.items() if k not in _ROW_INFO},
        })
    return rows


def is_embedcore(row: dict[str, Any]) -> bool:
    """embedcore's own rows: provider ``embedcore`` or a variant such as ``embedcore-fast``."""
    return row["provider"] == "embedcore" or row["provider"].startswith(("embedcore-", "embedcore "))


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per embedcore row against the fastest baseline of its group, in suite order (two
    when the row's goal names a slower baseline: ``goal_vs``).

    A group without an embedcore row gives one line with its fastest baseline and no ratio; an
    embedcore row without baselines gives a line with no ratio.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    lines = []
    for group, members in groups.items():
        ours = [r for r in members if is_embedcore(r)]
        baselines = [r for r in members if not is_embedcore(r)]
        best = min(baselines, key=lambda r: r["median"]) if baselines else None
        for ec_row in ours or [None]:
            goal = ec_row["goal"] if ec_row else None
            named = [r for r in baselines if ec_row and r["provider"] == ec_row.get("goal_vs")]
            if named and named[0] is not best:  # the fastest baseline shown, the goal judged on the named one
                lines.append(_summary_line(group, ec_row, best, None))
                lines.append(_summary_line(group, ec_row, named[0], goal))
            else:
                lines.append(_summary_line(group, ec_row, best, goal))
    return lines


def _summary_line(group: str, ec_row: dict[str, Any] | None, base: dict[str, Any] | None,
                  goal: float | None) -> dict[str, Any]:
    """One comparison: ``ec_row`` (or None) against ``base`` (or None), judged on ``goal``."""
    ref = ec_row or base
    ratio = base["median"] / ec_row["median"] if base and ec_row and ec_row["median"] > 0 else None
    return {
        "group": group,
        "label": _group_label(group, ref),
        "op": ref["op"],
        "shape": ref["shape"],
        "dtype": ref["dtype"],
        "provider": ec_row["provider"] if ec_row else None,
        "baseline": base["provider"] if base else None,
        "baseline_median": base["median"] if base else None,
        "embedcore_median": ec_row["median"] if ec_row else None,
        "ratio": ratio,
        "goal": goal,
        "met": None if goal is None or ratio is None else bool(ratio >= goal),
    }


def _group_label(group: str, row: dict[str, Any]) -> str:
    """What the table calls the comparison: the group's description after ``"<op>:"`` (groups are
    unique per comparison, shapes need not be), with the dtype when the description lacks it."""
    label = group.split(":", 1)[1].strip() if group.startswith(f"{row['op']}:") else row["shape"] or group
    if row["dtype"] and row["dtype"] not in label:
        label += f" {row['dtype']}"
    return label


def format_time(seconds: float | None) -> str:
    """``1.23 ms``-style: three significant digits in the unit that fits."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table_cells(line: dict[str, Any]) -> list[str]:
    """The table's cells for one summary line, in ``TABLE_COLUMNS`` order."""
    op = line["op"] if line["provider"] in (None, "embedcore") else f"{line['op']} ({line['provider']})"
    met = "-" if line["met"] is None else ("yes" if line["met"] else "NO")
    return [
        op,
        line["label"],
        line["baseline"] or "-",
        format_time(line["baseline_median"]),
        format_time(line["embedcore_median"]),
        "-" if line["ratio"] is None else f"{line['ratio']:.2f}x",
        "-" if line["goal"] is None else f"{line['goal']:g}x",
        met,
    ]


def format_table(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned plain-text table (ratio > 1: embedcore faster than the best baseline)."""
    cells = [list(TABLE_COLUMNS)] + [table_cells(line) for line in summary]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    right = {3, 4, 5, 6}
    out = []
    for n, row in enumerate(cells):
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(padded).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_markdown(summary: list[dict[str, Any]]) -> str:
    """The summary as a GitHub markdown table."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * 4 + ":---:|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(line)) + " |" for line in summary]
    return "\n".join(lines)


def goal_line(summary: list[dict[str, Any]]) -> str:
    """``goals met: 3/5 (missed: search float32 64q, ...)``."""
    judged = [line for line in summary if line["met"] is not None]
    missed = [f"{line['op']} {line['label']}" for line in judged if not line["met"]]
    text = f"goals met: {sum(1 for line in judged if line['met'])}/{len(judged)}"
    return text + (f" (missed: {'; '.join(missed)})" if missed else "")


# -- writing results ---------------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else value


def write_results(rows: list[dict[str, Any]], summary: list[dict[str, Any]], out_dir: Path,
                  meta: dict[str, Any]) -> list[Path]:
    """Writes results.json, results.csv, results.md and the charts into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps({**meta, "rows": rows, "summary": summary}, indent=2) + "\n")

    csv_path = out_dir / "results.csv"
    fields = [*ROW_FIELDS, "group", "name", "goal", "rounds"]
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({f: _csv_value(row[f]) for f in fields})

    charts = plot_charts(rows, summary, out_dir)
    md_path = out_dir / "results.md"
    md_path.write_text(results_markdown(summary, meta, charts, rows))
    return [json_path, csv_path, md_path, *charts]


def results_markdown(summary: list[dict[str, Any]], meta: dict[str, Any], charts: list[Path],
                     rows: list[dict[str, Any]]) -> str:
    """The results page: machine, date, versions, the table and the charts."""
    machine = meta["machine"]
    versions = rows[0]["versions"] if rows else {}
    kind = ("quick suite (`embedcore bench --quick`, small shapes)" if meta["quick"]
            else "full suite (`embedcore bench`)")
    if meta.get("partial"):
        shapes = "quick" if meta["quick"] else "full"
        kind = f"{shapes} shapes, part of the suite only: {', '.join(meta['files'])}"
    parts = [
        f"# embedcore benchmarks: {machine['tag']}",
        "",
        f"- run: {meta['timestamp']}, {kind}" + (f", code at {meta['commit']}" if meta.get("commit") else ""),
        f"- machine: {machine['cpu']}, {machine['cores']} logical cores, {machine['arch']}, "
        f"{machine['system']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        *([f"- load average (1 min) before / after the run: {load['before']} / {load['after']} on "
           f"{machine['cores']} cores; {meta['duration_s']:.0f} s in total"]
          if (load := meta.get("load_average")) else []),
        *([f"- **pytest exited with code {meta['pytest_exit_code']}: some benchmarks failed or did not run**"]
          if meta.get("pytest_exit_code") else []),
        "- ratio = median time of the fastest baseline / median time of embedcore (> 1: embedcore faster),",
        "  both measured in the same run on the same data; goal = the ratio the operation targets.",
        "",
        format_markdown(summary),
        "",
        goal_line(summary),
        "",
    ]
    parts += [f"![{chart.stem}]({chart.name})" for chart in charts]
    return "\n".join(parts) + "\n"


def draw_speedups(ax: Any, lines: list[dict[str, Any]], labels: list[str]) -> None:
    """Horizontal bars of each line's ratio on a log axis, growing from parity (1x): faster to the
    right, slower to the left; green where the goal is met, red where missed, black ticks at goals."""
    ratios = [line["ratio"] for line in lines]
    colors = ["tab:green" if line["met"] else ("tab:red" if line["met"] is False else "tab:blue")
              for line in lines]
    ys = range(len(lines))
    ax.barh(ys, [r - 1.0 for r in ratios], left=1.0, color=colors)
    ax.set_xscale("log")
    for y, line in zip(ys, lines):
        faster = line["ratio"] >= 1
        ax.annotate(f"{line['ratio']:.3g}x", (line["ratio"], y), xytext=(3 if faster else -3, 0),
                    textcoords="offset points", va="center", ha="left" if faster else "right", fontsize=6)
        if line["goal"] is not None:
            ax.plot([line["goal"]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    goals = [line["goal"] for line in lines if line["goal"] is not None]
    lo, hi = min([*ratios, *goals, 1.0]), max([*ratios, *goals, 1.0])
    ax.set_xlim(lo / 2.5, hi * 2.5)  # room for the labels
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up vs the fastest baseline, log scale (black tick: goal; green met, red missed)")


def plot_charts(rows: list[dict[str, Any]], summary: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One bar chart per operation (median time per provider and group, p20–p80 whiskers, log scale)
    and ``speedups.png`` (ratio per comparison, goal marked). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    paths = []
    ops: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        ops.setdefault(row["op"], []).append(row)
    for op, op_rows in ops.items():
        groups = list(dict.fromkeys(r["group"] for r in op_rows))
        providers = sorted(dict.fromkeys(r["provider"] for r in op_rows),
                           key=lambda p: (not p.startswith("embedcore"), p))  # embedcore first
        height = 0.8 / len(providers)
        fig, ax = plt.subplots(figsize=(10.0, 1.2 + 0.22 * len(groups) * len(providers) + 0.25 * len(groups)))
        for i, provider in enumerate(providers):
            ys, xs, err = [], [], [[], []]
            for g, group in enumerate(groups):
                match = [r for r in op_rows if r["group"] == group and r["provider"] == provider]
                if match:
                    r = match[0]
                    ys.append(g + (i - (len(providers) - 1) / 2) * height)
                    xs.append(r["median"] * 1e3)
                    err[0].append(max(0.0, r["median"] - r["p20"]) * 1e3)
                    err[1].append(max(0.0, r["p80"] - r["median"]) * 1e3)
            ax.barh(ys, xs, height, xerr=err, capsize=2, label=provider)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([g.split(":", 1)[-1].strip() for g in groups], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("median time per call (ms, log scale); whiskers: p20-p80")
        ax.set_title(f"{op}: shorter is faster")
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out_dir / f"{_slug(op)}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")  # long labels stay whole
        plt.close(fig)
        paths.append(path)

    judged = [line for line in summary if line["ratio"] is not None]
    if judged:
        fig, ax = plt.subplots(figsize=(12.5, max(2.5, 0.3 * len(judged) + 1.4)))
        draw_speedups(ax, judged, [f"{line['op']}: {line['label']}"
                                   + ("" if line["provider"] == "embedcore" else f" [{line['provider']}]")
                                   for line in judged])
        fig.tight_layout()
        path = out_dir / "speedups.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")  # long labels stay whole
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m embedcore.bench``: the same as ``embedcore bench``."""
    parser = argparse.ArgumentParser(prog="embedcore bench", description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
