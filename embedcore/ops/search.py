"""Exact top-k search: fused score + top-k over float, int8 and packed-binary corpora.

``search(queries, corpus, k=10, metric="cos", *, ranges=None)`` returns ``(scores, indices)``, each
``(nq, k)``, best first, ties broken toward the lower corpus index. The input formats:

=====================  ===================  ================  =================================
queries                corpus               metrics           scores
=====================  ===================  ================  =================================
float                  float32/16/bf16      dot, cos, l2      float32
float                  int8 + ``ranges``    dot, cos, l2      float32 (dequantised corpus)
int8                   int8                 dot, l2           int32 (exact)
int8                   int8                 cos               float32
uint8 (ubinary)        uint8                hamming           int32 distances
int8 (binary)          int8                 hamming           int32 distances
=====================  ===================  ================  =================================

Float queries (float16/bfloat16/float32/float64) and float64 corpora are computed in float32.
``dot``/``cos`` rank large scores first; ``l2`` (squared distance) and ``hamming`` small ones first.
``cos`` divides by the norms clamped at 1e-12 (``torch.nn.functional.normalize``), so a zero vector
scores 0. Asymmetric int8 scores the vectors :func:`_dequantize` gives back: the lower edge of each
code's bucket, exactly as ``embedcore.ops.quantize.dequantize``. ``binary`` codes are
sentence-transformers' ``ubinary - 128``: the shift is undone before counting bits.

numpy arrays and CPU tensors run in ``embedcore._C`` (GIL released): score tiles from per-ISA
kernels pushed straight into per-query heaps, never the full score matrix. CUDA tensors with
k <= 256 run the fused Triton scan when triton is installed (``embedcore.kernels.similarity``:
score tiles and a running top-k in registers); larger k, or ``EMBEDCORE_GPU_SEARCH=torch``, scores
corpus blocks (cuBLAS for floats, ``embedcore._cuda`` popc/dp4a kernels for Hamming and int8) and
ranks them with ``torch.topk`` on unique int64 (score, index) keys, so k is not capped.
``EMBEDCORE_GPU_SEARCH=cuda`` runs the fused CUDA kernels of ``embedcore.ops.search_cuda`` (block
top-k in shared memory, k <= 1024) where they apply. Outputs are numpy for numpy queries and tensors
on the queries' device for tensor queries.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from embedcore import _backend
from embedcore._arrays import check_array, is_tensor
from embedcore._spec import (
    ASCENDING_METRICS,
    CUDA_MAX_QUERIES,
    CUDA_MAX_WIDTH,
    GPU_SEARCH_BACKENDS,
    INT8_DOT_MAX_DIM,
    INT8_L2_MAX_DIM,
    MAX_CORPUS,
    METRICS,
    NORM_EPS,
    TRITON_MAX_K,
    Metric,
    check_k,
    dtype_name,
    search_kind,
)
from embedcore.ops.cos_range import cos_safe_corpus, unit_rows
from embedcore.ops.keys import unpack_keys


def _score_dtype(kind: str, metric: str) -> Any:
    if kind == "hamming" or (kind == "int8" and metric != "cos"):
        return np.int32
    return np.float32


def _int8_affine(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` float64 (dim,): an int8 code ``c`` stands for ``offset + scale * c``.

    The affine form of :func:`embedcore.ops.quantize.dequantize` (``(c + 128) * step + min`` with
    sentence-transformers' float32 buckets), built from that module's own bucket parameters.
    """
    from embedcore.ops.quantize import bucket_params_numpy

    starts, steps = bucket_params_numpy(np.ascontiguousarray(ranges, dtype=np.float32))
    starts64, steps64 = starts.astype(np.float64), steps.astype(np.float64)
    return starts64 + 128.0 * steps64, steps64


# The last ranges checked and their float32 (offset, scale): an index searches with the same ranges
# call after call, and re-deriving them (finite checks, bucket steps) cost more than the scan of a
# small corpus. Keyed by dtype and bytes, so a changed array misses.
# One slot holding a (key, affine) tuple: replaced in one store, so threads never see a mixed pair.
_AFFINE_CACHE: list[Any] = [(None, None)]


