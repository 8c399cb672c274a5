"""Pooling + post-processing (``ec.pool``) vs sentence-transformers' modules on the same tensors.

CPU: ``ec.pool`` runs its PyTorch reference; the baseline is sentence-transformers' ``Pooling`` (and
``Normalize``, the Matryoshka slice, ``normalize_embeddings`` and ``quantize_embeddings`` where the
case asks for them), i.e. what ``SentenceTransformer.encode`` runs after the encoder. Goal: not slower.

CUDA (only when a GPU is present): the fused Triton kernel vs the PyTorch eager chain (pool ->
normalize -> slice -> quantize) at the target shapes; goal 3x. ``benchmarks/gpu_suite.py`` reports
the same comparison in GB/s against the measured copy bandwidth.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.sentence_transformer.modules.pooling import Pooling
from sentence_transformers.util.quantization import quantize_embeddings

import embedcore as ec

QUICK = os.environ.get("EMBEDCORE_BENCH_QUICK", "").strip() not in ("", "0")
ROUNDS = 5 if QUICK else 15  # fixed rounds: the slow baselines must not stretch the suite

# (B, T, H, dtype): a MiniLM-sized fp32 batch and a wider bf16 one.
CPU_SHAPES = [(64, 128, 384, torch.float32), (16, 256, 1024, torch.bfloat16)] if QUICK else \
             [(1024, 128, 384, torch.float32), (64, 512, 1024, torch.bfloat16)]
# (name, mode, padding side, normalize, truncate fraction, normalize after truncation, precision)
CASES = [
    ("mean+normalize", "mean", "right", True, None, False, "float32"),
    ("max", "max", "right", False, None, False, "float32"),
    ("lasttoken+normalize, left padding", "lasttoken", "left", True, None, False, "float32"),
    ("mean+normalize -> dim/2 -> normalize -> int8", "mean", "right", True, 0.5, True, "int8"),
]
if not QUICK:
    CASES.insert(2, ("weightedmean", "weightedmean", "left", False, None, False, "float32"))
_DATA: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _inputs(B: int, T: int, H: int, dtype: torch.dtype, side: str, device: str = "cpu"):
    """Hidden states and a mixed-length 0/1 int64 mask, built once per shape and shared by providers."""
    key = (B, T, H, dtype, side, device)
    if key not in _DATA:
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(B, T, H, generator=g).to(dtype)
        lengths = torch.randint(T // 8, T + 1, (B,), generator=g)
        pos = torch.arange(T)
        mask = pos < lengths[:, None] if side == "right" else pos >= (T - lengths)[:, None]
        _DATA[key] = hidden.to(device), mask.to(device, torch.int64)
    return _DATA[key]


def _ids(shapes) -> list[str]:
    return [f"{b}x{t}x{h}-{str(d).removeprefix('torch.')}" for b, t, h, d in shapes]


def _st_chain(pooling: Pooling, hidden, mask, normalize, dim, renorm, precision, ranges):
    """What sentence-transformers runs after the encoder, module by module."""
    features = pooling({"token_embeddings": hidden, "attention_mask": mask})
    if normalize:
        features = Normalize()(features)
    emb = features["sentence_embedding"][:, :dim]
    if renorm:
        emb = F.normalize(emb, p=2, dim=1)
    if precision == "float32":
        return emb.float()
    return quantize_embeddings(emb, precision, ranges=ranges)


def _agree(ours, theirs, precision: str) -> None:
    ours = np.asarray(ours.float() if precision == "float32" else ours, dtype=np.float64)
    theirs = np.asarray(theirs.float() if precision == "float32" else theirs, dtype=np.float64)
    # fp32 values to 1e-5; codes to one bucket (values within rounding of a bucket edge).
    assert np.abs(ours - theirs).max() <= (1e-5 if precision == "float32" else 1), "providers disagree"


@pytest.mark.parametrize("provider", ["embedcore", "sentence-transformers"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("B,T,H,dtype", CPU_SHAPES, ids=_ids(CPU_SHAPES))
def test_pool_cpu(benchmark, provider, case, B, T, H, dtype):
    name, mode, side, normalize, frac, renorm, precision = case
    hidden, mask = _inputs(B, T, H, dtype, side)
    dim = H if frac is None else int(H * frac)
    ranges = None
    if precision == "int8":
        ranges = ec.quantization_ranges(ec.pool(hidden, mask, mode, normalize=normalize, truncate_dim=dim,
                                                normalize_after_truncate=renorm)).numpy()
    pooling = Pooling(H, pooling_mode=mode)

    def embedcore():
        return ec.pool(hidden, mask, mode, normalize=normalize, truncate_dim=dim,
                       normalize_after_truncate=renorm, precision=precision, ranges=ranges)

    def sentence_transformers():
        return _st_chain(pooling, hidden, mask, normalize, dim, renorm, precision, ranges)

    fn = embedcore if provider == "embedcore" else sentence_transformers
    # Agreement on the exactly widened input: sentence-transformers rounds bf16 pooled values to bf16,
    # which alone moves int8 codes by more than a bucket; embedcore accumulates and outputs fp32.
    widened = _st_chain(pooling, hidden.float(), mask, normalize, dim, renorm, precision, ranges)
    _agree(embedcore(), widened, precision)
    dname = str(dtype).removeprefix("torch.")
    benchmark.group = f"pooling: {name} B={B} T={T} H={H} {dname} (CPU)"
    benchmark.extra_info.update(op="pooling", provider=provider, shape=f"B={B} T={T} H={H} {name}",
                                dtype=dname, metric="time per call")
    if provider == "embedcore":
        benchmark.extra_info["goal"] = 1.0
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)


# ------------------------------------------------------------------------------------------------ GPU

GPU_SHAPES = [(64, 512, 4096, torch.bfloat16), (256, 128, 384, torch.float32)] if QUICK else \
             [(256, 512, 4096, torch.bfloat16), (1024, 128, 384, torch.float32)]


def _eager_chain(hidden, mask, dim, starts, steps):
    """The PyTorch eager chain: masked mean -> normalize -> slice -> normalize -> int8."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1, dtype=torch.float32) / mask.sum(1, keepdim=True).clamp(min=1)
    emb = F.normalize(F.normalize(pooled, dim=-1)[:, :dim], dim=-1)
    return (torch.floor((emb - starts) / steps).clamp(0, 255) - 128).to(torch.int8)


