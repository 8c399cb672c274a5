"""Safe on-disk storage of named arrays: an atomic folder with a JSON manifest and checksums.

Layout of a saved folder::

    DIR/manifest.json   {"format": KIND, "format_version": 1, "metadata": {...},
                         "arrays": {NAME: {"file", "dtype", "shape", "bytes", "sha256"}}}
    DIR/NAME.npy        one plain ``.npy`` file per array (no object arrays, nothing pickled)

``save_folder`` writes everything into a hidden sibling folder, fsyncs it, and only then renames it
to ``DIR``; an existing ``DIR`` is renamed aside first and deleted last. A crash at any point leaves
either the previous folder or the new one under ``DIR`` (or, between the two renames, none), never a
half-written one. ``load_folder`` checks the manifest, the size and SHA-256 of every file, then opens
the arrays with ``np.load(..., allow_pickle=False)``, memory-mapped by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_CHUNK = 1 << 22


class CorruptFolderError(ValueError):
    """A saved folder whose manifest or files fail verification (truncated, tampered, incomplete)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Writes one ``.npy`` file atomically: a temporary file in the same folder, fsync, rename.

    Args:
        path: destination file; its folder must exist.
        array: any numpy array without object dtype.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"cannot save an array of dtype {array.dtype} (it would need pickle)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_folder(
    path: str | os.PathLike[str],
    kind: str,
    arrays: dict[str, np.ndarray],
    metadata: dict[str, Any],
    format_version: int = 1,
) -> None:
    """Saves named arrays and JSON metadata as a verified folder, replacing ``path`` atomically.

    Args:
        path: destination folder (created or replaced); its parent must exist.
        kind: the ``format`` string that :func:`load_folder` will require (e.g. "embedcore.index").
        arrays: name -> numpy array; names are ``[A-Za-z0-9_]+``, dtypes are plain (no objects).
        metadata: JSON-serialisable dict stored verbatim in the manifest.
        format_version: the version of ``kind``'s layout written here.

    Raises:
        TypeError: an object-dtype array or metadata that is not JSON-serialisable.
        ValueError: an invalid array name.
        OSError: the parent folder is missing or not writable (nothing is left behind).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    for name, array in arrays.items():
        if not _NAME.match(name):
            raise ValueError(f"array name {name!r} must match [A-Za-z0-9_]+")
        if np.asarray(array).dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which cannot be saved without pickle")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        entries = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            file = tmp / f"{name}.npy"
            with open(file, "wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            entries[name] = {
                "file": file.name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "bytes": file.stat().st_size,
                "sha256": sha256_file(file),
            }
        manifest = {"format": kind, "format_version": format_version, "metadata": metadata, "arrays": entries}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Renames ``tmp`` to ``path``; an existing ``path`` is moved aside first and restored on failure."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.rmdir(old)  # only the unique name is wanted: rename() needs the target absent
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | os.PathLike[str], kind: str, max_version: int) -> dict[str, Any]:
    """The parsed manifest of a saved folder, checked for ``kind`` and a supported version.

    Raises:
        FileNotFoundError: ``path`` or its manifest does not exist.
        CorruptFolderError: unreadable JSON, another format, or a format version newer than
            ``max_version`` (written by a newer embedcore).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    file = path / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {MANIFEST}; not a saved embedcore folder")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFolderError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        raise CorruptFolderError(f"{file} is not an embedcore manifest")
    if manifest.get("format") != kind:
        raise CorruptFolderError(f"{path} holds {manifest.get('format')!r}, expected {kind!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptFolderError(f"{file} has an invalid format_version {version!r}")
    if version > max_version:
        raise CorruptFolderError(
            f"{path} was written in format version {version} by a newer embedcore; this version reads "
            f"up to {max_version}: upgrade embedcore"
        )
    if not isinstance(manifest.get("metadata", {}), dict):
        raise CorruptFolderError(f"{file}: metadata must be an object")
    return manifest


def load_folder(
    path: str | os.PathLike[str],
    kind: str,
    max_version: int = 1,
    mmap: bool = True,
    verify: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Loads a folder written by :func:`save_folder`, verifying it first.

    Args:
        path: the folder.
        kind: the expected ``format`` string.
        max_version: the newest format version this reader understands.
        mmap: memory-map the arrays read-only (``mmap_mode="r"``) instead of reading them.
        verify: check every file's SHA-256 against the manifest (reads each file once).

    Returns:
        (manifest, arrays): the parsed manifest dict and name -> array.

    Raises:
        FileNotFoundError: the folder, its manifest or an array file is missing.
        CorruptFolderError: the manifest is invalid or from a newer version, or an array file is
            truncated, altered, or does not match its recorded dtype and shape.
    """
    path = Path(path)
    manifest = read_manifest(path, kind, max_version)
    arrays = {}
    for name, entry in manifest["arrays"].items():
        if not (isinstance(entry, dict) and _NAME.match(str(name)) and entry.get("file") == f"{name}.npy"):
            raise CorruptFolderError(f"{path / MANIFEST}: invalid entry for array {name!r}")
        file = path / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(f"{path} is incomplete: {entry['file']} is missing")
        size = file.stat().st_size
        if size != entry.get("bytes"):
            raise CorruptFolderError(
                f"{file} has {size} bytes, the manifest records {entry.get('bytes')} (truncated or altered)"
            )
        if verify and sha256_file(file) != entry.get("sha256"):
            raise CorruptFolderError(f"{file} does not match its SHA-256 checksum (corrupted or altered)")
        try:
            array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as exc:  # a bad header, or a header that asks for pickle
            raise CorruptFolderError(f"{file} is not a readable .npy file ({exc})") from None
        if array.dtype.str != entry.get("dtype") or list(array.shape) != entry.get("shape"):
            raise CorruptFolderError(
                f"{file} holds {array.dtype.str} {list(array.shape)}, the manifest records "
                f"{entry.get('dtype')} {entry.get('shape')}"
            )
        arrays[name] = array
    return manifest, arrays