def _checked_affine(ranges: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(offset, scale)`` (dim,) of checked ``ranges`` (see :func:`_check_ranges`)."""
    r = ranges
    if isinstance(r, np.ndarray) and r.dtype.kind == "f" and r.shape == (2, dim):
        key = (r.dtype.str, r.tobytes())
        cached_key, cached = _AFFINE_CACHE[0]
        if cached_key == key:
            return cached
    else:
        key = None
    offset64, scale64 = _int8_affine(_check_ranges(ranges, dim))
    affine = (offset64.astype(np.float32), scale64.astype(np.float32))
    if key is not None:
        _AFFINE_CACHE[0] = (key, affine)
    return affine


def _dequantize(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The float32 vectors int8 ``codes`` (N, dim) stand for under ``ranges`` (2, dim)."""
    from embedcore.ops.quantize import dequantize

    return dequantize(codes, ranges)


def _check_ranges(ranges: Any, dim: int) -> np.ndarray:
    check_array(ranges, "ranges")
    r = _to_numpy(ranges, "ranges")
    if r.dtype.kind != "f":
        raise TypeError(f"ranges must hold floats, got {r.dtype}")
    if r.ndim != 2 or r.shape != (2, dim):
        raise ValueError(f"ranges must have shape (2, {dim}) (min row, max row), got {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("ranges contains NaN or infinity")
    if (r[0] > r[1]).any():
        raise ValueError("ranges[0] (minimum) exceeds ranges[1] (maximum) in some dimension")
    return r.astype(np.float32)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A C-contiguous numpy array holding ``x``; bfloat16 tensors become float32 (exact)."""
    if type(x) is np.ndarray:
        return np.ascontiguousarray(x)
    if is_tensor(x):
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return np.ascontiguousarray(t.contiguous().numpy())
    return np.ascontiguousarray(x)


def _check_finite(x: np.ndarray, name: str) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity")


def _float32_queries(q: Any, metric: str) -> np.ndarray:
    """Queries as C-contiguous float32, finite, unit length for ``cos`` (norm clamped at 1e-12).

    ``cos`` rows are first scaled by a power of two to a maximum below 1, so a float64 row of huge
    (or tiny) values normalises like any other instead of overflowing its square sum.

    Raises:
        ValueError: NaN/inf, or (other metrics) float64 values beyond the float32 range.
    """
    q = _to_numpy(q, "queries")
    _check_finite(q, "queries")
    if metric == "cos":
        q = unit_rows(q.astype(np.float64), NORM_EPS)
    elif q.dtype == np.float64:
        with np.errstate(over="ignore"):
            q32 = q.astype(np.float32)
        if not np.isfinite(q32).all():
            raise ValueError("queries holds float64 values beyond the float32 range (+-3.4e38); "
                             "scores are computed in float32")
        return np.ascontiguousarray(q32)
    return np.ascontiguousarray(q, dtype=np.float32)


def _native_corpus(corpus: Any) -> tuple[np.ndarray, str]:
    """The corpus as ``_C.search_float`` reads it: (array, format); 16-bit floats as bit patterns."""
    if is_tensor(corpus):
        import torch

        t = corpus.detach().contiguous()
        if t.dtype in (torch.float16, torch.bfloat16):
            return t.view(torch.int16).numpy(), "f16" if t.dtype == torch.float16 else "bf16"
        corpus = t.numpy()
    c = np.ascontiguousarray(corpus)
    if c.dtype == np.float16:
        return c.view(np.uint16), "f16"
    if c.dtype == np.int8:
        return c, "i8"
    return np.ascontiguousarray(c, dtype=np.float32), "f32"


def _search_native(
    queries: Any, corpus: Any, k: int, metric: str, kind: str, ranges: Any
) -> tuple[np.ndarray, np.ndarray]:
    """CPU search in ``embedcore._C``: the fused scan into per-query heaps (for large float batches it
    matches a BLAS matmul alone, which blocked torch.mm + native top-k did not). ``ranges`` are the
    caller's, unchecked: :func:`_checked_affine` checks them (once for repeated ranges)."""
    native = _backend.require_native()
    threads = _backend.num_threads()
    if kind == "hamming":
        q, c = _to_numpy(queries, "queries"), _to_numpy(corpus, "corpus")
        if q.dtype != np.uint8:  # binary: XOR cancels the shared -128 shift
            q, c = q.view(np.uint8), c.view(np.uint8)
        return native.search_hamming(q, c, k, threads)
    if kind == "int8":
        q, c = _to_numpy(queries, "queries"), _to_numpy(corpus, "corpus")
        return native.search_int8(q, c, metric, k, threads)
    offset = scale = None
    if kind == "int8_asym":
        offset, scale = _checked_affine(ranges, int(corpus.shape[1]))
    q = _float32_queries(queries, metric)
    c, fmt = _native_corpus(corpus)
    try:
        return native.search_float(q, c, fmt, metric, k, threads, offset, scale)
    except ValueError:
        # A non-finite score: NaN/infinity in the corpus, or (cos) a row whose float32 square sum
        # overflows, which the kernel reports instead of scoring it 0. Only then is the corpus
        # range-checked: rows of huge values are rescaled (exactly) and the scan runs again.
        if metric != "cos" or kind != "float" or dtype_name(corpus) == "float16":
            raise
        scaled = cos_safe_corpus(_to_numpy(corpus, "corpus"))
        if scaled is None:
            raise
        return native.search_float(q, scaled, "f32", metric, k, threads, offset, scale)


def _pack_keys(scores: Any, base: int, ascending: bool) -> Any:
    """int64 keys whose descending order is the ranking: best score first, then lower index.

    The high 32 bits are the score mapped to an order-preserving int32 (float bits with the
    magnitude flipped for negatives; negated for ascending metrics), the low 32 bits the inverted
    index. Keys are unique, so ``torch.topk`` on them is exact on any device.
    """
    import torch

    if scores.dtype == torch.float32:
        bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0: equal scores, equal keys
        ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)
    else:
        ordered = scores.to(torch.int64)
    if ascending:
        ordered = -ordered - 1
    index = torch.arange(base, base + scores.shape[1], device=scores.device, dtype=torch.int64)
    return (ordered << 32) + (0xFFFFFFFF - index)


def _cuda_int_scores(name: str, q: Any, rows: Any) -> Any:
    """int32 (nq, nrows) scores from ``embedcore._cuda`` (popc Hamming / dp4a int8 dot), or None when
    the extension is missing, the tensors are not on a GPU, or the sizes exceed its limits."""
    import torch

    ext = _backend.cuda_ext() if rows.is_cuda else None
    if ext is None or q.shape[1] > CUDA_MAX_WIDTH or q.shape[0] > CUDA_MAX_QUERIES:
        return None
    q, rows = q.contiguous(), rows.contiguous()
    out = torch.empty((q.shape[0], rows.shape[0]), dtype=torch.int32, device=rows.device)
    stream = torch.cuda.current_stream(rows.device).cuda_stream
    getattr(ext, name)(q.data_ptr(), rows.data_ptr(), q.shape[0], rows.shape[0], q.shape[1], out.data_ptr(),
                       stream)
    return out


def _torch_scores(q: Any, rows: Any, metric: str, kind: str, affine: tuple[Any, Any] | None) -> Any:
    """(nq, nrows) scores of one corpus block in PyTorch (float32, int32 for integer metrics)."""
    import torch

    if kind == "hamming" or (kind == "int8" and metric == "dot"):
        scores = _cuda_int_scores("hamming_scores" if kind == "hamming" else "int8_dot_scores", q, rows)
        if scores is not None:
            return scores
    if kind == "hamming":
        table = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32, device=rows.device)
        x = (q.view(torch.uint8)[:, None, :] ^ rows.view(torch.uint8)[None]).to(torch.int64)
        return table[x].sum(-1, dtype=torch.int32)
    if kind == "int8":
        # float64 products and sums of int8 values are exact (|sum| < 2^53).
        q64, c64 = q.to(torch.float64), rows.to(torch.float64)
        dots = q64 @ c64.T
        if metric == "dot":
            return dots.to(torch.int32)
        qn, cn = (q64 * q64).sum(1), (c64 * c64).sum(1)
        if metric == "l2":
            return (qn[:, None] + cn[None, :] - 2 * dots).to(torch.int32)
        dots = dots / qn.sqrt().clamp(min=NORM_EPS)[:, None] / cn.sqrt().clamp(min=NORM_EPS)[None, :]
        return dots.to(torch.float32)
    c = rows.to(torch.float32)
    if affine is not None:
        c = c * affine[1] + affine[0]
    if metric == "l2":  # |q|^2 + |c|^2 - 2 q.c on the matmul units, as FAISS does on the GPU
        return ((q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * (q @ c.T)).clamp_(min=0)
    scores = q @ c.T
    if metric == "cos":
        scores = scores / torch.linalg.vector_norm(c, dim=1).clamp(min=NORM_EPS)[None, :]
    return scores


def _gpu_search_backend() -> str:
    """``EMBEDCORE_GPU_SEARCH``: ``auto`` (default), ``triton``, ``cuda`` or ``torch``."""
    value = os.environ.get("EMBEDCORE_GPU_SEARCH", "auto").strip().lower() or "auto"
    if value not in GPU_SEARCH_BACKENDS:
        raise ValueError(f"EMBEDCORE_GPU_SEARCH must be one of {GPU_SEARCH_BACKENDS}, got {value!r}")
    return value


def _use_triton_search(corpus: Any, k: int, backend: str) -> bool:
    """Whether the fused Triton scan serves this device search under ``backend``
    (:func:`_gpu_search_backend`): ``triton`` forces it and ``auto`` picks it when Triton runs here
    (compiled for a CUDA tensor, or the interpreter), as long as k fits its register-resident top-k
    and the corpus is not float64; otherwise the blocked torch path runs."""
    if backend in ("torch", "cuda") or k > TRITON_MAX_K or dtype_name(corpus) == "float64":
        return False
    if backend == "triton":
        if not _backend.triton_available():
            raise RuntimeError("EMBEDCORE_GPU_SEARCH=triton but triton is not installed")
        return True
    return _backend.use_triton(corpus)


def _topk_keys_torch(q: Any, corpus: Any, k: int, metric: str, kind: str,
                     affine: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """Top-k (nq, k) int64 keys over corpus blocks scored by cuBLAS / ``embedcore._cuda`` and merged
    with ``torch.topk``, and a bool tensor that is True when a float score is not finite (None for
    integer formats)."""
    import torch

    ascending = metric in ASCENDING_METRICS
    n, nq = corpus.shape[0], q.shape[0]
    # Blocks of ~2^22 scores (x bytes for the (nq, rows, nbytes) temporary of the PyTorch Hamming
    # fallback), never fewer rows than k.
    width = corpus.shape[1] if kind == "hamming" else 1
    block = max(k, (1 << 22) // max(1, nq * width))
    best = None
    finite = torch.ones((), dtype=torch.bool, device=corpus.device)
    for start in range(0, n, block):
        rows = corpus[start : start + block].contiguous()
        scores = _torch_scores(q, rows, metric, kind, affine)
        if scores.dtype == torch.float32:
            finite &= torch.isfinite(scores).all()  # one sync at the end, not per block
        keys = _pack_keys(scores, start, ascending)
        if best is not None:
            keys = torch.cat([best, keys], dim=1)
        best = torch.topk(keys, min(k, keys.shape[1]), dim=1, largest=True, sorted=True).values
    return best, (~finite if _score_dtype(kind, metric) == np.float32 else None)


def _search_torch(
    queries: Any, corpus: Any, k: int, metric: str, kind: str, ranges: np.ndarray | None
) -> tuple[Any, Any]:
    """Device search (CUDA tensors): the fused Triton scan of ``embedcore.kernels.similarity`` for
    k <= ``TRITON_MAX_K``, else corpus blocks scored by cuBLAS or ``embedcore._cuda`` (dp4a int8,
    popc Hamming), or on request the fused CUDA kernels of ``embedcore.ops.search_cuda``; all rank
    unique int64 (score, index) keys exactly (``EMBEDCORE_GPU_SEARCH`` picks). Works on any device;
    the CPU runs it only in tests (Triton through its interpreter)."""
    import torch

    # The fused CUDA kernels (embedcore.ops.search_cuda) only on request until a GPU run has
    # measured them against the Triton scan; they decline (None) what they do not cover.
    backend = _gpu_search_backend()
    if kind != "int8_asym" and backend == "cuda":
        from embedcore.ops.search_cuda import search_cuda

        fused = search_cuda(queries, corpus, k, metric)
        if fused is not None:
            return fused
    score_dtype = torch.float32 if _score_dtype(kind, metric) == np.float32 else torch.int32
    if kind in ("float", "int8_asym"):
        q = queries.to(torch.float32)
        if not bool(torch.isfinite(q).all()):
            raise ValueError("queries contains NaN or infinity")
        if metric == "cos":
            q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp(min=NORM_EPS)
    else:
        q = queries.contiguous()
    affine = None
    if kind == "int8_asym":
        offset, scale = _int8_affine(ranges)
        affine = (torch.from_numpy(offset.astype(np.float32)).to(corpus.device),
                  torch.from_numpy(scale.astype(np.float32)).to(corpus.device))
    if _use_triton_search(corpus, k, backend):
        from embedcore.kernels.similarity import search_fwd

        keys, nonfinite = search_fwd(q, corpus, k, metric, kind, affine)
    else:
        keys, nonfinite = _topk_keys_torch(q, corpus, k, metric, kind, affine)
    if nonfinite is not None and bool(nonfinite):
        raise ValueError("corpus contains NaN or infinity (or a score overflows float32)")
    return unpack_keys(keys, score_dtype, metric in ASCENDING_METRICS)


def search_reference(
    queries: np.ndarray, corpus: np.ndarray, k: int, metric: str = "cos", ranges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference: the full score matrix in float64 (int64 for integer metrics), then a stable
    sort, so equal scores keep ascending index order.

    Args:
        queries: (nq, dim) numpy array (float, int8 or uint8; see the module table).
        corpus: (N, dim) numpy array; bfloat16 passed as float32.
        k: 1 <= k <= N.
        metric: one of :data:`METRICS`.
        ranges: (2, dim) float32 for float queries against an int8 corpus.

    Returns:
        (scores, indices): (nq, k) float32/int32 and int64, best first.
    """
    kind = search_kind(queries.dtype.name, corpus.dtype.name, metric, ranges is not None)
    if kind == "hamming":
        q = queries.view(np.uint8)
        c = corpus.view(np.uint8)  # binary = ubinary - 128: both sides shifted alike, bits differ alike
        table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
        scores = np.stack([table[np.bitwise_xor(c, row)].sum(1, dtype=np.int64) for row in q]).reshape(
            len(q), len(c)
        )
    else:
        if kind == "int8":
            q, c = queries.astype(np.int64), corpus.astype(np.int64)
        elif kind == "int8_asym":
            q, c = queries.astype(np.float64), _dequantize(corpus, ranges).astype(np.float64)
        else:
            q, c = queries.astype(np.float64), corpus.astype(np.float64)
        if metric == "l2":
            scores = (q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * (q @ c.T)
        else:
            scores = q @ c.T
            if metric == "cos":
                qn = np.maximum(np.sqrt((q * q).sum(1, dtype=np.float64)), NORM_EPS)
                cn = np.maximum(np.sqrt((c * c).sum(1, dtype=np.float64)), NORM_EPS)
                scores = scores / qn[:, None] / cn[None, :]
    keys = scores if metric in ASCENDING_METRICS else -scores
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1).astype(_score_dtype(kind, metric))
    return top, order.astype(np.int64)


def search(
    queries: Any, corpus: Any, k: int = 10, metric: Metric = "cos", *, ranges: Any = None
) -> tuple[Any, Any]:
    """Exact top-k search of ``queries`` in ``corpus``.

    Args:
        queries: (nq, dim) or (dim,) numpy array or torch tensor: float (float32/float16/bfloat16/
            float64), int8 codes, or packed bits (uint8 ubinary / int8 binary) for ``hamming``.
        corpus: (N, dim) of a dtype that pairs with the queries (see the module table); on the same
            device as the queries. 1 <= N <= 2**31 - 1.
        k: number of results per query, 1 <= k <= N.
        metric: ``dot``, ``cos``, ``l2`` (squared distance) or ``hamming`` (packed bits).
        ranges: (2, dim) float min/max rows per dimension, for float queries against an int8
            corpus (sentence-transformers' int8 calibration ranges).

    Returns:
        (scores, indices): (nq, k) (or (k,) for 1-D queries), best first, ties toward the lower
        index. scores are float32 (int32 for int8 ``dot``/``l2`` and ``hamming``); indices int64.
        numpy queries give numpy outputs; tensor queries give tensors on their device.

    Raises:
        TypeError: inputs that are not arrays/tensors, unsupported dtypes or dtype pairs.
        ValueError: unknown metric, dim mismatch, empty corpus, k out of range, NaN/inf, mixed
            devices, malformed ranges.
    """
    check_array(queries, "queries")
    check_array(corpus, "corpus")
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"Invalid metric {metric!r}; valid: {METRICS}")
    single = queries.ndim == 1
    if queries.ndim not in (1, 2):
        raise ValueError(f"queries must be 2-D (nq, dim) or 1-D (dim,), got shape {tuple(queries.shape)}")
    if corpus.ndim != 2:
        raise ValueError(f"corpus must be 2-D (N, dim), got shape {tuple(corpus.shape)}")
    dim = int(queries.shape[-1])
    if int(corpus.shape[1]) != dim:
        raise ValueError(f"corpus has dim {int(corpus.shape[1])}, queries have dim {dim}")
    n = int(corpus.shape[0])
    if n == 0:
        raise ValueError("corpus is empty (N = 0)")
    if n > MAX_CORPUS:
        raise ValueError(f"corpus has {n} rows; at most {MAX_CORPUS} are supported")
    if dim == 0:
        raise ValueError("queries and corpus have dim 0")
    k = check_k(k, n)
    kind = search_kind(dtype_name(queries), dtype_name(corpus), metric, ranges is not None)
    q_tensor = is_tensor(queries)
    q_dev = queries.device.type if q_tensor else "cpu"
    c_dev = corpus.device.type if is_tensor(corpus) else "cpu"
    if q_dev != c_dev:
        raise ValueError(f"queries are on {q_dev}, corpus is on {c_dev}; put both on one device")
    native = q_dev == "cpu" and not _backend.force_reference()
    # The native path checks ranges itself, caching the result for repeated ranges.
    r = _check_ranges(ranges, dim) if kind == "int8_asym" and not native else None
    if kind == "int8":
        limit = INT8_L2_MAX_DIM if metric == "l2" else INT8_DOT_MAX_DIM
        if dim > limit:
            raise ValueError(f"int8 {metric} scores are exact int32 up to dim {limit}, got dim {dim}")

    q2 = queries.reshape(1, dim) if single else queries
    if q_dev != "cpu":
        scores, indices = _search_torch(q2.detach(), corpus.detach(), k, metric, kind, r)
    elif not native:
        q, c = _to_numpy(q2, "queries"), _to_numpy(corpus, "corpus")
        _check_finite(q, "queries")
        _check_finite(c, "corpus")
        scores, indices = search_reference(q, c, k, metric, r)
    else:
        scores, indices = _search_native(q2, corpus, k, metric, kind, ranges)
    if q_tensor and not is_tensor(scores):
        import torch

        scores, indices = torch.from_numpy(scores), torch.from_numpy(indices)
    if single:
        return scores[0], indices[0]
    return scores, indices
