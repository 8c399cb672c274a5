"""ec.attention: the Triton kernel (interpreter on the CPU) and the SDPA path against the fp32
materialised reference; padded form, helpers and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import embedcore as ec
from embedcore import _backend
from embedcore.ops.attention import KERNEL_HEAD_DIMS, attention_reference, pad_input, unpad_input

from helpers import assert_close


def cu(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def qkv(total: int, hq: int, hkv: int, d: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(total, h, d, generator=g).to(dtype) for h in (hq, hkv, hkv))


def naive(q, k, v, cu_seqlens, causal=False, window=None, softcap=None) -> torch.Tensor:
    """Materialised attention entirely in q's dtype (what plain PyTorch code does)."""
    out = torch.zeros_like(q)
    rep = q.shape[1] // k.shape[1]
    bounds = cu_seqlens.tolist()
    for s, e in itertools.pairwise(bounds):
        if e == s:
            continue
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
        ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
        logits = (qs @ ks.transpose(1, 2)) * (1.0 / math.sqrt(q.shape[-1]))
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        i = torch.arange(e - s, device=q.device)[:, None]
        j = torch.arange(e - s, device=q.device)[None, :]
        hide = torch.zeros(e - s, e - s, dtype=torch.bool, device=q.device)
        if causal:
            hide |= j > i
        if window is not None:
            hide |= (i - j).abs() >= window
        out[s:e] = (torch.softmax(logits.masked_fill(hide, float("-inf")), -1) @ vs).transpose(0, 1)
    return out


OPTIONS = [
    dict(causal=False),
    dict(causal=True),
    dict(causal=False, window=9),
    dict(causal=True, window=9),
    dict(causal=False, softcap=2.0),
    dict(causal=True, window=20, softcap=5.0),
]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize(
    "lengths, hq, hkv",
    [([1, 7, 97, 64], 4, 2), ([97], 2, 2), ([13, 0, 70, 1], 4, 1)],
    ids=["mixed-gqa", "B1-mha", "empty-mqa"],
)
def test_kernel_fp32_matches_reference(lengths, hq, hkv, opts):
    q, k, v = qkv(sum(lengths), hq, hkv, 64, seed=len(lengths))
    c = cu(lengths)
    out = ec.attention(q, k, v, c, **opts)
    ref = attention_reference(q, k, v, c, **opts)
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert_close(out, ref, atol=2e-5, rtol=1e-5, name="attention")


@pytest.mark.parametrize("d", KERNEL_HEAD_DIMS)
def test_kernel_every_head_dim(d):
    lengths = [3, 17]
    q, k, v = qkv(sum(lengths), 2, 1, d, seed=d)
    out = ec.attention(q, k, v, cu(lengths), causal=d % 64 == 0, scale=0.3)
    ref = attention_reference(q, k, v, cu(lengths), causal=d % 64 == 0, scale=0.3)
    assert_close(out, ref, atol=2e-5, rtol=1e-5, name=f"d={d}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opts", [dict(causal=False), dict(causal=True, window=9, softcap=3.0)])
def test_kernel_low_precision_within_twice_naive_error(dtype, opts):
    lengths = [5, 97, 30]
    q32, k32, v32 = qkv(sum(lengths), 4, 2, 64, seed=11)
    q, k, v = (x.to(dtype) for x in (q32, k32, v32))
    c = cu(lengths)
    # Both against fp32 attention of the same (rounded) inputs.
    ref = attention_reference(q, k, v, c, **opts)
    out = ec.attention(q, k, v, c, **opts)
    assert out.dtype == dtype
    err_kernel = float((out.float() - ref).abs().max())
    err_naive = float((naive(q, k, v, c, **opts).float() - ref).abs().max())
    assert err_kernel <= 2 * err_naive + 1e-4, (err_kernel, err_naive)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_form_equals_varlen(backend, side, monkeypatch):
    if backend == "torch":
        monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    lengths = [9, 0, 4, 1]
    width = 11
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(4, width, h, 32, generator=g) for h in (4, 2, 2))
    mask = torch.zeros(4, width, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if side == "left":
            mask[b, width - n :] = True
        else:
            mask[b, :n] = True
    out = ec.attention(q, k, v, causal=True, attention_mask=mask)
    assert out.shape == q.shape
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask])), "padded positions must be zero"
    ref = attention_reference(q[mask], k[mask], v[mask], cu(lengths), causal=True)
    assert_close(out[mask], ref, atol=2e-5, rtol=1e-5, name="padded form")
    # Without a mask every position is real.
    full = ec.attention(q, k, v)
    assert_close(full.reshape(-1, 4, 32), attention_reference(
        q.reshape(-1, 4, 32), k.reshape(-1, 2, 32), v.reshape(-1, 2, 32), cu([width] * 4)
    ), atol=2e-5, rtol=1e-5, name="unmasked padded form")


