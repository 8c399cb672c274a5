"""Safe on-disk storage of named arrays: versioned folders behind one atomic pointer, with checksums.

Layout of a saved folder::

    DIR/CURRENT                 "v00000007 <sha256 of v00000007/manifest.json>\\n": the live version
    DIR/v00000007/manifest.json {"format": KIND, "format_version": N, "metadata": {...},
                                 "arrays": {NAME: {"file", "dtype", "shape", "bytes", "sha256"}}}
    DIR/v00000007/NAME.npy      one plain ``.npy`` file per array (no object arrays, nothing pickled)
    DIR/v00000006/              the previous version, kept for readers that resolved it just before
    DIR/.lock                   taken (``fcntl.flock``) by every saver: saves are serialised

A version folder never changes once its name exists. :func:`save_folder` builds the next version in a
hidden ``.tmp-*`` folder, fsyncs it, renames it to ``vNNNNNNNN`` and then replaces ``CURRENT`` (a temp
file, fsync, ``os.replace``): the pointer swap is the one atomic step, so a reader sees the complete old
or the complete new version, and a crash at any point leaves ``CURRENT`` naming a complete version.
With the lock held, every ``.tmp-*`` folder belongs to a dead save: the next save deletes them, and
every version other than the new one and the one it replaces (the previous version stays, so a reader
that resolved ``CURRENT`` just before the swap can still open it).

:func:`load_folder` reads ``CURRENT`` once, checks the manifest's bytes against the SHA-256 recorded
there (so every manifest field, metadata included, is covered), checks every array file's size, its
``.npy`` header against that size, and its SHA-256, then opens it with ``np.load(...,
allow_pickle=False)``, memory-mapped by default. A version removed by a concurrent save while it was
being read (the reader lost a race of two saves) is retried with the new pointer.

Folders written before versioning (``DIR/manifest.json`` next to the ``.npy`` files, no ``CURRENT``)
still load; the first save into one adds a version and the pointer, the second removes the old files.
Only names this module writes are ever deleted; a folder holding anything else is not saved into.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MANIFEST = "manifest.json"
POINTER = "CURRENT"
LOCK = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_VERSION = re.compile(r"^v(\d{8})$")
_POINTER_LINE = re.compile(r"^(v\d{8}) ([0-9a-f]{64})\n?$")
_TMP, _TRASH = ".tmp-", ".trash-"
_CHUNK = 1 << 22
# Loads retried when the version being read vanished because the pointer moved on meanwhile.
_LOAD_ATTEMPTS = 20


class CorruptFolderError(ValueError):
    """A saved folder whose manifest or files fail verification (truncated, tampered, incomplete)."""


def _step(name: str) -> None:
    """Marks a step of :func:`save_folder` ("written", "renamed", "pointed", "collected").

    Does nothing; crash tests replace it with a function that kills the process at one step.
    """


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


def write_file_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Writes one file atomically: ``write(f)`` fills a temporary file in the same folder, which is
    fsynced and renamed over ``path``; the folder entry is fsynced too. A failure leaves ``path`` as
    it was and removes the temporary file.

    Args:
        path: destination file; its folder must exist.
        write: writes the whole content to the binary file object it is given.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Writes one ``.npy`` file atomically (:func:`write_file_atomic`), never with pickle.

    Args:
        path: destination file; its folder must exist.
        array: any numpy array without object dtype.
    """
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"cannot save an array of dtype {array.dtype} (it would need pickle)")
    write_file_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


# ---------------------------------------------------------------------------- layout


def _read_pointer(path: Path) -> tuple[str, str] | None:
    """(version folder name, manifest SHA-256) from ``CURRENT``, or None without one.

    Raises:
        CorruptFolderError: a ``CURRENT`` that is not one valid pointer line.
    """
    try:
        text = (path / POINTER).read_bytes()
    except FileNotFoundError:
        return None
    match = _POINTER_LINE.match(text.decode("ascii", errors="replace"))
    if match is None:
        raise CorruptFolderError(f"{path / POINTER} is not a valid version pointer")
    return match.group(1), match.group(2)


