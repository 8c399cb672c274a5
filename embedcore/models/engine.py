"""Which engine runs the transformer forward of an Embedder on the CPU, for a fidelity tier.

======== ===================================================================================
engine   what runs
======== ===================================================================================
torch    :class:`~embedcore.models.packed_bert.PackedForward` (packed tokens, tier's Linears)
openvino :class:`~embedcore.models.openvino_engine.OpenVINOForward` (f32 for exact, bf16 for the
         other tiers)
auto     OpenVINO where it is installed and runs the tier (bf16 tiers: on a CPU with bf16), else torch
======== ===================================================================================

Both run BERT encoders (:func:`embedcore.models.packed_bert.supports`); other models keep their own
forward (with the tier's Linears swapped in by ``Embedder.from_pretrained``).
"""

from __future__ import annotations

from typing import Any

from embedcore.models import openvino_engine, packed_bert

ENGINES = ("auto", "torch", "openvino")


def check_engine(engine: Any) -> str:
    """Returns ``engine`` if valid; raises TypeError/ValueError naming the argument otherwise."""
    if not isinstance(engine, str):
        raise TypeError(f"engine must be one of {ENGINES}, got {type(engine).__name__}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def make_forward(model: Any, fidelity: str, engine: str) -> Any:
    """The CPU forward for ``model`` at ``fidelity``: ``f(**features) -> (B, L, H)``, or None where the
    model's own forward runs.

    Raises:
        ValueError: engine="openvino" for a model or tier it does not run.
        ImportError: engine="openvino" without OpenVINO installed.
    """
    check_engine(engine)
    if not packed_bert.supports(model):
        if engine == "openvino":
            raise ValueError(f"engine='openvino' runs BERT encoders, got {type(model).__name__}")
        return None
    if engine == "openvino":
        return openvino_engine.OpenVINOForward(model, fidelity)
    if (
        engine == "auto"
        and fidelity in openvino_engine.TIER_HINTS
        and openvino_engine.available()
        and (openvino_engine.TIER_HINTS[fidelity] != "bf16" or openvino_engine.cpu_has_bf16())
    ):
        return openvino_engine.OpenVINOForward(model, fidelity)
    return packed_bert.PackedForward(model, fidelity)
