"""Report output shared by ``tune`` and ``inspect``: text tables, atomic file writes, PNG figures.

matplotlib is imported only inside :func:`save_figure` (it is in the ``bench`` extra), with the
non-interactive Agg backend, so reports work on machines without a display.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedcore.persist import write_file_atomic


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    write_file_atomic(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """``value`` as indented UTF-8 JSON, written atomically (NaN is refused: it is not JSON)."""
    text = json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows (dicts) as CSV with a header of ``columns``, written atomically; None becomes empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str], left: Sequence[int] = (0,)) -> str:
    """A plain aligned table: the columns numbered in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def save_figure(path: str | os.PathLike[str], draw: Callable[[Any], None], ncols: int = 1) -> None:
    """Draws a figure of ``ncols`` side-by-side axes with ``draw(axes_list)`` and writes it as PNG,
    atomically.

    Raises:
        ModuleNotFoundError: matplotlib is not installed (``pip install 'embedcore[bench]'``).
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "PNG plots need matplotlib: pip install 'embedcore[bench]' (or matplotlib)"
        ) from None
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, no display, nothing left open.
    fig = Figure(figsize=(5.5 * ncols, 4.2), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    draw(axes)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(path, buffer.getvalue())
