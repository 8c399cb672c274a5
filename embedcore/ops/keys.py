"""Unique int64 (score, index) keys: how the device search backends rank and return results.

A key holds the score's order-preserving 32 bits in its high half and ``0xFFFFFFFF - index`` in its
low half, so the largest key is the best score with ties to the lower index (ascending metrics negate
the order first). The Triton scan (``embedcore.kernels.similarity``), the fused CUDA kernels
(``embedcore.ops.search_cuda``) and the torch path all pack keys this way.
"""

from __future__ import annotations

from typing import Any


def unpack_keys(keys: Any, score_dtype: Any, ascending: bool) -> tuple[Any, Any]:
    """``(scores, indices)`` from int64 keys ``(nq, k)``; ``score_dtype`` torch.float32 or an int
    dtype; ``ascending`` for metrics whose best score is the smallest (l2, hamming)."""
    import torch

    ordered = keys >> 32
    if ascending:
        ordered = -ordered - 1
    index = 0xFFFFFFFF - (keys & 0xFFFFFFFF)
    if score_dtype == torch.float32:
        bits = ordered.to(torch.int32)
        scores = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(torch.float32)
    else:
        scores = ordered.to(score_dtype)
    return scores, index
