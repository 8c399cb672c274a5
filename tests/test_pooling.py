"""ec.pool / ec.pool_varlen: the reference against sentence-transformers' Pooling, Normalize and
quantize_embeddings and against a float64 loop written from the definitions; the Triton kernels
(interpreted on the CPU) against the reference."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.sentence_transformer.modules.pooling import Pooling
from sentence_transformers.util.quantization import quantize_embeddings

import embedcore as ec
from embedcore.ops.pooling import MODES
from embedcore.ops.quantize import bucket_params

from helpers import assert_close, assert_codes_match

ST_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
FLOAT_PRECISIONS = ("float32", "float16", "bfloat16")


def _lengths_mask(lengths: list[int], T: int, side: str) -> torch.Tensor:
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "right":
            m[i, :n] = 1
        else:
            m[i, T - n:] = 1
    return m


def _batch(B: int, T: int, H: int, side: str, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g).to(dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g).tolist()
    lengths[0] = T  # one full row, and a length-1 row when there is room
    if B > 1:
        lengths[1] = 1
    return hidden, _lengths_mask(lengths, T, side)


def _loop_pool(hidden, attention, pooled, modes) -> np.ndarray:
    """float64 pooling written from the definitions, one row and one token at a time."""
    x = hidden.double().numpy()
    att = attention.bool().numpy()
    pm = pooled.bool().numpy()
    B, T, H = x.shape
    out = np.zeros((B, len(modes) * H))
    for b in range(B):
        idx = [t for t in range(T) if pm[b, t]]
        first_real = min(t for t in range(T) if att[b, t])
        for j, mode in enumerate(modes):
            if not idx:
                continue  # documented: a row that pools nothing is a zero vector
            rows = x[b, idx]
            if mode == "cls":
                v = x[b, idx[0]]
            elif mode == "lasttoken":
                v = x[b, idx[-1]]
            elif mode == "max":
                v = rows.max(0)
            elif mode == "mean":
                v = rows.mean(0)
            elif mode == "mean_sqrt_len_tokens":
                v = rows.sum(0) / np.sqrt(len(idx))
            else:
                w = np.array([t + 1 - (first_real if mode == "weightedmean" else 0) for t in idx], float)
                v = (rows * w[:, None]).sum(0) / w.sum()
            out[b, j * H:(j + 1) * H] = v
    return out


def _st_pool(hidden, mask, mode, prompt_length=None) -> torch.Tensor:
    features = {"token_embeddings": hidden, "attention_mask": mask}
    include_prompt = prompt_length is None
    if not include_prompt:
        features["prompt_length"] = prompt_length
    return Pooling(hidden.shape[-1], pooling_mode=mode, include_prompt=include_prompt)(features)[
        "sentence_embedding"
    ]


def _st_prompt_mask(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The pool mask of sentence-transformers' include_prompt=False (its own helper)."""
    return Pooling._exclude_prompt_from_mask(mask, prompt_length)


# ---------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", [*ST_MODES, ("cls", "mean", "max"), ("lasttoken", "weightedmean")])
def test_reference_matches_sentence_transformers(side, mode):
    hidden, mask = _batch(6, 9, 24, side, seed=1)
    expected = _st_pool(hidden, mask, mode)
    got = ec.pool(hidden, mask, mode)
    assert got.dtype == torch.float32
    assert_close(got, expected, atol=1e-5, name=f"{mode}/{side}")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", ST_MODES)
def test_reference_prompt_exclusion_matches_sentence_transformers(side, mode):
    hidden, mask = _batch(5, 10, 16, side, seed=2)
    mask[:, :] = 0
    lengths = [10, 4, 7, 9, 6]
    mask = _lengths_mask(lengths, 10, side)
    prompt_length = 3
    expected = _st_pool(hidden, mask, mode, prompt_length=prompt_length)
    pool_mask = _st_prompt_mask(mask, prompt_length)
    got = ec.pool(hidden, mask, mode, pool_mask=pool_mask)
    assert_close(got, expected, atol=1e-5, name=f"{mode}/{side}/prompt")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ST_MODES)
