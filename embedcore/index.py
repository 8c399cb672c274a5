"""Exact retrieval index over compact codes, with rescoring and safe persistence.

``Index(dim, precision, metric, rescore, rescore_multiplier, ranges)`` keeps the vectors it is given
in one of four formats and scans them with :func:`embedcore.search` (native code):

=========  =====================================  ==========================================
precision  stored per vector                      scan
=========  =====================================  ==========================================
float32    ``dim`` float32                        float queries, exact
float16    ``dim`` float16                        float queries against the float16 values
int8       ``dim`` int8 codes + shared ranges     float queries: dequantised codes (asymmetric);
                                                  int8 queries: the codes themselves (symmetric)
binary     ``ceil(dim / 8)`` bytes of sign bits   Hamming distance of the queries' sign bits
=========  =====================================  ==========================================

With ``rescore="int8"`` (binary only) or ``rescore="float32"`` the index also keeps int8 codes or
float32 vectors; a search then takes ``k * rescore_multiplier`` candidates from the scan and rescores
them with the float query against the dequantised int8 vectors (or the float vectors), never against
raw integer codes, and returns the best ``k``. :meth:`Index.tune_rescore_multiplier` picks the
smallest multiplier that reaches a requested recall.

``metric="cos"`` normalises vectors when they are added and queries when they are searched, so
scores are dot products of unit vectors (of the dequantised vectors for int8). Scores are
similarities (largest first) for ``cos``/``dot``, squared distances (smallest first) for ``l2``, and
Hamming distances (smallest first) for a binary index without rescoring.

int8 ranges (per-dimension min/max) are fixed at the first add, or given, and reused for every
later add: values outside them are clipped to the end buckets.

Device residency: ``Index(..., device="cuda")`` (or :meth:`Index.to`, or ``Index.load(...,
device=...)``) keeps the codes, the rescoring copy and the ids as torch tensors on that device;
adds quantise there and searches run :func:`embedcore.search` on the device tensors (its CUDA path
for CUDA tensors), rescoring included. Such an index returns torch tensors on its device whatever
the queries were. ``device=None`` (the default) keeps numpy arrays in host memory.

Rescoring with ``rescore="int8"`` scores the candidates' dequantised vectors (exactly
:func:`embedcore.ops.quantize.dequantize`); they are cached as float32 next to the codes while the
cache stays under :data:`DEQUANT_CACHE_BYTES`, and computed per query for larger indexes (same
values, so the same results either way). The cache is memory only: never saved, and not counted in
:attr:`Index.nbytes`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from embedcore import _backend, persist
from embedcore._arrays import check_array, cpu_numpy, is_tensor, like
from embedcore._index_meta import INT64_MAX, checked_meta
from embedcore.ops.quantize import dequantize, quantization_ranges, quantize
from embedcore.ops.search import search

Precision = Literal["float32", "float16", "int8", "binary"]
Metric = Literal["cos", "dot", "l2"]
Rescore = Literal["int8", "float32"]
PRECISIONS = ("float32", "float16", "int8", "binary")
METRICS = ("cos", "dot", "l2")
# precision -> the rescore modes it supports (None: no rescoring)
RESCORE_MODES: dict[str, tuple[str | None, ...]] = {
    "float32": (None,),
    "float16": (None, "float32"),
    "int8": (None, "float32"),
    "binary": (None, "int8", "float32"),
}
FORMAT = "embedcore.index"
FORMAT_VERSION = 1
# Candidate multipliers tried by tune_rescore_multiplier, in order.
_MULTIPLIERS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)
_RESERVED = ("ids", "codes", "rescore_vectors", "ranges")
# Largest float32 cache of dequantised int8 rescoring vectors kept in memory (bytes).
DEQUANT_CACHE_BYTES = 256 << 20


def _host(a: Any) -> np.ndarray:
    """A numpy array holding ``a`` (a numpy array, or a tensor on any device)."""
    return a.detach().cpu().numpy() if is_tensor(a) else a


def _nbytes(a: Any) -> int:
    return a.numel() * a.element_size() if is_tensor(a) else a.nbytes


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _normalize(x: np.ndarray, name: str) -> np.ndarray:
    """Rows of float32 ``x`` (n, dim) scaled to unit length, computed in float64 so unit rows come
    back unchanged.

    Raises:
        ValueError: NaN/inf in ``x`` (a row's float64 sum of squares of float32 values is finite
            exactly when the row is: no separate pass over ``x``), or a zero row.
    """
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    # One comparison per bound in the common case (a single query: Python floats); NaN fails both.
    n = len(norms)
    ok = n == 0 or (0 < float(norms[0]) < np.inf if n == 1 else norms.min() > 0 and norms.max() < np.inf)
    if not ok:
        if not np.isfinite(norms).all():
            raise ValueError(f"{name} contains NaN or infinity")
        row = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"{name} row {row} is a zero vector; its cosine similarity is undefined")
    return np.divide(x64, norms[:, None], out=x64).astype(np.float32)


class _Rows:
    """A growable (n, width) array: amortised O(1) appends, views without copies.

    The storage is a numpy array or a torch tensor (device-resident index). It may start from a
    read-only memory map; the first append or removal copies into memory.
    """

    def __init__(self, data: Any) -> None:
        self._data = data
        self._n = len(data)

    def view(self) -> Any:
        return self._data[: self._n]

    def append(self, rows: Any) -> None:
        need = self._n + len(rows)
        data = self._data
        if is_tensor(data):
            if need > len(data):
                import torch

                grown = torch.empty((max(need, 2 * self._n, 16), *data.shape[1:]), dtype=data.dtype,
                                    device=data.device)
                grown[: self._n] = data[: self._n]
                self._data = grown
        elif need > len(data) or not data.flags.writeable:
            grown = np.empty((max(need, 2 * self._n, 16), *data.shape[1:]), data.dtype)
            grown[: self._n] = data[: self._n]
            self._data = grown
        self._data[self._n : need] = rows
        self._n = need

    def keep(self, mask: np.ndarray) -> None:
        """Keeps the rows where the (n,) bool numpy ``mask`` is true, in order."""
        if is_tensor(self._data):
            import torch

            self._data = self.view()[torch.from_numpy(mask).to(self._data.device)].contiguous()
        else:
            self._data = np.ascontiguousarray(self.view()[mask])
        self._n = len(self._data)


class Index:
    """An exact top-k index over float, int8 or binary codes, with optional rescoring.

    Args:
        dim: embedding dimension (>= 1).
        precision: float32, float16, int8 or binary: the format that is scanned.
        metric: cos, dot or l2; the similarity the float embeddings are compared with.
        rescore: None, "int8" (binary only) or "float32" (any compact precision): the extra copy
            that the ``k * rescore_multiplier`` scan candidates are rescored with.
        rescore_multiplier: candidates per result taken from the scan when rescoring (>= 1).
        ranges: (2, dim) float per-dimension min/max for the int8 codes (int8 precision or int8
            rescoring); default: taken from the first :meth:`add`.
        device: None (numpy arrays in host memory) or a torch device ("cuda", "cuda:1", "cpu"):
            codes, rescoring copy and ids are kept as tensors there, searched there, and results
            come back as tensors on it.

    Example::

        idx = Index(384, precision="binary", rescore="int8")
        idx.add(corpus_embeddings)                 # (n, 384) float32
        scores, ids = idx.search(query_embeddings, k=10)
    """

    def __init__(
        self,
        dim: int,
        precision: Precision = "float32",
        metric: Metric = "cos",
        rescore: Rescore | None = None,
        rescore_multiplier: int = 4,
        ranges: Any = None,
        device: Any = None,
    ) -> None:
        self.dim = _positive_int(dim, "dim")
        if precision not in PRECISIONS:
            raise ValueError(f"Invalid precision {precision!r}; valid: {PRECISIONS}")
        if metric not in METRICS:
            raise ValueError(f"Invalid metric {metric!r}; valid: {METRICS}")
        if rescore not in RESCORE_MODES[precision]:
            raise ValueError(
                f"Invalid rescore {rescore!r} for precision {precision!r}; valid: {RESCORE_MODES[precision]}"
            )
        self.precision: str = precision
        self.metric: str = metric
        self.rescore: str | None = rescore
        self.rescore_multiplier = _positive_int(rescore_multiplier, "rescore_multiplier")
        self.metadata: dict[str, Any] = {}
        self.extra_arrays: dict[str, np.ndarray] = {}
        self._ranges: np.ndarray | None = None
        if ranges is not None:
            if not self._uses_int8():
                raise ValueError("ranges applies to int8 codes only (precision='int8' or rescore='int8')")
            self._ranges = self._check_ranges(ranges)
        width = (self.dim + 7) // 8 if precision == "binary" else self.dim
        code_dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}
        self._ids = _Rows(np.empty(0, np.int64))
        self._codes = _Rows(np.empty((0, width), code_dtype[precision]))
        self._extra = (
            None
            if rescore is None
            else _Rows(np.empty((0, self.dim), np.int8 if rescore == "int8" else np.float32))
        )
        self._next_id = 0
        self.device: Any = None
        self._ranges_dev: Any = None  # the ranges as a tensor on the device (device indexes)
        self._deq: Any = None  # cached dequantised int8 rescoring vectors (or None)
        if device is not None:
            self._move(device)

    def _move(self, device: Any) -> None:
        """Puts the stored arrays on ``device`` (a torch device) or, for None, in numpy host memory."""
        if device is None:
            convert = _host
        else:
            import torch

            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"Invalid device {device!r} ({exc})") from None
            if device.type == "meta":
                raise ValueError("Invalid device 'meta': an index needs a device that holds values")

            def convert(a: Any) -> Any:
                if is_tensor(a):
                    return a.to(device)
                return torch.from_numpy(np.array(a)).to(device)  # a copy: memory maps are read-only

        for name in ("_ids", "_codes", "_extra"):
            rows = getattr(self, name)
            if rows is not None:
                setattr(self, name, _Rows(convert(rows.view())))
        self.device = device
        self._deq = None
        self._ranges_dev = None if device is None or self._ranges is None else convert(self._ranges)

    def to(self, device: Any) -> Index:
        """Moves the stored arrays to ``device`` in place and returns the index.

        Args:
            device: a torch device (or its name) to keep tensors there, or None for numpy arrays
                in host memory.

        Returns:
            self.
        """
        self._move(device)
        return self

    # ---------------------------------------------------------------- properties

    def __len__(self) -> int:
        return len(self._ids.view())

    def __repr__(self) -> str:
        return (
            f"Index(dim={self.dim}, precision={self.precision!r}, metric={self.metric!r}, "
            f"rescore={self.rescore!r}, rescore_multiplier={self.rescore_multiplier}, n={len(self)})"
        )

    @property
    def ids(self) -> Any:
        """(n,) int64 user ids in storage order: a read-only numpy view, or for a device index a
        tensor on its device (a copy)."""
        if self.device is not None:
            return self._ids.view().clone()
        view = self._ids.view().view()
        view.flags.writeable = False
        return view

    @property
    def next_id(self) -> int:
        """The first id of the next :meth:`add` without ids: one past the largest id ever added."""
        return self._next_id

    @property
    def ranges(self) -> np.ndarray | None:
        """(2, dim) float32 int8 quantization ranges (min row, max row), or None until fixed."""
        return None if self._ranges is None else self._ranges.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held for the vectors: scanned codes plus rescoring copy plus ranges (ids excluded)."""
        total = _nbytes(self._codes.view()) + (0 if self._ranges is None else self._ranges.nbytes)
        return total + (0 if self._extra is None else _nbytes(self._extra.view()))

    def _uses_int8(self) -> bool:
        return self.precision == "int8" or self.rescore == "int8"

    def _check_ranges(self, ranges: Any) -> np.ndarray:
        check_array(ranges, "ranges")
        r = cpu_numpy(ranges, "ranges")
        if r.dtype.kind != "f":
            raise TypeError(f"ranges must hold floats, got {r.dtype}")
        if r.shape != (2, self.dim):
            raise ValueError(f"ranges must have shape (2, {self.dim}) (min row, max row), got {r.shape}")
        if not np.isfinite(r).all() or (r[0] > r[1]).any():
            raise ValueError("ranges must be finite with ranges[0] (min) <= ranges[1] (max)")
        return r.astype(np.float32)

    def verify(self) -> None:
        """Checks that the files a memory-mapped index reads still have the sizes they were loaded with.

        A file truncated by another program after :meth:`load` would crash the interpreter (SIGBUS)
        on the next read of its missing pages; :meth:`add`, :meth:`remove` and :meth:`save` call this
        first. A search does not (an ``fstat`` per mapped array per query): call it after anything may have
        touched the folder, or load with ``mmap=False``.

        Raises:
            embedcore.persist.CorruptFolderError: a mapped file shrank.
        """
        arrays = [rows.view() for rows in (self._ids, self._codes, self._extra) if rows is not None]
        for array in [*arrays, *self.extra_arrays.values()]:
            file = persist.shrunk_map(array)
            if file is not None:
                raise persist.CorruptFolderError(
                    f"{file} shrank after it was memory-mapped (another program truncated it); reading "
                    "it would crash the interpreter: load the index again"
                )

    # ---------------------------------------------------------------- add / remove

    def _float_rows(self, x: Any, name: str) -> Any:
        """``x`` as a finite float32 (n, dim) numpy array (a tensor on the device of a device
        index), normalised for ``cos``."""
        check_array(x, name)
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n, {self.dim}), got shape {tuple(x.shape)}")
        if int(x.shape[1]) != self.dim:
            raise ValueError(f"{name} has dim {int(x.shape[1])}, the index has dim {self.dim}")
        if self.device is not None:
            return self._float_rows_device(x, name)
        # float32 C-contiguous numpy (the usual query) needs no conversion.
        arr = x if isinstance(x, np.ndarray) and x.dtype == np.float32 else cpu_numpy(x, name)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must hold floats (float16/bfloat16/float32/float64), got {arr.dtype}")
        if arr.dtype != np.float32:
            with np.errstate(over="ignore"):  # out-of-range float64 becomes inf, rejected below
                arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr)
        if self.metric == "cos":
            return _normalize(arr, name)  # checks NaN/inf on the way
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        return arr

    def _float_rows_device(self, x: Any, name: str) -> Any:
        """:meth:`_float_rows` in torch on the index's device: the same checks and the same float64
        normalisation, so a device="cpu" index stores and searches the same values."""
        import torch

        if is_tensor(x):
            t = x.detach()
            floating = t.dtype.is_floating_point
        else:
            floating = x.dtype.kind == "f"
            t = torch.from_numpy(np.ascontiguousarray(x)) if floating else None
        if not floating:
            raise TypeError(f"{name} must hold floats (float16/bfloat16/float32/float64), got {x.dtype}")
        t = t.to(device=self.device, dtype=torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinity")
        if self.metric != "cos":
            return t.contiguous()
        t64 = t.double()
        norms = (t64 * t64).sum(1).sqrt()
        zero = norms == 0
        if bool(zero.any()):
            row = int(torch.nonzero(zero)[0, 0])
            raise ValueError(f"{name} row {row} is a zero vector; its cosine similarity is undefined")
        return (t64 / norms[:, None]).to(torch.float32).contiguous()

    def _store(self, a: np.ndarray) -> Any:
        """A host numpy array as the index keeps it: unchanged, or a tensor on its device."""
        if self.device is None:
            return a
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _new_ids(self, ids: Any, n: int) -> np.ndarray:
        if ids is None:
            if self._next_id + n - 1 > INT64_MAX:
                raise ValueError(
                    f"ids: default ids from {self._next_id} would pass the int64 maximum; pass ids explicitly"
                )
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        # Tensors on any device (a device index's own ids, say): the bookkeeping runs on the host.
        arr = _host(ids) if (isinstance(ids, np.ndarray) or is_tensor(ids)) else np.asarray(ids)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"ids must have shape ({n},) to match embeddings, got {arr.shape}")
        if arr.dtype == np.uint64 and (arr > np.iinfo(np.int64).max).any():
            raise ValueError("ids must fit in int64")
        arr = arr.astype(np.int64)
        uniq, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids contains duplicates, e.g. {int(uniq[counts > 1][0])}")
        clash = np.isin(arr, _host(self._ids.view()))
        if clash.any():
            raise ValueError(f"id {int(arr[clash][0])} is already in the index (ids must be unique)")
        return arr

    def add(self, embeddings: Any, ids: Any = None) -> None:
        """Adds float embeddings; the index quantizes them itself.

        Args:
            embeddings: (n, dim) float16/bfloat16/float32/float64 numpy array or CPU tensor, finite
                (no zero rows with ``metric="cos"``).
            ids: (n,) integers, unique and not yet in the index; default: consecutive ids after the
                largest one handed out so far (0..n-1 for a new index).

        Raises:
            TypeError: non-float embeddings or non-integer ids.
            ValueError: wrong shape or dim, NaN/inf, zero vectors under cos, duplicate ids, or a
                first int8 add of a single row without ``ranges``.
        """
        self.verify()
        x = self._float_rows(embeddings, "embeddings")
        new_ids = self._new_ids(ids, len(x))
        if len(x) == 0:
            return
        ranges = self._ranges
        if self._uses_int8() and ranges is None:
            if len(x) < 2:
                raise ValueError(
                    "the first add to an int8 index needs at least 2 rows to derive the quantization "
                    "ranges; add more rows or pass ranges= to Index()"
                )
            ranges = _host(quantization_ranges(x)).astype(np.float32)
        # On a device, ec.quantize runs there (tensor in, tensor out) with the ranges as a tensor.
        dev_ranges = self._ranges_dev
        if ranges is not None and self.device is not None and dev_ranges is None:
            dev_ranges = self._store(ranges)
        q_ranges = ranges if self.device is None else dev_ranges
        # Everything is computed before any state changes, so a failed add leaves the index as it was.
        if self.precision == "binary":
            codes = quantize(x, "ubinary")
        elif self.precision == "int8":
            codes = quantize(x, "int8", ranges=q_ranges)
        else:
            codes = quantize(x, self.precision)
        extra = None
        if self.rescore == "int8":
            extra = quantize(x, "int8", ranges=q_ranges)
        elif self.rescore == "float32":
            extra = x
        self._ranges, self._ranges_dev = ranges, dev_ranges
        self._deq = None
        self._codes.append(codes)
        if extra is not None:
            self._extra.append(extra)
        self._ids.append(self._store(new_ids))
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)

    def remove(self, ids: Any) -> int:
        """Removes vectors by id.

        Args:
            ids: integers (a sequence, array or tensor), each present in the index.

        Returns:
            The number of vectors removed.

        Raises:
            KeyError: an id that is not in the index.
        """
        self.verify()
        arr = np.asarray(_host(ids)).reshape(-1)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > INT64_MAX:
            raise ValueError(f"ids must fit in int64, got {int(arr.max())}")
        arr = arr.astype(np.int64)
        stored = _host(self._ids.view())
        missing = ~np.isin(arr, stored)
        if missing.any():
            raise KeyError(f"id {int(arr[missing][0])} is not in the index")
        keep = ~np.isin(stored, arr)
        removed = int(len(keep) - keep.sum())
        if removed:
            for rows in (self._ids, self._codes, self._extra):
                if rows is not None:
                    rows.keep(keep)
            self._deq = None
        return removed

    # ---------------------------------------------------------------- search

    def _scan(self, q: Any, k: int) -> tuple[Any, Any]:
        """Top-k rows of the scanned format for float queries ``q`` (already normalised for cos)."""
        from embedcore.ops.search import search

        codes = self._codes.view()
        metric = "dot" if self.metric == "cos" else self.metric
        if self.precision == "binary":
            return search(quantize(q, "ubinary"), codes, k, "hamming")
        if self.precision == "int8":
            return search(q, codes, k, metric, ranges=self._ranges)
        return search(q, codes, k, metric)

    def _dequantised(self) -> Any:
        """All int8 rescoring vectors dequantised, float32 (n, dim), cached until the next add or
        removal; None when that would take more than :data:`DEQUANT_CACHE_BYTES`."""
        if self._deq is None:
            codes = self._extra.view()
            if len(codes) * self.dim * 4 > DEQUANT_CACHE_BYTES:
                return None
            if isinstance(codes, np.ndarray) and not codes.flags.writeable:
                codes = codes.copy()  # a read-only memory map: torch.from_numpy warns on those
            self._deq = dequantize(codes, self._ranges if self.device is None else self._ranges_dev)
        return self._deq

    def _rescore_vectors(self, rows: Any = None) -> Any:
        """Float32 (len(rows), dim) rescoring vectors of the given storage rows (None: all rows).

        Args:
            rows: (m,) int64 storage rows, numpy (a tensor on the device of a device index), or None.
        """
        if self.rescore == "float32":
            vectors = self._extra.view()
            return vectors if rows is None else vectors[rows]
        cached = self._dequantised()
        if cached is not None:
            return cached if rows is None else cached[rows]
        codes = self._extra.view() if rows is None else self._extra.view()[rows]
        return dequantize(codes, self._ranges if self.device is None else self._ranges_dev)

    def _rescore(self, q: Any, candidates: Any, k: int) -> tuple[Any, Any]:
        """Rescores candidate rows (nq, c) with float queries (nq, dim); returns the best k per query.

        Each query's candidates are scored by :func:`embedcore.search` over just those rows' float32
        vectors: the stored float vectors, or the dequantised int8 codes.
        """
        metric = "dot" if self.metric == "cos" else self.metric
        # Ascending rows: search's tie rule (lower position first) then means lower storage row first.
        if self.device is None:
            candidates = np.sort(candidates, axis=1)
            scores = np.empty((len(q), k), np.float32)
            rows = np.empty((len(q), k), np.int64)
        else:
            import torch

            candidates = torch.sort(candidates, dim=1).values
            scores = torch.empty((len(q), k), dtype=torch.float32, device=self.device)
            rows = torch.empty((len(q), k), dtype=torch.int64, device=self.device)
        if len(q) == 1:  # one query: no result buffers to fill
            cand = candidates[0]
            s, pos = search(q, self._rescore_vectors(cand), k, metric)
            return s, cand[pos]
        for i in range(len(q)):
            cand = candidates[i]
            s, pos = search(q[i : i + 1], self._rescore_vectors(cand), k, metric)
            scores[i], rows[i] = s[0], cand[pos[0]]
        return scores, rows

    def _search_one_binary(self, query: np.ndarray, k: int, n_candidates: int) -> tuple[Any, Any]:
        """:meth:`_search_rows` of one float32 numpy query on a host binary index, with less per-call
        work: the same values and order (the same native kernels on the same arrays).

        The query gets :meth:`_float_rows`' checks and normalisation; its sign bits are
        ``np.packbits(q > 0)`` (what ``quantize(q, "ubinary")`` computes for numpy input), scanned
        with ``_C.search_hamming`` over the codes; rescoring runs ``_C.search_float`` over the
        candidates' float32 vectors in ascending storage-row order, as :meth:`_rescore` does through
        :func:`embedcore.search`. Falls back to the general path without ``embedcore._C`` or with
        ``EMBEDCORE_BACKEND=torch``.

        Args:
            query: (1, dim) float32 numpy array (dim not yet checked).
            k: results, already checked against len(self).
            n_candidates: candidates taken from the scan when rescoring.
        """
        native = _backend.native()
        # An unset or empty EMBEDCORE_BACKEND means "auto": no need to parse it.
        if native is None or (os.environ.get("EMBEDCORE_BACKEND") and _backend.force_reference()):
            return self._search_rows(self._float_rows(query, "queries"), k, n_candidates)
        q = None
        if self.metric == "cos" and query.shape[1] == self.dim:
            # _normalize's arithmetic for one row (same values); a bad row goes to _float_rows for its error.
            x64 = query.astype(np.float64)
            norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
            if 0 < float(norms[0]) < np.inf:
                q = np.divide(x64, norms[:, None], out=x64).astype(np.float32)
        if q is None:
            q = self._float_rows(query, "queries")
        threads = _backend.num_threads()
        bits = np.packbits(q > 0, axis=-1)
        if self.rescore is None:
            return native.search_hamming(bits, self._codes.view(), k, threads)
        codes = self._codes.view()
        _, candidates = native.search_hamming(bits, codes, min(n_candidates, len(codes)), threads)
        # Ascending rows: the tie rule (lower position first) then means lower storage row first.
        cand = candidates[0]
        cand.sort()  # in place: the array is this call's own
        deq = self._deq
        vectors = np.take(deq, cand, axis=0) if deq is not None else self._rescore_vectors(cand)
        metric = "dot" if self.metric == "cos" else self.metric
        scores, pos = native.search_float(q, vectors, "f32", metric, k, threads, None, None)
        return scores, cand[pos]

    def _search_rows(self, queries: Any, k: int, n_candidates: int) -> tuple[Any, Any]:
        """(scores, storage rows) for prepared float queries, taking ``n_candidates`` when rescoring."""
        if self.rescore is None:
            return self._scan(queries, k)
        _, candidates = self._scan(queries, min(n_candidates, len(self)))
        return self._rescore(queries, candidates, k)

    def search(self, queries: Any, k: int = 10, rescore_multiplier: int | None = None) -> tuple[Any, Any]:
        """Exact top-k search.

        Args:
            queries: (nq, dim) float numpy array or tensor (a CPU one for a host index; any
                device for a device index, which moves it to its own); or, for an int8 index without
                rescoring, (nq, dim) int8 codes made with :attr:`ranges` (symmetric: integer dot or
                l2 of the codes, or their cosine);
                or, for a binary index without rescoring, (nq, ceil(dim / 8)) uint8 packed sign bits.
            k: results per query, 1 <= k <= len(self).
            rescore_multiplier: overrides :attr:`rescore_multiplier` for this call.

        Returns:
            (scores, ids): (nq, k) float32 (int32 for int8 dot/l2 or binary queries) and int64 ids,
            best first (see the module docstring for score units), ties toward the earlier-stored
            vector. Host index: numpy in, numpy out; tensor in, tensor out. Device index: tensors
            on the index's device.

        Raises:
            ValueError: an empty index, k out of range, wrong query shape or dim, NaN/inf.
            TypeError: a query dtype the index cannot score.
        """
        check_array(queries, "queries")
        n = len(self)
        if n == 0:
            raise ValueError("the index is empty; add vectors before searching")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be an int in [1, {n}] (the number of vectors in the index), got {k!r}")
        k = int(k)
        mult = (
            self.rescore_multiplier
            if rescore_multiplier is None
            else _positive_int(rescore_multiplier, "rescore_multiplier")
        )
        if queries.ndim != 2:
            raise ValueError(f"queries must be 2-D (nq, dim), got shape {tuple(queries.shape)}")
        # dtype.kind first: formatting a numpy dtype as a string costs microseconds per query.
        is_int = not queries.dtype.is_floating_point if is_tensor(queries) else queries.dtype.kind in "iub"
        qdtype = str(queries.dtype).removeprefix("torch.") if is_int else "float"
        if qdtype in ("int8", "uint8"):
            packed = self.precision == "binary" and qdtype == "uint8"
            if self.rescore is not None or not (packed or (self.precision == "int8" and qdtype == "int8")):
                raise TypeError(
                    f"{qdtype} queries fit only an int8 (int8 codes) or binary (uint8 packed bits) index "
                    f"without rescoring; this index is {self.precision} with rescore={self.rescore!r}: "
                    "pass float queries"
                )
            width = int(self._codes.view().shape[1])
            if int(queries.shape[1]) != width:
                raise ValueError(f"queries have width {int(queries.shape[1])}, the index codes have {width}")
            # int8 codes are compared as they are (cos: of the codes, as sentence-transformers does).
            if self.device is None:
                codes_q = cpu_numpy(queries, "queries")
            elif is_tensor(queries):
                codes_q = queries.detach().to(self.device)
            else:
                codes_q = self._store(queries)
            scores, rows = search(codes_q, self._codes.view(), k, "hamming" if packed else self.metric)
        elif (
            type(queries) is np.ndarray
            and queries.shape[0] == 1
            and queries.dtype == np.float32
            and self.device is None
            and self.precision == "binary"
        ):
            scores, rows = self._search_one_binary(queries, k, k * mult)
        else:
            scores, rows = self._search_rows(self._float_rows(queries, "queries"), k, k * mult)
        if self.device is not None or isinstance(queries, np.ndarray):
            return scores, self._ids.view()[rows]
        return like(scores, queries), like(self._ids.view()[rows], queries)

    def tune_rescore_multiplier(
        self,
        target_recall: float,
        k: int = 10,
        sample_size: int = 1000,
        embeddings: Any = None,
        seed: int = 0,
    ) -> tuple[int, float]:
        """Sets :attr:`rescore_multiplier` to the smallest value whose estimated recall@k reaches a target.

        A sample of the indexed vectors serves as queries (each query's own vector is left out of
        both result lists); recall@k is measured against exact search over ``embeddings`` if given,
        else over the index's rescoring vectors. Multipliers 1, 2, 3, 4, 5, 6, 8, 10, ... 100 are tried.

        Args:
            target_recall: in (0, 1].
            k: results per query the recall is measured at.
            sample_size: how many stored vectors are used as queries (at most len(self)).
            embeddings: optional (len(self), dim) float embeddings of the stored vectors in storage
                order (:attr:`ids` order); the exact float reference and the queries.
            seed: seed of the sample.

        Returns:
            (multiplier, estimated recall) — also stored in :attr:`rescore_multiplier`.

        Raises:
            ValueError: no rescoring configured, too few vectors, or no multiplier up to 100 reaches
                the target (the best one found is named).
        """
        if self.rescore is None:
            raise ValueError("this index has rescore=None: there is no rescore multiplier to tune")
        if not (isinstance(target_recall, (int, float)) and 0 < target_recall <= 1):
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        n = len(self)
        k = _positive_int(k, "k")
        if n < k + 1:
            raise ValueError(f"the index needs more than k={k} vectors to estimate recall, it has {n}")
        sample_size = min(_positive_int(sample_size, "sample_size"), n)
        if embeddings is None:
            reference = self._rescore_vectors()
        else:
            reference = self._float_rows(embeddings, "embeddings")
            if len(reference) != n:
                raise ValueError(f"embeddings has {len(reference)} rows, the index holds {n}")
        rows = np.sort(np.random.default_rng(seed).choice(n, sample_size, replace=False))
        queries = reference[self._store(rows)]
        metric = "dot" if self.metric == "cos" else self.metric
        truth = _host(search(queries, reference, k + 1, metric)[1])

        def recall(found: np.ndarray) -> float:
            hits = 0
            for row, f, t in zip(rows, found, truth):
                hits += len(np.intersect1d(f[f != row][:k], t[t != row][:k]))
            return hits / (k * sample_size)

        best = (0, -1.0)
        for mult in _MULTIPLIERS:
            # One extra candidate and result: the query's own vector, dropped before counting.
            _, found = self._search_rows(queries, k + 1, k * mult + 1)
            r = recall(_host(found))
            if r > best[1]:
                best = (mult, r)
            if r >= target_recall or k * mult + 1 >= n:
                break
        if best[1] < target_recall:
            raise ValueError(
                f"no rescore multiplier up to {_MULTIPLIERS[-1]} reaches recall@{k} {target_recall}; "
                f"the best estimate is {best[1]:.4f} at multiplier {best[0]}"
            )
        self.rescore_multiplier = best[0]
        return best

    @classmethod
    def from_tune(cls, row: Any, corpus: Any) -> Index:
        """Builds the configuration one :func:`embedcore.tune` row describes over ``corpus``.

        Args:
            row: a row of ``TuneResult.rows`` (a dict with ``precision``, ``rescore``,
                ``rescore_multiplier``, ``truncate_dim``, ``metric``), or a ``TuneResult`` (its
                ``best``).
            corpus: (n, dim) float embeddings; cut to ``truncate_dim`` columns when that is
                smaller (queries must then be cut the same way; ``metadata["truncate_dim"]`` says so).

        Raises:
            ValueError: no recommendation (``best`` is None), a row without those keys, or a
                ``truncate_dim`` above the corpus dim.
        """
        row = getattr(row, "best", row)
        if row is None:
            raise ValueError("the tune result recommends no configuration (best is None): nothing to build")
        if not isinstance(row, dict):
            raise TypeError(f"row must be a tune row (dict) or a TuneResult, got {type(row).__name__}")
        missing = [key for key in ("precision", "rescore", "truncate_dim", "metric") if key not in row]
        if missing:
            raise ValueError(f"row is not a tune row: it lacks {missing}")
        check_array(corpus, "corpus")
        if corpus.ndim != 2:
            raise ValueError(f"corpus must be 2-D (n, dim), got shape {tuple(corpus.shape)}")
        dim = _positive_int(row["truncate_dim"], "truncate_dim")
        if dim > int(corpus.shape[1]):
            raise ValueError(f"truncate_dim {dim} is above the corpus dim {int(corpus.shape[1])}")
        index = cls(dim, row["precision"], row["metric"], row["rescore"], row.get("rescore_multiplier") or 4)
        index.add(corpus[:, :dim])
        index.metadata["truncate_dim"] = dim
        return index

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike[str], extra_arrays: dict[str, np.ndarray] | None = None) -> None:
        """Saves the index as a folder, atomically (see :mod:`embedcore.persist`).

        A device index writes host copies of its arrays: the folder is the same whatever the device.

        Args:
            path: destination folder: new, empty, or an index folder (saved as its next version,
                which readers switch to atomically); its parent must exist.
            extra_arrays: optional named numpy arrays stored and verified alongside (for example a
                document store); :meth:`load` returns them in :attr:`extra_arrays`.

        Raises:
            ValueError: ``path`` is a file or a folder holding anything else (nothing is touched).
            embedcore.persist.CorruptFolderError: a memory-mapped source file shrank (:meth:`verify`).
        """
        self.verify()
        arrays = {"ids": _host(self._ids.view()), "codes": _host(self._codes.view())}
        if self._extra is not None:
            arrays["rescore_vectors"] = _host(self._extra.view())
        if self._ranges is not None:
            arrays["ranges"] = self._ranges
        for name, array in (extra_arrays or {}).items():
            if name in _RESERVED:
                raise ValueError(f"extra_arrays may not use the reserved name {name!r}")
            arrays[name] = np.asarray(array)
        meta = {
            "dim": self.dim,
            "precision": self.precision,
            "metric": self.metric,
            "rescore": self.rescore,
            "rescore_multiplier": self.rescore_multiplier,
            "count": len(self),
            "next_id": self._next_id,
            "user": self.metadata,
        }
        persist.save_folder(path, FORMAT, arrays, meta, FORMAT_VERSION)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], mmap: bool = True, verify: bool = True, device: Any = None
    ) -> Index:
        """Loads a saved index after verifying its manifest and checksums.

        Args:
            path: a folder written by :meth:`save`.
            mmap: memory-map the arrays read-only (added vectors go to memory); host indexes only.
            verify: check the SHA-256 of every file.
            device: None for a host (numpy) index, or a torch device the arrays are copied to
                (see :meth:`to`).

        Raises:
            FileNotFoundError: a missing folder or file.
            embedcore.persist.CorruptFolderError (a ValueError): a truncated, altered, inconsistent
                or newer-format folder.
        """
        manifest, arrays = persist.load_folder(path, FORMAT, FORMAT_VERSION, mmap=mmap, verify=verify)
        where = os.fspath(path)
        meta = checked_meta(manifest.get("metadata"), where, PRECISIONS, METRICS)
        count, next_id = meta["count"], meta["next_id"]
        try:
            idx = cls(meta["dim"], meta["precision"], meta["metric"], meta["rescore"],
                      meta["rescore_multiplier"], arrays.get("ranges"))
        except (TypeError, ValueError) as exc:
            raise persist.CorruptFolderError(f"{where}: inconsistent index manifest ({exc})") from None
        ids = arrays.get("ids")
        expected = {
            "ids": ((count,), np.int64),
            "codes": ((count, idx._codes.view().shape[1]), idx._codes.view().dtype),
        }
        if idx._extra is not None:
            expected["rescore_vectors"] = ((count, idx.dim), idx._extra.view().dtype)
        for name, (shape, dtype) in expected.items():
            a = arrays.get(name)
            if a is None or a.shape != shape or a.dtype != dtype:
                raise persist.CorruptFolderError(f"{where}: array {name!r} does not match the manifest")
        if idx._uses_int8() and count and "ranges" not in arrays:
            raise persist.CorruptFolderError(f"{where}: an int8 index without its ranges")
        if len(np.unique(ids)) != count or (count and int(ids.max()) >= next_id):
            raise persist.CorruptFolderError(f"{where}: the stored ids are not unique or exceed next_id")
        idx._ids, idx._codes = _Rows(ids), _Rows(arrays["codes"])
        if idx._extra is not None:
            idx._extra = _Rows(arrays["rescore_vectors"])
        idx._next_id = int(next_id)
        idx.metadata = dict(meta["user"])
        idx.extra_arrays = {name: a for name, a in arrays.items() if name not in _RESERVED}
        return idx if device is None else idx.to(device)


    def scan(self, queries: Any, k: int) -> tuple[Any, Any]:
        """The first stage of :meth:`search` alone: the top k of the scanned codes, not rescored.

        A rescoring search takes its ``k * rescore_multiplier`` candidates from this scan; a sharded
        index (:mod:`embedcore.distributed`) merges the shards' scans to keep one index's candidates.

        Args:
            queries: (nq, dim) float numpy array or tensor.
            k: results per query, 1 <= k <= len(self).

        Returns:
            (scores, ids): (nq, k) scan scores (Hamming distances for a binary index, else the
            metric's scores of the stored format) and int64 ids, best first, ties toward the
            earlier-stored vector; numpy for a host index and numpy queries.
        """
        n = len(self)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be an int in [1, {n}] (the number of vectors in the index), got {k!r}")
        scores, rows = self._scan(self._float_rows(queries, "queries"), int(k))
        return scores, self._ids.view()[rows]


