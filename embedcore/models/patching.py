"""Reversible, instance-level patching of Hugging Face models: bidirectional attention for decoder LLMs
and the ``"embedcore"`` attention implementation.

Only public transformers mechanisms are used:

* ``AttentionInterface.register("embedcore", ...)``: the attention function every model that follows
  transformers' functional attention design calls (``ALL_ATTENTION_FUNCTIONS``). It unpads the batch
  and runs ``embedcore.attention`` on the real tokens only: the varlen Triton kernel on CUDA, SDPA per
  group of equal-length sequences on the CPU.
* ``AttentionMaskInterface.register("embedcore", ...)``: the mask builder transformers' mask functions
  (``create_causal_mask``, ``create_sliding_window_causal_mask``, ``create_bidirectional_mask``) call
  for this implementation. Like transformers' own ``flash_attention_mask`` it returns the 2-D padding
  mask (or None); causality comes from the attention modules' ``is_causal`` and the window from the
  ``sliding_window`` argument, exactly as for flash-attention 2.
* The attention modules' ``is_causal`` attribute and the config flags transformers honours itself
  (``config.is_causal`` in ``create_causal_mask`` (5.x), ``use_bidirectional_attention`` (Gemma 2/3)),
  so a patched model stays bidirectional even if switched to ``sdpa`` or ``eager`` while patched.
* ``model.set_attn_implementation`` (or, where a transformers release lacks it, the config's
  ``_attn_implementation`` setter).

``bidirectional(model)`` records every value it changes and ``undo()`` restores them exactly. Nothing
is patched at import time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

ATTN_IMPLEMENTATION = "embedcore"

# Config flags Gemma 2/3 read to build bidirectional masks (beyond `is_causal`).
_GEMMA_FLAGS = {"use_bidirectional_attention": True}


def _patch_decoder(model: Any, record: _Record) -> None:
    """Llama-family decoders: every attention module's ``is_causal`` and ``config.is_causal``."""
    for config in _configs(model):
        record.setattr(config, "is_causal", False)
    flipped = 0
    for module in model.modules():
        if isinstance(getattr(module, "is_causal", None), bool):
            record.setattr(module, "is_causal", False)
            flipped += 1
    if not flipped:
        raise ValueError(
            f"{type(model).__name__} has no attention module with an `is_causal` attribute; "
            "this transformers release lays the model out differently from what embedcore supports"
        )


def _patch_gemma(model: Any, record: _Record) -> None:
    """Gemma 2/3: as Llama, plus ``use_bidirectional_attention`` that their mask code reads. The sliding
    window keeps its size on each side (|i - j| < sliding_window)."""
    _patch_decoder(model, record)
    for config in _configs(model):
        for name, value in _GEMMA_FLAGS.items():
            if hasattr(config, name):
                record.setattr(config, name, value)


# One registry: model_type -> patch function.
PATCHES: dict[str, Callable[[Any, _Record], None]] = {
    "llama": _patch_decoder,
    "mistral": _patch_decoder,
    "qwen2": _patch_decoder,
    "qwen3": _patch_decoder,
    "gemma": _patch_decoder,
    "gemma2": _patch_gemma,
    "gemma3_text": _patch_gemma,
}