@pytest.mark.parametrize("opts", OPTIONS[:5], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_cpu_sdpa_path_matches_reference(opts, monkeypatch):
    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    lengths = [1, 7, 97, 7, 0]
    q, k, v = qkv(sum(lengths), 4, 2, 40, seed=5)  # head_dim 40: no kernel takes it; SDPA does
    out = ec.attention(q, k, v, cu(lengths), **opts)
    assert_close(out, attention_reference(q, k, v, cu(lengths), **opts), atol=2e-5, rtol=1e-5, name="sdpa")


def test_unsupported_head_dim_and_float64_take_the_cpu_path():
    lengths = [5, 6]
    q, k, v = qkv(11, 2, 2, 40)
    ref = attention_reference(q, k, v, cu(lengths))
    assert_close(ec.attention(q, k, v, cu(lengths)), ref, atol=2e-5, rtol=1e-5, name="d=40")
    out64 = ec.attention(q.double(), k.double(), v.double(), cu(lengths))
    assert out64.dtype == torch.float64
    assert_close(out64, ref, atol=1e-5, rtol=1e-5, name="float64")


def test_single_sequence_default_and_empty_input():
    q, k, v = qkv(7, 2, 2, 32)
    assert_close(ec.attention(q, k, v), attention_reference(q, k, v, cu([7])), atol=2e-5, rtol=1e-5)
    e = torch.empty(0, 2, 32)
    assert ec.attention(e, e, e).shape == (0, 2, 32)


def test_length_one_attends_to_itself_only():
    q, k, v = qkv(3, 1, 1, 32)
    out = ec.attention(q, k, v, cu([1, 1, 1]))
    assert_close(out, v, atol=1e-6, name="length-1 output is its value")


def test_kernel_is_forward_only():
    if _backend.triton_mode() != "interpreted":
        pytest.skip("CPU tensors reach the kernel only under TRITON_INTERPRET=1 (see test_cuda_kernel)")
    q, k, v = qkv(10, 4, 2, 32)
    with pytest.raises(ValueError, match="forward-only"):
        ec.attention(q.requires_grad_(), k, v)
    with torch.no_grad():
        assert ec.attention(q, k, v).shape == q.shape


def test_unpad_pad_roundtrip():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]])
    flat, idx, c, longest = unpad_input(x, mask)
    assert flat.shape == (5, 3) and c.dtype == torch.int32 and c.tolist() == [0, 3, 5] and longest == 3
    assert torch.equal(flat, x[mask.bool()])
    back = pad_input(flat, idx, 2, 5)
    assert torch.equal(back, x * mask[..., None])


def test_bad_input():
    q, k, v = qkv(10, 4, 2, 32)
    with pytest.raises(TypeError, match="cu_seqlens must be int32"):
        ec.attention(q, k, v, cu([4, 6]).long())
    with pytest.raises(ValueError, match="non-decreasing"):
        ec.attention(q, k, v, torch.tensor([0, 6, 4, 10], dtype=torch.int32))
    with pytest.raises(ValueError, match="end at total_tokens=10"):
        ec.attention(q, k, v, cu([4, 5]))
    with pytest.raises(ValueError, match="multiple"):
        ec.attention(q, k[:, :1].expand(10, 3, 32).contiguous(), v[:, :1].expand(10, 3, 32).contiguous())
    with pytest.raises(TypeError, match="share a dtype"):
        ec.attention(q.half(), k, v)
    with pytest.raises(TypeError, match="q has dtype"):
        ec.attention(q.int(), k.int(), v.int())
    with pytest.raises(ValueError, match="window"):
        ec.attention(q, k, v, window=0)
    with pytest.raises(ValueError, match="softcap"):
        ec.attention(q, k, v, softcap=-1.0)
    with pytest.raises(ValueError, match="max_seqlen"):
        ec.attention(q, k, v, cu([4, 6]), max_seqlen=5)
    with pytest.raises(ValueError, match="3-D"):
        ec.attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        ec.attention(q[None], k[None], v[None], attention_mask=torch.ones(1, 9))
    with pytest.raises(ValueError, match="varlen"):
        ec.attention(q[None], k[None], v[None], cu([10]))
    with pytest.raises(TypeError, match="causal"):
        ec.attention(q, k, v, causal=1)


_COMPILE_SCRIPT = """
import torch
from embedcore.kernels.attention import compile_ahead
for arch, dtype, d, causal, window, softcap in [
    (80, torch.bfloat16, 128, True, True, True), (80, torch.float32, 256, False, True, False),
    (90, torch.float16, 256, False, False, False), (90, torch.bfloat16, 64, False, False, True),
]:
    k = compile_ahead(arch, dtype, d, causal, window, softcap, group=4)
    assert "cubin" in k.asm, (arch, dtype, d)
    print(arch, dtype, d, k.metadata.shared)
"""


def test_kernel_compiles_for_gpus():
    """The GPU build of the kernel (no GPU needed): lowers to sm_80 and sm_90 cubins whose shared memory
    fits the ~99 KB of every CUDA GPU since Ampere."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia.compiler", reason="Triton without its CUDA backend")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    shared = [int(line.split()[-1]) for line in run.stdout.splitlines()]
    assert len(shared) == 4 and max(shared) <= 99 * 1024, run.stdout


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", KERNEL_HEAD_DIMS)
def test_cuda_kernel(dtype, d):
    lengths = [1, 300, 77, 1024]
    q, k, v = (x.cuda() for x in qkv(sum(lengths), 8, 2, d, dtype=dtype, seed=d))
    c = cu(lengths).cuda()
    for opts in OPTIONS:
        ref = attention_reference(q, k, v, c, **opts)
        err_kernel = float((ec.attention(q, k, v, c, **opts).float() - ref).abs().max())
        err_naive = float((naive(q, k, v, c, **opts).float() - ref).abs().max())
        assert err_kernel <= 2 * err_naive + 1e-4, (opts, err_kernel, err_naive)
    with pytest.raises(ValueError, match="forward-only"):
        ec.attention(q.requires_grad_(), k, v, c)


@pytest.mark.cuda
def test_cuda_rejects_head_dim_the_kernel_lacks():
    q, k, v = (x.cuda() for x in qkv(8, 2, 2, 40))
    with pytest.raises(ValueError, match="head_dim"):
        ec.attention(q, k, v)
