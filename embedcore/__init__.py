"""embedcore: fast, faithful text embeddings and exact retrieval.

Public API (see README.md for the contract)::

    import embedcore as ec
    ec.attention(q, k, v, cu_seqlens=None, max_seqlen=None, causal=False, ...)
    ec.pool(hidden, attention_mask, mode="mean", normalize=False, truncate_dim=None, precision=...)
    ec.quantize(embeddings, precision, ranges=None, calibration_embeddings=None)
    ec.search(queries, corpus, k=10, metric="cos")
    ec.topk(scores, k, largest=True)
    ec.bidirectional(model); ec.accelerate(st_model)
    ec.Embedder.from_pretrained(path).encode(sentences)
    ec.Index(dim, precision="float32", metric="cos"); ec.semantic_search(q, corpus, top_k=10)
    ec.tune(corpus, queries=None, k=10, target_recall=0.95).best; ec.Index.from_tune(row, corpus)
    ec.inspect(embeddings, texts=None)   # anisotropy, effective_rank, hubness_skew, ...
    ec.distributed.encode(texts, model); ec.distributed.ShardedIndex.from_index(index, shards=4)

Names resolve lazily, so ``import embedcore`` stays cheap and works without triton, without the
CUDA extension and without a GPU.
"""

from __future__ import annotations

import importlib
from typing import Any

from embedcore._version import __version__

# public name -> module that defines it. A module never shares its function's name (tune lives in
# embedcore.tuning, inspect in embedcore.inspection): importing embedcore.X binds X on the package,
# which would shadow the function of that name.
_EXPORTS = {
    "info": "embedcore._backend",
    "topk": "embedcore.ops.topk",
    "attention": "embedcore.ops.attention",
    "pool": "embedcore.ops.pooling",
    "pool_varlen": "embedcore.ops.pooling",
    "quantize": "embedcore.ops.quantize",
    "quantization_ranges": "embedcore.ops.quantize",
    "dequantize": "embedcore.ops.quantize",
    "search": "embedcore.ops.search",
    "bidirectional": "embedcore.models.patching",
    "accelerate": "embedcore.models.accelerate",
    "Embedder": "embedcore.models.embedder",
    "Index": "embedcore.index",
    "semantic_search": "embedcore.index",
    "tune": "embedcore.tuning",
    "inspect": "embedcore.inspection",
}

# subpackages reachable as attributes (ec.distributed needs the ray extra only when called)
_SUBPACKAGES = ("distributed",)

__all__ = [*sorted(_EXPORTS), *_SUBPACKAGES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"embedcore.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