def semantic_search(
    query_embeddings: Any,
    corpus_embeddings: Any,
    top_k: int = 10,
    score_function: Any = "cos",
) -> list[list[dict[str, int | float]]]:
    """Exact semantic search with sentence-transformers' ``util.semantic_search`` result shape.

    Args:
        query_embeddings: (nq, dim) or (dim,) float numpy array or CPU tensor.
        corpus_embeddings: (n, dim) float numpy array or CPU tensor, n >= 1.
        top_k: results per query; capped at n as sentence-transformers does.
        score_function: "cos" or "dot", or sentence-transformers' ``util.cos_sim`` /
            ``util.dot_score`` (recognised by name).

    Returns:
        One list per query of ``{"corpus_id": int, "score": float}`` dicts, best first (ties toward
        the lower corpus id).
    """
    from embedcore.ops.search import search

    name = getattr(score_function, "__name__", score_function)
    metric = {"cos": "cos", "cos_sim": "cos", "dot": "dot", "dot_score": "dot"}.get(name)
    if metric is None:
        raise ValueError(
            f"Invalid score_function {score_function!r}; valid: 'cos', 'dot', util.cos_sim, util.dot_score"
        )
    check_array(corpus_embeddings, "corpus_embeddings")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] == 0:
        raise ValueError(
            f"corpus_embeddings must be (n, dim) with n >= 1, got shape {tuple(corpus_embeddings.shape)}"
        )
    check_array(query_embeddings, "query_embeddings")
    q = cpu_numpy(query_embeddings, "query_embeddings")
    if q.ndim == 1:
        q = q[None, :]
    c = cpu_numpy(corpus_embeddings, "corpus_embeddings")
    scores, indices = search(q, c, min(int(top_k), len(c)), metric)
    return [
        [{"corpus_id": int(i), "score": float(s)} for s, i in zip(srow, irow)]
        for srow, irow in zip(scores.tolist(), indices.tolist())
    ]
