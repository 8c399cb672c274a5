"""Validation of a saved index's manifest metadata: every field present and of its type."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedcore import persist

INT64_MAX = int(np.iinfo(np.int64).max)


def checked_meta(
    meta: Any, where: str, precisions: tuple[str, ...], metrics: tuple[str, ...]
) -> dict[str, Any]:
    """The index fields of a manifest's metadata, each present and of its type.

    Args:
        meta: the manifest's ``metadata`` value (anything, as parsed from JSON).
        where: the folder, for the messages.
        precisions, metrics: the valid values of those fields.

    Raises:
        persist.CorruptFolderError: naming the folder and the first invalid field.
    """

    def bad(field: str, why: str) -> persist.CorruptFolderError:
        return persist.CorruptFolderError(f"{where}: invalid index manifest: metadata.{field} {why}")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(meta, dict):
        raise persist.CorruptFolderError(f"{where}: invalid index manifest: metadata is missing")
    checks = {
        "dim": (lambda v: is_int(v) and v >= 1, "must be a positive int"),
        "precision": (lambda v: v in precisions, f"must be one of {precisions}"),
        "metric": (lambda v: v in metrics, f"must be one of {metrics}"),
        "rescore": (lambda v: v in (None, "int8", "float32"), "must be null, 'int8' or 'float32'"),
        "rescore_multiplier": (lambda v: is_int(v) and v >= 1, "must be a positive int"),
        "count": (lambda v: is_int(v) and 0 <= v <= INT64_MAX, "must be a non-negative int"),
        "next_id": (lambda v: is_int(v) and 0 <= v <= INT64_MAX + 1, "must be a non-negative int"),
        "user": (lambda v: isinstance(v, dict), "must be an object"),
    }
    for field, (ok, why) in checks.items():
        if field not in meta:
            raise bad(field, "is missing")
        if not ok(meta[field]):
            raise bad(field, f"{why}, got {meta[field]!r}")
    return meta
