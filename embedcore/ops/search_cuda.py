"""Exact top-k search on CUDA tensors with the fused kernels of ``embedcore._cuda``.

Stage 1 (``csrc/cuda/topk_search.cu``) scans the corpus in row chunks, one thread block per chunk
and group of queries, and keeps each block's best k unique int64 keys per query (the keys of
:func:`embedcore.ops.search._pack_keys`), so the (nq, N) score matrix is never written. Stage 2 is
``torch.topk`` over the (nq, n_blocks * k) candidates: keys are unique, so the result is exact with
ties toward the lower index, the same answer as :func:`embedcore.ops.search.search_reference`.

Supported (anything else returns None so the caller keeps its general path):

=================================  =====================  ===============  ==================
queries                            corpus                 metrics          scores
=================================  =====================  ===============  ==================
float16/bfloat16/float32/float64   float16/bfloat16/fp32  dot, cos, l2     float32 (fp32 sums)
int8                               int8                   dot, l2          int32 (exact)
uint8 / int8 packed bits           same dtype             hamming          int32 distances
=================================  =====================  ===============  ==================

with ``k <= embedcore._cuda.TOPK_MAX_K`` (1024) and a query small enough for 48 KiB of shared memory
next to its keys: float queries are staged as float32, dim <= 10236 (8188 for k > 512); codes and
packed bits up to 40944 bytes (32752 for k > 512).
"""

from __future__ import annotations

import functools
from typing import Any

from embedcore import _backend
from embedcore._spec import (
    ASCENDING_METRICS,
    FLOAT_NAMES,
    METRICS,
    NORM_EPS,
    check_k,
    dtype_name,
    search_kind,
)
from embedcore.ops.keys import unpack_keys

# Rows per block: at least this many (a block pays a few flushes of its first keys and writes k keys)
# and at least 4 x KP, so that the candidates stay a small fraction of the corpus.
_MIN_CHUNK = 1024
# Waves of resident blocks per launch: more than one evens out blocks that flush more often.
_MAX_WAVES = 4


@functools.lru_cache(maxsize=256)
def _slots(device_index: int, fmt: int, metric: int, queries_per_block: int, dim: int, k: int) -> int:
    """Blocks the device runs at once for this kernel configuration (SMs x resident blocks per SM)."""
    import torch

    with torch.cuda.device(device_index):
        per_sm = _backend.cuda_ext().topk_blocks_per_sm(fmt, metric, queries_per_block, dim, k)
        return max(1, per_sm) * torch.cuda.get_device_properties(device_index).multi_processor_count


