"""Distributed encode on Ray Data: the model loaded once per actor, rows kept in input order.

``encode(source, model, ...)`` turns its input into a Ray Dataset of ``(id, text)`` rows (``id`` the
global input position), runs ``map_batches`` with :class:`EmbedBatches`, a callable class whose
constructor loads the :class:`~embedcore.Embedder` once per actor (``concurrency`` actors; one GPU
each when the cluster has GPUs, else ``num_cpus`` CPU threads each), and collects the rows by id,
so the output order is the input order whatever order Ray returns blocks in. Each block is encoded
by ``Embedder.encode``, which sorts its texts by length (padding-free batches).

Precision: float32 and binary/ubinary are computed per block (a sign bit needs no global range).
int8/uint8 codes need one range per dimension over the whole output (what single-process
``encode(..., precision="int8")`` computes), never per block: the actors return float32, and the
codes are made once the whole output (or the given ``calibration_embeddings``) is known, so they
equal single-process codes.

Fault tolerance is Ray's: an actor that dies is restarted and its block retried; the collector
checks that every id arrives exactly once. With ``output=DIR`` the rows go to verified shard
folders (:mod:`embedcore.distributed.shards`); a restarted job skips the shards already written.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedcore.distributed import shards as shard_io
from embedcore.distributed._ray import ensure_ray, require_ray

# Embedder.encode options a distributed encode passes through (the rest concern one process).
ENCODE_OPTIONS = ("prompt_name", "prompt", "batch_size", "precision", "normalize_embeddings", "truncate_dim")
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_INPUT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


class EmbedBatches:
    """The ``map_batches`` callable: loads the embedder once, then encodes each block it is given.

    Args:
        model: a model folder or name for :meth:`Embedder.from_pretrained`, or a picklable callable
            returning an object with ``Embedder.encode``'s signature (called once per actor).
        model_kwargs: keyword arguments of ``from_pretrained``.
        options: ``Embedder.encode`` keyword arguments (precision float32, binary or ubinary).
        field: the text column.
        threads: torch threads of this actor (None: torch's default).
    """

    def __init__(
        self,
        model: Any,
        model_kwargs: dict[str, Any],
        options: dict[str, Any],
        field: str,
        threads: int | None,
    ) -> None:
        if callable(model):
            self.embedder = model()
        else:
            from embedcore.models.embedder import Embedder

            self.embedder = Embedder.from_pretrained(model, **model_kwargs)
        torch = sys.modules.get("torch")  # a model that runs without torch is left alone
        if threads is not None and torch is not None:
            torch.set_num_threads(threads)
        self.options = options
        self.field = field

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(id, text) block -> (id, embedding) block: ``id`` (n,) int64, ``embedding`` (n, D)."""
        texts = [str(t) for t in batch[self.field]]
        emb = self.embedder.encode(texts, show_progress_bar=False, convert_to_numpy=True, **self.options)
        return {"id": np.asarray(batch["id"], dtype=np.int64), "embedding": np.asarray(emb)}


def _check_options(encode_kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(encode_kwargs) - set(ENCODE_OPTIONS))
    if unknown:
        raise TypeError(
            f"encode() got unsupported keyword argument(s) {unknown}; valid: {ENCODE_OPTIONS} "
            "(plus field, output, concurrency, rows_per_shard, block_rows, calibration_embeddings, "
            "model_kwargs, num_cpus_per_actor, address)"
        )
    precision = encode_kwargs.get("precision", "float32")
    if precision not in PRECISIONS:
        raise ValueError(f"Invalid precision {precision!r}; valid: {PRECISIONS}")
    return dict(encode_kwargs)


def _read_file(path: Path, field: str) -> list[str]:
    if path.suffix.lower() != ".parquet":
        from embedcore.corpus import read_texts

        return read_texts(path, field)
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    table = pq.read_table(path)
    if field not in table.column_names:
        raise ValueError(f"{path} has no column {field!r}; columns: {table.column_names}")
    texts = table.column(field).to_pylist()
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{path} row {bad}: column {field!r} holds {type(texts[bad]).__name__}, not str")
    return texts


def _texts(source: Any, field: str) -> list[str] | None:
    """The texts of a list of str or of file paths, in input order; None for a Ray Dataset."""
    if isinstance(source, (str, os.PathLike)):
        source = [Path(source)]
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(s, os.PathLike) for s in source):
            texts: list[str] = []
            for path in source:
                path = Path(path)
                if path.suffix.lower() not in _INPUT_SUFFIXES:
                    raise ValueError(f"source file {path}: unsupported format; valid: {_INPUT_SUFFIXES}")
                texts.extend(_read_file(path, field))
            return texts
        bad = next((i for i, t in enumerate(source) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(
                f"source[{bad}] is {type(source[bad]).__name__}: source must be a list of str (texts), "
                "file paths (str or pathlib.Path for one file, pathlib.Path items for several) or a "
                "Ray Dataset"
            )
        return list(source)
    import ray.data

    if isinstance(source, ray.data.Dataset):  # MaterializedDataset too
        return None
    raise TypeError(
        f"source must be a list of str, file path(s) or a ray.data.Dataset, got {type(source).__name__}"
    )


def _dataset(ray: Any, source: Any, texts: list[str] | None, field: str, block_rows: int) -> Any:
    """A Dataset of ``(id, field)`` rows: ids are input positions."""
    if texts is None:
        if "id" in source.schema().names:
            # Materialised first: the encoder actors reserve the cluster's CPUs, and an upstream
            # task still waiting for one would stall the pipeline.
            return source.select_columns(["id", field]).materialize()
        # No id column: read the rows once, in order, and number them.
        ctx = ray.data.DataContext.get_current()
        keep, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
        try:
            texts = [str(row[field]) for row in source.select_columns([field]).iter_rows()]
        finally:
            ctx.execution_options.preserve_order = keep
    return _from_tables(ray, np.arange(len(texts), dtype=np.int64), texts, field, block_rows)


def _from_tables(ray: Any, ids: np.ndarray, texts: list[str], field: str, block_rows: int) -> Any:
    """A Dataset of ``(id, field)`` rows in blocks of ``block_rows`` (one Arrow table each)."""
    import pyarrow as pa

    blocks = shard_io.plan(len(ids), block_rows)
    return ray.data.from_arrow([pa.table({"id": ids[a:b], field: texts[a:b]}) for a, b in blocks])


class _Collector:
    """Receives (id, embedding) blocks in any order and checks that each id arrives once.

    Rows of shard ``s`` (ids in ``[start, stop)``) fill a buffer; ``on_full(s, rows)`` is called the
    moment a shard is complete, so a finished shard can be written before the job ends.
    """

    def __init__(self, ranges: list[tuple[int, int]], on_full: Callable[[int, np.ndarray], None]) -> None:
        self.ranges = ranges
        self.starts = np.array([a for a, _ in ranges], dtype=np.int64)
        self.buffers: dict[int, np.ndarray] = {}
        self.seen: dict[int, np.ndarray] = {}
        self.on_full = on_full

    def add(self, ids: np.ndarray, emb: np.ndarray) -> None:
        which = np.searchsorted(self.starts, ids, side="right") - 1
        for s in np.unique(which):
            start, stop = self.ranges[s]
            mask = which == s
            rows = ids[mask] - start
            if (rows < 0).any() or (rows >= stop - start).any():
                raise RuntimeError(f"Ray returned ids outside the planned rows of shard {s}")
            if s not in self.buffers:
                self.buffers[s] = np.empty((stop - start, *emb.shape[1:]), emb.dtype)
                self.seen[s] = np.zeros(stop - start, bool)
            if self.seen[s][rows].any() or len(np.unique(rows)) != len(rows):
                raise RuntimeError(f"Ray returned a row of shard {s} twice; the job is not written")
            self.buffers[s][rows] = emb[mask]
            self.seen[s][rows] = True
            if self.seen[s].all():
                self.on_full(int(s), self.buffers.pop(s))
                self.seen[s] = np.ones(0, bool)  # done: any later arrival is a duplicate

    def check_complete(self) -> None:
        for s, seen in self.seen.items():
            if len(seen) and not seen.all():
                raise RuntimeError(f"shard {s} is missing {int((~seen).sum())} rows after the job ended")


def _run(
    ray: Any,
    ds: Any,
    ranges: list[tuple[int, int]],
    on_full: Callable[[int, np.ndarray], None],
    actor_args: tuple[Any, ...],
    concurrency: int,
    block_rows: int,
    num_cpus: float | None,
) -> None:
    """Runs the encode over ``ds`` and hands each completed shard to ``on_full``."""
    collector = _Collector(ranges, on_full)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    if num_cpus is None:
        num_cpus = 1 if gpus else max(1.0, ray.cluster_resources().get("CPU", 1) // concurrency)
    out = ds.map_batches(
        EmbedBatches,
        fn_constructor_args=(*actor_args[:-1], None if gpus else int(num_cpus)),
        batch_size=block_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=gpus,
        num_cpus=num_cpus,
        # Ray Data's defaults restart a dead actor without limit and retry its block there.
    )
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        collector.add(np.asarray(batch["id"], dtype=np.int64), np.asarray(batch["embedding"]))
    collector.check_complete()


def _quantized(emb: np.ndarray, precision: str, ranges: np.ndarray) -> np.ndarray:
    from embedcore.ops.quantize import quantize

    codes = quantize(emb, precision, ranges=ranges)
    return codes if isinstance(codes, np.ndarray) else codes.cpu().numpy()


def encode(
    source: Any,
    model: Any,
    *,
    field: str = "text",
    output: str | os.PathLike[str] | None = None,
    concurrency: int = 2,
    rows_per_shard: int = 100_000,
    block_rows: int = 1024,
    calibration_embeddings: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    num_cpus_per_actor: float | None = None,
    address: str | None = None,
    **encode_kwargs: Any,
) -> Any:
    """Encodes texts on a Ray cluster; the result equals single-process ``Embedder.encode``.

    Args:
        source: a list of str (the texts), a file path (str or pathlib.Path: ``.txt``, ``.jsonl``,
            ``.csv`` or ``.parquet``), a list of pathlib.Path, or a ``ray.data.Dataset`` with a
            text column ``field`` (and optionally an int ``id`` column 0..N-1 that fixes the order;
            without one the rows are numbered in the dataset's order, read once by the driver).
        model: a model folder or name for ``Embedder.from_pretrained``, or a picklable callable
            returning an embedder (called once per actor).
        field: the JSONL key, CSV/Parquet column or Dataset column holding the text.
        output: None to return the array; else a folder to write verified shards into (created if
            missing; one holding other files is refused). Re-running a job on the same folder keeps
            the shards that verify and recomputes the rest.
        concurrency: encoder actors.
        rows_per_shard: rows per output shard (``output`` only).
        block_rows: rows per ``map_batches`` block (one ``Embedder.encode`` call).
        calibration_embeddings: (m, D) float embeddings the int8/uint8 ranges come from; default:
            the whole output.
        model_kwargs: keyword arguments of ``Embedder.from_pretrained``.
        num_cpus_per_actor: CPUs each actor reserves (and its torch threads); default: the
            cluster's CPUs / ``concurrency`` (1 when actors take a GPU each).
        address: the Ray cluster to join when Ray is not initialised yet (None: local or
            ``RAY_ADDRESS``).
        **encode_kwargs: ``prompt_name``, ``prompt``, ``batch_size``, ``precision``,
            ``normalize_embeddings``, ``truncate_dim``, as in ``Embedder.encode``.

    Returns:
        ``output=None``: (N, D) float32 array (int8/uint8 (N, D), binary (N, ceil(D/8)) codes) in
        input order. Else the output folder as a pathlib.Path (read it with
        :func:`embedcore.distributed.load_embeddings`).

    Raises:
        TypeError: an unsupported source or keyword argument.
        ValueError: bad values (concurrency, precision, an output folder of another job, ...).
        RuntimeError: Ray lost or duplicated a row (nothing is written for that shard).
    """
    require_ray()
    options = _check_options(encode_kwargs)
    for name, value in (
        ("concurrency", concurrency),
        ("rows_per_shard", rows_per_shard),
        ("block_rows", block_rows),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(field, str) or not field:
        raise TypeError(f"field must be a non-empty str, got {field!r}")
    if not (callable(model) or isinstance(model, (str, os.PathLike))):
        raise TypeError(f"model must be a model path or name, or a callable, got {type(model).__name__}")
    model = model if callable(model) else os.fspath(model)
    precision = options.pop("precision", "float32")
    global_ranges = precision in ("int8", "uint8")
    if global_ranges and calibration_embeddings is not None:
        from embedcore.ops.quantize import quantization_ranges

        calib = quantization_ranges(np.asarray(calibration_embeddings, dtype=np.float32))
    else:
        calib = None
    texts = _texts(source, field)
    ray = ensure_ray(address)
    if texts is None:
        n = source.count()
    else:
        n = len(texts)
    # The actors compute float32 where the codes need a global range.
    actor_options = {**options, "precision": "float32" if global_ranges else precision}
    actor_args = (model, dict(model_kwargs or {}), actor_options, field, None)

    if output is None:
        ds = _dataset(ray, source, texts, field, block_rows)
        parts: dict[int, np.ndarray] = {}
        ranges = shard_io.plan(n, max(n, 1))
        _run(ray, ds, ranges, parts.__setitem__, actor_args, concurrency, block_rows, num_cpus_per_actor)
        if n == 0:
            raise ValueError("source holds no texts")
        emb = parts[0]
        if global_ranges:
            from embedcore.ops.quantize import quantization_ranges

            emb = _quantized(emb, precision, calib if calib is not None else quantization_ranges(emb))
        return emb
    if n == 0:
        raise ValueError("source holds no texts")
    job = {
        "model": model if isinstance(model, str) else getattr(model, "__qualname__", repr(model)),
        "model_kwargs": {k: repr(v) for k, v in sorted((model_kwargs or {}).items())},
        "options": {k: repr(v) for k, v in sorted(options.items())},
        "precision": precision,
        "count": n,
        "rows_per_shard": rows_per_shard,
    }
    plan = _Plan(ray, source, texts, field, actor_args, concurrency, block_rows, num_cpus_per_actor)
    return _encode_to_folder(plan, Path(output), job, precision, calib)


@dataclass
class _Plan:
    """What every pass of one job shares: the input and how to run the actors."""

    ray: Any
    source: Any
    texts: list[str] | None
    field: str
    actor_args: tuple[Any, ...]
    concurrency: int
    block_rows: int
    num_cpus: float | None

    def run(self, ds: Any, ranges: list[tuple[int, int]], on_full: Callable[[int, np.ndarray], None]) -> None:
        _run(self.ray, ds, ranges, on_full, self.actor_args, self.concurrency, self.block_rows, self.num_cpus)


def _encode_pending(plan: _Plan, root: Path, job: dict[str, Any]) -> list[tuple[int, int]]:
    """Encodes the shards of ``root`` that do not verify yet; returns the plan's row ranges."""
    ranges = shard_io.plan(job["count"], job["rows_per_shard"])
    pending = [
        i
        for i, (a, b) in enumerate(ranges)
        if not shard_io.verified(root / shard_io.shard_name(i), job, a, b)
    ]
    if not pending:
        return ranges
    if plan.texts is not None:
        ids = np.concatenate([np.arange(*ranges[i]) for i in pending])
        ds = _from_tables(plan.ray, ids, [plan.texts[i] for i in ids], plan.field, plan.block_rows)
    else:
        ds = _dataset(plan.ray, plan.source, None, plan.field, plan.block_rows)
        bounds = [ranges[i] for i in pending]
        ds = ds.filter(lambda row: any(a <= row["id"] < b for a, b in bounds)).materialize()
    pending_set = set(pending)

    def write(s: int, emb: np.ndarray) -> None:
        if s in pending_set:
            shard_io.write_shard(root / shard_io.shard_name(s), job, ranges[s][0], emb)

    plan.run(ds, ranges, write)
    return ranges


def _encode_to_folder(
    plan: _Plan, root: Path, job: dict[str, Any], precision: str, calib: np.ndarray | None
) -> Path:
    shard_io.check_output_folder(root)
    if precision not in ("int8", "uint8"):
        ranges = _encode_pending(plan, root, job)
    else:
        # Pass 1: float32 shards (resumable too); the ranges over all of them; pass 2: the codes.
        float_root = root / "float32_pass"
        float_root.mkdir(exist_ok=True)
        ranges = _encode_pending(plan, float_root, {**job, "precision": "float32"})
        if calib is None:
            lo = hi = None
            for i in range(len(ranges)):
                part = shard_io.read_shard(float_root / shard_io.shard_name(i))
                lo = part.min(0) if lo is None else np.minimum(lo, part.min(0))
                hi = part.max(0) if hi is None else np.maximum(hi, part.max(0))
            calib = np.vstack((lo, hi)).astype(np.float32)
        job = {**job, "ranges": calib.tolist()}
        for i, (a, b) in enumerate(ranges):
            folder = root / shard_io.shard_name(i)
            if not shard_io.verified(folder, job, a, b):
                part = shard_io.read_shard(float_root / shard_io.shard_name(i))
                shard_io.write_shard(folder, job, a, _quantized(np.asarray(part), precision, calib))
    first = shard_io.read_shard(root / shard_io.shard_name(0))
    shard_io.write_top(
        root,
        shard_io.SET_FORMAT,
        {
            "job": job,
            "count": job["count"],
            "dim": int(first.shape[1]),
            "dtype": first.dtype.str,
            "shards": [shard_io.manifest_entry(root, i, a, b) for i, (a, b) in enumerate(ranges)],
        },
    )
    if precision in ("int8", "uint8"):
        shutil.rmtree(root / "float32_pass", ignore_errors=True)  # this job's own intermediate
    return root
