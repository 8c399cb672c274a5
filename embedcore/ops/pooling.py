"""Pooling of token embeddings into sentence embeddings, with the post-processing chain fused.

One order of operations, sentence-transformers' own::

    pool -> normalize (if ``normalize``: the model's Normalize module) -> truncate to ``truncate_dim``
         -> normalize again (if ``normalize_after_truncate``: ``encode(normalize_embeddings=True)``)
         -> quantize to ``precision``

Modes (sentence-transformers' ``Pooling``, tuples concatenated in the order given):

* ``cls``: the first pooled token, whatever the padding side.
* ``lasttoken``: the last pooled token, whatever the padding side.
* ``mean``: the average of the pooled tokens; ``mean_sqrt_len_tokens``: their sum over sqrt(count).
* ``max``: the per-dimension maximum over the pooled tokens (other tokens never win).
* ``weightedmean``: SGPT position weights ``1, 2, 3, ...`` counted from the first attended token, so
  left and right padding agree; this is what sentence-transformers 6.2 computes (the tests check it),
  also with ``include_prompt=False``, where prompt tokens keep their position but leave the average.
* ``weightedmean_absolute``: weights ``t + 1`` from the absolute position ``t`` in the padded batch, as
  older sentence-transformers releases computed them (``arange(1, T + 1)`` times the mask); differs
  from ``weightedmean`` only under left padding. In the packed layout of :func:`pool_varlen` there is
  no padding and both agree.

Masks: ``attention_mask`` says which tokens are real; ``pool_mask`` (optional) which of them are
pooled: prompt exclusion (``include_prompt=False``), LLM2Vec's instruction masking, echo embeddings.
A row whose attention mask is all zero is an error (a sequence with no token). A row whose pool mask
leaves no token pooled gives a zero vector in every mode (sentence-transformers would give ``-inf``
for ``max`` and token 0 for ``cls``); a zero vector stays zero through normalization.

CUDA tensors run the fused Triton kernels of ``embedcore.kernels.pooling`` (the hidden states are
read once, the output is written once in its final dtype); CPU tensors run the PyTorch reference
below, which is the specification (``backend="triton"`` forces the kernel, e.g. under
``TRITON_INTERPRET=1`` in tests). Hidden states are assumed finite: the fused kernel does not scan
them for NaN (that would read them twice); the reference path raises for NaN before int8/uint8.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from embedcore._arrays import check_array, is_tensor
from embedcore._spec import NORM_EPS, SCALAR_PRECISIONS, Precision, check_precision
from embedcore.ops.quantize import (
    Backend,
    bucket_params,
    check_backend,
    check_ranges,
    quantize,
    quantize_reference,
    use_kernel,
)

PoolingMode = Literal[
    "cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "weightedmean_absolute", "lasttoken"
]
MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "weightedmean_absolute", "lasttoken")


def check_modes(mode: Any) -> tuple[str, ...]:
    """``mode`` as a non-empty tuple of distinct valid mode names."""
    modes = (mode,) if isinstance(mode, str) else mode
    if not isinstance(modes, (tuple, list)) or not modes:
        raise ValueError(f"mode must be a mode name or a non-empty tuple of them; valid: {MODES}")
    for m in modes:
        if not isinstance(m, str) or m not in MODES:
            raise ValueError(f"Invalid pooling mode {m!r}; valid: {MODES}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"mode lists a pooling mode twice: {tuple(modes)}")
    return tuple(modes)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_hidden(hidden: Any, ndim: int, layout: str) -> None:
    import torch

    if not is_tensor(hidden):
        raise TypeError(f"hidden must be a torch tensor, got {type(hidden).__name__}")
    check_array(hidden, "hidden")  # dense, with values (not sparse, not on the meta device)
    if hidden.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"hidden must be float32, float16 or bfloat16, got {hidden.dtype}")
    if hidden.ndim != ndim or hidden.shape[-1] < 1:
        raise ValueError(f"hidden must be {layout} with hidden size >= 1, got shape {tuple(hidden.shape)}")


def _detach_for_codes(hidden: Any, precision: Any) -> Any:
    """``hidden`` detached when ``precision`` asks for integer codes (they carry no gradient, and the
    CPU quantizer reads the values through numpy); float precisions keep autograd."""
    return hidden if check_precision(precision) in ("float32", "float16", "bfloat16") else hidden.detach()


def _check_mask(mask: Any, shape: tuple[int, ...], device: Any, name: str) -> Any:
    """``mask`` checked to be a 0/1 tensor of ``shape`` on ``device``; returned as bool."""
    import torch

    if not is_tensor(mask):
        raise TypeError(f"{name} must be a torch tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} to match hidden, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device}, hidden on {device}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise TypeError(f"{name} must be a bool, integer or float 0/1 tensor, got {mask.dtype}")
    if mask.numel():
        if mask.is_floating_point():
            ok = bool(((mask == 0) | (mask == 1)).all())
        else:  # one reduction instead of three elementwise passes
            lo, hi = torch.aminmax(mask)
            ok = int(lo) >= 0 and int(hi) <= 1
        if not ok:
            raise ValueError(f"{name} must hold only 0 and 1")
    return mask != 0


def _check_truncate(truncate_dim: Any, pooled_dim: int) -> int:
    if truncate_dim is None:
        return pooled_dim
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int):
        raise TypeError(f"truncate_dim must be an int or None, got {type(truncate_dim).__name__}")
    if not 1 <= truncate_dim <= pooled_dim:
        raise ValueError(
            f"truncate_dim must be in [1, {pooled_dim}] (the pooled dimension), got {truncate_dim}"
        )
    return truncate_dim


def pool_reference(
    hidden: Any,
    attention: Any,
    pooled: Any,
    modes: tuple[str, ...],
    normalize: bool,
    truncate_dim: int,
    normalize_after_truncate: bool,
    precision: str,
    ranges: Any,
) -> Any:
    """PyTorch reference of the whole chain (the specification), fp32 accumulation.

    Args:
        hidden: (B, T, H) float32/float16/bfloat16.
        attention: (B, T) bool, which tokens are real; every row has at least one.
        pooled: (B, T) bool, which tokens are pooled (a subset of ``attention``).
        modes: distinct names from :data:`MODES`.
        normalize, truncate_dim, normalize_after_truncate, precision: as in :func:`pool`.
        ranges: (2, truncate_dim) float32 tensor for int8/uint8, else None.

    Returns:
        (B, truncate_dim) in ``precision`` ((B, ceil(truncate_dim / 8)) bytes for binary/ubinary).
    """
    import torch
    import torch.nn.functional as F

    B, T, H = hidden.shape
    if B == 0:
        return quantize_reference(hidden.new_zeros((0, truncate_dim), dtype=torch.float32), precision, *(
            bucket_params(ranges) if precision in SCALAR_PRECISIONS else (None, None)))
    wide = None  # fp32 copy of half-precision hidden states, made only for the summing modes

    def widened() -> Any:
        nonlocal wide
        if wide is None:
            wide = hidden if hidden.dtype == torch.float32 else hidden.float()
        return wide

    p = pooled.to(torch.float32)
    count = p.sum(1, keepdim=True)  # (B, 1), exact: integers < 2**24
    nonempty = count > 0
    positions = torch.arange(T, device=hidden.device)
    outputs = []
    mean_sum = None
    for mode in modes:
        if mode in ("cls", "lasttoken"):
            # First / last pooled position; empty rows gather token 0 and are zeroed below.
            if mode == "cls":
                idx = torch.where(pooled, positions, T).amin(1).clamp_(max=T - 1)
            else:
                idx = torch.where(pooled, positions, -1).amax(1).clamp_(min=0)
            v = hidden.gather(1, idx.view(B, 1, 1).expand(B, 1, H)).squeeze(1).float()
        elif mode == "max":
            # Exact in any dtype: take the maximum first, widen the (B, H) result.
            v = hidden.masked_fill(~pooled.unsqueeze(-1), float("-inf")).amax(1).float()
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                # A (1, T) x (T, H) product per row reads the hidden states once and allocates nothing
                # of their size (sentence-transformers multiplies by the mask, then sums).
                mean_sum = torch.bmm(p.unsqueeze(1), widened()).squeeze(1)
            denom = count.clamp(min=1)
            v = mean_sum / (denom if mode == "mean" else denom.sqrt())
        else:  # weightedmean, weightedmean_absolute
            weights = (positions + 1).to(torch.float32).expand(B, T)
            if mode == "weightedmean":
                first = torch.where(attention, positions, T).amin(1, keepdim=True)
                weights = weights - first
            weights = weights * p
            weighted_sum = torch.bmm(weights.unsqueeze(1), widened()).squeeze(1)
            v = weighted_sum / weights.sum(1, keepdim=True).clamp(min=1)
        outputs.append(torch.where(nonempty, v, torch.zeros((), dtype=v.dtype, device=v.device)))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    if normalize:
        out = F.normalize(out, p=2.0, dim=-1, eps=NORM_EPS)
    if truncate_dim < out.shape[1]:
        out = out[:, :truncate_dim]
    if normalize_after_truncate:
        out = F.normalize(out, p=2.0, dim=-1, eps=NORM_EPS)
    starts = steps = None
    if precision in SCALAR_PRECISIONS:
        starts, steps = bucket_params(ranges)
    return quantize_reference(out.contiguous(), precision, starts, steps)


def _finish(
    hidden: Any,
    run_kernel: Any,
    run_reference: Any,
    modes: tuple[str, ...],
    normalize: Any,
    truncate_dim: Any,
    normalize_after_truncate: Any,
    precision: Any,
    ranges: Any,
    backend: str,
) -> Any:
    """Shared checks and dispatch of :func:`pool` and :func:`pool_varlen`."""
    normalize = _check_bool(normalize, "normalize")
    normalize_after_truncate = _check_bool(normalize_after_truncate, "normalize_after_truncate")
    precision = check_precision(precision)
    dim = _check_truncate(truncate_dim, len(modes) * int(hidden.shape[-1]))
    if precision in SCALAR_PRECISIONS and ranges is None:
        # sentence-transformers semantics: the ranges come from these embeddings themselves, which
        # needs them all before the first code: pool to float32 first, then quantize.
        emb = _finish(hidden, run_kernel, run_reference, modes, normalize, dim, normalize_after_truncate,
                      "float32", None, backend)
        return quantize(emb, precision, backend=backend)
    ranges_t = check_ranges(ranges, dim, hidden.device) if precision in SCALAR_PRECISIONS else None
    args = (modes, normalize, dim, normalize_after_truncate, precision, ranges_t)
    return run_kernel(*args) if use_kernel(hidden, backend) else run_reference(*args)


def _with_buckets(args: tuple) -> tuple:
    """The kernel launchers' arguments: ``_finish``'s, with the (2, dim) ranges replaced by their
    ``(starts, steps)`` bucket parameters (None for the other precisions)."""
    *head, ranges = args
    return (*head, None if ranges is None else bucket_params(ranges))


def pool(
    hidden: Any,
    attention_mask: Any,
    mode: PoolingMode | tuple[PoolingMode, ...] = "mean",
    *,
    pool_mask: Any = None,
    normalize: bool = False,
    truncate_dim: int | None = None,
    normalize_after_truncate: bool = False,
    precision: Precision = "float32",
    ranges: Any = None,
    backend: Backend = "auto",
) -> Any:
    """Pools padded token embeddings into sentence embeddings, the whole post-processing in one pass.

    Order: pool -> normalize -> truncate -> normalize again -> quantize (see the module docstring).

    Args:
        hidden: (B, T, H) float32/float16/bfloat16 tensor, the encoder's last hidden states.
        attention_mask: (B, T) bool/integer/float 0/1 tensor on hidden's device, left or right
            padding; None means every token is real. Every row needs at least one real token.
        mode: a name from :data:`MODES` or a tuple of distinct names (outputs concatenated in order).
        pool_mask: optional (B, T) 0/1 tensor: which real tokens are pooled (ANDed with the attention
            mask). Rows that pool no token give a zero vector.
        normalize: L2-normalize the pooled vector (the model's Normalize module).
        truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka), 1 <= truncate_dim <=
            len(modes) * H; None keeps all.
        normalize_after_truncate: L2-normalize after truncation (``normalize_embeddings=True``).
        precision: float32, float16, bfloat16, int8, uint8, binary or ubinary, with
            sentence-transformers' ``quantize_embeddings`` semantics (see ``embedcore.ops.quantize``).
        ranges: (2, D) float min/max per output dimension for int8/uint8 (D = truncate_dim or
            len(modes) * H). None derives them from this batch (at least 2 rows; not fused).
        backend: "auto" (CUDA -> fused Triton kernel, CPU -> reference), "reference" or "triton".

    Returns:
        (B, D) tensor in ``precision`` (fp32 accumulation whatever the input dtype), or (B, ceil(D/8))
        int8/uint8 packed sign bits for binary/ubinary; on hidden's device.

    Raises:
        TypeError: hidden not a float tensor, masks not tensors, wrong argument types.
        ValueError: unknown mode or precision (the valid ones listed), mask shape/device/values,
            a row with no real token, truncate_dim out of range, ranges of the wrong shape.
    """
    import torch

    _check_hidden(hidden, 3, "(B, T, H)")
    hidden = _detach_for_codes(hidden, precision)
    modes = check_modes(mode)
    backend = check_backend(backend)
    B, T, _ = (int(s) for s in hidden.shape)
    if attention_mask is None:
        attention = torch.ones((B, T), dtype=torch.bool, device=hidden.device)
    else:
        attention = _check_mask(attention_mask, (B, T), hidden.device, "attention_mask")
        rows_empty = ~attention.any(1) if B else attention.new_zeros(0)
        if bool(rows_empty.any()):
            raise ValueError(
                f"attention_mask row {int(rows_empty.nonzero()[0, 0])} has no real token (all zero)"
            )
    if B and T == 0:
        raise ValueError("hidden has T = 0 tokens per row; every row needs at least one token")
    pooled = attention
    if pool_mask is not None:
        pooled = attention & _check_mask(pool_mask, (B, T), hidden.device, "pool_mask")

    def run_kernel(*args: Any) -> Any:
        from embedcore.kernels.pooling import pool_fwd

        return pool_fwd(hidden, attention, pooled if pool_mask is not None else None, *_with_buckets(args))

    def run_reference(*args: Any) -> Any:
        return pool_reference(hidden, attention, pooled, *args)

    return _finish(hidden, run_kernel, run_reference, modes, normalize, truncate_dim,
                   normalize_after_truncate, precision, ranges, backend)


def _check_cu_seqlens(cu_seqlens: Any, max_seqlen: Any, total: int, device: Any) -> tuple[Any, int]:
    import torch

    if not is_tensor(cu_seqlens):
        raise TypeError(f"cu_seqlens must be a torch tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must be int32 (or int64), got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 1:
        raise ValueError(f"cu_seqlens must be (batch + 1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device}, hidden on {device}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TypeError(f"max_seqlen must be an int, got {type(max_seqlen).__name__}")
    cu = cu_seqlens.tolist()
    if cu[0] != 0 or cu[-1] != total:
        raise ValueError(
            f"cu_seqlens must start at 0 and end at total_tokens = {total}, got {cu[0]}..{cu[-1]}"
        )
    lengths = [b - a for a, b in itertools.pairwise(cu)]
    for i, n in enumerate(lengths):
        if n <= 0:
            raise ValueError(f"sequence {i} has length {n} in cu_seqlens; every sequence needs a token")
    if lengths and max_seqlen < max(lengths):
        raise ValueError(f"max_seqlen = {max_seqlen} is below the longest sequence ({max(lengths)})")
    return cu_seqlens.to(torch.int32), len(lengths)


def pool_varlen(
    hidden: Any,
    cu_seqlens: Any,
    max_seqlen: int,
    mode: PoolingMode | tuple[PoolingMode, ...] = "mean",
    *,
    pool_mask: Any = None,
    normalize: bool = False,
    truncate_dim: int | None = None,
    normalize_after_truncate: bool = False,
    precision: Precision = "float32",
    ranges: Any = None,
    backend: Backend = "auto",
) -> Any:
    """:func:`pool` for packed sequences (flash-attention's varlen layout), no padding anywhere.

    Args:
        hidden: (total_tokens, H) float32/float16/bfloat16 tensor, the sequences back to back.
        cu_seqlens: (batch + 1,) int32 (or int64) tensor of sequence offsets: 0, then increasing
            strictly (no empty sequence) up to total_tokens.
        max_seqlen: the longest sequence length (an upper bound is fine).
        mode, normalize, truncate_dim, normalize_after_truncate, precision, ranges, backend: as in
            :func:`pool`; position weights count from each sequence's first token.
        pool_mask: optional (total_tokens,) 0/1 tensor: which tokens are pooled.

    Returns:
        (batch, D) in ``precision`` ((batch, ceil(D/8)) bytes for binary/ubinary), on hidden's device.
    """
    import torch

    _check_hidden(hidden, 2, "(total_tokens, H)")
    hidden = _detach_for_codes(hidden, precision)
    modes = check_modes(mode)
    backend = check_backend(backend)
    total = int(hidden.shape[0])
    cu, batch = _check_cu_seqlens(cu_seqlens, max_seqlen, total, hidden.device)
    pooled = None
    if pool_mask is not None:
        pooled = _check_mask(pool_mask, (total,), hidden.device, "pool_mask")

    def run_kernel(*args: Any) -> Any:
        from embedcore.kernels.pooling import pool_varlen_fwd

        return pool_varlen_fwd(hidden, cu, max_seqlen, pooled, *_with_buckets(args))

    def run_reference(*args: Any) -> Any:
        # Pad, then pool: right padding, so absolute and relative positions agree.
        lengths = (cu[1:] - cu[:-1]).long()
        T = max(1, int(lengths.max())) if batch else 1
        positions = torch.arange(T, device=hidden.device)
        attention = positions < lengths.unsqueeze(1)
        padded = hidden.new_zeros((batch, T, hidden.shape[1]))
        padded[attention] = hidden
        pooled_padded = attention
        if pooled is not None:
            pooled_padded = torch.zeros_like(attention)
            pooled_padded[attention] = pooled
        return pool_reference(padded, attention, pooled_padded, *args)

    return _finish(hidden, run_kernel, run_reference, modes, normalize, truncate_dim,
                   normalize_after_truncate, precision, ranges, backend)