class _Record:
    """Attribute changes, undone in reverse order."""

    def __init__(self) -> None:
        self._changes: list[tuple[Any, str, bool, Any]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        existed = name in vars(obj) if hasattr(obj, "__dict__") else hasattr(obj, name)
        self._changes.append((obj, name, existed, getattr(obj, name, None)))
        setattr(obj, name, value)

    def undo(self) -> None:
        while self._changes:
            obj, name, existed, old = self._changes.pop()
            if existed:
                setattr(obj, name, old)
            else:
                delattr(obj, name)


def _configs(model: Any) -> list[Any]:
    """The distinct config objects of a model and its sub-models."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "model_type"):
            seen.setdefault(id(config), config)
    return list(seen.values())


# ----------------------------------------------------------------------------------------------------------
# the "embedcore" attention implementation


def _padding_mask(*args: Any, attention_mask: torch.Tensor | None = None, kv_length: int | None = None,
                  **kwargs: Any) -> torch.Tensor | None:
    """Mask builder for ``AttentionMaskInterface``: the (B, kv_length) bool padding mask, None when no
    token is padding. The mask pattern (causal, window) is applied by the attention function."""
    if attention_mask is None:
        return None
    if kv_length is not None:
        attention_mask = attention_mask[:, -kv_length:]
    attention_mask = attention_mask.bool()
    return None if bool(attention_mask.all()) else attention_mask


def embedcore_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function (``AttentionInterface``) backed by ``embedcore.attention``.

    Args:
        module: the attention module; its ``is_causal`` decides causality unless ``is_causal`` is given.
        query: (B, Hq, T, D); key, value: (B, Hkv, T, D).
        attention_mask: (B, T) bool padding mask from ``_padding_mask``, or None. A 4-D mask (a custom
            mask the caller built) is handed to transformers' SDPA/eager function unchanged.
        scaling, sliding_window, softcap: as the module passes them.

    Returns:
        ((B, T, Hq, D) attention output, None).
    """
    if dropout and module.training:
        raise ValueError("embedcore attention is inference-only; put the model in eval() mode")
    if kwargs.get("output_attentions"):
        raise ValueError("embedcore attention does not return attention weights (output_attentions=True)")
    if attention_mask is not None and attention_mask.ndim == 4:
        return _fallback(module, query, key, value, attention_mask, scaling, dropout, sliding_window,
                         softcap, is_causal, **kwargs)
    if query.shape[2] != key.shape[2]:
        raise ValueError(
            f"embedcore attention encodes whole sequences: got {query.shape[2]} queries for {key.shape[2]} "
            "keys (a KV cache); call the model with use_cache=False"
        )
    from embedcore.ops.attention import _attention_varlen, pad_input

    batch, heads, seqlen, head_dim = query.shape
    layout = _layout(attention_mask, kwargs, batch, seqlen, query.device)
    indices, cu_seqlens, max_seqlen = layout

    def tokens(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (real tokens, H, D)
        flat = x.transpose(1, 2).reshape(batch * seqlen, x.shape[1], x.shape[3])
        return flat if indices is None else flat.index_select(0, indices)

    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    out = _attention_varlen(
        tokens(query), tokens(key), tokens(value), cu_seqlens, max_seqlen, None,
        causal,
        head_dim**-0.5 if scaling is None else float(scaling),
        None if sliding_window is None or sliding_window >= max_seqlen else int(sliding_window),
        None if softcap is None else float(softcap),
    )
    if indices is None:
        return out.view(batch, seqlen, heads, -1), None
    return pad_input(out, indices, batch, seqlen), None


# The layout depends only on the mask / position ids, which every layer of one forward shares: it is
# derived once (one host sync) and reused while the same, unmodified tensor comes back. A few entries,
# as models with sliding layers (Gemma 2/3) alternate between two masks.
_LAYOUT_CACHE: list[tuple[Any, int, Any]] = []


def _layout(
    attention_mask: torch.Tensor | None, kwargs: dict[str, Any], batch: int, seqlen: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """(indices of the real tokens or None, cu_seqlens int32, max_seqlen) of a layer's input.

    Sources, in order: the 2-D padding mask; flash-attention kwargs ``cu_seq_lens_q`` / ``max_length_q``
    of a packed batch; ``position_ids`` of a packed batch (B == 1, positions restarting at each
    sequence, as transformers' DataCollatorWithFlattening builds them); else B sequences of T tokens.
    """
    from embedcore.ops.attention import unpad_input

    if attention_mask is not None:
        key = attention_mask
    elif kwargs.get("cu_seq_lens_q") is not None:
        cu = kwargs["cu_seq_lens_q"].to(device=device, dtype=torch.int32)
        max_len = kwargs.get("max_length_q")
        return None, cu, int(max_len) if max_len is not None else int(cu.diff().max())
    elif batch == 1 and isinstance(kwargs.get("position_ids"), torch.Tensor) and seqlen > 1:
        key = kwargs["position_ids"]
        if key.numel() != seqlen:
            key = None
    else:
        key = None
    if key is None:
        return None, torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=device), seqlen

    # Inference tensors (made under torch.inference_mode) keep no version counter: for them a cached
    # copy of the values stands in for it (a small compare, not a recomputation of the layout).
    version: Any = key.detach().clone() if key.is_inference() else key._version
    for ref, cached_version, layout in _LAYOUT_CACHE:
        if ref() is key and _same_version(cached_version, version):
            return layout
    if key is attention_mask:
        _, indices, cu, max_len = unpad_input(torch.empty(batch, seqlen, 0, device=device), attention_mask)
        layout = (indices, cu, max_len)
    else:
        pos = key.reshape(-1).to(device)
        starts = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten().to(torch.int32) + 1
        edge = torch.tensor([0], dtype=torch.int32, device=device)
        cu = torch.cat([edge, starts, edge + seqlen])
        layout = (None, cu, int(cu.diff().max()))
    _LAYOUT_CACHE[:] = [(weakref.ref(key), version, layout), *_LAYOUT_CACHE[:3]]
    return layout


def _same_version(cached: Any, current: Any) -> bool:
    """Version counters compare as ints; inference tensors' value snapshots by content."""
    if isinstance(cached, torch.Tensor) or isinstance(current, torch.Tensor):
        return (isinstance(cached, torch.Tensor) and isinstance(current, torch.Tensor)
                and cached.shape == current.shape and bool(torch.equal(cached, current)))
    return cached == current


def _fallback(module, query, key, value, attention_mask, scaling, dropout, sliding_window, softcap,
              is_causal, **kwargs):
    if softcap is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # Softcap needs the model's own eager function (it applies the cap); find it by the module's class.
    import sys

    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                 sliding_window=sliding_window, softcap=softcap, **kwargs)


_REGISTERED = False


def register() -> str:
    """Registers the ``"embedcore"`` attention implementation with transformers (idempotent).

    Afterwards ``AutoModel.from_pretrained(..., attn_implementation="embedcore")`` or
    ``model.set_attn_implementation("embedcore")`` route attention through ``embedcore.attention``.

    Returns:
        The implementation name, ``"embedcore"``.
    """
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_IMPLEMENTATION, embedcore_attention_forward)
        try:
            from transformers.masking_utils import AttentionMaskInterface
        except ImportError:  # releases before mask interfaces pass the 2-D mask through unchanged
            pass
        else:
            AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _padding_mask)
        _REGISTERED = True
    return ATTN_IMPLEMENTATION


