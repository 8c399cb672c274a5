"""Variable-length multi-head attention (forward only): the fp32 reference and the dispatch.

``attention(q, k, v, cu_seqlens, ...)`` takes the packed layout of flash-attention's
``flash_attn_varlen_func``: the tokens of all sequences concatenated, ``cu_seqlens`` marking where each
sequence starts. A padded ``(B, T, H, D)`` batch with a key-padding ``attention_mask`` is accepted too;
it is unpadded here (``unpad_input``), attended, and padded back (``pad_input``), as in flash-attn's
``bert_padding``.

Semantics (the reference ``attention_reference`` is the specification). For query ``i`` and key ``j``
of the same sequence (positions counted from the sequence's first token)::

    s_ij = scale * <q_i, k_j>                      scale defaults to 1/sqrt(D)
    s_ij = softcap * tanh(s_ij / softcap)          if softcap (Gemma 2)
    visible(i, j) = (not causal or j <= i) and (window is None or |i - j| < window)
    out_i = sum_j softmax_j(s_ij | visible) v_j

``window`` is the sliding window of transformers' ``sliding_window`` (a query sees ``window - 1``
tokens back, and forward too when not causal: flash-attn's ``window_size=(window-1, window-1)``).
Query head ``h`` reads key/value head ``h // (Hq // Hkv)`` (GQA/MQA).

Dispatch: a CUDA tensor (or any tensor while the Triton interpreter is on) goes to the Triton kernel
``embedcore.kernels.attention``; a CPU tensor to ``torch.nn.functional.scaled_dot_product_attention``,
one call per group of equal-length sequences.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from embedcore import _backend

KERNEL_HEAD_DIMS = (32, 64, 80, 96, 128, 256)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------------------
# padding helpers (flash-attn bert_padding style)


def unpad_input(
    hidden: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Removes the padding tokens of a batch.

    Args:
        hidden: (B, T, ...) any dtype.
        attention_mask: (B, T) bool or integer, nonzero = real token. Padding may sit anywhere (left,
            right); the real tokens of a row keep their order.

    Returns:
        (hidden_unpad, indices, cu_seqlens, max_seqlen): hidden_unpad (total, ...) the real tokens row
        after row; indices (total,) int64 positions in the flattened (B*T) batch; cu_seqlens (B+1,)
        int32; max_seqlen the longest row's token count (a Python int).
    """
    mask = attention_mask.bool()
    seqlens = mask.sum(dim=1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max()) if seqlens.numel() else 0
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden.reshape(hidden.shape[0] * hidden.shape[1], *hidden.shape[2:])
    return flat.index_select(0, indices), indices, cu_seqlens, max_seqlen


def pad_input(hidden_unpad: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of ``unpad_input``: scatters (total, ...) back into a zero-filled (batch, seqlen, ...)."""
    out = hidden_unpad.new_zeros(batch * seqlen, *hidden_unpad.shape[1:])
    out.index_copy_(0, indices, hidden_unpad)
    return out.reshape(batch, seqlen, *hidden_unpad.shape[1:])


# ----------------------------------------------------------------------------------------------------------
# reference


def _visible(lq: int, causal: bool, window: int | None, device: torch.device) -> torch.Tensor:
    i = torch.arange(lq, device=device)[:, None]
    j = torch.arange(lq, device=device)[None, :]
    ok = torch.ones(lq, lq, dtype=torch.bool, device=device)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= (i - j).abs() < window
    return ok


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Materialised-softmax attention in float32, one sequence at a time (the specification).

    Args:
        q: (total, Hq, D); k, v: (total, Hkv, D); any float dtype (upcast to float32).
        cu_seqlens: (B+1,) int32 sequence boundaries.

    Returns:
        (total, Hq, D) float32.
    """
    total, hq, d = q.shape
    rep = hq // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    out = torch.zeros(total, hq, v.shape[-1], dtype=torch.float32, device=q.device)
    bounds = cu_seqlens.tolist()
    for start, end in itertools.pairwise(bounds):
        if end == start:
            continue
        qs = q[start:end].float().transpose(0, 1)  # (Hq, L, D)
        ks = k[start:end].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        vs = v[start:end].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        s = torch.matmul(qs, ks.transpose(1, 2)) * scale
        if softcap is not None:
            s = softcap * torch.tanh(s / softcap)
        s = s.masked_fill(~_visible(end - start, causal, window, q.device), float("-inf"))
        out[start:end] = torch.matmul(torch.softmax(s, dim=-1), vs).transpose(0, 1)
    return out


# ----------------------------------------------------------------------------------------------------------
# CPU path


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rep: int, **kwargs: Any) -> torch.Tensor:
    """SDPA with GQA: ``enable_gqa`` where this torch has it (no copy of k/v), else repeated heads."""
    global _SDPA_GQA
    if rep > 1 and _SDPA_GQA:
        try:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        except TypeError:  # torch < 2.5
            _SDPA_GQA = False
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)


