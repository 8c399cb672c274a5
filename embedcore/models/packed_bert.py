"""A padding-free CPU forward pass for BERT-family encoders, at three fidelity tiers.

The Hugging Face ``BertModel`` forward runs every Linear over ``(batch, padded_len, hidden)`` and, for
a single short query, spends more time in Python (mask building, module dispatch, three separate
Q/K/V products) than in arithmetic. This forward reuses the model's own weights and runs:

* the Linear layers over the packed tokens ``(total_tokens, hidden)``: no padding is ever multiplied;
* Q, K and V as one fused product (one weight read instead of three);
* attention per sequence through ``scaled_dot_product_attention`` (the batch padded only inside the
  attention, to the longest text of the batch; a single text needs no mask at all);
* LayerNorm, softmax, GELU and the residual adds in float32 in every tier.

Only the Linear products change with the tier (:mod:`embedcore.models.fidelity`): float32 (exact),
bfloat16 inputs and weights with float32 accumulation (near_exact, oneDNN/AMX where the CPU has it), or
int8 per-channel weights with per-call int8 activations (int8).

Supported: ``model_type`` "bert" with absolute position embeddings and an erf/tanh GELU (all-MiniLM,
BGE, E5, GTE-base-style models). Anything else runs the Hugging Face forward (:func:`supports`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}

Linear = Callable[[torch.Tensor], torch.Tensor]
"""A Linear product: (T, in) float32 -> (T, out) float32."""


def supports(model: Any) -> bool:
    """Whether :class:`PackedBert` runs ``model`` (a BERT encoder with absolute positions)."""
    config = getattr(model, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) == "bert"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and getattr(config, "hidden_act", None) in _ACTIVATIONS
        and not getattr(config, "is_decoder", False)
        and hasattr(model, "embeddings")
        and hasattr(model, "encoder")
    )


class PackedBert:
    """The encoder stack of a Hugging Face ``BertModel``, run on packed tokens.

    Args:
        model: A ``BertModel`` (float32 weights on the CPU); its parameters are read, not copied,
            except where ``make_linear`` builds a converted copy (bf16 / int8).
        make_linear: ``(weight (out, in) float32, bias (out,) float32 or None, name) -> Linear``; the
            tier's Linear product. ``name`` is e.g. ``"layer.3.output"`` (for per-layer choices).
    """

    def __init__(self, model: Any, make_linear: Callable[[torch.Tensor, Any, str], Linear]) -> None:
        if not supports(model):
            raise ValueError(f"PackedBert runs BERT encoders, got {type(model).__name__}")
        config = model.config
        emb = model.embeddings
        self.word = emb.word_embeddings.weight.detach()
        self.position = emb.position_embeddings.weight.detach()
        tokens = getattr(emb, "token_type_embeddings", None)
        self.token_type = tokens.weight.detach() if tokens is not None else None
        self.emb_norm = (emb.LayerNorm.weight.detach(), emb.LayerNorm.bias.detach(), emb.LayerNorm.eps)
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.layers = []
        for i, layer in enumerate(model.encoder.layer):
            att = layer.attention
            q, k, v = att.self.query, att.self.key, att.self.value
            qkv_w = torch.cat([q.weight, k.weight, v.weight]).detach()
            qkv_b = torch.cat([q.bias, k.bias, v.bias]).detach()
            self.layers.append(
                (
                    make_linear(qkv_w, qkv_b, f"layer.{i}.qkv"),
                    make_linear(
                        att.output.dense.weight.detach(), att.output.dense.bias, f"layer.{i}.attn_out"
                    ),
                    _norm(att.output.LayerNorm),
                    make_linear(
                        layer.intermediate.dense.weight.detach(),
                        layer.intermediate.dense.bias,
                        f"layer.{i}.intermediate",
                    ),
                    make_linear(
                        layer.output.dense.weight.detach(), layer.output.dense.bias, f"layer.{i}.output"
                    ),
                    _norm(layer.output.LayerNorm),
                )
            )

    def __call__(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        lengths: list[int],
    ) -> torch.Tensor:
        """Last hidden states of packed texts.

        Args:
            input_ids: (T,) int64, the texts' tokens one after another (T = sum(lengths)).
            positions: (T,) int64, each token's position inside its text.
            token_type_ids: (T,) int64 or None (all zero).
            lengths: Token count per text, longest first or in any order; every one >= 1.

        Returns:
            (T, hidden) float32, packed like ``input_ids``.
        """
        x = F.embedding(input_ids, self.word) + F.embedding(positions, self.position)
        if self.token_type is not None:
            x = x + (
                self.token_type[0] if token_type_ids is None else F.embedding(token_type_ids, self.token_type)
            )
        w, b, eps = self.emb_norm
        x = F.layer_norm(x, (self.hidden,), w, b, eps)
        scatter = _Scatter(lengths, x.device) if len(lengths) > 1 else None
        for qkv, attn_out, norm1, inter, out, norm2 in self.layers:
            context = self._attention(qkv(x), scatter)
            x = F.layer_norm(attn_out(context) + x, (self.hidden,), *norm1)
            x = F.layer_norm(out(self.act(inter(x))) + x, (self.hidden,), *norm2)
        return x

    def _attention(self, qkv: torch.Tensor, scatter: _Scatter | None) -> torch.Tensor:
        """(T, 3*hidden) packed Q|K|V -> (T, hidden) attention output, each text attending to itself."""
        heads, dim = self.heads, self.hidden // self.heads
        if scatter is None:  # one text: no padding, no mask
            q, k, v = qkv.view(1, -1, 3, heads, dim).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, self.hidden)
        padded = scatter.pad(qkv)  # (B, L, 3*hidden)
        batch, width = padded.shape[:2]
        q, k, v = padded.view(batch, width, 3, heads, dim).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=scatter.mask)
        return scatter.unpad(context.transpose(1, 2).reshape(batch, width, self.hidden))


class _Scatter:
    """Packed (T, C) <-> padded (B, L, C) for a list of lengths; the key mask for attention."""

    def __init__(self, lengths: list[int], device: torch.device) -> None:
        self.batch, self.width = len(lengths), max(lengths)
        lens = torch.as_tensor(lengths, device=device)
        valid = torch.arange(self.width, device=device) < lens[:, None]  # (B, L)
        self.index = valid.reshape(-1).nonzero().squeeze(1)  # (T,) rows of the padded (B*L) layout
        self.mask = valid[:, None, None, :]  # (B, 1, 1, L): padded keys get no weight

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        out = packed.new_zeros((self.batch * self.width, packed.shape[1]))
        out.index_copy_(0, self.index, packed)
        return out.view(self.batch, self.width, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.batch * self.width, -1).index_select(0, self.index)


def _norm(module: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    return module.weight.detach(), module.bias.detach(), float(module.eps)


def weights_key(params: list[torch.Tensor]) -> tuple:
    """Changes when one of ``params`` is moved (``.to``) or modified in place (training, load_state_dict)."""
    return tuple((p.data_ptr(), p._version) for p in params)


class PackedForward:
    """``model(**features).last_hidden_state`` through :class:`PackedBert`, rebuilt when the weights change.

    Args:
        model: The ``BertModel`` whose weights are read.
        fidelity: The tier whose Linear products run (:mod:`embedcore.models.fidelity`).
    """

    def __init__(self, model: Any, fidelity: str) -> None:
        from embedcore.models.fidelity import linear_factory

        self.model = model
        self.fidelity = fidelity
        self._make = linear_factory(fidelity)
        # Walking the module tree at every call costs more than a short forward; the list is taken once
        # (modules replaced after this are not seen: build a new Embedder then).
        self._params = list(model.parameters())
        self._key: tuple = ()
        self._bert: PackedBert | None = None

    def _current(self) -> PackedBert:
        # Weights loaded or trained after the build would otherwise be ignored: the fused QKV and the
        # bf16/int8 weights are copies.
        key = weights_key(self._params)
        if self._bert is None or key != self._key:
            self._bert = PackedBert(self.model, self._make)
            self._key = key
        return self._bert

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Padded features in, padded hidden states out; only the real tokens are computed.

        Args:
            input_ids: (B, L) int64, right-padded.
            attention_mask: (B, L) int64/bool, 1 on the real tokens (a prefix of every row).
            token_type_ids: (B, L) int64 or None.

        Returns:
            (B, L, hidden) float32; padded positions hold zeros.
        """
        bert = self._current()
        batch, width = input_ids.shape
        if batch == 1 and bool(attention_mask.all()):
            types = None if token_type_ids is None else token_type_ids[0]
            positions = torch.arange(width, device=input_ids.device)
            return bert(input_ids[0], positions, types, [width]).unsqueeze(0)
        valid = attention_mask.bool()
        lengths = valid.sum(1)
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)[valid]
        types = None if token_type_ids is None else token_type_ids[valid]
        packed = bert(input_ids[valid], positions, types, lengths.tolist())
        out = packed.new_zeros((batch, width, packed.shape[1]))
        out[valid] = packed
        return out
