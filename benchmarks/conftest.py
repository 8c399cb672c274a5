"""Shared configuration of the benchmark suite (``pytest benchmarks/ --benchmark-only``, ``embedcore bench``).

* ``EMBEDCORE_BENCH_QUICK=1`` selects small shapes: read it through the ``quick`` fixture or
  ``QUICK`` below (module-level data is built once per file, before fixtures exist).
* The report header says which backends are timed, so a result file can be read without guessing.
* Every benchmark is checked against the contract of ``embedcore bench``: a ``group`` and
  ``extra_info`` with op, provider, shape, dtype and metric. A benchmark that misses one still runs;
  pytest shows a warning naming the missing keys.
"""

from __future__ import annotations

import os
import warnings

import pytest

QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")
REQUIRED_INFO = ("op", "provider", "shape", "dtype", "metric")
# embedcore ISA -> the FAISS SIMD level with the same instructions (FAISS aborts on unknown names).
FAISS_SIMD = {"scalar": "NONE", "avx2": "AVX2", "avx512": "AVX512", "avx512_vpopcnt": "AVX512_VPOPCNT"}


def _pin_faiss_simd() -> None:
    """Caps FAISS at embedcore's ISA (e.g. both AVX2 under ``EMBEDCORE_CPU_ISA=avx2``), so the two
    compare like with like. FAISS reads ``FAISS_SIMD_LEVEL`` once, when it loads: this runs before
    any benchmark imports it. A level the caller set wins."""
    from embedcore import _backend

    native = _backend.native()
    if native is not None and "FAISS_SIMD_LEVEL" not in os.environ:
        os.environ["FAISS_SIMD_LEVEL"] = FAISS_SIMD[native.isa()]


_pin_faiss_simd()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from embedcore import _backend

    native = _backend.native()
    lines = [
        f"embedcore benchmarks: {'quick' if QUICK else 'full'} shapes (EMBEDCORE_BENCH_QUICK), "
        f"native {'ISA ' + native.isa() if native else 'missing'}, {_backend.num_threads()} threads, "
        f"Triton {_backend.triton_mode()}, "
        f"backend {'torch (forced)' if _backend.force_reference() else 'auto'}"
    ]
    if _backend.triton_mode() == "interpreted":
        lines.append("WARNING: TRITON_INTERPRET is set: Triton kernels run in the Python interpreter; "
                     "timings of Triton paths are meaningless")
    return lines


@pytest.fixture(scope="session")
def quick() -> bool:
    """True when the quick suite (small shapes) was asked for."""
    return QUICK


@pytest.fixture(autouse=True)
def _benchmark_contract(request: pytest.FixtureRequest):
    """Warns when a benchmark leaves out the group or extra_info keys the runner reports on."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    yield
    if getattr(benchmark, "stats", None) is None:  # skipped, failed before timing, or never ran
        return
    missing = [key for key in REQUIRED_INFO if key not in benchmark.extra_info]
    if not benchmark.group:
        missing.insert(0, "group")
    if missing:
        warnings.warn(f"{request.node.nodeid} does not set {', '.join(missing)} (see benchmarks/README.md)",
                      stacklevel=1)
