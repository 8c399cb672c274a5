"""Exact row-wise top-k over a score matrix.

``topk(scores, k, largest=True)`` returns ``(values, indices)``, each ``(nrows, k)``, best first,
ties broken toward the lower column index. numpy arrays and CPU tensors run in ``embedcore._C``
(one heap per row, OpenMP, GIL released); CUDA tensors use a stable sort (exact, same tie rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedcore import _backend
from embedcore._arrays import check_array, cpu_numpy, is_tensor, like
from embedcore._spec import check_k

# dtype -> the dtype the native kernel scans in; every conversion here is exact.
_NATIVE_DTYPE = {
    np.dtype(np.float32): np.float32,
    np.dtype(np.float16): np.float32,
    np.dtype(np.int8): np.float32,
    np.dtype(np.uint8): np.float32,
    np.dtype(np.int16): np.float32,
    np.dtype(np.uint16): np.float32,
    np.dtype(np.float64): np.float64,
    np.dtype(np.int32): np.float64,
    np.dtype(np.uint32): np.float64,
}


def topk_reference(scores: np.ndarray, k: int, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference: a stable sort, so equal values keep ascending index order."""
    keys = -scores.astype(np.float64) if largest else scores.astype(np.float64)
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order.astype(np.int64)


def _topk_torch(scores: Any, k: int, largest: bool) -> tuple[Any, Any]:
    import torch

    # torch.sort(stable=True) keeps equal values in index order: the tie rule holds on any device.
    values, order = torch.sort(scores, dim=1, descending=largest, stable=True)
    return values[:, :k].contiguous(), order[:, :k].contiguous()


def topk(scores: Any, k: int, largest: bool = True) -> tuple[Any, Any]:
    """Exact top-k of every row.

    Args:
        scores: (nrows, ncols) numpy array or torch tensor; float32/float64/float16/bfloat16 or
            integer. No NaN (inf is allowed).
        k: 1 <= k <= ncols.
        largest: True ranks large values first (similarities), False small ones (distances).

    Returns:
        (values, indices): (nrows, k) in the input's dtype and int64, sorted best first, ties
        toward the lower index; numpy in, numpy out; tensor in, tensor out on the same device.
    """
    check_array(scores, "scores")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (nrows, ncols), got shape {tuple(scores.shape)}")
    k = check_k(k, int(scores.shape[1]), "the number of columns")
    if not isinstance(largest, (bool, np.bool_)):
        raise TypeError(f"largest must be a bool, got {type(largest).__name__}")

    if is_tensor(scores) and (scores.device.type != "cpu" or _backend.force_reference()):
        import torch

        if scores.is_floating_point() and bool(torch.isnan(scores).any()):
            raise ValueError("scores contains NaN")
        return _topk_torch(scores, k, bool(largest))

    arr = cpu_numpy(scores, "scores")
    if arr.dtype not in _NATIVE_DTYPE:
        supported = ", ".join(sorted(str(d) for d in _NATIVE_DTYPE))
        raise TypeError(
            f"scores has unsupported dtype {arr.dtype} (64-bit integers do not fit float64 exactly); "
            f"supported: {supported}"
        )
    if _backend.force_reference():
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise ValueError("scores contains NaN")
        values, indices = topk_reference(arr, k, bool(largest))
        return like(values, scores), like(indices, scores)

    native = _backend.require_native()
    work = arr.astype(_NATIVE_DTYPE[arr.dtype], copy=False)
    fn = native.topk_f32 if work.dtype == np.float32 else native.topk_f64
    _, indices = fn(work, k, bool(largest), _backend.num_threads())
    # Values are gathered from the input so they keep the caller's dtype (bfloat16 included).
    if is_tensor(scores):
        import torch

        index_tensor = torch.from_numpy(indices)
        return torch.gather(scores.detach(), 1, index_tensor), index_tensor
    return np.take_along_axis(arr, indices, axis=1), indices