def test_reference_half_inputs_accumulate_in_fp32(dtype, mode):
    hidden, mask = _batch(4, 12, 40, "left", seed=3, dtype=dtype)
    # sentence-transformers on the exactly widened input is the fp32 answer for these tokens.
    expected = _st_pool(hidden.float(), mask, mode)
    assert_close(ec.pool(hidden, mask, mode), expected, atol=1e-5, name=f"{mode}/{dtype}")


@pytest.mark.parametrize("side", ["right", "left"])
def test_reference_matches_float64_loop_with_pool_mask(side):
    hidden, mask = _batch(7, 11, 10, side, seed=4)
    g = torch.Generator().manual_seed(5)
    pool_mask = (torch.rand(7, 11, generator=g) > 0.3).long()
    pool_mask[2] = 0  # a row that pools nothing
    pooled = mask.bool() & pool_mask.bool()
    got = ec.pool(hidden, mask, MODES, pool_mask=pool_mask)
    assert_close(got, _loop_pool(hidden, mask, pooled, MODES), atol=1e-5, name=side)
    assert torch.all(got[2] == 0)


def test_weightedmean_variants():
    hidden, right = _batch(4, 8, 6, "right", seed=6)
    left = torch.flip(right, [1])
    hidden_left = torch.zeros_like(hidden)
    for b in range(4):  # the same tokens, moved to the right end of the row
        n = int(right[b].sum())
        hidden_left[b, 8 - n:] = hidden[b, :n]
    rel_r = ec.pool(hidden, right, "weightedmean")
    rel_l = ec.pool(hidden_left, left, "weightedmean")
    assert_close(rel_l, rel_r, atol=1e-6, name="SGPT weights ignore the padding side")
    assert_close(ec.pool(hidden, right, "weightedmean_absolute"), rel_r, atol=1e-6, name="right padding")
    abs_l = ec.pool(hidden_left, left, "weightedmean_absolute")
    short = [b for b in range(4) if int(right[b].sum()) < 8]
    assert short and not torch.allclose(abs_l[short], rel_r[short], atol=1e-3)
    expected = _loop_pool(hidden_left, left, left, ("weightedmean_absolute",))
    assert_close(abs_l, expected, atol=1e-5, name="abs")


@pytest.mark.parametrize("td", [None, 5, 17])
@pytest.mark.parametrize("renorm", [False, True])
def test_reference_chain_matches_sentence_transformers(td, renorm):
    hidden, mask = _batch(5, 6, 32, "right", seed=7)
    features = Pooling(32, pooling_mode="mean")({"token_embeddings": hidden, "attention_mask": mask})
    expected = Normalize()(features)["sentence_embedding"]
    if td is not None:
        expected = expected[:, :td]
    if renorm:
        expected = F.normalize(expected, p=2, dim=-1)
    got = ec.pool(hidden, mask, normalize=True, truncate_dim=td, normalize_after_truncate=renorm)
    assert_close(got, expected, atol=1e-5, name="chain")
    if renorm or td is None:
        assert_close(got.norm(dim=1), np.ones(5), atol=1e-5, name="unit norm")


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_reference_quantized_matches_sentence_transformers(precision):
    hidden, mask = _batch(16, 7, 48, "left", seed=8)
    chain = F.normalize(_st_pool(hidden, mask, ("mean", "max")), dim=-1)[:, :60]
    ranges = ec.quantization_ranges(chain[:8])  # calibrated on half: the rest clip at the ends
    got = ec.pool(hidden, mask, ("mean", "max"), normalize=True, truncate_dim=60, precision=precision,
                  ranges=ranges)
    assert_codes_match(got.numpy(), chain.numpy(), precision, ranges.numpy(), atol=1e-6)
    # Without ranges (int8/uint8): sentence-transformers' rule, the ranges of these embeddings.
    emb = ec.pool(hidden, mask, ("mean", "max"), normalize=True, truncate_dim=60)
    got_self = ec.pool(hidden, mask, ("mean", "max"), normalize=True, truncate_dim=60, precision=precision)
    assert torch.equal(got_self, ec.quantize(emb, precision))


