"""NV-Embed's latent-attention pooling (Lee et al., 2024, "NV-Embed", section 3.2), loadable from the
checkpoint's own weights.

Every token's hidden state ``h`` queries a trainable latent array ``L`` (r x d) through one multi-head
cross-attention, followed by a GEGLU MLP, both pre-normed and residual, and the result is mean-pooled
over the tokens of ``pool_mask``::

    x   = h + W_o MHA(q = W_q LN(h), k, v = W_kv LN_ctx(L))
    y   = x + W_2 GEGLU(W_1 LN(x))
    emb = mean_{t in pool_mask} y_t                  (then L2-normalised when output_normalize)

Parameter names follow NV-Embed's ``LatentAttentionModel`` (``latents``,
``cross_attend_blocks.0.{norm,norm_context,fn.to_q,fn.to_kv,fn.to_out}``,
``cross_attend_blocks.1.{norm,fn.net.0,fn.net.2}``), so its state dict loads unchanged. Each token is
processed independently, so only the pooled tokens are computed: no FLOPs on padding or instruction
tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

PREFIX = "latent_attention_model."


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None


class _CrossAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)


class _GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        # net.1 is the (parameter-free) GEGLU; the indices match NV-Embed's nn.Sequential.
        self.net = nn.ModuleDict({"0": nn.Linear(dim, dim * mult * 2), "2": nn.Linear(dim * mult, dim)})


class LatentAttentionPooling(nn.Module):
    """Latent-attention pooling with NV-Embed's parameter layout.

    Args:
        hidden_dim: d, the LLM's hidden size (NV-Embed: 4096).
        num_latents: r, latent array rows (NV-Embed: 512).
        heads: cross-attention heads (NV-Embed: 8).
        dim_head: per-head width (NV-Embed: 4096, so the inner width is heads * dim_head).
        latent_dim: latent width (NV-Embed: = hidden_dim; the residual needs latent_dim == hidden_dim).
        mult: MLP expansion (NV-Embed: 4).
        output_normalize: L2-normalise the pooled vector (NV-Embed: True).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_latents: int = 512,
        heads: int = 8,
        dim_head: int = 4096,
        latent_dim: int | None = None,
        mult: int = 4,
        output_normalize: bool = True,
    ) -> None:
        super().__init__()
        latent_dim = hidden_dim if latent_dim is None else latent_dim
        if latent_dim != hidden_dim:
            raise ValueError(
                f"latent_dim ({latent_dim}) must equal hidden_dim ({hidden_dim}): the block is residual"
            )
        for name, value in (("hidden_dim", hidden_dim), ("num_latents", num_latents), ("heads", heads),
                            ("dim_head", dim_head), ("mult", mult)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.output_normalize = bool(output_normalize)
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))
        self.cross_attend_blocks = nn.ModuleList([
            _PreNorm(
                latent_dim, _CrossAttention(latent_dim, hidden_dim, heads, dim_head), context_dim=hidden_dim
            ),
            _PreNorm(latent_dim, _GEGLUFeedForward(latent_dim, mult)),
        ])

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The per-token block on (N, d) tokens."""
        attn_block, ff_block = self.cross_attend_blocks
        attn = attn_block.fn
        h, n = attn.heads, x.shape[0]
        q = attn.to_q(attn_block.norm(x)).view(n, h, -1).transpose(0, 1)  # (h, N, dh)
        k, v = attn.to_kv(attn_block.norm_context(self.latents)).chunk(2, dim=-1)
        k = k.view(k.shape[0], h, -1).transpose(0, 1)  # (h, r, dh)
        v = v.view(v.shape[0], h, -1).transpose(0, 1)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = attn.to_out(o.transpose(0, 1).reshape(n, -1)) + x
        net = ff_block.fn.net
        a, gates = net["0"](ff_block.norm(x)).chunk(2, dim=-1)
        return net["2"](a * torch.nn.functional.gelu(gates)) + x

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pools token states into one vector per row.

        Args:
            hidden: (B, T, d) last hidden states, in the module's dtype.
            pool_mask: (B, T) bool/int, the tokens to pool (attention mask, or the text-only
                ``pool_mask`` of instruction inputs); None pools every token. Every row needs one.

        Returns:
            (B, d) embeddings in hidden's dtype (the mean is accumulated in float32).
        """
        if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
            shape = getattr(hidden, "shape", type(hidden).__name__)
            raise ValueError(f"hidden must be a (batch, seqlen, dim) tensor, got {shape}")
        b, t, d = hidden.shape
        if d != self.latents.shape[1]:
            raise ValueError(f"hidden has dim {d}, the module was built for {self.latents.shape[1]}")
        if pool_mask is None:
            pool_mask = torch.ones(b, t, dtype=torch.bool, device=hidden.device)
        elif not isinstance(pool_mask, torch.Tensor) or tuple(pool_mask.shape) != (b, t):
            raise ValueError(f"pool_mask must be a (batch, seqlen) = {(b, t)} tensor, got "
                             f"{tuple(getattr(pool_mask, 'shape', ()))}")
        mask = pool_mask.to(hidden.device).bool()
        counts = mask.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError(f"pool_mask rows {(counts == 0).nonzero().flatten().tolist()} select no token")
        rows = mask.nonzero()[:, 0]
        y = self._tokens(hidden[mask])  # only the pooled tokens
        sums = torch.zeros(b, d, dtype=torch.float32, device=hidden.device).index_add_(0, rows, y.float())
        out = sums / counts[:, None].float()
        if self.output_normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out.to(hidden.dtype)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        prefix: str = PREFIX,
        heads: int = 8,
        output_normalize: bool = True,
    ) -> LatentAttentionPooling:
        """Builds the module from a checkpoint's tensors (sizes read from their shapes).

        Args:
            state_dict: name -> tensor; the keys under ``prefix`` are used, others ignored.
            prefix: NV-Embed stores the pooler under ``"latent_attention_model."``.
            heads: cross-attention heads (not recoverable from shapes; NV-Embed uses 8).
            output_normalize: L2-normalise the output.
        """
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if "latents" not in own:
            raise ValueError(f"state_dict has no {prefix}latents: not a latent-attention checkpoint")
        num_latents, latent_dim = own["latents"].shape
        inner = own["cross_attend_blocks.0.fn.to_q.weight"].shape[0]
        if inner % heads:
            raise ValueError(f"heads={heads} does not divide the attention width {inner}")
        mult = own["cross_attend_blocks.1.fn.net.2.weight"].shape[1] // latent_dim
        hidden_dim = own["cross_attend_blocks.0.fn.to_kv.weight"].shape[1]
        with torch.device("meta"):
            module = cls(hidden_dim, num_latents, heads, inner // heads, latent_dim, mult, output_normalize)
        module.load_state_dict(own, strict=True, assign=True)
        return module

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], prefix: str = PREFIX) -> LatentAttentionPooling:
        """Loads the pooler from an NV-Embed checkpoint folder: only the safetensors shards holding
        ``prefix`` tensors are opened, and heads / output_normalize come from ``config.json``'s
        ``latent_attention_config``."""
        from safetensors import safe_open

        path = os.fspath(path)
        config: dict[str, Any] = {}
        if os.path.exists(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                config = json.load(f).get("latent_attention_config", {}) or {}
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted({file for key, file in weight_map.items() if key.startswith(prefix)})
        else:
            files = ["model.safetensors"]
        state: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(os.path.join(path, file), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefix):
                        state[key] = f.get_tensor(key)
        return cls.from_state_dict(state, prefix, heads=int(config.get("num_cross_heads", 8)),
                                   output_normalize=bool(config.get("output_normalize", True)))