def masks_honour_is_causal() -> bool:
    """Whether transformers' own mask builders turn bidirectional for ``config.is_causal = False``
    (5.x: ``create_causal_mask`` hands over to ``create_bidirectional_mask``; 4.56 has neither). Only
    then can a patched model keep ``sdpa``/``eager`` attention."""
    from transformers import masking_utils

    return hasattr(masking_utils, "create_bidirectional_mask")


def _set_attn_implementation(model: Any, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        for config in _configs(model):
            config._attn_implementation = name
    # transformers only warns when a model does not dispatch through AttentionInterface.
    if model.config._attn_implementation != name:
        raise ValueError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface in "
            f"this transformers release; attn_implementation {name!r} cannot be set"
        )


def use_embedcore_attention(model: Any) -> _Handle:
    """Routes ``model``'s attention through ``embedcore.attention`` without changing its masking
    (encoders stay bidirectional, decoders causal). Returns a handle with ``undo()``."""
    register()
    record = _Record()
    previous = model.config._attn_implementation
    _set_attn_implementation(model, ATTN_IMPLEMENTATION)
    return _Handle(model, record, previous)


class _Handle:
    """Undo handle returned by ``bidirectional``; also a context manager."""

    def __init__(self, model: Any, record: _Record, previous_attn: str | None) -> None:
        self.model = model
        self._record = record
        self._previous_attn = previous_attn
        self.active = True

    def undo(self) -> None:
        """Restores the model exactly as it was (idempotent)."""
        if not self.active:
            return
        self._record.undo()
        if self._previous_attn is not None:
            _set_attn_implementation(self.model, self._previous_attn)
        if getattr(self.model, "_embedcore_patch", None) is self:
            del self.model._embedcore_patch
        self.active = False

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"<embedcore bidirectional patch of {type(self.model).__name__} ({state})>"


def bidirectional(model: Any, attn_implementation: str | None = ATTN_IMPLEMENTATION) -> _Handle:
    """Makes a decoder LLM attend bidirectionally, in place and reversibly.

    Args:
        model: a transformers model (base model or ``*ForCausalLM``) whose ``config.model_type`` is one of
            ``PATCHES``: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text.
        attn_implementation: the attention implementation to run while patched; ``"embedcore"`` (default)
            runs the padding-free varlen kernel on CUDA; None keeps the model's current one, which needs
            a transformers release whose mask builders honour ``config.is_causal`` (5.x).

    Returns:
        A handle: ``handle.undo()`` restores causal attention exactly; ``with bidirectional(model): ...``
        undoes on exit.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model, torch.nn.Module) or model_type is None:
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    patch = PATCHES.get(model_type)
    if patch is None:
        raise ValueError(
            f"bidirectional() does not support model_type {model_type!r}; supported: {sorted(PATCHES)}"
        )
    if isinstance(getattr(model, "_embedcore_patch", None), _Handle):
        raise ValueError("model is already patched by bidirectional(); undo() that handle first")
    if attn_implementation != ATTN_IMPLEMENTATION and not masks_honour_is_causal():
        raise ValueError(
            f"attn_implementation={attn_implementation!r}: this transformers release builds causal masks "
            "regardless of config.is_causal; use attn_implementation='embedcore' (the default)"
        )
    record = _Record()
    previous = None
    if attn_implementation is not None:
        if attn_implementation == ATTN_IMPLEMENTATION:
            register()
        previous = config._attn_implementation
    try:
        patch(model, record)
        if attn_implementation is not None:
            _set_attn_implementation(model, attn_implementation)
    except BaseException:
        record.undo()
        if previous is not None and config._attn_implementation != previous:
            _set_attn_implementation(model, previous)
        raise
    handle = _Handle(model, record, previous)
    model._embedcore_patch = handle
    return handle
