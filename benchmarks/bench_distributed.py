"""Ray scale-out against one process on the same cores: encode throughput and sharded search latency.

Run: ``python benchmarks/bench_distributed.py [--quick] [--output DIR]`` (a script, not a
pytest-benchmark file: each measurement starts a Ray job, and the single-process baseline is timed
in the same rounds, interleaved). Writes ``results.json`` and ``results.md`` into ``DIR`` (default
``benchmarks/results/<machine>-distributed``).

* **encode**: the bundled all-MiniLM-L6-v2 on N bundled Wikipedia summaries, batch 32. Baseline:
  ``Embedder.from_pretrained`` + ``encode`` in this process with all cores' torch threads;
  against ``ec.distributed.encode`` with 1 and 2 actors (each actor loads the model once, CPU
  threads = cores / actors). Both sides include the model load, so the ratio is a whole job's.
  The round order rotates; medians and per-round ratios are reported.
* **sharded search**: N x 384 unit vectors, k = 10, batches of 64 queries and of 1 query, for
  float32 and binary + int8 rescoring x4. Baseline: one ``Index`` in this process; against
  ``ShardedIndex`` with 1 shard (the Ray round trip alone) and 2 shards (fan-out + merge), results
  checked equal first. The per-row scan time of one process is the per-shard figure the README's
  100M-document plan scales.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent


def _median_ms(fn, rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times


def bench_encode(n_texts: int, rounds: int, cores: int) -> list[dict]:
    import torch

    import embedcore as ec
    from embedcore.corpus import demo_model_path, load_wiki_summaries

    model = str(demo_model_path())
    texts = [r["extract"] for r in load_wiki_summaries(n_texts)]

    def single():
        torch.set_num_threads(cores)
        return ec.Embedder.from_pretrained(model).encode(texts, batch_size=32)

    def ray_actors(n):
        return lambda: ec.distributed.encode(
            texts, model, concurrency=n, batch_size=32, block_rows=max(32, n_texts // (4 * n))
        )

    cases = {"single process": single, "ray 1 actor": ray_actors(1), "ray 2 actors": ray_actors(2)}
    # The fixed cost of a Ray job (actor start: a Python worker importing torch and transformers,
    # the model load, Ray Data's planning): the same call on 2 texts.
    cases["ray 1 actor, 2 texts (fixed cost)"] = lambda: ec.distributed.encode(
        texts[:2], model, concurrency=1, batch_size=32
    )
    reference = single()
    for name in ("ray 1 actor", "ray 2 actors"):  # results first: a fast wrong answer must not count
        got = cases[name]()
        err = float(np.abs(got - reference).max())
        assert err <= 1e-5, f"{name} differs from one process by {err}"
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no case always first
            t = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t)
    rows = []
    base = statistics.median(times["single process"])
    fixed = statistics.median(times["ray 1 actor, 2 texts (fixed cost)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = [b / t for b, t in zip(times["single process"], ts)]
        if name.startswith("ray") and "fixed" not in name:
            # Throughput once the actors run: the job's time less its fixed cost.
            rows.append(
                {
                    "bench": "encode",
                    "case": f"{name}, less the fixed cost",
                    "texts": n_texts,
                    "median_s": med - fixed,
                    "texts_per_s": n_texts / (med - fixed),
                    "ratio_vs_single": base / (med - fixed),
                    "paired_ratio_median": float("nan"),
                    "rounds_s": [],
                }
            )
        n = 2 if "fixed" in name else n_texts
        rows.append(
            {
                "bench": "encode",
                "case": name,
                "texts": n,
                "median_s": med,
                "texts_per_s": n / med,
                "ratio_vs_single": float("nan") if "fixed" in name else base / med,
                "paired_ratio_median": statistics.median(paired),
                "rounds_s": ts,
            }
        )
    return rows


def bench_search(n: int, rounds: int) -> list[dict]:
    import embedcore as ec

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((n, 384)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.standard_normal((64, 384)).astype(np.float32)
    rows = []
    for label, kwargs in (("float32", {}), ("binary + int8 x4", {"precision": "binary", "rescore": "int8"})):
        index = ec.Index(384, **kwargs)
        index.add(corpus)
        sharded = {s: ec.distributed.ShardedIndex.from_index(index, shards=s) for s in (1, 2)}
        try:
            for nq in (64, 1):
                q = queries[:nq]
                want = index.search(q, 10)
                for sh in sharded.values():
                    np.testing.assert_array_equal(sh.search(q, 10)[1], want[1])
                cases = {"one Index": lambda q=q, index=index: index.search(q, 10)}
                cases.update(
                    {
                        f"ShardedIndex {s} shard{'s' * (s > 1)}": (lambda q=q, sh=sh: sh.search(q, 10))
                        for s, sh in sharded.items()
                    }
                )
                times: dict[str, list[float]] = {name: [] for name in cases}
                for _ in range(rounds):  # interleaved: one call of each case per round
                    for name, fn in cases.items():
                        times[name].extend(_median_ms(fn, 1)[1])
                base = statistics.median(times["one Index"])
                for name, ts in times.items():
                    med = statistics.median(ts)
                    rows.append(
                        {
                            "bench": "search",
                            "format": label,
                            "rows": n,
                            "queries": nq,
                            "case": name,
                            "median_ms": med,
                            "p20_ms": float(np.percentile(ts, 20)),
                            "p80_ms": float(np.percentile(ts, 80)),
                            "overhead_ms": med - base,
                            "ratio_vs_one_index": base / med,
                        }
                    )
        finally:
            for sh in sharded.values():
                sh.close()
    return rows


def _markdown(meta: dict, rows: list[dict]) -> str:
    out = [
        f"# distributed (Ray) vs one process: {meta['machine']}",
        "",
        f"{meta['date']}, {meta['cores']} cores, Ray {meta['ray']}, torch threads {meta['cores']} "
        f"(single process) / cores per actor (Ray), command `{meta['command']}`",
        "",
    ]
    enc = [r for r in rows if r["bench"] == "encode"]
    if enc:
        out += [
            "| encode | texts | median s | texts/s | single / this (medians) | paired ratio |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['case']} | {r['texts']} | {r['median_s']:.2f} | {r['texts_per_s']:.1f} | "
            f"{r['ratio_vs_single']:.3f} | {r['paired_ratio_median']:.3f} |"
            for r in enc
        ]
        out.append("")
    srch = [r for r in rows if r["bench"] == "search"]
    if srch:
        out += [
            "| search format | rows | queries | case | median ms (p20-p80) | overhead ms "
            "| one Index / this |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['format']} | {r['rows']} | {r['queries']} | {r['case']} | {r['median_ms']:.2f} "
            f"({r['p20_ms']:.2f}-{r['p80_ms']:.2f}) | {r['overhead_ms']:+.2f} "
            f"| {r['ratio_vs_one_index']:.3f} |"
            for r in srch
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--only", choices=("encode", "search"), default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    import ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    rows: list[dict] = []
    if args.only in (None, "search"):
        rows += bench_search(20_000 if args.quick else 200_000, 5 if args.quick else 30)
    if args.only in (None, "encode"):
        rows += bench_encode(64 if args.quick else 300, 1 if args.quick else 3, cores)
    ray.shutdown()
    from embedcore.bench import machine_info

    info = machine_info()
    machine = info["tag"]
    meta = {
        "machine": f"{machine} ({info['cpu']})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": cores,
        "ray": ray.__version__,
        "command": " ".join(["python benchmarks/bench_distributed.py", *sys.argv[1:]]),
    }
    out = args.output or ROOT / "results" / f"{machine}-distributed{'-quick' if args.quick else ''}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(_markdown(meta, rows))
    print(_markdown(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
