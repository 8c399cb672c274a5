"""Wall time of ``ec.tune`` (full sweep) and ``ec.inspect`` at the demo's size.

Goals: tune over 10,000 x 384 with 1,000 queries and the full sweep (float32, float16, int8
asymmetric and symmetric, binary, binary + int8 x1/2/4/8/16; 200 latency queries) <= 60 s on two
cores; inspect over 10,000 vectors <= 20 s. There is no peer that does either job, so the figures
are absolute; the run also times one exact float32 search of the 1,000 queries as a yardstick of
the machine's speed during the run (the tune and inspect runs are interleaved with it).

Data: synthetic clustered unit vectors (200 centres plus noise: anisotropic like sentence
embeddings), 1,000 separately drawn queries; and the held-out mode (1,000 corpus rows as queries).

    python benchmarks/tune_inspect_time.py [--rounds 3] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import embedcore as ec
from embedcore import _backend

N, DIM, NQ = 10_000, 384, 1_000


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM))

    def draw(n: int) -> np.ndarray:
        x = centres[rng.integers(0, 200, n)] + 1.2 * rng.normal(size=(n, DIM))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(N), draw(NQ)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    corpus, queries = data()
    jobs = {
        "exact search 1000 x 10000 x 384 (yardstick)": lambda: ec.search(queries, corpus, 10, "cos"),
        "tune, 1000 given queries": lambda: ec.tune(corpus, queries),
        "tune, 1000 held-out rows": lambda: ec.tune(corpus, n_queries=NQ),
        "inspect 10000 x 384": lambda: ec.inspect(corpus),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    last: dict[str, object] = {}
    for _ in range(args.rounds):  # interleaved: a load spike hits every job alike
        for name, job in jobs.items():
            start = time.perf_counter()
            last[name] = job()
            times[name].append(time.perf_counter() - start)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": _backend.num_threads(),
        "rounds": args.rounds,
        "median_s": {name: float(np.median(t)) for name, t in times.items()},
        "all_s": times,
        "recommendation": last["tune, 1000 given queries"].summary(),
    }
    for name, t in times.items():
        print(f"{name:45s} median {np.median(t):7.2f} s  (min {min(t):.2f}, max {max(t):.2f})")
    print(result["recommendation"])
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