@pytest.mark.parametrize("provider", ["embedcore", "torch-eager"])
@pytest.mark.parametrize("B,T,H,dtype", GPU_SHAPES, ids=_ids(GPU_SHAPES))
def test_pool_cuda(benchmark, provider, B, T, H, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from embedcore.ops.quantize import bucket_params

    hidden, mask = _inputs(B, T, H, dtype, "right", device="cuda")
    dim = H // 2
    emb = ec.pool(hidden, mask, normalize=True, truncate_dim=dim, normalize_after_truncate=True)
    ranges = ec.quantization_ranges(emb)
    starts, steps = bucket_params(ranges)

    def embedcore():
        out = ec.pool(hidden, mask, normalize=True, truncate_dim=dim, normalize_after_truncate=True,
                      precision="int8", ranges=ranges)
        torch.cuda.synchronize()
        return out

    def eager():
        out = _eager_chain(hidden, mask, dim, starts, steps)
        torch.cuda.synchronize()
        return out

    assert int((embedcore().int() - eager().int()).abs().max()) <= 1, "fused kernel and eager chain disagree"
    dname = str(dtype).removeprefix("torch.")
    benchmark.group = f"pooling: mean->normalize->dim/2->normalize->int8 B={B} T={T} H={H} {dname} (CUDA)"
    benchmark.extra_info.update(op="pooling", provider=provider, shape=f"B={B} T={T} H={H}", dtype=dname,
                                metric="time per call", bytes=hidden.numel() * hidden.element_size())
    if provider == "embedcore":
        benchmark.extra_info["goal"] = 3.0
    # GPU calls take milliseconds: more rounds for stable medians.
    benchmark.pedantic(embedcore if provider == "embedcore" else eager, rounds=4 * ROUNDS, warmup_rounds=2)