def _is_legacy(path: Path) -> bool:
    """Whether ``path`` holds an embedcore manifest of the single-folder layout (not just any file
    called manifest.json: a save into the folder would later delete the files it names)."""
    file = path / MANIFEST
    try:
        if file.stat().st_size > _CHUNK:
            return False
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and {"format", "format_version", "arrays"} <= manifest.keys()


def is_saved_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :func:`save_folder` (either layout)."""
    path = Path(path)
    return path.is_dir() and ((path / POINTER).is_file() or _is_legacy(path))


def current_folder(path: str | os.PathLike[str]) -> Path:
    """The folder holding the live version's manifest and arrays (``path`` itself for the old layout).

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        CorruptFolderError: an invalid ``CURRENT``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    pointer = _read_pointer(path)
    return path if pointer is None else path / pointer[0]


def _write_pointer(path: Path, name: str, manifest_sha: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_TMP, suffix=".pointer", dir=path)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{name} {manifest_sha}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / POINTER)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path/.lock``: one saver per folder at a time (blocking)."""
    import fcntl

    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that no embedcore save wrote (empty for an empty or embedcore folder)."""
    if is_saved_folder(path):
        return []
    # A first save into the folder that died leaves only names of ours: .tmp-*, a version, the lock.
    return sorted(
        p.name for p in path.iterdir()
        if p.name != LOCK and not p.name.startswith((_TMP, _TRASH)) and not _VERSION.match(p.name)
    )


