"""Scale-out on Ray: distributed encode (Ray Data) and a sharded exact index (Ray actors).

::

    import embedcore as ec
    emb = ec.distributed.encode(texts, "path/to/model", concurrency=2)     # == Embedder.encode
    folder = ec.distributed.encode("docs.jsonl", model, output="emb/")     # resumable shards
    emb = ec.distributed.load_embeddings(folder)
    sharded = ec.distributed.ShardedIndex.from_index(index, shards=4)
    scores, ids = sharded.search(queries, k=10)                            # == index.search

Needs the ``ray`` extra (``pip install 'embedcore[ray]'``); this package imports without it and a
call that needs Ray says how to install it. Names resolve lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from embedcore.distributed._ray import INSTALL_HINT, MissingRayError

_EXPORTS = {
    "encode": "embedcore.distributed.encoding",
    "load_embeddings": "embedcore.distributed.shards",
    "ShardedIndex": "embedcore.distributed.sharded_index",
}

__all__ = [*sorted(_EXPORTS), "INSTALL_HINT", "MissingRayError"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedcore.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