_SDPA_GQA = True


def _attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bounds: list[int],
    causal: bool,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """SDPA, one call per run of consecutive equal-length sequences, on views of the packed tensors
    (no padding computed, no gather); softcap, which SDPA cannot apply, runs materialised in float32."""
    total, hq, _ = q.shape
    rep = hq // k.shape[1]
    out = q.new_zeros(total, hq, v.shape[-1])
    lengths = [e - s for s, e in itertools.pairwise(bounds)]
    b = 0
    while b < len(lengths):
        length, n = lengths[b], 1
        while b + n < len(lengths) and lengths[b + n] == length:
            n += 1
        start, b = bounds[b], b + n
        if length == 0:
            continue
        rows = slice(start, start + n * length)
        # (n*L, H, D) rows -> (n, H, L, D) views
        qs, ks, vs = (x[rows].view(n, length, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))
        if softcap is not None:
            ks, vs = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)
            logits = torch.matmul(qs.float(), ks.float().transpose(-1, -2)) * scale
            logits = softcap * torch.tanh(logits / softcap)
            logits = logits.masked_fill(~_visible(length, causal, window, q.device), float("-inf"))
            o = torch.matmul(torch.softmax(logits, dim=-1), vs.float()).to(q.dtype)
        elif window is not None and window < length:
            o = _sdpa(qs, ks, vs, rep, attn_mask=_visible(length, causal, window, q.device), scale=scale)
        else:
            o = _sdpa(qs, ks, vs, rep, is_causal=causal, scale=scale)
        out[rows].view(n, length, hq, -1).copy_(o.transpose(1, 2))
    return out


# ----------------------------------------------------------------------------------------------------------
# checks and dispatch


def _check_options(causal: Any, scale: Any, window: Any, softcap: Any) -> None:
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an int or None, got {type(window).__name__}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
            raise TypeError(f"softcap must be a float or None, got {type(softcap).__name__}")
        if not (math.isfinite(softcap) and softcap > 0):
            raise ValueError(f"softcap must be a positive finite number, got {softcap}")


def _check_qkv(q: Any, k: Any, v: Any, ndim: int) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != ndim:
            layout = "(total, heads, head_dim)" if ndim == 3 else "(batch, seqlen, heads, head_dim)"
            raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
        if x.dtype not in KERNEL_DTYPES and x.dtype != torch.float64:
            raise TypeError(f"{name} has dtype {x.dtype}; expected float16, bfloat16, float32 or float64")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"q has {tuple(q.shape[:-2])} tokens, k has {tuple(k.shape[:-2])}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has head_dim {q.shape[-1]}, k has {k.shape[-1]}")
    hq, hkv = q.shape[-2], k.shape[-2]
    if hkv == 0 or hq % hkv:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({hkv})")


def _check_cu_seqlens(cu_seqlens: Any, total: int, device: torch.device) -> list[int]:
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D (batch + 1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device}, q on {device}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != total:
        raise ValueError(
            f"cu_seqlens must start at 0 and end at total_tokens={total}, got {bounds[0]}..{bounds[-1]}"
        )
    if any(b < a for a, b in itertools.pairwise(bounds)):
        raise ValueError("cu_seqlens must be non-decreasing")
    return bounds


def kernel_supports(q: torch.Tensor) -> bool:
    """Whether the Triton kernel takes q's head dim and dtype."""
    return q.shape[-1] in KERNEL_HEAD_DIMS and q.dtype in KERNEL_DTYPES


