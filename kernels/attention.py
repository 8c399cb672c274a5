"""Flash-attention forward over variable-length sequences (Triton).

The algorithm of FlashAttention-2 (Dao, 2023; the Triton tutorial ``06-fused-attention.py``): each
program owns ``BLOCK_M`` queries of one sequence and one query head, streams that sequence's keys and
values in ``BLOCK_N`` tiles, and keeps a running maximum ``m``, normaliser ``l`` and output
accumulator in float32 (online softmax), so no T x T matrix is ever stored::

    s   = scale * q k^T           (softcap: s = softcap * tanh(s / softcap))
    m'  = max(m, rowmax(s));  p = exp(s - m');  alpha = exp(m - m')
    l   = alpha * l + rowsum(p);  acc = alpha * acc + p v;  out = acc / l

Layout as flash-attn's ``flash_attn_varlen_func``: ``q (total, Hq, D)``, ``k, v (total, Hkv, D)``,
``cu_seqlens (B+1,) int32``. Tiles outside the causal triangle or the sliding window are skipped, not
masked; padding does not exist in this layout. Exponentials use ``exp2`` with ``log2(e)`` folded into
the scale.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, Out, cu_seqlens,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    num_heads, qk_scale, softcap, window,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = pid_bh // num_heads
    head = pid_bh % num_heads
    seq_start = tl.load(cu_seqlens + batch)
    seqlen = tl.load(cu_seqlens + batch + 1) - seq_start
    block_start = pid_m * BLOCK_M
    if block_start >= seqlen:  # the grid covers max_seqlen; shorter sequences end early
        return

    offs_m = block_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n0 = tl.arange(0, BLOCK_N)
    m_valid = offs_m < seqlen
    d_valid = offs_d < HEAD_DIM
    kv_head = head // GROUP

    # int64 row offsets: total_tokens * heads * head_dim may pass 2**31 elements.
    rows_m = (seq_start + offs_m).to(tl.int64)
    q_ptrs = Q + rows_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Key range this query block can see: [lo, hi).
    lo = 0
    hi = seqlen
    if CAUSAL:
        hi = tl.minimum(seqlen, block_start + BLOCK_M)
    if HAS_WINDOW:
        lo = tl.maximum(0, block_start - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(seqlen, block_start + BLOCK_M + window - 1)

    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_valid = offs_n < seqlen
        rows_n = (seq_start + offs_n).to(tl.int64)
        k_ptrs = K + rows_n[None, :] * stride_kt + kv_head * stride_kh + offs_d[:, None]
        k = tl.load(k_ptrs, mask=n_valid[None, :] & d_valid[:, None], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        if HAS_SOFTCAP:
            # softcap * tanh(x / softcap), tanh(y) = 2 * sigmoid(2y) - 1; then to log2 units.
            s = softcap * (2.0 * tl.sigmoid(2.0 * s * (qk_scale / softcap)) - 1.0) * 1.4426950408889634
        else:
            s = s * (qk_scale * 1.4426950408889634)
        visible = n_valid[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        if HAS_WINDOW:
            dist = offs_m[:, None] - offs_n[None, :]
            visible = visible & (dist < window) & (dist > -window)
        s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no visible key yet keeps m = -inf; shift by 0 there to avoid inf - inf.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_shift[:, None])
        alpha = tl.math.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = V + rows_n[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :]
        v = tl.load(v_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        # p is rounded to the input dtype for the tensor-core product, as in FlashAttention.
        p = p.to(Q.dtype.element_ty)
        if UPCAST:
            v = v.to(tl.float32)
            p = p.to(tl.float32)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new

    # Every real query sees at least itself (l_i > 0); rows past the sequence end may see nothing.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = Out + rows_m[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :])


def _blocks(head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): FA2-like tiles for 16-bit inputs. fp32 (a precision
    path, not a speed one) takes small single-stage tiles: its IEEE dot needs several times the shared
    memory, and these fit the ~99 KB of consumer GPUs (checked by compiling for sm_80/86/90)."""
    if dtype == torch.float32:
        return (64, 32, 4, 1) if head_dim <= 128 else (32, 32, 4, 1)
    if head_dim <= 64:
        return 128, 64, 4, 3
    if head_dim <= 128:
        return 128, 64, 8, 2
    return 64, 32, 8, 2


def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Launches the varlen forward kernel (inputs checked by ``embedcore.ops.attention``).

    Args:
        q: (total, Hq, D); k, v: (total, Hkv, D); float16/bfloat16/float32, last dim contiguous.
        cu_seqlens: (B+1,) int32 on q's device.
        max_seqlen: longest sequence (sizes the grid).
        causal, scale, window, softcap: see ``embedcore.ops.attention.attention``.

    Returns:
        (total, Hq, D) in q's dtype.
    """
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    total, num_heads, head_dim = q.shape
    out = torch.empty_like(q)
    batch = cu_seqlens.numel() - 1
    if total == 0 or batch == 0 or max_seqlen == 0:
        return out
    block_m, block_n, num_warps, num_stages = _blocks(head_dim, q.dtype)
    if not q.is_cuda:
        # The interpreter runs whole tiles as numpy arrays: cap them at the work that exists.
        block_m = max(16, min(block_m, triton.next_power_of_2(max_seqlen)))
        block_n = max(16, min(block_n, block_m))
    # Triton's interpreter multiplies bfloat16 tiles as raw uint16 bits; there the kernel upcasts the
    # (exactly representable) bf16 tiles and multiplies in fp32, which is what tensor cores compute.
    upcast = not q.is_cuda and q.dtype == torch.bfloat16
    grid = (triton.cdiv(max_seqlen, block_m), batch * num_heads)
    _attn_fwd_kernel[grid](
        q, k, v, out, cu_seqlens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        num_heads, float(scale), float(softcap or 1.0), int(window or 0),
        GROUP=num_heads // k.shape[1],
        HEAD_DIM=head_dim,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        CAUSAL=causal,
        HAS_WINDOW=window is not None,
        HAS_SOFTCAP=softcap is not None,
        IEEE=q.dtype == torch.float32 or upcast,
        UPCAST=upcast,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return out


def compile_ahead(
    arch: int, dtype: torch.dtype, head_dim: int, causal: bool, window: bool, softcap: bool, group: int = 1
) -> object:
    """Compiles the kernel for ``sm_<arch>`` without a GPU, with the launcher's tile choice (a check
    that every variant lowers to a cubin and fits shared memory; ``.metadata.shared`` holds the bytes).
    Needs Triton compiled mode (not ``TRITON_INTERPRET``) and its bundled ptxas."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ty = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    signature = {"Q": f"*{ty}", "K": f"*{ty}", "V": f"*{ty}", "Out": f"*{ty}", "cu_seqlens": "*i32"}
    for name in ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_vt", "stride_vh", "stride_ot",
                 "stride_oh", "num_heads", "window"):
        signature[name] = "i32"
    signature.update(qk_scale="fp32", softcap="fp32")
    block_m, block_n, num_warps, num_stages = _blocks(head_dim, dtype)
    constants = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
                     BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, HAS_WINDOW=window, HAS_SOFTCAP=softcap,
                     IEEE=dtype == torch.float32, UPCAST=False)
    source = ASTSource(_attn_fwd_kernel, {**signature, **dict.fromkeys(constants, "constexpr")}, constants)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})