def _legacy_files(path: Path) -> list[Path]:
    """The top-level files of an old-layout folder (its manifest last), as its manifest names them."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        entries = manifest["arrays"].items()
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        entries = []
    files = [
        path / f"{name}.npy"
        for name, entry in entries
        if isinstance(name, str) and _NAME.match(name) and isinstance(entry, dict)
        and entry.get("file") == f"{name}.npy"
    ]
    return [*files, path / MANIFEST]


def _remove_tree(folder: Path) -> None:
    """Renames ``folder`` to a hidden trash name (readers see it gone at once), then deletes it."""
    fd, trash = tempfile.mkstemp(prefix=_TRASH, dir=folder.parent)
    os.close(fd)
    os.unlink(trash)  # only the unique name is wanted: rename() needs the target absent
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _collect(path: Path, keep: set[str], had_pointer: bool) -> None:
    """Deletes dead save leftovers and every version not in ``keep`` (the lock is held).

    Old-layout top-level files go once a versioned save has already replaced them (``had_pointer``),
    so they too survive one save as the previous version.
    """
    for entry in path.iterdir():
        name = entry.name
        if name.startswith((_TMP, _TRASH)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
        elif _VERSION.match(name) and name not in keep and entry.is_dir() and not entry.is_symlink():
            _remove_tree(entry)
    if had_pointer and (path / MANIFEST).is_file():
        for file in _legacy_files(path):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()


def _next_version(path: Path) -> str:
    numbers = [int(m.group(1)) for p in path.iterdir() if (m := _VERSION.match(p.name))]
    return f"v{max(numbers, default=0) + 1:08d}"


# ---------------------------------------------------------------------------- save


def _write_version(folder: Path, kind: str, format_version: int, arrays: dict[str, np.ndarray],
                   metadata: dict[str, Any]) -> str:
    """Writes the arrays and the manifest into ``folder`` (fsynced); returns the manifest's SHA-256."""
    entries = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        file = folder / f"{name}.npy"
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
    data = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode("utf-8")
    with open(folder / MANIFEST, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(folder)
    return hashlib.sha256(data).hexdigest()


def save_folder(
    path: str | os.PathLike[str],
    kind: str,
    arrays: dict[str, np.ndarray],
    metadata: dict[str, Any],
    format_version: int = 1,
) -> None:
    """Saves named arrays and JSON metadata as the next version of ``path``, switched to atomically.

    Args:
        path: destination folder: absent (created), empty, or a folder saved before; its parent
            must exist. A folder holding anything else is refused, never overwritten.
        kind: the ``format`` string that :func:`load_folder` will require (e.g. "embedcore.index").
        arrays: name -> numpy array; names are ``[A-Za-z0-9_]+``, dtypes are plain (no objects).
        metadata: JSON-serialisable dict stored verbatim in the manifest.
        format_version: the version of ``kind``'s layout written here.

    Raises:
        TypeError: an object-dtype array or metadata that is not JSON-serialisable.
        ValueError: an invalid array name, or ``path`` is a file or a folder of other files.
        OSError: the parent folder is missing or not writable (the previous version stays live).
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

    def refuse_foreign() -> None:
        foreign = _foreign_entries(path)
        if foreign:
            raise ValueError(
                f"{path} exists and is not an embedcore folder (it holds {foreign[0]!r}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); refusing to save into it"
            )

    if path.is_dir():
        refuse_foreign()  # before the lock file is created in someone else's folder
    path.mkdir(exist_ok=True)
    with _locked(path):
        refuse_foreign()
        pointer = _read_pointer_or_none(path)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP, dir=path))
        published = None
        try:
            manifest_sha = _write_version(tmp, kind, format_version, arrays, metadata)
            _step("written")
            name = _next_version(path)
            os.rename(tmp, path / name)
            published = path / name
            _fsync_dir(path)
            _step("renamed")
            _write_pointer(path, name, manifest_sha)
            published = None
            _step("pointed")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if published is not None:  # renamed but never pointed to: nobody can be reading it
                shutil.rmtree(published, ignore_errors=True)
            raise
        _collect(path, {name} | ({pointer[0]} if pointer else set()), had_pointer=pointer is not None)
        _step("collected")


def _read_pointer_or_none(path: Path) -> tuple[str, str] | None:
    """:func:`_read_pointer`, treating a damaged pointer as none (a save replaces it)."""
    try:
        return _read_pointer(path)
    except CorruptFolderError:
        return None


# ---------------------------------------------------------------------------- load


def _parse_manifest(file: Path, data: bytes, kind: str, max_version: int) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFolderError(f"{file} is not valid JSON ({exc})") from None
    except RecursionError:
        raise CorruptFolderError(f"{file} is not an embedcore manifest (nested too deeply)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        raise CorruptFolderError(f"{file} is not an embedcore manifest")
    if manifest.get("format") != kind:
        raise CorruptFolderError(f"{file.parent} holds {manifest.get('format')!r}, expected {kind!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptFolderError(f"{file} has an invalid format_version {version!r}")
    if version > max_version:
        raise CorruptFolderError(
            f"{file.parent} was written in format version {version} by a newer embedcore; this version "
            f"reads up to {max_version}: upgrade embedcore"
        )
    if not isinstance(manifest.get("metadata", {}), dict):
        raise CorruptFolderError(f"{file}: metadata must be an object")
    return manifest


def read_manifest(path: str | os.PathLike[str], kind: str, max_version: int) -> dict[str, Any]:
    """The parsed manifest of a saved folder's live version, checked for ``kind`` and a supported version.

    Raises:
        FileNotFoundError: ``path`` or its manifest does not exist.
        CorruptFolderError: a manifest that does not match its checksum in ``CURRENT``, unreadable
            JSON, another format, or a format version newer than ``max_version``.
    """
    return _read_live_manifest(Path(path), kind, max_version)[1]


def _read_live_manifest(path: Path, kind: str, max_version: int) -> tuple[Path, dict[str, Any]]:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    pointer = _read_pointer(path)
    folder = path if pointer is None else path / pointer[0]
    file = folder / MANIFEST
    try:
        data = file.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if pointer is None:
            raise FileNotFoundError(f"{path} has no {MANIFEST}; not a saved embedcore folder") from None
        raise FileNotFoundError(f"{path}: the version {pointer[0]} named by {POINTER} is missing") from None
    if pointer is not None and hashlib.sha256(data).hexdigest() != pointer[1]:
        raise CorruptFolderError(f"{file} does not match the SHA-256 recorded in {path / POINTER}")
    return folder, _parse_manifest(file, data, kind, max_version)


def npy_data_bytes(file: str | os.PathLike[str]) -> tuple[int, int]:
    """(header length, data bytes its header declares) of a ``.npy`` file, without reading the data.

    Raises:
        CorruptFolderError: an unreadable header, or one that asks for pickle.
    """
    fmt = np.lib.format
    with open(file, "rb") as f:
        try:
            major, _ = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
            raise CorruptFolderError(f"{file} is not a readable .npy file ({exc})") from None
        if dtype.hasobject:
            raise CorruptFolderError(f"{file} is not a readable .npy file (dtype {dtype} needs pickle)")
        count = 1
        for n in shape:
            count *= int(n)
        return f.tell(), count * dtype.itemsize


def _check_entry(path: Path, folder: Path, name: Any, entry: Any) -> Path:
    """The file of a valid manifest entry; every field's type checked."""
    ok = (
        isinstance(name, str) and _NAME.match(name) and isinstance(entry, dict)
        and entry.get("file") == f"{name}.npy" and isinstance(entry.get("dtype"), str)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("bytes"), int) and not isinstance(entry.get("bytes"), bool)
        and isinstance(entry.get("shape"), list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"])
    )
    if not ok:
        raise CorruptFolderError(f"{folder / MANIFEST}: invalid entry for array {name!r}")
    return folder / entry["file"]


def _load_version(path: Path, kind: str, max_version: int, mmap: bool, verify: bool,
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder, manifest = _read_live_manifest(path, kind, max_version)
    arrays = {}
    for name, entry in manifest["arrays"].items():
        file = _check_entry(path, folder, name, entry)
        if not file.is_file():
            raise FileNotFoundError(f"{path} is incomplete: {entry['file']} is missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise CorruptFolderError(
                f"{file} has {size} bytes, the manifest records {entry['bytes']} (truncated or altered)"
            )
        # The header's claim is checked against the size before anything is allocated or mapped.
        header, data = npy_data_bytes(file)
        if header + data != size:
            raise CorruptFolderError(
                f"{file}: its .npy header declares {data} data bytes, the file holds {size - header}"
            )
        if verify and sha256_file(file) != entry["sha256"]:
            raise CorruptFolderError(f"{file} does not match its SHA-256 checksum (corrupted or altered)")
        try:
            array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as exc:  # a bad header, or a header that asks for pickle
            raise CorruptFolderError(f"{file} is not a readable .npy file ({exc})") from None
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise CorruptFolderError(
                f"{file} holds {array.dtype.str} {list(array.shape)}, the manifest records "
                f"{entry['dtype']} {entry['shape']}"
            )
        arrays[name] = array
    manifest["folder"] = str(folder)
    return manifest, arrays


def shrunk_map(array: Any) -> str | None:
    """The file behind a memory-mapped ``array`` (or a view of one) if it is now shorter than the
    mapping, else None. Asks the mapping's own descriptor, so a file deleted meanwhile is fine."""
    while isinstance(array, np.ndarray):
        if isinstance(array, np.memmap) and getattr(array, "_mmap", None) is not None:
            m = array._mmap
            start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
            try:
                return array.filename if m.size() < start + len(m) else None
            except (ValueError, OSError):  # a closed mapping is never read again
                return None
        array = array.base
    return None


def _pointer_text(path: Path) -> bytes | None:
    try:
        return (path / POINTER).read_bytes()
    except OSError:
        return None


def load_folder(
    path: str | os.PathLike[str],
    kind: str,
    max_version: int = 1,
    mmap: bool = True,
    verify: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Loads the live version of a folder written by :func:`save_folder`, verifying it first.

    Args:
        path: the folder.
        kind: the expected ``format`` string.
        max_version: the newest format version this reader understands.
        mmap: memory-map the arrays read-only (``mmap_mode="r"``) instead of reading them.
        verify: check every file's SHA-256 against the manifest (reads each file once).

    Returns:
        (manifest, arrays): the parsed manifest dict, with ``"folder"`` added (the version folder
        the arrays came from), and name -> array.

    Raises:
        FileNotFoundError: the folder, its manifest or an array file is missing.
        CorruptFolderError: the manifest is invalid, altered or from a newer version, or an array
            file is truncated, altered, or does not match its recorded dtype and shape.
    """
    path = Path(path)
    for attempt in range(_LOAD_ATTEMPTS):
        before = _pointer_text(path)
        try:
            return _load_version(path, kind, max_version, mmap, verify)
        except (FileNotFoundError, CorruptFolderError):
            # A concurrent save moved the pointer on and collected what this reader had resolved:
            # read the new version. An unchanged pointer means the folder itself is broken.
            if attempt + 1 == _LOAD_ATTEMPTS or _pointer_text(path) == before:
                raise
    raise AssertionError("unreachable")
