"""Backend resolution: which implementation runs for a given input.

* A CUDA tensor goes to the Triton kernel or ``embedcore._cuda``; a CPU tensor or numpy array to
  the PyTorch reference or ``embedcore._C``.
* ``EMBEDCORE_BACKEND=torch`` forces the PyTorch references everywhere (debugging, bisecting).
* ``EMBEDCORE_NUM_THREADS`` sets native thread counts; otherwise ``torch.get_num_threads()``.

Nothing here queries a GPU at import time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Literal

Backend = Literal["native", "torch"]
# embedcore._C's CPU kernel levels, lowest first, each named for what it requires: avx2 (AVX2, FMA,
# POPCNT, F16C); avx512 (+ AVX-512 F/BW/VL: float and int8 kernels; VNNI used where present);
# avx512_vpopcnt (+ VPOPCNTDQ: the Hamming kernels too). ``EMBEDCORE_CPU_ISA`` caps the level.
CPU_ISAS = ("scalar", "avx2", "avx512", "avx512_vpopcnt")
_VALID_BACKENDS = ("auto", "torch")
# Most native threads accepted (native code takes a C int; more threads than this is a typo).
_MAX_THREADS = 4096


def _env_backend() -> str:
    value = os.environ.get("EMBEDCORE_BACKEND", "auto").strip().lower() or "auto"
    if value not in _VALID_BACKENDS:
        raise ValueError(f"EMBEDCORE_BACKEND must be one of {_VALID_BACKENDS}, got {value!r}")
    return value


def force_reference() -> bool:
    """True when ``EMBEDCORE_BACKEND=torch`` asks for the PyTorch references everywhere."""
    return _env_backend() == "torch"


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(name), None
    except ImportError as exc:  # not built, or built for another platform
        return None, str(exc)


def native() -> ModuleType | None:
    """``embedcore._C`` or None when it is not built."""
    return _load("embedcore._C")[0]


def cuda_ext() -> ModuleType | None:
    """``embedcore._cuda`` or None when it is not built (no nvcc at install time)."""
    return _load("embedcore._cuda")[0]


def require_native() -> ModuleType:
    module, error = _load("embedcore._C")
    if module is None:
        raise RuntimeError(
            f"embedcore._C is not built ({error}); reinstall with `pip install -e .` "
            "(needs a C++17 compiler) or set EMBEDCORE_BACKEND=torch"
        )
    return module


def num_threads() -> int:
    """Threads for native code: ``EMBEDCORE_NUM_THREADS`` if set, else ``torch.get_num_threads()``."""
    value = os.environ.get("EMBEDCORE_NUM_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"EMBEDCORE_NUM_THREADS must be a positive integer, got {value!r}") from None
        if not 1 <= n <= _MAX_THREADS:
            raise ValueError(f"EMBEDCORE_NUM_THREADS must be an integer in [1, {_MAX_THREADS}], got {n}")
        return n
    import torch

    return max(1, torch.get_num_threads())


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_mode() -> Literal["compiled", "interpreted", "absent"]:
    """How Triton kernels run here: compiled for a GPU, through the CPU interpreter, or not at all."""
    if not triton_available():
        return "absent"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "interpreted"
    return "compiled"


def use_triton(tensor: Any) -> bool:
    """Whether ``tensor`` should go to a Triton kernel: a CUDA tensor with Triton compiled, or any
    tensor while the interpreter is on (tests), unless the reference is forced."""
    if force_reference() or not triton_available():
        return False
    if triton_mode() == "interpreted":
        return True
    return bool(getattr(tensor, "is_cuda", False))


def info(file: Any = None) -> dict[str, Any]:
    """Prints which backends are live and returns them as a dict.

    Keys: ``embedcore``, ``cpu_isa`` (ISA level picked by ``_C``), ``cpu_isa_extensions`` (optional
    features its kernels use, e.g. ``avx512vnni``), ``cpu_isas_available``, ``cpu_isas_compiled``,
    ``native`` (``_C`` loaded?), ``cuda_ext`` (``_cuda`` loaded?), ``cuda_devices``, ``triton``
    (compiled/interpreted/absent), ``backend`` (auto/torch), ``num_threads``, ``torch``,
    ``transformers``, ``python``.
    """
    import torch

    from embedcore._version import __version__

    c_mod, c_err = _load("embedcore._C")
    cu_mod, cu_err = _load("embedcore._cuda")
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    report: dict[str, Any] = {
        "embedcore": __version__,
        "native": c_mod is not None,
        "cpu_isa": c_mod.isa() if c_mod else None,
        "cpu_isa_extensions": list(c_mod.isa_extensions()) if c_mod else [],
        "cpu_isas_available": list(c_mod.available_isas()) if c_mod else [],
        "cpu_isas_compiled": list(c_mod.compiled_isas()) if c_mod else [],
        "cuda_ext": cu_mod is not None,
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "triton": triton_mode(),
        "backend": _env_backend(),
        "num_threads": num_threads(),
        "torch": torch.__version__,
        "transformers": tf_version,
        "python": sys.version.split()[0],
    }
    lines = [
        f"embedcore {report['embedcore']}",
        f"  _C (native CPU):   {'loaded' if c_mod else 'missing: ' + str(c_err)}"
        + (f", ISA {report['cpu_isa']}"
           + "".join(f" +{ext}" for ext in report["cpu_isa_extensions"])
           + f" (available: {', '.join(report['cpu_isas_available'])};"
           f" compiled: {', '.join(report['cpu_isas_compiled'])})" if c_mod else ""),
        f"  _cuda (CUDA ext):  {'loaded' if cu_mod else 'missing: ' + str(cu_err)}"
        + (f", runtime {cu_mod.runtime_version()}" if cu_mod else ""),
        f"  CUDA devices:      {report['cuda_devices']}",
        f"  Triton:            {report['triton']}",
        f"  backend:           {report['backend']}",
        f"  native threads:    {report['num_threads']}",
        f"  torch {report['torch']}, transformers {report['transformers']}, python {report['python']}",
    ]
    print("\n".join(lines), file=file or sys.stdout)
    return report
