"""Fidelity tiers: what each faster mode of ``encode`` gives up, and the Linear products that deliver it.

=========== ============================================== ==============================================
tier        bound vs sentence-transformers' fp32 output      Linear products (CPU)
=========== ============================================== ==============================================
exact       max abs difference <= 1e-5                      float32
near_exact  mean cosine >= 0.99995, min cosine >= 0.9999    bfloat16 inputs and weights, float32
                                                            accumulation and output (oneDNN; AMX or
                                                            AVX512_BF16 where the CPU has them)
int8        mean cosine >= 0.995, recall@10 within 0.005    int8 per-output-channel weights, activations
            of exact                                        quantized per call with the full 8-bit range
=========== ============================================== ==============================================

Everything else (embeddings, LayerNorm, softmax, GELU, residual adds, pooling) stays float32 in every
tier: those are cheap, and rounding them costs most of the accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from embedcore._spec import check_fidelity


class Float32Linear:
    """y = x @ W.T + b in float32 (the exact tier). Shares the model's tensors."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class BFloat16Linear:
    """y = bf16(x) @ bf16(W).T + b: bf16 products, float32 accumulation inside oneDNN, float32 bias.

    The output leaves the product in float32 only after a bf16 rounding (torch returns the input dtype);
    the bias is added in float32 so that large biases do not lose bits.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.detach().to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.detach().float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).float()
        return y if self.bias is None else y.add_(self.bias)


class Int8Linear:
    """Dynamic int8: W quantized per output channel (symmetric, [-127, 127]) once; x quantized per call
    (affine, one scale per call, the full [0, 255] range); int32 accumulation; float32 out.

    PyTorch's ``quantize_dynamic`` modules call the same kernel with ``reduce_range=True`` (7-bit
    activations, a guard against int16 saturation on pre-VNNI CPUs), which doubles the activation
    rounding error; this class uses 8 bits.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch.ao quantization warns that it moves to torchao
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(
                qweight, None if bias is None else bias.detach().float()
            )
        self.out_features = w.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=False)


# The down-projections (FFN output, in_features > out_features) of the first blocks read GELU outputs with
# the largest activation outliers; per-call activation scales handle them worst. The int8 tier runs them
# in bf16 (near_exact's product) instead.
INT8_BF16_DOWN = 6


def linear_factory(
    fidelity: str,
) -> Callable[[torch.Tensor, Any, str], Callable[[torch.Tensor], torch.Tensor]]:
    """``(weight, bias, name) -> Linear`` for a tier (see the module table)."""
    check_fidelity(fidelity)
    if fidelity == "exact":
        return lambda w, b, name: Float32Linear(w, b)
    if fidelity == "near_exact":
        return lambda w, b, name: BFloat16Linear(w, b)

    def int8(w: torch.Tensor, b: Any, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        parts = name.split(".")
        if parts[-1] == "output" and int(parts[1]) < INT8_BF16_DOWN:
            return BFloat16Linear(w, b)
        return Int8Linear(w, b)

    return int8


class TierLinear(torch.nn.Module):
    """An ``nn.Linear`` stand-in running a tier's product, for models without a packed forward."""

    def __init__(self, linear: torch.nn.Linear, product: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.product = product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.product(x.reshape(-1, shape[-1]).float())
        return y.view(*shape[:-1], self.out_features)


def swap_linears(model: torch.nn.Module, fidelity: str) -> None:
    """Replaces every ``nn.Linear`` of ``model`` by a :class:`TierLinear` of ``fidelity`` (in place).

    Down-projections are counted in module order for the int8 tier's bf16 exception.
    """
    make = linear_factory(fidelity)
    if fidelity == "exact":
        return
    down = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.Linear):
            continue
        is_down = module.in_features > module.out_features
        label = f"layer.{down}.output" if is_down else f"layer.{down}.other"
        down += int(is_down)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(
            parent,
            name.rsplit(".", 1)[-1],
            TierLinear(module, make(module.weight.float(), module.bias, label)),
        )
