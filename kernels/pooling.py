"""Fused pooling -> normalize -> truncate -> normalize -> quantize, one pass over the hidden states.

Maths (the specification is ``embedcore.ops.pooling.pool_reference``; sentence-transformers' ``Pooling``,
``Normalize`` and ``quantize_embeddings``): for a row with pooled token set P (a subset of the real
tokens R),

    cls = x[min P]        lasttoken = x[max P]          max = max_{t in P} x[t]
    mean = sum_P x / |P|  mean_sqrt_len_tokens = sum_P x / sqrt(|P|)
    weightedmean = sum_P w_t x[t] / sum_P w_t,  w_t = t + 1 - min R  (absolute variant: w_t = t + 1)

concatenated in the caller's order, then ``y = v / max(||v||, 1e-12)``, ``y[:D]``, the same again,
then float16/bfloat16 casts, ``clip(floor((y - min) / step), 0, 255)`` (- 128 for int8), or sign bits
packed MSB first (- 128 for binary). Empty P gives a zero vector.

Layout: one program per sequence reads its mask row once (first real token, pooled range [lo, hi),
counts), then only the tokens in [lo, hi) -- no padded compute -- in (BLOCK_T, BLOCK_H) tiles with
fp32 accumulators, every requested mode from the same tile. When the whole row fits one program the
epilogue runs in registers and the output is written once in its final dtype. Wide rows with few
sequences split H across programs (more parallelism): they write the fp32 pooled row (B x D floats,
small next to B x T x H) and a per-row epilogue kernel finishes the chain.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from embedcore._spec import BINARY_PRECISIONS, OUTPUT_DTYPE_NAMES, SCALAR_PRECISIONS, output_dim

_PRECISION_CODE = {
    "float32": 0, "float16": 1, "bfloat16": 2, "int8": 3, "uint8": 4, "binary": 5, "ubinary": 6,
}
# mode -> suffix of the kernel's OFF_* constexpr (column offset of that mode's block, -1 when absent)
_MODE_OFFSET = {
    "cls": "OFF_CLS", "max": "OFF_MAX", "mean": "OFF_MEAN", "mean_sqrt_len_tokens": "OFF_MSQRT",
    "weightedmean": "OFF_W", "weightedmean_absolute": "OFF_WABS", "lasttoken": "OFF_LAST",
}
_EPS = tl.constexpr(1e-12)  # torch.nn.functional.normalize eps


@triton.jit
def _store_codes(out_ptr, z, col0, valid, starts_ptr, steps_ptr, PREC: tl.constexpr, BLOCK: tl.constexpr):
    """Stores fp32 values ``z`` of columns ``col0 + arange(BLOCK)`` in the output precision.

    For the binary precisions ``out_ptr`` is the byte row and ``col0`` a multiple of 8; invalid columns
    contribute 0 bits, as numpy.packbits pads.
    """
    offs = tl.arange(0, BLOCK)
    cols = col0 + offs
    if PREC == 0:
        tl.store(out_ptr + cols, z, mask=valid)
    elif PREC == 1:
        tl.store(out_ptr + cols, z.to(tl.float16), mask=valid)
    elif PREC == 2:
        # Round to nearest even on the bits, as torch's .to(bfloat16) does; written out because Triton's
        # interpreter truncates fp32 -> bf16 (the GPU rounds), so tests would not see GPU numerics.
        bits = z.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        tl.store(out_ptr + cols, bits.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=valid)
    elif PREC <= 4:
        start = tl.load(starts_ptr + cols, mask=valid, other=0.0)
        step = tl.load(steps_ptr + cols, mask=valid, other=1.0)
        # IEEE division, as numpy does: codes match sentence-transformers bit for bit on equal inputs.
        q = tl.math.floor(tl.math.div_rn(z - start, step))
        q = tl.minimum(tl.maximum(q, 0.0), 255.0).to(tl.int32)
        if PREC == 3:
            q = q - 128
        tl.store(out_ptr + cols, q.to(out_ptr.dtype.element_ty), mask=valid)
    else:
        bits = tl.where(valid & (z > 0.0), 1, 0)
        shifts = 7 - tl.arange(0, 8)
        packed = tl.sum(tl.reshape(bits, (BLOCK // 8, 8)) << shifts[None, :], axis=1)
        any_valid = tl.max(tl.reshape(valid.to(tl.int32), (BLOCK // 8, 8)), axis=1) > 0
        if PREC == 5:
            packed = packed - 128
        byte_cols = col0 // 8 + tl.arange(0, BLOCK // 8)
        tl.store(out_ptr + byte_cols, packed.to(out_ptr.dtype.element_ty), mask=any_valid)


@triton.jit
def _scan_mask(att_ptr, att_st, pm_ptr, pm_st, n, HAS_ATT: tl.constexpr, HAS_PM: tl.constexpr,
               BLOCK_S: tl.constexpr):
    """Row metadata from the masks: (first real position, pooled lo, pooled hi (exclusive), pooled
    count, sum of (t + 1) over pooled t). ``pm_ptr`` holds the pooled mask (attention AND pool mask)."""
    if HAS_ATT or HAS_PM:
        first = n
        lo = n
        hi = n * 0
        cnt = n * 0
        s1 = (n * 0).to(tl.int64)
        for s0 in range(0, n, BLOCK_S):
            offs = s0 + tl.arange(0, BLOCK_S)
            inb = offs < n
            if HAS_ATT:
                real = (tl.load(att_ptr + offs * att_st, mask=inb, other=0) != 0) & inb
            else:
                real = inb
            if HAS_PM:
                p = (tl.load(pm_ptr + offs * pm_st, mask=inb, other=0) != 0) & inb
            else:
                p = real
            first = tl.minimum(first, tl.min(tl.where(real, offs, n), axis=0))
            lo = tl.minimum(lo, tl.min(tl.where(p, offs, n), axis=0))
            hi = tl.maximum(hi, tl.max(tl.where(p, offs + 1, 0), axis=0))
            cnt += tl.sum(p.to(tl.int32), axis=0)
            s1 += tl.sum(tl.where(p, offs + 1, 0).to(tl.int64), axis=0)
    else:
        # Packed layout without a pool mask: every token of the sequence is pooled.
        first = n * 0
        lo = n * 0
        hi = n
        cnt = n
        s1 = n.to(tl.int64) * (n.to(tl.int64) + 1) // 2
    return first, lo, hi, cnt, s1


@triton.jit
def _accumulate(x_ptr, x_st, pm_ptr, pm_st, offs_h, h_ok, first, lo, hi, HAS_MASK: tl.constexpr,
                NEED_SUM: tl.constexpr, NEED_MAX: tl.constexpr, NEED_W: tl.constexpr,
                NEED_WABS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """fp32 sums, maxima and position-weighted sums over the pooled tokens in [lo, hi)."""
    acc_sum = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc_max = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    acc_w = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc_wabs = tl.zeros([BLOCK_H], dtype=tl.float32)
    if NEED_SUM or NEED_MAX or NEED_W or NEED_WABS:
        for t0 in range(lo, hi, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            p = offs_t < hi
            if HAS_MASK:
                p = p & (tl.load(pm_ptr + offs_t * pm_st, mask=p, other=0) != 0)
            ptrs = x_ptr + offs_t[:, None].to(tl.int64) * x_st + offs_h[None, :]
            x = tl.load(ptrs, mask=p[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
            if NEED_SUM:
                acc_sum += tl.sum(x, axis=0)
            if NEED_MAX:
                acc_max = tl.maximum(acc_max, tl.max(tl.where(p[:, None], x, float("-inf")), axis=0))
            if NEED_W:
                acc_w += tl.sum(x * (offs_t + 1 - first).to(tl.float32)[:, None], axis=0)
            if NEED_WABS:
                acc_wabs += tl.sum(x * (offs_t + 1).to(tl.float32)[:, None], axis=0)
    return acc_sum, acc_max, acc_w, acc_wabs


@triton.jit
def _sumsq(acc, y, OFF: tl.constexpr, offs_h, h_ok, D_OUT, TRUNCATED: tl.constexpr):
    if OFF >= 0:
        keep = h_ok
        if TRUNCATED:
            keep = keep & (OFF + offs_h < D_OUT)
        acc += tl.sum(tl.where(keep, y * y, 0.0), axis=0)
    return acc


@triton.jit
def _emit(out_ptr, v, d1, d2, OFF: tl.constexpr, col0, H, D_OUT, starts_ptr, steps_ptr, PREC: tl.constexpr,
          SPLIT: tl.constexpr, BLOCK_H: tl.constexpr):
    """Split path: the raw pooled values to the fp32 scratch row. Fused path: the finished values."""
    if OFF >= 0:
        offs_h = col0 + tl.arange(0, BLOCK_H)
        h_ok = offs_h < H
        if SPLIT:
            tl.store(out_ptr + OFF + offs_h, v, mask=h_ok)
        else:
            z = tl.math.div_rn(tl.math.div_rn(v, d1), d2)
            _store_codes(out_ptr, z, OFF + col0, h_ok & (OFF + offs_h < D_OUT), starts_ptr, steps_ptr,
                         PREC, BLOCK_H)


@triton.jit
def _pool_row(x_ptr, x_st, att_ptr, att_st, pm_ptr, pm_st, n, H, D_OUT, out_ptr, starts_ptr, steps_ptr,
              HAS_ATT: tl.constexpr, HAS_PM: tl.constexpr, OFF_CLS: tl.constexpr, OFF_MAX: tl.constexpr,
              OFF_MEAN: tl.constexpr, OFF_MSQRT: tl.constexpr, OFF_W: tl.constexpr,
              OFF_WABS: tl.constexpr, OFF_LAST: tl.constexpr, NORMALIZE: tl.constexpr,
              NORM_AFTER: tl.constexpr, PREC: tl.constexpr, SPLIT: tl.constexpr, BLOCK_S: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """One sequence (``n`` tokens at ``x_ptr``), one H block (program axis 1)."""
    col0 = tl.program_id(1) * BLOCK_H
    offs_h = col0 + tl.arange(0, BLOCK_H)
    h_ok = offs_h < H
    first, lo, hi, cnt, s1 = _scan_mask(att_ptr, att_st, pm_ptr, pm_st, n, HAS_ATT, HAS_PM, BLOCK_S)
    acc_sum, acc_max, acc_w, acc_wabs = _accumulate(
        x_ptr, x_st, pm_ptr, pm_st, offs_h, h_ok, first, lo, hi, HAS_ATT or HAS_PM,
        OFF_MEAN >= 0 or OFF_MSQRT >= 0, OFF_MAX >= 0, OFF_W >= 0, OFF_WABS >= 0, BLOCK_T, BLOCK_H)

    # A (BLOCK_H,) mask: a scalar condition broadcast explicitly (the interpreter needs a vector mask).
    nonempty = h_ok & (offs_h * 0 + cnt > 0)
    cnt_f = tl.maximum(cnt, 1).to(tl.float32)
    zero = tl.zeros([BLOCK_H], dtype=tl.float32)
    v_cls = tl.load(x_ptr + lo.to(tl.int64) * x_st + offs_h, mask=nonempty, other=0.0).to(tl.float32)
    v_last = tl.load(x_ptr + (hi - 1).to(tl.int64) * x_st + offs_h, mask=nonempty,
                     other=0.0).to(tl.float32)
    v_max = tl.where(nonempty, acc_max, zero)
    v_mean = tl.math.div_rn(acc_sum, cnt_f)
    v_msqrt = tl.math.div_rn(acc_sum, tl.math.sqrt_rn(cnt_f))
    w_rel = tl.maximum(s1 - cnt.to(tl.int64) * first, 1).to(tl.float32)
    v_w = tl.math.div_rn(acc_w, w_rel)
    v_wabs = tl.math.div_rn(acc_wabs, tl.maximum(s1, 1).to(tl.float32))

    # fp32 scalar tensors, not Python floats: the same types in every specialization.
    zero_s = tl.sum(zero, axis=0)
    d1 = zero_s + 1.0
    d2 = zero_s + 1.0
    if not SPLIT:
        if NORMALIZE:
            ss = zero_s
            ss = _sumsq(ss, v_cls, OFF_CLS, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_max, OFF_MAX, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_mean, OFF_MEAN, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_msqrt, OFF_MSQRT, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_w, OFF_W, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_wabs, OFF_WABS, offs_h, h_ok, D_OUT, False)
            ss = _sumsq(ss, v_last, OFF_LAST, offs_h, h_ok, D_OUT, False)
            d1 = tl.maximum(tl.math.sqrt_rn(ss), _EPS)
        if NORM_AFTER:
            st = zero_s
            st = _sumsq(st, tl.math.div_rn(v_cls, d1), OFF_CLS, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_max, d1), OFF_MAX, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_mean, d1), OFF_MEAN, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_msqrt, d1), OFF_MSQRT, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_w, d1), OFF_W, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_wabs, d1), OFF_WABS, offs_h, h_ok, D_OUT, True)
            st = _sumsq(st, tl.math.div_rn(v_last, d1), OFF_LAST, offs_h, h_ok, D_OUT, True)
            d2 = tl.maximum(tl.math.sqrt_rn(st), _EPS)
    _emit(out_ptr, v_cls, d1, d2, OFF_CLS, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_max, d1, d2, OFF_MAX, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_mean, d1, d2, OFF_MEAN, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_msqrt, d1, d2, OFF_MSQRT, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_w, d1, d2, OFF_W, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_wabs, d1, d2, OFF_WABS, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)
    _emit(out_ptr, v_last, d1, d2, OFF_LAST, col0, H, D_OUT, starts_ptr, steps_ptr, PREC, SPLIT,
          BLOCK_H)


@triton.jit(do_not_specialize=["T", "H", "D_OUT"])
def _pool_padded_kernel(x_ptr, x_sb, x_st, att_ptr, att_sb, att_st, pm_ptr, pm_sb, pm_st, out_ptr, out_sb,
                        starts_ptr, steps_ptr, T, H, D_OUT,
                        HAS_PM: tl.constexpr, OFF_CLS: tl.constexpr, OFF_MAX: tl.constexpr,
                        OFF_MEAN: tl.constexpr, OFF_MSQRT: tl.constexpr, OFF_W: tl.constexpr,
                        OFF_WABS: tl.constexpr, OFF_LAST: tl.constexpr, NORMALIZE: tl.constexpr,
                        NORM_AFTER: tl.constexpr, PREC: tl.constexpr, SPLIT: tl.constexpr,
                        BLOCK_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """hidden (B, T, H), attention / pooled masks (B, T); grid (B, H blocks)."""
    b = tl.program_id(0).to(tl.int64)
    _pool_row(x_ptr + b * x_sb, x_st, att_ptr + b * att_sb, att_st, pm_ptr + b * pm_sb, pm_st, T, H, D_OUT,
              out_ptr + b * out_sb, starts_ptr, steps_ptr, True, HAS_PM, OFF_CLS, OFF_MAX, OFF_MEAN,
              OFF_MSQRT, OFF_W, OFF_WABS, OFF_LAST, NORMALIZE, NORM_AFTER, PREC, SPLIT, BLOCK_S, BLOCK_T,
              BLOCK_H)


@triton.jit(do_not_specialize=["H", "D_OUT"])
def _pool_varlen_kernel(x_ptr, x_st, cu_ptr, pm_ptr, out_ptr, out_sb, starts_ptr, steps_ptr, H, D_OUT,
                        HAS_PM: tl.constexpr, OFF_CLS: tl.constexpr, OFF_MAX: tl.constexpr,
                        OFF_MEAN: tl.constexpr, OFF_MSQRT: tl.constexpr, OFF_W: tl.constexpr,
                        OFF_WABS: tl.constexpr, OFF_LAST: tl.constexpr, NORMALIZE: tl.constexpr,
                        NORM_AFTER: tl.constexpr, PREC: tl.constexpr, SPLIT: tl.constexpr,
                        BLOCK_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """hidden (total_tokens, H), cu_seqlens (B + 1,) int32, pooled mask (total_tokens,);
    grid (B, H blocks)."""
    b = tl.program_id(0)
    start = tl.load(cu_ptr + b)
    n = tl.load(cu_ptr + b + 1) - start
    start = start.to(tl.int64)
    _pool_row(x_ptr + start * x_st, x_st, pm_ptr, 0, pm_ptr + start, 1, n, H, D_OUT,
              out_ptr + b.to(tl.int64) * out_sb, starts_ptr, steps_ptr, False, HAS_PM, OFF_CLS, OFF_MAX,
              OFF_MEAN, OFF_MSQRT, OFF_W, OFF_WABS, OFF_LAST, NORMALIZE, NORM_AFTER, PREC, SPLIT, BLOCK_S,
              BLOCK_T, BLOCK_H)


@triton.jit(do_not_specialize=["D_POOL", "D_OUT"])
def _pool_epilogue_kernel(v_ptr, v_sb, out_ptr, out_sb, starts_ptr, steps_ptr, D_POOL, D_OUT,
                          NORMALIZE: tl.constexpr, NORM_AFTER: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_D: tl.constexpr):
    """Normalize -> truncate -> normalize -> quantize of pooled fp32 rows (D_POOL,); one program per row."""
    b = tl.program_id(0).to(tl.int64)
    v_ptr += b * v_sb
    out_ptr += b * out_sb
    offs = tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    d1 = tl.sum(acc, axis=0) + 1.0
    d2 = tl.sum(acc, axis=0) + 1.0
    if NORMALIZE:
        for c0 in range(0, D_POOL, BLOCK_D):
            v = tl.load(v_ptr + c0 + offs, mask=c0 + offs < D_POOL, other=0.0)
            acc += v * v
        d1 = tl.maximum(tl.math.sqrt_rn(tl.sum(acc, axis=0)), _EPS)
    if NORM_AFTER:
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for c0 in range(0, D_OUT, BLOCK_D):
            y = tl.math.div_rn(tl.load(v_ptr + c0 + offs, mask=c0 + offs < D_OUT, other=0.0), d1)
            acc += y * y
        d2 = tl.maximum(tl.math.sqrt_rn(tl.sum(acc, axis=0)), _EPS)
    for c0 in range(0, D_OUT, BLOCK_D):
        valid = c0 + offs < D_OUT
        z = tl.math.div_rn(tl.math.div_rn(tl.load(v_ptr + c0 + offs, mask=valid, other=0.0), d1), d2)
        _store_codes(out_ptr, z, c0, valid, starts_ptr, steps_ptr, PREC, BLOCK_D)


@triton.jit(do_not_specialize=["D"])
def _quantize_kernel(x_ptr, x_sb, out_ptr, out_sb, starts_ptr, steps_ptr, D, PREC: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    """Codes of rows (N, D), fp32 arithmetic; grid (N, D blocks)."""
    b = tl.program_id(0).to(tl.int64)
    c0 = tl.program_id(1) * BLOCK_D
    offs = c0 + tl.arange(0, BLOCK_D)
    valid = offs < D
    z = tl.load(x_ptr + b * x_sb + offs, mask=valid, other=0.0).to(tl.float32)
    _store_codes(out_ptr + b * out_sb, z, c0, valid, starts_ptr, steps_ptr, PREC, BLOCK_D)


def _output_dtype(precision: str) -> Any:
    return getattr(torch, OUTPUT_DTYPE_NAMES[precision])


def _bucket_args(precision: str, starts: Any, steps: Any, device: Any) -> tuple[Any, Any]:
    if precision in SCALAR_PRECISIONS:
        return (starts.to(device=device, dtype=torch.float32).contiguous(),
                steps.to(device=device, dtype=torch.float32).contiguous())
    # int8/uint8 only read the bucket parameters; other precisions get a placeholder pointer.
    dummy = torch.empty(1, dtype=torch.float32, device=device)
    return dummy, dummy


def quantize_fwd(x: Any, precision: str, starts: Any = None, steps: Any = None) -> Any:
    """Quantizes rows of ``x`` (N, D) float16/bfloat16/float32 to ``precision`` (see ops.quantize).

    Args:
        x: (N, D) tensor, last dimension contiguous (copied otherwise).
        precision: a name from ``embedcore.ops.quantize.PRECISIONS`` other than float32.
        starts, steps: float32 (D,) bucket parameters for int8/uint8 (``bucket_params``).

    Returns:
        (N, D) codes, or (N, ceil(D / 8)) bytes for binary/ubinary, on x's device.
    """
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize kernel takes float16/bfloat16/float32, got {x.dtype}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    N, D = x.shape
    out = torch.empty((N, output_dim(D, precision)), dtype=_output_dtype(precision), device=x.device)
    if N == 0 or D == 0:
        return out
    starts, steps = _bucket_args(precision, starts, steps, x.device)
    block = min(1024, max(8, triton.next_power_of_2(D)))
    _quantize_kernel[(N, triton.cdiv(D, block))](
        x, x.stride(0), out, out.stride(0), starts, steps, D, PREC=_PRECISION_CODE[precision], BLOCK_D=block
    )
    return out


def _plan(B: int, H: int, n_modes: int, dim: int, precision: str, device: Any,
          block_h: int | None) -> tuple[int, bool]:
    """(BLOCK_H, split): the whole row in one program unless the batch is too small to fill the GPU
    with wide rows, the row is too wide for registers, or sign bits would straddle two modes."""
    full = triton.next_power_of_2(H)
    if block_h is None:
        block_h = full
        if device.type == "cuda":
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            if (B < 2 * sms and H >= 1024) or full * n_modes > 16384:
                block_h = min(full, 512)
    elif block_h < 8 or block_h & (block_h - 1):
        raise ValueError(f"block_h must be a power of two >= 8, got {block_h}")
    block_h = min(block_h, full) if full >= 8 else 8
    straddle = precision in BINARY_PRECISIONS and n_modes > 1 and H % 8 != 0 and dim > H
    return block_h, block_h < full or straddle


def _launch(kernel: Any, grid_rows: int, lead_args: Any, sizes: tuple[int, ...], H: int, T: int,
            modes: tuple[str, ...], normalize: bool, dim: int, normalize_after_truncate: bool, precision: str,
            buckets: Any, has_pm: bool, device: Any, block_h: int | None, out: Any) -> Any:
    """Launches ``kernel`` (padded or varlen; ``lead_args(out, out_row_stride)`` gives its leading
    arguments, ``sizes`` its trailing ints) fused, or split + epilogue."""
    starts, steps = buckets if precision in SCALAR_PRECISIONS else (None, None)
    starts, steps = _bucket_args(precision, starts, steps, device)
    block_h, split = _plan(grid_rows, H, len(modes), dim, precision, device, block_h)
    offsets = dict.fromkeys(_MODE_OFFSET.values(), -1)
    for j, mode in enumerate(modes):
        offsets[_MODE_OFFSET[mode]] = j * H
    block_t = max(1, min(triton.next_power_of_2(max(T, 1)), 8192 // block_h))
    meta = dict(HAS_PM=has_pm, NORMALIZE=normalize, NORM_AFTER=normalize_after_truncate,
                PREC=_PRECISION_CODE[precision], BLOCK_S=min(1024, triton.next_power_of_2(max(T, 1))),
                BLOCK_T=block_t, BLOCK_H=block_h, num_warps=4 if block_h <= 1024 else 8, **offsets)
    grid = (grid_rows, triton.cdiv(H, block_h))
    if not split:
        kernel[grid](*lead_args(out, out.stride(0)), starts, steps, *sizes, SPLIT=False, **meta)
        return out
    pooled = torch.empty((grid_rows, len(modes) * H), dtype=torch.float32, device=device)
    kernel[grid](*lead_args(pooled, pooled.stride(0)), starts, steps, *sizes, SPLIT=True, **meta)
    block_d = min(2048, max(8, triton.next_power_of_2(len(modes) * H)))
    _pool_epilogue_kernel[(grid_rows,)](
        pooled, pooled.stride(0), out, out.stride(0), starts, steps, len(modes) * H, dim,
        NORMALIZE=normalize, NORM_AFTER=normalize_after_truncate, PREC=_PRECISION_CODE[precision],
        BLOCK_D=block_d, num_warps=4,
    )
    return out


def _mask_bytes(mask: Any) -> Any:
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def pool_fwd(hidden: Any, attention: Any, pooled: Any, modes: tuple[str, ...], normalize: bool, dim: int,
             normalize_after_truncate: bool, precision: str, buckets: Any, *,
             block_h: int | None = None) -> Any:
    """Launches the padded kernel. Arguments checked by ``embedcore.ops.pooling.pool``.

    Args:
        hidden: (B, T, H) float32/float16/bfloat16.
        attention: (B, T) bool, every row with a real token. pooled: (B, T) bool (attention AND pool
            mask) or None when every real token is pooled.
        modes, normalize, dim (truncate_dim), normalize_after_truncate, precision: as in ``ec.pool``.
        buckets: ``(starts, steps)``, float32 (dim,) tensors from
            ``embedcore.ops.quantize.bucket_params`` for int8/uint8, else None.
        block_h: H tile width (power of two); None picks it. Smaller than H forces the split path.

    Returns:
        (B, dim) in ``precision`` or (B, ceil(dim / 8)) bytes for binary/ubinary.
    """
    B, T, H = hidden.shape
    out = torch.empty((B, output_dim(dim, precision)), dtype=_output_dtype(precision), device=hidden.device)
    if B == 0:
        return out
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    att = _mask_bytes(attention)
    pm = att if pooled is None else _mask_bytes(pooled)

    def lead(o: Any, so: int) -> tuple:
        return (hidden, hidden.stride(0), hidden.stride(1), att, att.stride(0), att.stride(1),
                pm, pm.stride(0), pm.stride(1), o, so)

    return _launch(_pool_padded_kernel, B, lead, (T, H, dim), H, T, modes, normalize, dim,
                   normalize_after_truncate, precision, buckets, pooled is not None, hidden.device, block_h,
                   out)


def pool_varlen_fwd(hidden: Any, cu_seqlens: Any, max_seqlen: int, pooled: Any, modes: tuple[str, ...],
                    normalize: bool, dim: int, normalize_after_truncate: bool, precision: str,
                    buckets: Any, *, block_h: int | None = None) -> Any:
    """Launches the packed (varlen) kernel. Arguments checked by ``embedcore.ops.pooling.pool_varlen``.

    Args:
        hidden: (total_tokens, H) float32/float16/bfloat16.
        cu_seqlens: (B + 1,) int32 offsets, no empty sequence. max_seqlen: longest sequence.
        pooled: (total_tokens,) bool pool mask or None.
        Others as in :func:`pool_fwd`.

    Returns:
        (B, dim) in ``precision`` or (B, ceil(dim / 8)) bytes for binary/ubinary.
    """
    H = hidden.shape[1]
    B = cu_seqlens.shape[0] - 1
    out = torch.empty((B, output_dim(dim, precision)), dtype=_output_dtype(precision), device=hidden.device)
    if B == 0:
        return out
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    cu = cu_seqlens.to(torch.int32).contiguous()
    pm = cu if pooled is None else _mask_bytes(pooled).contiguous()

    def lead(o: Any, so: int) -> tuple:
        return (hidden, hidden.stride(0), cu, pm, o, so)

    return _launch(_pool_varlen_kernel, B, lead, (H, dim), H, max_seqlen, modes, normalize, dim,
                   normalize_after_truncate, precision, buckets, pooled is not None, hidden.device, block_h,
                   out)