def _attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    bounds: list[int] | None,
    causal: bool,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Dispatch on already-checked inputs (``bounds``: cu_seqlens on the host, or None on CUDA)."""
    if _backend.use_triton(q) and kernel_supports(q):
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            # The kernel has no backward: refuse rather than return a result that silently drops grads.
            raise ValueError(
                "the attention kernel is forward-only (inference): run under torch.no_grad() or "
                "torch.inference_mode(), or pass tensors that do not require grad"
            )
        from embedcore.kernels.attention import attention_fwd

        return attention_fwd(q, k, v, cu_seqlens, max_seqlen, causal, scale, window, softcap)
    if q.is_cuda and not _backend.force_reference():
        raise ValueError(
            f"the attention kernel takes head_dim in {KERNEL_HEAD_DIMS} and dtypes float16/bfloat16/float32, "
            f"got head_dim {q.shape[-1]} and {q.dtype}; move the tensors to the CPU for the SDPA path"
        )
    if bounds is None:
        bounds = cu_seqlens.tolist()
    return _attention_torch(q, k, v, bounds, causal, scale, window, softcap)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    causal: bool = False,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention over variable-length sequences, without computing on padding.

    Varlen form (like ``flash_attn_varlen_func``): ``q`` (total, Hq, D), ``k``/``v`` (total, Hkv, D),
    ``cu_seqlens`` (B+1,) int32 with ``cu_seqlens[0] == 0`` and ``cu_seqlens[-1] == total``; None means a
    single sequence. Padded form: ``q`` (B, T, Hq, D), ``k``/``v`` (B, T, Hkv, D) and an optional
    key-padding ``attention_mask`` (B, T) (nonzero = real token, left or right padding); positions count
    from each row's first real token and padded positions of the output are zero.

    Args:
        q, k, v: float16, bfloat16 or float32 (float64 on the CPU path); Hq a multiple of Hkv.
        cu_seqlens: (B+1,) int32, non-decreasing (empty sequences allowed), varlen form only.
        max_seqlen: the longest sequence (computed when None); varlen form only.
        causal: query i sees keys j <= i of its sequence.
        scale: logit scale, default 1/sqrt(D).
        window: sliding window: query i sees keys with |i - j| < window (and j <= i when causal).
        softcap: logits become softcap * tanh(logits / softcap) before the softmax (Gemma 2).
        attention_mask: (B, T) key-padding mask for the padded form.

    Returns:
        Same layout and dtype as ``q``. The softmax runs in float32 on every path. The Triton kernel is
        forward-only: it refuses inputs that require grad while grad mode is on.

    The Triton kernel takes head_dim in {32, 64, 80, 96, 128, 256}; other head dims raise a ValueError on
    CUDA and run through SDPA on the CPU.
    """
    _check_options(causal, scale, window, softcap)
    padded = isinstance(q, torch.Tensor) and q.ndim == 4
    _check_qkv(q, k, v, 4 if padded else 3)
    scale_f = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)

    if padded:
        if cu_seqlens is not None or max_seqlen is not None:
            raise ValueError("cu_seqlens/max_seqlen belong to the varlen (total, heads, dim) form; q is 4-D")
        batch, seqlen = q.shape[:2]
        if attention_mask is None:
            mask = torch.ones(batch, seqlen, dtype=torch.bool, device=q.device)
        else:
            if not isinstance(attention_mask, torch.Tensor):
                raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
            if tuple(attention_mask.shape) != (batch, seqlen):
                raise ValueError(
                    f"attention_mask must have shape (batch, seqlen) = {(batch, seqlen)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            mask = attention_mask.to(q.device)
        q_u, indices, cu, max_len = unpad_input(q, mask)
        k_u = k.reshape(batch * seqlen, *k.shape[2:]).index_select(0, indices)
        v_u = v.reshape(batch * seqlen, *v.shape[2:]).index_select(0, indices)
        out = _attention_varlen(q_u, k_u, v_u, cu, max_len, None, causal, scale_f, window, softcap)
        return pad_input(out, indices, batch, seqlen)

    if attention_mask is not None:
        raise ValueError("attention_mask belongs to the padded (batch, seqlen, heads, dim) form; q is 3-D")
    total = q.shape[0]
    if cu_seqlens is None:
        cu_seqlens = torch.tensor([0, total], dtype=torch.int32, device=q.device)
    bounds = _check_cu_seqlens(cu_seqlens, total, q.device)
    longest = max((b - a for a, b in itertools.pairwise(bounds)), default=0)
    if max_seqlen is None:
        max_seqlen = longest
    elif isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TypeError(f"max_seqlen must be an int or None, got {type(max_seqlen).__name__}")
    elif max_seqlen < longest:
        raise ValueError(f"max_seqlen={max_seqlen} is shorter than the longest sequence ({longest})")
    return _attention_varlen(q, k, v, cu_seqlens, max_seqlen, bounds, causal, scale_f, window, softcap)