@pytest.mark.parametrize("precision", FLOAT_PRECISIONS)
def test_reference_float_precisions(precision):
    hidden, mask = _batch(3, 5, 8, "right", seed=9)
    got = ec.pool(hidden, mask, "mean", precision=precision)
    assert got.dtype == getattr(torch, precision)
    assert torch.equal(got, ec.pool(hidden, mask, "mean").to(got.dtype))


def test_varlen_reference_matches_padded_and_sentence_transformers():
    hidden, mask = _batch(5, 9, 12, "right", seed=10)
    lengths = mask.sum(1)
    cu = torch.zeros(6, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    packed = hidden[mask.bool()]
    for mode in MODES:
        padded = ec.pool(hidden, mask, mode)
        assert_close(ec.pool_varlen(packed, cu, int(lengths.max()), mode), padded, atol=1e-6, name=mode)
    for mode in ST_MODES:  # sentence-transformers' own flattened (FA2 unpadded) path
        features = {"token_embeddings": packed.unsqueeze(0), "cu_seq_lens_q": cu}
        expected = Pooling(12, pooling_mode=mode)(features)["sentence_embedding"]
        assert_close(ec.pool_varlen(packed, cu, 9, mode), expected, atol=1e-5, name=f"st-flat {mode}")
    pm = (torch.arange(packed.shape[0]) % 3 != 0).long()
    pm_padded = torch.zeros_like(mask)
    pm_padded[mask.bool()] = pm
    expected = ec.pool(hidden, mask, MODES, pool_mask=pm_padded)
    got = ec.pool_varlen(packed, cu, 9, MODES, pool_mask=pm)
    assert_close(got, expected, atol=1e-6, name="varlen pool_mask")


def test_reference_edge_shapes():
    # B = 1, T = 1, H = 1; an empty batch keeps its output shape and dtype.
    x = torch.randn(1, 1, 1)
    for mode in MODES:
        assert_close(ec.pool(x, torch.ones(1, 1), mode), x[:, 0], atol=1e-6, name=mode)
    empty = ec.pool(torch.zeros(0, 4, 10), torch.zeros(0, 4), ("mean", "cls"), precision="binary")
    assert empty.shape == (0, 3) and empty.dtype == torch.int8
    assert ec.pool(torch.zeros(0, 4, 10), None, precision="int8").shape == (0, 10)
    # No attention mask: every token is real.
    h, _ = _batch(2, 3, 4, "right")
    assert_close(ec.pool(h, None), h.mean(1), atol=1e-6, name="no mask")


def test_reference_batch_invariance():
    hidden, mask = _batch(8, 12, 64, "left", seed=22)
    batch = ec.pool(hidden, mask, MODES, normalize=True)
    alone = torch.cat([ec.pool(hidden[i:i + 1], mask[i:i + 1], MODES, normalize=True) for i in range(8)])
    assert_close(alone, batch, atol=1e-6, name="alone vs in batch")


def test_bad_input():
    hidden, mask = _batch(3, 4, 8, "right")
    with pytest.raises(ValueError, match=r"Invalid pooling mode 'avg'; valid: \('cls'"):
        ec.pool(hidden, mask, "avg")
    with pytest.raises(ValueError, match="twice"):
        ec.pool(hidden, mask, ("mean", "mean"))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(3, 4\)"):
        ec.pool(hidden, mask[:, :3])
    with pytest.raises(ValueError, match=r"pool_mask must have shape \(3, 4\)"):
        ec.pool(hidden, mask, pool_mask=mask[:2])
    with pytest.raises(ValueError, match="attention_mask must hold only 0 and 1"):
        ec.pool(hidden, mask * 2)
    with pytest.raises(TypeError, match="attention_mask must be a torch tensor"):
        ec.pool(hidden, mask.numpy())
    for td in (0, 9, -1):
        with pytest.raises(ValueError, match=r"truncate_dim must be in \[1, 8\]"):
            ec.pool(hidden, mask, truncate_dim=td)
    with pytest.raises(ValueError, match=r"truncate_dim must be in \[1, 16\]"):
        ec.pool(hidden, mask, ("mean", "max"), truncate_dim=17)
    with pytest.raises(TypeError, match="truncate_dim must be an int"):
        ec.pool(hidden, mask, truncate_dim=4.0)
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 5\)"):
        ec.pool(hidden, mask, truncate_dim=5, precision="int8", ranges=torch.zeros(2, 8))
    zero_row = mask.clone()
    zero_row[1] = 0
    with pytest.raises(ValueError, match="attention_mask row 1 has no real token"):
        ec.pool(hidden, zero_row)
    with pytest.raises(TypeError, match="hidden must be float32, float16 or bfloat16"):
        ec.pool(hidden.to(torch.int32), mask)
    with pytest.raises(ValueError, match=r"hidden must be \(B, T, H\)"):
        ec.pool(hidden[0], mask)
    with pytest.raises(ValueError, match="Invalid precision"):
        ec.pool(hidden, mask, precision="int4")
    with pytest.raises(TypeError, match="normalize must be a bool"):
        ec.pool(hidden, mask, normalize=1)
    with pytest.raises(ValueError, match="single embedding"):
        ec.pool(hidden[:1], mask[:1], precision="int8")
    nan_hidden = hidden.clone()
    nan_hidden[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        ec.pool(nan_hidden, mask, precision="int8", ranges=torch.stack([-torch.ones(8), torch.ones(8)]))
    packed = hidden[0]
    with pytest.raises(ValueError, match="sequence 1 has length 0"):
        ec.pool_varlen(packed, torch.tensor([0, 2, 2, 4], dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="end at total_tokens = 4"):
        ec.pool_varlen(packed, torch.tensor([0, 2, 3], dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="max_seqlen = 1 is below"):
        ec.pool_varlen(packed, torch.tensor([0, 2, 4], dtype=torch.int32), 1)
    with pytest.raises(TypeError, match="cu_seqlens must be int32"):
        ec.pool_varlen(packed, torch.tensor([0.0, 4.0]), 4)


# ------------------------------------------------------------------ Triton kernels (interpreted on CPU)

triton = pytest.importorskip("triton")
KERNEL_MODES = [*MODES, ("cls", "mean", "max"), ("lasttoken", "weightedmean", "mean_sqrt_len_tokens")]
# (precision, the atol of the float comparison before quantizing)
PRECISION_CASES = ["float32", "float16", "bfloat16", "int8", "uint8", "binary", "ubinary"]


def _kernel(*args, **kwargs):
    return ec.pool(*args, backend="triton", **kwargs)


def _check_precision_output(got, reference_float, precision, ranges, atol):
    if precision == "float32":
        assert_close(got, reference_float, atol=atol, name=precision)
    elif precision in ("float16", "bfloat16"):
        assert got.dtype == getattr(torch, precision)
        # One rounding to the output dtype: at most one unit in the last place apart from the reference's.
        ulp = 2.0**-10 if precision == "float16" else 2.0**-7
        assert_close(got.float(), reference_float, atol=atol, rtol=ulp, name=precision)
    else:
        assert_codes_match(got.numpy(), reference_float.numpy(), precision,
                           None if ranges is None else np.asarray(ranges), atol=atol)


def test_cpu_default_is_the_reference_not_the_interpreter(monkeypatch):
    import embedcore.kernels.pooling as kp

    def boom(*args, **kwargs):
        raise AssertionError("the interpreter ran for a CPU tensor without backend='triton'")

    monkeypatch.setattr(kp, "pool_fwd", boom)
    monkeypatch.setattr(kp, "pool_varlen_fwd", boom)
    monkeypatch.setattr(kp, "quantize_fwd", boom)
    hidden, mask = _batch(2, 3, 8, "right")
    ec.pool(hidden, mask, precision="binary")
    ec.pool_varlen(hidden[0], torch.tensor([0, 3], dtype=torch.int32), 3)
    ec.quantize(hidden[0], "int8")
    with pytest.raises(AssertionError, match="interpreter ran"):
        ec.pool(hidden, mask, backend="triton")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_kernel_matches_reference_fp32(side, mode):
    hidden, mask = _batch(5, 7, 37, side, seed=11)
    expected = ec.pool(hidden, mask, mode)
    assert_close(_kernel(hidden, mask, mode), expected, atol=1e-5, rtol=1e-5, name=str(mode))


def _naive_pool(hidden, mask, mode):
    """Naive PyTorch at the input dtype: sentence-transformers' modules (which keep the input dtype),
    and the absolute-weight mean written the same way."""
    out = []
    for m in (mode,) if isinstance(mode, str) else mode:
        if m == "weightedmean_absolute":
            w = (torch.arange(1, hidden.shape[1] + 1) * mask).to(hidden.dtype).unsqueeze(-1)
            out.append((hidden * w).sum(1) / w.sum(1))
        else:
            out.append(_st_pool(hidden, mask, m))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_kernel_half_error_at_most_twice_naive_torch(dtype, mode):
    hidden, mask = _batch(6, 9, 40, "left", seed=12, dtype=dtype)
    reference = ec.pool(hidden, mask, mode).double()  # fp32 accumulation of the same tokens
    naive = _naive_pool(hidden, mask, mode).double()
    err_naive = (naive - reference).abs().max().item()
    err_kernel = (_kernel(hidden, mask, mode, precision=str(dtype).removeprefix("torch.")).double()
                  - reference).abs().max().item()
    assert err_kernel <= 2 * err_naive, f"{mode}: kernel error {err_kernel:.3e} > 2 x naive {err_naive:.3e}"


@pytest.mark.parametrize("precision", PRECISION_CASES)
@pytest.mark.parametrize(
    ("normalize", "td", "renorm"),
    [(False, None, False), (True, None, False), (True, 21, True), (False, 40, True), (True, 33, False)],
)
def test_kernel_chain_and_precisions(precision, normalize, td, renorm):
    modes = ("mean", "max")
    hidden, mask = _batch(9, 6, 24, "left", seed=13)
    g = torch.Generator().manual_seed(14)
    pool_mask = (torch.rand(9, 6, generator=g) > 0.2).long()
    pool_mask[3] = 0  # a row that pools nothing: zero vector, zero codes' bucket
    kwargs = dict(pool_mask=pool_mask, normalize=normalize, truncate_dim=td, normalize_after_truncate=renorm)
    reference = ec.pool(hidden, mask, modes, **kwargs)
    ranges = None
    if precision in ("int8", "uint8"):
        ranges = ec.quantization_ranges(reference[:5])  # rows 5.. fall partly outside: clipping
    got = _kernel(hidden, mask, modes, precision=precision, ranges=ranges, **kwargs)
    _check_precision_output(got, reference, precision, ranges, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISION_CASES)
def test_kernel_split_path_matches_reference(precision):
    # block_h smaller than H: programs split H, the fp32 pooled rows go through the epilogue kernel.
    from embedcore.kernels.pooling import pool_fwd
    from embedcore.ops.pooling import pool_reference

    hidden, mask = _batch(4, 5, 50, "right", seed=15)
    att = mask.bool()
    modes = ("weightedmean", "cls", "lasttoken")
    ranges = None
    if precision in ("int8", "uint8"):
        ranges = ec.quantization_ranges(ec.pool(hidden, mask, modes, normalize=True, truncate_dim=131))
    args = (modes, True, 131, True, precision, ranges)
    buckets = None if ranges is None else bucket_params(torch.as_tensor(ranges))
    got = pool_fwd(hidden, att, None, *args[:5], buckets, block_h=16)
    reference = pool_reference(hidden, att, att, *args[:4], "float32", None)
    _check_precision_output(got, reference, precision, ranges, atol=1e-5)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_kernel_sign_bits_across_mode_boundary(precision):
    # H = 13: the byte holding dims 8..15 takes 5 bits of the first mode and 3 of the second.
    hidden, mask = _batch(5, 4, 13, "left", seed=16)
    reference = ec.pool(hidden, mask, ("max", "mean"), truncate_dim=23)
    got = _kernel(hidden, mask, ("max", "mean"), truncate_dim=23, precision=precision)
    _check_precision_output(got, reference, precision, None, atol=1e-5)


@pytest.mark.parametrize(("B", "T", "H"), [(3, 5, 384), (2, 4, 1000), (2, 3, 4096), (1, 1, 1), (1, 9, 7)])
def test_kernel_odd_shapes(B, T, H):
    hidden, mask = _batch(B, T, H, "left", seed=17)
    modes = ("cls", "mean", "max", "weightedmean")
    reference = ec.pool(hidden, mask, modes, normalize=True)
    assert_close(_kernel(hidden, mask, modes, normalize=True), reference, atol=1e-5, name=f"{B}x{T}x{H}")
    codes = _kernel(hidden, mask, modes, normalize=True, precision="ubinary")
    _check_precision_output(codes, reference, "ubinary", None, atol=1e-5)


def test_kernel_strided_inputs_and_batch_invariance():
    big, mask = _batch(6, 8, 20, "left", seed=18)
    hidden = big[:, 1:, :]  # rows and tokens strided, hidden dim contiguous
    m = mask[:, 1:].clone()
    m[:, -1] = 1
    reference = ec.pool(hidden, m, ("mean", "lasttoken"))
    got = _kernel(hidden, m, ("mean", "lasttoken"))
    assert_close(got, reference, atol=1e-5, name="strided")
    transposed = hidden.transpose(1, 2).contiguous().transpose(1, 2)  # hidden dim not contiguous
    assert torch.equal(_kernel(transposed, m, ("mean", "lasttoken")), got)
    alone = torch.cat([_kernel(hidden[i:i + 1], m[i:i + 1], ("mean", "lasttoken")) for i in range(6)])
    assert torch.equal(alone, got), "a row alone and inside the batch must give the same vector"


@pytest.mark.parametrize("with_pool_mask", [False, True])
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8", "binary"])
def test_kernel_varlen_matches_reference(with_pool_mask, precision):
    hidden, mask = _batch(6, 7, 19, "right", seed=19)
    lengths = mask.sum(1)
    cu = torch.zeros(7, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    packed = hidden[mask.bool()]
    pool_mask = None
    if with_pool_mask:
        pool_mask = (torch.arange(packed.shape[0]) % 4 != 1).to(torch.int64)
        pool_mask[cu[1]:cu[2]] = 0  # the length-1 sequence pools nothing
    kwargs = dict(pool_mask=pool_mask, normalize=True, truncate_dim=30)
    reference = ec.pool_varlen(packed, cu, 7, MODES, **kwargs)
    ranges = ec.quantization_ranges(reference) if precision == "int8" else None
    got = ec.pool_varlen(packed, cu, 7, MODES, precision=precision, ranges=ranges, backend="triton", **kwargs)
    _check_precision_output(got, reference, precision, ranges, atol=1e-5)
    from embedcore.kernels.pooling import pool_varlen_fwd

    buckets = None if ranges is None else bucket_params(torch.as_tensor(ranges))
    pooled = None if pool_mask is None else pool_mask.bool()
    split = pool_varlen_fwd(packed, cu, 7, pooled, MODES, True, 30, False, precision, buckets, block_h=8)
    _check_precision_output(split, reference, precision, ranges, atol=1e-5)


def test_kernel_empty_batch_and_bool_masks():
    out = _kernel(torch.zeros(0, 3, 16), torch.zeros(0, 3, dtype=torch.bool), precision="binary")
    assert out.shape == (0, 2) and out.dtype == torch.int8
    hidden, mask = _batch(3, 4, 9, "right", seed=20)
    got = _kernel(hidden, mask.bool(), "max", pool_mask=mask.bool())
    assert torch.equal(got, _kernel(hidden, mask, "max"))


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_kernel_equals_sentence_transformers(precision, dtype):
    g = torch.Generator().manual_seed(21)
    x = (torch.randn(11, 1000, generator=g) * torch.rand(1000, generator=g)).to(dtype)
    x[:, ::9] = 0.0
    ranges = ec.quantization_ranges(x[:6]) if precision in ("int8", "uint8") else None
    got = ec.quantize(x, precision, ranges=ranges, backend="triton")
    expected = ec.quantize(x, precision, ranges=ranges, backend="reference")
    assert torch.equal(got, expected)
    if precision not in ("float16", "bfloat16"):
        st_ranges = None if ranges is None else ranges.numpy()
        np.testing.assert_array_equal(got.numpy(), quantize_embeddings(x, precision, ranges=st_ranges))


# Compiled-mode check without a GPU: Triton lowers the kernels to PTX/cubin for sm_90 (its bundled
# ptxas), which catches what the interpreter lets through (non-constexpr globals, type mismatches
# between specializations, unsupported ops). Runs in a subprocess without TRITON_INTERPRET.
_COMPILE_SCRIPT = r"""
import sys
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import triton.backends.nvidia  # noqa: F401
except ImportError as exc:
    print(f"skip: {exc}")
    sys.exit(77)
import embedcore.kernels.pooling as kp

target = GPUTarget("cuda", 90, 32)
offs = ["OFF_CLS", "OFF_MAX", "OFF_MEAN", "OFF_MSQRT", "OFF_W", "OFF_WABS", "OFF_LAST"]
padded = {"x_ptr": "*bf16", "x_sb": "i64", "x_st": "i64", "att_ptr": "*i64", "att_sb": "i64", "att_st": "i64",
          "pm_ptr": "*u8", "pm_sb": "i64", "pm_st": "i64", "out_ptr": "*i8", "out_sb": "i64",
          "starts_ptr": "*fp32", "steps_ptr": "*fp32", "T": "i32", "H": "i32", "D_OUT": "i32"}
varlen = {"x_ptr": "*fp32", "x_st": "i64", "cu_ptr": "*i32", "pm_ptr": "*u8", "out_ptr": "*u8",
          "out_sb": "i64", "starts_ptr": "*fp32", "steps_ptr": "*fp32", "H": "i32", "D_OUT": "i32"}
every_mode = dict(zip(offs, [0, 384, 768, 1152, 1536, 1920, 2304]))
blocks = dict(BLOCK_S=512, BLOCK_T=16, BLOCK_H=512)
jobs = [
    (kp._pool_padded_kernel, padded, dict(every_mode, HAS_PM=True, NORMALIZE=True, NORM_AFTER=True, PREC=3,
                                          SPLIT=False, **blocks)),
    (kp._pool_padded_kernel, dict(padded, out_ptr="*fp32"),
     dict(every_mode, HAS_PM=False, NORMALIZE=False, NORM_AFTER=False, PREC=0, SPLIT=True, **blocks)),
    (kp._pool_varlen_kernel, varlen, dict(dict.fromkeys(offs, -1), OFF_MEAN=0, OFF_LAST=384, HAS_PM=False,
                                          NORMALIZE=True, NORM_AFTER=False, PREC=6, SPLIT=False, **blocks)),
    (kp._pool_epilogue_kernel, {"v_ptr": "*fp32", "v_sb": "i64", "out_ptr": "*bf16", "out_sb": "i64",
                                "starts_ptr": "*fp32", "steps_ptr": "*fp32", "D_POOL": "i32", "D_OUT": "i32"},
     dict(NORMALIZE=True, NORM_AFTER=True, PREC=2, BLOCK_D=1024)),
    (kp._quantize_kernel, {"x_ptr": "*fp16", "x_sb": "i64", "out_ptr": "*i8", "out_sb": "i64",
                           "starts_ptr": "*fp32", "steps_ptr": "*fp32", "D": "i32"},
     dict(PREC=5, BLOCK_D=512)),
]
for fn, signature, constexprs in jobs:
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=target)
    assert kernel.asm["ptx"], fn
print("compiled", len(jobs))
"""


def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode == 77:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "compiled 5" in r.stdout
