"""Resumable on-disk output of a distributed encode: one verified folder per shard plus a manifest.

Layout::

    DIR/manifest/            the top-level manifest: a :mod:`embedcore.persist` folder without
                             arrays ("embedcore.embedding_shards") whose metadata is
                             {"job": {...}, "count": N, "dim": D, "dtype": ...,
                              "shards": [{"folder", "start", "stop", "manifest_sha256"}, ...]}
    DIR/shard_00000/         a :mod:`embedcore.persist` folder ("embedcore.embedding_shard"):
                             ids.npy (n,) int64 = start..stop-1, embeddings.npy (n, D)

Shard ``i`` holds the rows ``[i * rows_per_shard, min(N, (i + 1) * rows_per_shard))`` in input order.
Each shard folder is written atomically with SHA-256 per array (:func:`embedcore.persist.save_folder`)
and records the job it belongs to (model, options, row count, shard size); the top-level manifest is
written last, atomically, and records the SHA-256 of every shard's manifest. A restarted job keeps
every shard that verifies and belongs to the same job and recomputes the others, so a row is never
lost or written twice. :func:`load_embeddings` reads the result back, verified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from embedcore import persist

TOP = "manifest"  # the folder of the top-level manifest
SHARD_FORMAT = "embedcore.embedding_shard"
SET_FORMAT = "embedcore.embedding_shards"
FORMAT_VERSION = 1


def shard_name(i: int) -> str:
    return f"shard_{i:05d}"


def plan(n: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` row ranges of the shards of ``n`` rows."""
    return [(a, min(n, a + rows_per_shard)) for a in range(0, n, rows_per_shard)]


def write_top(root: Path, kind: str, metadata: dict[str, Any]) -> None:
    """Writes the top-level manifest of a shard set (``root/manifest/``, a verified
    :mod:`embedcore.persist` folder without arrays), atomically; written last, it marks the set done."""
    persist.save_folder(root / TOP, kind, {}, metadata, FORMAT_VERSION)


def read_top(root: Path, kind: str) -> dict[str, Any]:
    """The metadata of ``root``'s top-level manifest, checked for ``kind``.

    Raises:
        FileNotFoundError: no finished set in ``root``.
        embedcore.persist.CorruptFolderError: another format, a newer version or invalid JSON.
    """
    if not persist.is_saved_folder(root / TOP):
        raise FileNotFoundError(f"{root} holds no finished {kind} (no {TOP} folder)")
    return persist.read_manifest(root / TOP, kind, FORMAT_VERSION)["metadata"]


def _manifest_sha256(folder: Path) -> str:
    """SHA-256 of the live manifest of a persist folder (it names the checksums of all its arrays)."""
    return persist.sha256_file(persist.current_folder(folder) / persist.MANIFEST)


def check_shard_entries(root: Path, entries: Any) -> None:
    """Checks that each shard folder's manifest still has the SHA-256 the top-level manifest recorded."""
    for entry in entries:
        folder = root / str(entry.get("folder"))
        if folder.parent != root or _manifest_sha256(folder) != entry.get("manifest_sha256"):
            raise persist.CorruptFolderError(f"{folder}: its manifest does not match {root / TOP}")


def check_output_folder(path: Path) -> None:
    """Refuses an output folder that holds anything but this format's own files (nothing the user
    owns is ever replaced); creates it when it is missing."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {path} exists and is not a folder")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output {path}: its folder {path.parent} does not exist")
    path.mkdir(exist_ok=True)
    for entry in path.iterdir():
        ours = entry.name == TOP or entry.name.startswith(("shard_", "float32_pass", "."))
        if not ours:
            raise ValueError(
                f"output {path} holds {entry.name!r}, which is not part of an embedcore shard set; "
                "choose an empty or new folder"
            )


def verified(folder: Path, job: dict[str, Any], start: int, stop: int) -> bool:
    """Whether ``folder`` holds a complete shard of ``job`` for rows ``[start, stop)``.

    A shard of another job raises (it is never overwritten silently); a missing, incomplete or
    corrupted one is reported as not verified, to be recomputed.
    """
    if not folder.exists():
        return False
    try:
        manifest, arrays = persist.load_folder(folder, SHARD_FORMAT, FORMAT_VERSION, mmap=True)
    except (FileNotFoundError, persist.CorruptFolderError):
        return False
    meta = manifest["metadata"]
    if meta.get("job") != job:
        raise ValueError(
            f"{folder} belongs to another encode job ({meta.get('job')}); use a new output folder"
        )
    ids = arrays.get("ids")
    emb = arrays.get("embeddings")
    return (
        ids is not None
        and emb is not None
        and (meta.get("start"), meta.get("stop")) == (start, stop)
        and len(ids) == len(emb) == stop - start
        and bool((ids == np.arange(start, stop)).all())
    )


def write_shard(folder: Path, job: dict[str, Any], start: int, embeddings: np.ndarray) -> None:
    """Writes rows ``start ..`` of the output as a verified shard folder, atomically."""
    stop = start + len(embeddings)
    ids = np.arange(start, stop, dtype=np.int64)
    meta = {"job": job, "start": start, "stop": stop}
    persist.save_folder(folder, SHARD_FORMAT, {"ids": ids, "embeddings": embeddings}, meta, FORMAT_VERSION)


def read_shard(folder: Path) -> np.ndarray:
    """The embeddings of a verified shard folder (memory-mapped)."""
    _, arrays = persist.load_folder(folder, SHARD_FORMAT, FORMAT_VERSION, mmap=True)
    return arrays["embeddings"]


def manifest_entry(root: Path, i: int, start: int, stop: int) -> dict[str, Any]:
    folder = root / shard_name(i)
    return {
        "folder": folder.name,
        "start": start,
        "stop": stop,
        "manifest_sha256": _manifest_sha256(folder),
    }


def load_embeddings(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads the output of a distributed encode back as one array in input order, verified.

    Args:
        path: the output folder (its ``manifest`` must exist: a finished job).

    Returns:
        (N, D) array of the job's dtype, row i the embedding of input row i.

    Raises:
        FileNotFoundError: no finished job in ``path``.
        embedcore.persist.CorruptFolderError: a shard whose checksums or row ranges do not match.
    """
    root = Path(path)
    manifest = read_top(root, SET_FORMAT)
    check_shard_entries(root, manifest.get("shards", []))
    parts, expected = [], 0
    for entry in manifest.get("shards", []):
        folder = root / str(entry.get("folder"))
        if entry.get("start") != expected:
            raise persist.CorruptFolderError(f"{root}: shard {folder.name} does not start at row {expected}")
        part = read_shard(folder)
        expected += len(part)
        parts.append(part)
    if expected != manifest.get("count"):
        raise persist.CorruptFolderError(
            f"{root}: the shards hold {expected} rows, not {manifest.get('count')}"
        )
    return np.concatenate(parts) if parts else np.zeros((0, manifest.get("dim", 0)), np.float32)
