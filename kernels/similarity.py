"""Exact search fused with a block-level top-k (Triton): scores never leave registers.

Maths (the specification is ``embedcore.ops.search``: ``_torch_scores`` and ``_pack_keys``): for a
query ``q`` and corpus row ``c`` (index ``i``)

    float / int8:  dot = q . c     cos = q . c / max(|c|, 1e-12)  (q unit length, normalised before)
                   l2 = max(|q|^2 + |c|^2 - 2 q . c, 0)            (exact, unclamped, for int8 codes)
    asymmetric:    c = offset + scale * code per dimension (float queries against int8 codes)
    int8 cos:      q . c / max(|q|, 1e-12) / max(|c|, 1e-12) in float64, rounded to float32
    hamming:       popcount(q XOR c) over the packed bytes

and each score becomes the int64 key ``(ordered << 32) + (0xFFFFFFFF - i)``: ``ordered`` is the score
mapped to an order-preserving int32 (float bits with the magnitude flipped for negatives), negated
(``-ordered - 1``) for ``l2``/``hamming``. Keys are unique and their descending order is the ranking
(best score first, ties toward the lower index), so top-k on keys is exact.

Layout: grid (query blocks of ``BLOCK_Q``, corpus splits: about 4 programs per SM). A program walks
its split in tiles of ``BLOCK_N`` rows; each (BLOCK_Q, BLOCK_N) score tile is a ``tl.dot`` over
``BLOCK_D`` chunks of the dimension or an XOR + popcount on 32-bit words of packed bits. Products
per corpus format (fp32 queries for every float one):

    float32, asymmetric int8 (dequantised in registers): fp32 operands with ``tf32x3``, three TF32
        tensor-core products, about fp32 accuracy.
    float16, bfloat16: the corpus tile in its own dtype against the queries split on the host into
        terms of that dtype, q = q1 + q2 (+ q3) (``_split_queries``): 1 term when the queries are
        exact in it (fp16 queries against an fp16 corpus, dot or l2), else 2 for fp16 (queries kept
        to 2**-22 relative; each row first scaled by a power of two into fp16's range, undone on the
        scores) and 3 for bf16 (2**-24, fp32 rounding). 16-bit products are exact in fp32 and
        accumulate in fp32, so scores are fp32-accurate, and exact for integer-valued data. Corpus
        norms (cos, l2) are fp32 sums of the upcast 16-bit values.
    int8 x int8: exact int32 accumulation.

The program keeps the best ``KP`` keys per query (``KP`` = next power of two >= k <= 256, ``BLOCK_N
>= KP``) sorted in registers. A tile that beats the current KP-th key of some query is reduced to its
top KP by a bitonic top-k (the algorithm of ``tl.topk``, compare-exchange written as max/min over
length-2 axes) and merged: ``max(best, tile_top ascending)`` holds the top KP
of both as a bitonic sequence, which one bitonic merge sorts. Programs write (nq, splits, KP)
candidate keys (padding keys lose to every real key); ``torch.topk`` over a query's candidates gives
the exact top-k. Float programs also count non-finite scores (NaN/inf corpus rows, overflow).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from embedcore._spec import TRITON_MAX_K

# Largest k this path serves: the running list is KP int64 keys per query row in registers.
MAX_K = TRITON_MAX_K
_KIND = {"float": 0, "int8_asym": 0, "int8": 1, "hamming": 2}
_METRIC = {"dot": 0, "cos": 1, "l2": 2, "hamming": 3}
_EPS = tl.constexpr(1e-12)  # torch.nn.functional.normalize eps
# Loses to every real key: a real key's low word is 0xFFFFFFFF - index > 0 (index < 2**31 - 1).
_PAD_KEY = tl.constexpr(-(2**63))


@triton.jit
def _popcount(x):
    """Set bits of each uint32 (SWAR; the interpreter lacks libdevice's popc)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24).to(tl.int32)


@triton.jit
def _words(b, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """(ROWS, BLOCK_D) uint8 bytes -> (ROWS, BLOCK_D // 4) uint32 little-endian words."""
    shifts = (tl.arange(0, 4) * 8).to(tl.uint32)
    w = tl.reshape(b.to(tl.uint32), (ROWS, BLOCK_D // 4, 4)) << shifts[None, None, :]
    return tl.sum(w, axis=2)


@triton.jit
def _tile_scores(q_ptr, q_st, c_ptr, c_st, off_ptr, scale_ptr, offs_q, q_ok, rows, r_ok, dim,
                 KIND: tl.constexpr, METRIC: tl.constexpr, ASYM: tl.constexpr, TERMS: tl.constexpr,
                 UPCAST: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """(BLOCK_Q, BLOCK_N) dot products (fp32, int32) or Hamming distances (int32), and the corpus
    rows' squared norms (BLOCK_N,) (zero for dot and hamming)."""
    if KIND == 0:
        acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.float32)
        cn = tl.zeros((BLOCK_N,), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.int32)
        cn = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        q_at = q_ptr + offs_q[:, None] * q_st + d[None, :]
        q_mask = q_ok[:, None] & d_ok[None, :]
        if KIND == 2:
            q = tl.load(q_at, mask=q_mask, other=0)
            c_mask = r_ok[:, None] & d_ok[None, :]
            c = tl.load(c_ptr + rows[:, None] * c_st + d[None, :], mask=c_mask, other=0)
            x = _words(q, BLOCK_Q, BLOCK_D)[:, None, :] ^ _words(c, BLOCK_N, BLOCK_D)[None, :, :]
            acc += tl.sum(_popcount(x), axis=2)
        else:
            # The corpus tile transposed, (BLOCK_D, BLOCK_N): the dot's right operand.
            c_mask = d_ok[:, None] & r_ok[None, :]
            c = tl.load(c_ptr + rows[None, :] * c_st + d[:, None], mask=c_mask, other=0)
            if TERMS > 0:
                # 16-bit corpus in its own dtype against the query terms (row i: TERMS runs of dim):
                # every product is exact in fp32, accumulated in fp32.
                c_dot = c.to(tl.float32) if UPCAST else c
                for t in tl.static_range(TERMS):
                    q = tl.load(q_at + t * dim, mask=q_mask, other=0)
                    acc = tl.dot(q.to(tl.float32) if UPCAST else q, c_dot, acc)
                if METRIC != 0:
                    cf = c.to(tl.float32)
                    cn += tl.sum(cf * cf, axis=0)
            elif KIND == 0:
                q = tl.load(q_at, mask=q_mask, other=0)
                c = c.to(tl.float32)
                if ASYM:
                    scale = tl.load(scale_ptr + d, mask=d_ok, other=0.0)
                    offset = tl.load(off_ptr + d, mask=d_ok, other=0.0)
                    c = tl.where(c_mask, c * scale[:, None] + offset[:, None], 0.0)
                acc = tl.dot(q, c, acc, input_precision="tf32x3")
                if METRIC != 0:
                    cn += tl.sum(c * c, axis=0)
            else:
                q = tl.load(q_at, mask=q_mask, other=0)
                acc = tl.dot(q, c, acc)
                if METRIC != 0:
                    ci = c.to(tl.int32)
                    cn += tl.sum(ci * ci, axis=0)
    return acc, cn


@triton.constexpr_function
def _log2(n):
    return n.bit_length() - 1


@triton.jit
def _side(NDIM: tl.constexpr, j: tl.constexpr):
    """0/1 position along hypercube axis ``j`` (counted from the innermost) of a rank-NDIM tensor."""
    return tl.reshape(tl.arange(0, 2), [1] * (NDIM - 1 - j) + [2] + [1] * j)


@triton.jit
def _merge_stages(h, stage: tl.constexpr, DESC: tl.constexpr, ALTERNATE: tl.constexpr):
    """Bitonic merge over the ``stage`` innermost axes of ``h`` (BLOCK_Q, 2, ..., 2): sorts bitonic
    runs of 2**stage descending (DESC) or ascending, flipping direction along the next axis
    (ALTERNATE). Compare-exchange as max/min over a length-2 axis: plain reductions on the GPU and
    in numpy for the interpreter (``tl.sort``'s XOR-sum exchange runs element by element there)."""
    NDIM: tl.constexpr = len(h.shape)
    if ALTERNATE:
        down = _side(NDIM, stage)
        if DESC:
            down = 1 - down
    else:
        down: tl.constexpr = 1 if DESC else 0
    for i in tl.static_range(stage):  # axis stage - 1 - i from the innermost, outer axes first
        hi = tl.max(h, axis=NDIM - stage + i, keep_dims=True)
        lo = tl.min(h, axis=NDIM - stage + i, keep_dims=True)
        h = tl.where((_side(NDIM, stage - 1 - i) ^ down) != 0, hi, lo)
    return h


@triton.jit
def _top_sorted(x, KP: tl.constexpr, DESC: tl.constexpr):
    """The KP largest keys of each row of ``x`` (BLOCK_Q, BLOCK_N), sorted descending (DESC) or
    ascending; KP <= BLOCK_N, both powers of two. Bitonic sort of runs of KP in alternating
    directions, then halve by the maxima of neighbouring runs (bitonic) and re-merge, as ``tl.topk``."""
    BLOCK_Q: tl.constexpr = x.shape[0]
    LOG_N: tl.constexpr = _log2(x.shape[1])
    LOG_K: tl.constexpr = _log2(KP)
    h = tl.reshape(x, [BLOCK_Q] + [2] * LOG_N)
    for stage in tl.static_range(1, LOG_K + 1):
        h = _merge_stages(h, stage, DESC, stage < LOG_N)
    for i in tl.static_range(LOG_K + 1, LOG_N + 1):
        h = tl.max(h, axis=len(h.shape) - 1 - LOG_K)
        h = _merge_stages(h, LOG_K, DESC, i < LOG_N)
    return tl.reshape(h, (BLOCK_Q, KP))


@triton.jit
def _merge_top(best, top_asc, KP: tl.constexpr):
    """Top KP of ``best`` (BLOCK_Q, KP) descending and ``top_asc`` (BLOCK_Q, KP) ascending, descending:
    their elementwise maximum holds the top KP as a bitonic sequence, which one merge sorts."""
    BLOCK_Q: tl.constexpr = best.shape[0]
    h = tl.reshape(tl.maximum(best, top_asc), [BLOCK_Q] + [2] * _log2(KP))
    return tl.reshape(_merge_stages(h, _log2(KP), True, False), (BLOCK_Q, KP))


@triton.jit
def _ordered_float(s):
    """fp32 scores -> order-preserving int32 (``-0.0`` and ``0.0`` give one value)."""
    bits = tl.where(s == 0.0, 0.0, s).to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit(do_not_specialize=["nq", "n", "rows_per_split"])
def _search_kernel(q_ptr, q_st, qn_ptr, qs_ptr, c_ptr, c_st, off_ptr, scale_ptr, out_ptr, bad_ptr,
                   nq, n, dim, rows_per_split,
                   KIND: tl.constexpr, METRIC: tl.constexpr, ASYM: tl.constexpr, TERMS: tl.constexpr,
                   UPCAST: tl.constexpr, KP: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """queries (nq, dim) fp32 (KIND 0: float / asymmetric int8) or int8/uint8 codes and bytes; with
    TERMS > 0 (fp16/bf16 corpora) (nq, TERMS * dim) in the corpus dtype, the terms of the scaled
    queries, and (fp16) qs (nq,) fp32, the power of two that undoes the scaling. Query squared norms
    qn (nq,) fp32/int32 (read for l2 and int8 cos), corpus (n, dim) fp32/fp16/bf16/int8/uint8,
    offset/scale (dim,) fp32 (ASYM). UPCAST (the interpreter, bf16) multiplies the 16-bit tiles as
    fp32. Writes candidate keys (nq, splits, KP) int64 and the count of non-finite scores per
    program, bad (query blocks * splits,) int32. Grid (query blocks, splits)."""
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    offs_q = (pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
    q_ok = offs_q < nq
    if METRIC == 2 or (KIND == 1 and METRIC == 1):
        qn = tl.load(qn_ptr + offs_q, mask=q_ok, other=0)
    SCALED: tl.constexpr = TERMS > 0 and c_ptr.dtype.element_ty == tl.float16
    if SCALED:
        q_unscale = tl.load(qs_ptr + offs_q, mask=q_ok, other=1.0)
    start = split.to(tl.int64) * rows_per_split
    end = tl.minimum(start + rows_per_split, n)
    best = tl.full((BLOCK_Q, KP), _PAD_KEY, dtype=tl.int64)
    if KIND == 0:
        bad = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.int32)
    for n0 in range(start, end, BLOCK_N):
        rows = tl.arange(0, BLOCK_N).to(tl.int64) + n0
        r_ok = rows < end
        acc, cn = _tile_scores(q_ptr, q_st, c_ptr, c_st, off_ptr, scale_ptr, offs_q, q_ok, rows, r_ok, dim,
                               KIND, METRIC, ASYM, TERMS, UPCAST, BLOCK_Q, BLOCK_N, BLOCK_D)
        if KIND == 0:
            s = acc
            if SCALED:  # times a power of two: exact
                s = s * q_unscale[:, None]
            if METRIC == 1:
                s = tl.math.div_rn(s, tl.maximum(tl.math.sqrt_rn(cn), _EPS)[None, :])
            elif METRIC == 2:
                # NaN stays NaN (torch's clamp): the non-finite count must see it.
                s = tl.maximum(qn[:, None] + cn[None, :] - 2.0 * s, 0.0, propagate_nan=tl.PropagateNan.ALL)
            bad += (q_ok[:, None] & r_ok[None, :] & ~(tl.abs(s) < float("inf"))).to(tl.int32)
            ordered = _ordered_float(s)
        elif KIND == 1 and METRIC == 1:
            # float64 as the torch path: products, norms and both divisions of exact integers.
            qs = tl.maximum(tl.sqrt(qn.to(tl.float64)), _EPS)
            cs = tl.maximum(tl.sqrt(cn.to(tl.float64)), _EPS)
            ordered = _ordered_float((acc.to(tl.float64) / qs[:, None] / cs[None, :]).to(tl.float32))
        elif METRIC == 2:
            ordered = qn[:, None] + cn[None, :] - 2 * acc
        else:
            ordered = acc
        ordered = ordered.to(tl.int64)
        if METRIC >= 2:  # smallest first
            ordered = -ordered - 1
        keys = (ordered << 32) + (0xFFFFFFFF - rows[None, :])
        keys = tl.where(r_ok[None, :], keys, _PAD_KEY)
        # Most tiles of a long split hold nothing better than the KP-th key of any query: skip them.
        worst = tl.min(best, axis=1)
        if tl.sum((keys > worst[:, None]).to(tl.int32)) > 0:
            best = _merge_top(best, _top_sorted(keys, KP, False), KP)
    out = out_ptr + (offs_q[:, None] * n_splits + split) * KP + tl.arange(0, KP)[None, :]
    tl.store(out, best, mask=q_ok[:, None])
    if KIND == 0:
        tl.store(bad_ptr + pid_q * n_splits + split, tl.sum(bad))


# (BLOCK_Q, num_warps) per format and KP class (<= 64, 128, 256): sm_90 builds of dims and strides that
# are multiples of 16 stay within 255 registers without spills (ptxas figures, cuobjdump): about
# 180-210 registers for float (tf32x3 keeps three operand splits), 125-240 for fp16/bf16 query terms,
# 160-225 for int8, 100-250 for bits.
_TILES = {
    "float": ((32, 8), (16, 8), (16, 8)),
    "int8": ((32, 4), (32, 8), (16, 8)),
    "hamming": ((16, 4), (16, 4), (16, 8)),
}
# Left to itself, ptxas fits some fp16/bf16 query-term builds into 128 registers (two blocks per SM)
# by spilling (sm_90 one-term l2, sm_80 three-term dot); .maxnreg 255 lets them take what they need.
_TERMS_MAXNREG = 255


def _blocks(kind: str, kp: int) -> tuple[int, int, int, int]:
    """(BLOCK_Q, BLOCK_N, BLOCK_D, num_warps). BLOCK_N = max(64, KP): a tile yields its top KP."""
    family = "float" if kind == "int8_asym" else kind
    block_q, num_warps = _TILES[family][0 if kp <= 64 else (1 if kp == 128 else 2)]
    # dim chunk: 32 floats (128 B of an fp32 row; 64 fp16/bf16 take the l2 build at KP 256 to 255
    # registers), 64 int8 codes, 16 bytes = four 32-bit words of bits
    block_d = {"float": 32, "int8": 64, "hamming": 16}[family]
    return block_q, max(64, kp), block_d, num_warps


# Query terms in the dtype of a 16-bit float corpus: fp32's 24-bit significand in pieces of 11 (fp16;
# two reach 22 bits) or 8 (bf16; three reach 24).
_MAX_TERMS = {torch.float16: 2, torch.bfloat16: 3}


def query_terms(q: Any, dtype: Any) -> int:
    """How many terms of the corpus ``dtype`` carry the float32 queries ``q`` (scaled first for
    float16, see ``_fp16_scale``): 0 for corpora other than float16/bfloat16 (fp32 products with
    tf32x3), 1 when every query value is exact in ``dtype`` (e.g. float16 queries against a float16
    corpus with dot or l2), else 2 for float16 and 3 for bfloat16."""
    if dtype not in _MAX_TERMS:
        return 0
    return 1 if torch.equal(q.to(dtype).float(), q) else _MAX_TERMS[dtype]


def _pow2(e: Any) -> Any:
    """2.0 ** e as float32 for int32 e in [-126, 127], built from the exponent bits: exact."""
    return ((e + 127) << 23).view(torch.float32)


def _fp16_scale(q: Any) -> tuple[Any, Any]:
    """(q * 2**s, 2**-s) per query row, s putting the row's largest |value| in [2**14, 2**15): the
    first fp16 term cannot overflow (65504), and a residual that underflows fp16's normal range loses
    at most 2**-25 absolute (half its subnormal step), 2**-39 of the row's largest value. s stops at
    126 (float32's range): rows whose largest value is below 2**-111 are scaled less."""
    _, e = torch.frexp(q.abs().amax(1))  # largest |value| < 2**e
    s = (15 - e).clamp(max=126)
    return q * _pow2(s)[:, None], _pow2(-s)


def _split_queries(q: Any, dtype: Any, terms: int) -> Any:
    """(nq, terms * dim) ``dtype``: q = q1 + q2 (+ q3) + error, q1 = q rounded to ``dtype``, each
    next term the rounded residual, which is exact in float32. Rounding to 11 (fp16) / 8 (bf16)
    significant bits leaves a residual of at most 2**-11 / 2**-8 of the value per term: two fp16
    terms are off by at most 2**-22 relative, three bf16 terms by 2**-24 (float32's rounding). A
    residual below the normal range loses at most half a subnormal step: 2**-25 for fp16 (see
    ``_fp16_scale``), 2**-134 for bf16, whose exponent range is float32's."""
    parts = [q.to(dtype)]
    for _ in range(terms - 1):
        q = q - parts[-1].float()
        parts.append(q.to(dtype))
    return torch.cat(parts, dim=1)


def _splits(nq_blocks: int, n: int, block_n: int, device: torch.device) -> int:
    """Corpus splits: about 4 programs per SM on a GPU (a few on the interpreter), never an empty
    split, at most the grid's 65535 on axis 1."""
    target = 4
    if device.type == "cuda":
        target *= torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(target, nq_blocks), triton.cdiv(n, block_n), 65535))


def search_fwd(q: Any, corpus: Any, k: int, metric: str, kind: str, affine: tuple[Any, Any] | None = None,
               *, splits: int | None = None) -> tuple[Any, Any]:
    """Top-k keys of the fused scan. Arguments checked by ``embedcore.ops.search.search``.

    Args:
        q: (nq, dim) queries: float32 (unit length for ``cos``) for ``float``/``int8_asym``, int8 for
            ``int8``, uint8/int8 packed bits for ``hamming``.
        corpus: (N, dim) float32/float16/bfloat16 (``float``), int8 (``int8``, ``int8_asym``) or
            uint8/int8 packed bits (``hamming``), on q's device.
        k: 1 <= k <= min(N, MAX_K).
        metric: ``dot``, ``cos``, ``l2`` or ``hamming``. kind: as ``embedcore._spec.search_kind``.
        affine: (offset, scale) float32 (dim,) tensors for ``int8_asym``: code c stands for
            offset + scale * c.
        splits: corpus splits (grid axis 1); None picks them.

    Returns:
        (keys, bad): keys (nq, k) int64, best first, ``_pack_keys``' encoding; bad an int32 tensor
        counting non-finite float scores (None for integer formats).
    """
    if not 1 <= k <= MAX_K:
        raise ValueError(f"the Triton search serves 1 <= k <= {MAX_K}, got k={k}")
    q = q.contiguous()
    corpus = corpus.contiguous()
    if kind == "hamming":  # binary (int8) codes: XOR cancels the shared -128 shift
        q, corpus = q.view(torch.uint8), corpus.view(torch.uint8)
    nq, dim = q.shape
    n = corpus.shape[0]
    if nq == 0:
        return torch.empty((0, k), dtype=torch.int64, device=q.device), None
    kp = triton.next_power_of_2(k)
    block_q, block_n, block_d, num_warps = _blocks(kind, kp)
    if metric == "l2" or (kind == "int8" and metric == "cos"):
        qi = q.to(torch.float32 if kind != "int8" else torch.int32)
        qn = (qi * qi).sum(1, dtype=qi.dtype)
    else:
        qn = q  # placeholder pointer, not read
    qs, terms = q, 0  # fp32 queries (tf32x3); qs a placeholder pointer unless fp16 terms are scaled
    if kind == "float" and corpus.dtype in _MAX_TERMS:
        if corpus.dtype == torch.float16:
            q, qs = _fp16_scale(q)
        terms = query_terms(q, corpus.dtype)
        q = _split_queries(q, corpus.dtype, terms)
    offset, scale = affine if affine is not None else (q, q)
    nq_blocks = triton.cdiv(nq, block_q)
    if splits is None:
        splits = _splits(nq_blocks, n, block_n, corpus.device)
    rows_per_split = triton.cdiv(triton.cdiv(n, splits), block_n) * block_n
    splits = triton.cdiv(n, rows_per_split)
    cand = torch.empty((nq, splits, kp), dtype=torch.int64, device=q.device)
    bad = torch.zeros((nq_blocks * splits,), dtype=torch.int32, device=q.device)
    _search_kernel[(nq_blocks, splits)](
        q, q.stride(0), qn, qs, corpus, corpus.stride(0), offset, scale, cand, bad, nq, n, dim,
        rows_per_split, KIND=_KIND[kind], METRIC=_METRIC[metric], ASYM=affine is not None, TERMS=terms,
        # Triton's interpreter multiplies bf16 tiles as their raw uint16 bits: there they go in as
        # fp32 (exact), which is what the tensor cores compute.
        UPCAST=terms > 0 and not corpus.is_cuda and corpus.dtype == torch.bfloat16,
        KP=kp, BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
        maxnreg=_TERMS_MAXNREG if terms else None,
    )
    keys = torch.topk(cand.view(nq, splits * kp), k, dim=1, largest=True, sorted=True).values
    return keys, (bad.sum() if _KIND[kind] == 0 else None)


def compile_ahead(arch: int, kind: str, metric: str, corpus_dtype: str, k: int, aligned: bool = True,
                  terms: int | None = None) -> Any:
    """Compiles the kernel for ``sm_<arch>`` without a GPU, with the launcher's tile choice (a check
    that each specialisation lowers and fits shared memory; ``.metadata.shared`` holds the bytes).
    ``corpus_dtype`` is a Triton pointer type name (``fp32``, ``fp16``, ``bf16``, ``i8``, ``u8``);
    ``aligned`` compiles the specialisation the launcher gets for dims and row strides that are
    multiples of 16 (vector loads). ``terms``: query terms of a ``float`` fp16/bf16 corpus (1 or
    ``query_terms``' most, the default). Needs Triton compiled mode (not ``TRITON_INTERPRET``) and
    its bundled ptxas."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kp = triton.next_power_of_2(k)
    if terms is None:
        sixteen = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(corpus_dtype)
        terms = _MAX_TERMS[sixteen] if kind == "float" and sixteen is not None else 0
    block_q, block_n, block_d, num_warps = _blocks(kind, kp)
    q_ty = corpus_dtype if terms else {0: "fp32", 1: "i8", 2: "u8"}[_KIND[kind]]
    signature = {"q_ptr": f"*{q_ty}", "q_st": "i64", "qn_ptr": "*i32" if kind == "int8" else "*fp32",
                 "qs_ptr": "*fp32", "c_ptr": f"*{corpus_dtype}", "c_st": "i64", "off_ptr": "*fp32",
                 "scale_ptr": "*fp32", "out_ptr": "*i64", "bad_ptr": "*i32", "nq": "i32", "n": "i32",
                 "dim": "i32", "rows_per_split": "i32"}
    constants = dict(KIND=_KIND[kind], METRIC=_METRIC[metric], ASYM=kind == "int8_asym", TERMS=terms,
                     UPCAST=False, KP=kp, BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_D=block_d)
    names = list(signature)
    divisible = [n for n in names if n.endswith("_ptr")] + (["q_st", "c_st", "dim"] if aligned else [])
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    signature.update(dict.fromkeys(constants, "constexpr"))
    source = ASTSource(_search_kernel, signature, constants, attrs)
    options = {"num_warps": num_warps, "maxnreg": _TERMS_MAXNREG if terms else None}
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