def _n_blocks(n: int, groups: int, min_rows: int, slots: int) -> int:
    """Row chunks per query group: 1 to _MAX_WAVES whole waves of ``slots`` blocks over all groups
    (no straggling last wave, few candidates), chunks of at least ``min_rows`` rows."""
    most = -(-n // min_rows)
    waves = min(_MAX_WAVES, max(1, most * groups // slots))
    return max(1, min(most, -(-waves * slots // groups)))


def _format(kind: str, metric: str, cname: str, ext: Any) -> str | None:
    """The kernel format for these inputs, or None when the fused kernels do not cover them."""
    if kind == "hamming":
        return "hamming"
    if kind == "int8":
        return "int8" if metric in ("dot", "l2") else None
    if kind == "float" and cname in ext.TOPK_FORMATS:
        return cname
    return None


def search_cuda(queries: Any, corpus: Any, k: int, metric: str = "cos") -> tuple[Any, Any] | None:
    """Exact top-k of ``queries`` in ``corpus`` with the fused CUDA kernels, or None when unsupported.

    Args:
        queries: (nq, dim) or (dim,) CUDA tensor: float16/bfloat16/float32/float64 for a float corpus
            (scored in float32), int8 codes for an int8 corpus, or packed bits (uint8 ubinary /
            int8 binary, the corpus' dtype) for ``hamming``.
        corpus: (N, dim) CUDA tensor on the queries' device: float16, bfloat16 or float32; int8 codes;
            or packed bits (uint8/int8) for ``hamming``. 1 <= N <= 2**31 - 1. Non-contiguous inputs
            are copied.
        k: 1 <= k <= N; None is returned for k > ``embedcore._cuda.TOPK_MAX_K``.
        metric: ``dot``, ``cos``, ``l2`` (squared distance) or ``hamming``.

    Returns:
        (scores, indices) as :func:`embedcore.ops.search.search` gives for tensor queries: (nq, k)
        (or (k,) for 1-D queries) on the queries' device, best first, ties toward the lower index;
        scores float32 (int32 for int8 ``dot``/``l2`` and ``hamming``), indices int64. None when the
        extension is not built or lacks the fused kernels, the tensors are not on a GPU, or the
        format, metric, k or dim is outside the table above (int8 ``cos``, float queries against
        int8 codes, float64 corpora, k > 1024, rows too wide for shared memory).

    Raises:
        TypeError: unsupported dtype pairs (as ``search``).
        ValueError: unknown metric; shapes, devices or k out of range; NaN/inf in the queries, or a
            non-finite float score (NaN/inf in the corpus, float32 overflow).
    """
    import torch

    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"Invalid metric {metric!r}; valid: {METRICS}")
    ext = _backend.cuda_ext()
    if ext is None or not hasattr(ext, "fused_topk") or not isinstance(queries, torch.Tensor):
        return None
    if not isinstance(corpus, torch.Tensor) or not (queries.is_cuda and corpus.is_cuda):
        return None
    if queries.device != corpus.device:
        raise ValueError(
            f"queries are on {queries.device}, corpus is on {corpus.device}; put both on one device"
        )
    single = queries.ndim == 1
    if queries.ndim not in (1, 2) or corpus.ndim != 2:
        raise ValueError(
            f"queries must be (nq, dim) or (dim,) and corpus (N, dim); got {tuple(queries.shape)} and "
            f"{tuple(corpus.shape)}"
        )
    q = queries.reshape(1, -1) if single else queries
    n, dim = int(corpus.shape[0]), int(corpus.shape[1])
    if int(q.shape[1]) != dim or dim == 0:
        raise ValueError(f"corpus has dim {dim}, queries have dim {int(q.shape[1])}")
    k = check_k(k, n)
    qname, cname = dtype_name(q), dtype_name(corpus)
    if qname in FLOAT_NAMES and cname == "int8":  # asymmetric int8 (needs ranges): not fused
        return None
    kind = search_kind(qname, cname, metric, False)
    fmt = _format(kind, metric, cname, ext)
    if fmt is None or k > ext.TOPK_MAX_K or n > 2**31 - 1:
        return None
    nq = int(q.shape[0])
    if nq == 0:
        empty = torch.empty((0, k), device=q.device)
        return empty.to(torch.float32 if kind == "float" else torch.int32), empty.to(torch.int64)
    plan = ext.topk_plan(ext.TOPK_FORMATS[fmt], ext.TOPK_METRICS[metric], nq, dim, k)
    if plan is None:
        return None

    q = q.detach()
    corpus = corpus.detach().contiguous()
    if kind == "float":
        q = q.to(torch.float32)
        bad_queries = ~torch.isfinite(q).all()  # read with the kernel's flag: one sync, at the end
        if metric == "cos":
            q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp(min=NORM_EPS)
    elif kind == "hamming":  # int8 binary = ubinary - 128 on both sides: the same bits differ
        q, corpus = q.view(torch.uint8), corpus.view(torch.uint8)
    q = q.contiguous()

    device = corpus.device
    fmt_id, metric_id = ext.TOPK_FORMATS[fmt], ext.TOPK_METRICS[metric]
    qpb = plan["queries_per_block"]
    slots = _slots(device.index, fmt_id, metric_id, qpb, dim, k)
    n_blocks = _n_blocks(n, -(-nq // qpb), max(_MIN_CHUNK, 4 * plan["kp"]), slots)
    chunk = -(-n // n_blocks)
    n_blocks = -(-n // chunk)
    candidates = torch.empty((nq, n_blocks, k), dtype=torch.int64, device=device)
    nonfinite = torch.zeros(1, dtype=torch.int32, device=device)
    with torch.cuda.device(device):  # the extension's runtime launches on the current device
        stream = torch.cuda.current_stream(device).cuda_stream
        ext.fused_topk(
            fmt_id,
            metric_id,
            q.data_ptr(),
            corpus.data_ptr(),
            nq,
            n,
            dim,
            k,
            chunk,
            candidates.data_ptr(),
            nonfinite.data_ptr(),
            stream,
        )
    keys = candidates.view(nq, n_blocks * k)
    if n_blocks > 1:
        keys = torch.topk(keys, k, dim=1, largest=True, sorted=True).values
    ascending = metric in ASCENDING_METRICS
    scores, indices = unpack_keys(keys, torch.float32 if kind == "float" else torch.int32, ascending)
    if kind == "float":
        queries_bad, corpus_bad = torch.stack([bad_queries, nonfinite[0] != 0]).tolist()
        if queries_bad:
            raise ValueError("queries contains NaN or infinity")
        if corpus_bad:
            raise ValueError("corpus contains NaN or infinity (or a score overflows float32)")
    if single:
        return scores[0], indices[0]
    return scores, indices
