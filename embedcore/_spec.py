"""Shared specifications: the vocabularies, limits and argument checks several layers need.

A leaf module: it imports neither torch nor triton (nor any other embedcore module), so
``embedcore.ops``, the Triton launchers in ``embedcore.kernels`` and the CUDA dispatch all take their
contracts from here and never from each other's privates.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

# -- precisions (embedcore.ops.quantize) ---------------------------------------------------------
Precision = Literal["float32", "float16", "bfloat16", "int8", "uint8", "binary", "ubinary"]
PRECISIONS = ("float32", "float16", "bfloat16", "int8", "uint8", "binary", "ubinary")
SCALAR_PRECISIONS = ("int8", "uint8")
BINARY_PRECISIONS = ("binary", "ubinary")
# The dtype (a torch/numpy dtype name) each precision's codes are stored in.
OUTPUT_DTYPE_NAMES = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "uint8": "uint8",
    "binary": "int8",
    "ubinary": "uint8",
}


def check_precision(precision: Any) -> str:
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"Invalid precision {precision!r}; valid: {PRECISIONS}")
    return precision


def output_dim(dim: int, precision: str) -> int:
    """Width of the quantized output for ``dim`` input dimensions (bytes for the binary precisions)."""
    return (dim + 7) // 8 if precision in BINARY_PRECISIONS else dim


# -- encode fidelity tiers (embedcore.models, benchmarks) -----------------------------------------
Fidelity = Literal["exact", "near_exact", "int8"]
FIDELITIES = ("exact", "near_exact", "int8")


def check_fidelity(fidelity: Any, name: str = "fidelity") -> str:
    """Returns ``fidelity`` if it names a tier; raises TypeError/ValueError naming ``name`` otherwise."""
    if not isinstance(fidelity, str):
        raise TypeError(f"{name} must be one of {FIDELITIES}, got {type(fidelity).__name__}")
    if fidelity not in FIDELITIES:
        raise ValueError(f"{name} must be one of {FIDELITIES}, got {fidelity!r}")
    return fidelity


# -- search (embedcore.ops.search, its Triton and CUDA backends) ---------------------------------
Metric = Literal["dot", "cos", "l2", "hamming"]
METRICS = ("dot", "cos", "l2", "hamming")
# Metrics whose best score is the smallest.
ASCENDING_METRICS = ("l2", "hamming")
# Largest corpus the int64 index / key packing supports.
MAX_CORPUS = 2**31 - 1
FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
# torch.nn.functional.normalize's eps, which sentence-transformers uses: cos of a zero vector is 0.
NORM_EPS = 1e-12
# int8 scores are exact int32 up to these dims (|a - b| <= 255, |a * b| <= 16384 per dim).
INT8_L2_MAX_DIM = 33025
INT8_DOT_MAX_DIM = 131071
# embedcore._cuda score kernels: queries staged in 48 KiB of shared memory, 8 per block row.
CUDA_MAX_WIDTH = 6144
CUDA_MAX_QUERIES = 8 * 65535
# Device search backends (EMBEDCORE_GPU_SEARCH) and the largest k of the fused Triton scan.
GPU_SEARCH_BACKENDS = ("auto", "triton", "cuda", "torch")
TRITON_MAX_K = 256

# dtype -> name: formatting a numpy dtype as a string costs microseconds (Python-level __str__), a
# dict lookup on the dtype object tens of nanoseconds.
_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(x: Any) -> str:
    """``x.dtype`` as a bare name (``"float32"``) for numpy arrays and torch tensors alike."""
    dtype = x.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def check_k(k: Any, n: int, n_name: str = "the corpus size") -> int:
    """``k`` as an int in ``[1, n]``; ``n_name`` says what ``n`` counts in the error message."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] ({n_name}), got {k}")
    return int(k)


def search_kind(qname: str, cname: str, metric: str, has_ranges: bool) -> str:
    """Which format pair the inputs form: ``float``, ``int8_asym``, ``int8`` or ``hamming``."""
    if metric == "hamming":
        if has_ranges:
            raise ValueError("ranges is only for float queries against an int8 corpus, not for hamming")
        if cname not in ("uint8", "int8") or qname != cname:
            raise TypeError(
                "hamming needs packed bits of one dtype for queries and corpus: uint8 (ubinary) or "
                f"int8 (binary); got queries {qname}, corpus {cname}"
            )
        return "hamming"
    if cname in FLOAT_NAMES:
        if qname not in FLOAT_NAMES:
            raise TypeError(f"queries must be float for a {cname} corpus, got {qname}")
        if has_ranges:
            raise ValueError("ranges is only for an int8 corpus; this corpus is " + cname)
        return "float"
    if cname == "int8":
        if qname in FLOAT_NAMES:
            if not has_ranges:
                raise ValueError(
                    "float queries against an int8 corpus need ranges=(2, dim) min/max rows (the "
                    "calibration ranges the codes were made with); or pass int8 queries"
                )
            return "int8_asym"
        if qname == "int8":
            if has_ranges:
                raise ValueError("ranges is only for float queries; int8 queries score the codes directly")
            return "int8"
        raise TypeError(f"queries must be float or int8 for an int8 corpus, got {qname}")
    raise TypeError(
        f"corpus has unsupported dtype {cname}; valid: float32, float16, bfloat16, int8, "
        "or uint8 with metric='hamming'"
    )
