"""An exact index split into shards, each served by a Ray actor; results equal one :class:`Index`'s.

Folder layout (``ShardedIndex.save`` / ``load``)::

    DIR/manifest/       the top-level manifest: a :mod:`embedcore.persist` folder without arrays
                        ("embedcore.sharded_index") whose metadata is {"count", "dim", "precision",
                        "metric", "rescore", "rescore_multiplier", "user",
                        "shards": [{"folder", "start", "stop", "manifest_sha256"}, ...]}
    DIR/shard_00000/    an ordinary index folder (:meth:`Index.save`: atomic, SHA-256 per array)

Shard ``s`` holds the global storage rows ``[start, stop)`` of the index it was cut from, with their
ids, codes, rescoring copy and the shared int8 ranges (one range for all shards, so codes are the
single index's codes). The top-level manifest records each shard manifest's SHA-256 and is
replaced together with the shards (the whole folder is written beside ``DIR`` and renamed in).

Search: the query batch is sent to every shard actor (each memory-maps its folder). Without
rescoring each shard returns its exact top-k; with rescoring each returns its scan top
``min(k * multiplier, rows)`` with the rescored score of every candidate (the rescoring runs inside
the shard), and the driver keeps the global scan top ``k * multiplier`` before taking the best k
rescored (:mod:`embedcore.distributed.merge`). Ties go to the lower global row, as in one index.
An actor that dies is restarted (``max_restarts``) and the call retried; a shard that still cannot
answer makes the search raise, naming the shard: results are never silently partial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from embedcore import persist
from embedcore.distributed import merge
from embedcore.distributed._ray import ensure_ray, require_ray
from embedcore.distributed.shards import (
    TOP,
    check_shard_entries,
    manifest_entry,
    read_top,
    shard_name,
    write_top,
)

FORMAT = "embedcore.sharded_index"
_SETTINGS = ("dim", "precision", "metric", "rescore", "rescore_multiplier")


class ShardServer:
    """Serves one shard folder: loads it memory-mapped once, answers query batches.

    Args:
        folder: the shard's index folder.
        start: the global storage row of its first vector.
        verify: check the folder's SHA-256 sums on load.
    """

    def __init__(self, folder: str, start: int, verify: bool) -> None:
        from embedcore.index import Index

        self.index = Index.load(folder, mmap=True, verify=verify)
        ids = np.asarray(self.index.ids)
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]
        self.start = start

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Global storage rows of user ids of this shard."""
        return self.order[np.searchsorted(self.sorted_ids, ids)] + self.start

    def search(self, queries: np.ndarray, k: int, multiplier: int) -> tuple[np.ndarray, ...]:
        """The shard's part of a search.

        Returns:
            Without rescoring: (scores, global rows, ids), each (nq, min(k, rows)).
            With rescoring: (scan scores, global rows, ids, rescored scores), each (nq, m) with
            ``m = min(k * multiplier, rows)``: the shard's scan top-m and their rescored scores.
        """
        idx = self.index
        n = len(idx)
        if idx.rescore is None:
            scores, ids = idx.search(queries, min(k, n))
            return scores, self._rows(ids), ids
        m = min(k * multiplier, n)
        scan_scores, ids = idx.scan(queries, m)
        # With multiplier 1 and k = m a search rescores exactly the scan's m candidates.
        rescored, rescored_ids = idx.search(queries, m, rescore_multiplier=1)
        # Align each candidate's rescored score with its place in the scan list.
        by_id = np.argsort(rescored_ids, axis=1, kind="stable")
        sorted_ids = np.take_along_axis(rescored_ids, by_id, 1)
        pos = np.take_along_axis(by_id, _searchsorted_rows(sorted_ids, ids), 1)
        return scan_scores, self._rows(ids), ids, np.take_along_axis(rescored, pos, 1)

    def ping(self) -> int:
        return len(self.index)


def _searchsorted_rows(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row-wise ``np.searchsorted`` of (nq, m) values in (nq, m) sorted rows."""
    return np.stack([np.searchsorted(a, v) for a, v in zip(sorted_rows, values)])


def _bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, balanced ``[start, stop)`` row ranges of ``shards`` shards over ``n`` rows."""
    sizes = [n // shards + (i < n % shards) for i in range(shards)]
    starts = np.concatenate(([0], np.cumsum(sizes)))
    return [(int(starts[i]), int(starts[i + 1])) for i in range(shards)]


def _write_shards(index: Any, shards: int, root: Path) -> None:
    """Writes ``index`` cut into ``shards`` index folders plus the top-level manifest into ``root``."""
    from embedcore.index import FORMAT as INDEX_FORMAT
    from embedcore.index import FORMAT_VERSION as INDEX_VERSION

    full = root / ".full"
    index.save(full)
    manifest, arrays = persist.load_folder(full, INDEX_FORMAT, INDEX_VERSION, mmap=True)
    meta = manifest["metadata"]
    bounds = _bounds(len(index), shards)
    for i, (a, b) in enumerate(bounds):
        part = {name: arrays[name][a:b] for name in ("ids", "codes", "rescore_vectors") if name in arrays}
        if "ranges" in arrays:
            part["ranges"] = arrays["ranges"]
        persist.save_folder(root / shard_name(i), INDEX_FORMAT, part, {**meta, "count": b - a}, INDEX_VERSION)
    del arrays
    shutil.rmtree(full)
    top = {
        "count": len(index),
        **{name: meta[name] for name in _SETTINGS},
        "user": meta.get("user") or {},
        "shards": [manifest_entry(root, i, a, b) for i, (a, b) in enumerate(bounds)],
    }
    write_top(root, FORMAT, top)


def _read_manifest(root: Path) -> dict[str, Any]:
    """The top-level manifest's metadata, its shards' manifests checked against their SHA-256."""
    manifest = read_top(root, FORMAT)
    check_shard_entries(root, manifest.get("shards", []))
    return manifest


def _check_target(path: Path) -> None:
    """Refuses to replace anything but a sharded index folder."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: its folder {path.parent} does not exist")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder")
        if any(path.iterdir()):
            if not persist.is_saved_folder(path / TOP):
                raise ValueError(f"{path} holds files and is not a sharded index; refusing to replace it")
            _read_manifest(path)  # raises unless it is a sharded index: never replace other files


def _swap_in(tmp: Path, path: Path) -> None:
    """Renames the finished folder ``tmp`` to ``path``; an existing sharded index at ``path`` is
    moved aside first, restored if the rename fails, and removed after it succeeds.

    Each shard and the top-level manifest are atomic, checksummed persist folders; the swap of the
    whole sharded folder is two renames, so a reader opening ``path`` between them finds nothing
    there (it raises FileNotFoundError; it never loads a mix of two versions).
    """
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
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ShardedIndex:
    """An exact index in S shards, one Ray actor per shard; ``search`` equals ``Index.search``.

    Build one with :meth:`from_index`, :meth:`build` or :meth:`load`; call :meth:`close` (or use it
    as a context manager) to stop the actors and remove a temporary folder.

    Example::

        sharded = ShardedIndex.from_index(index, shards=4)
        scores, ids = sharded.search(queries, k=10)       # == index.search(queries, k=10)
        sharded.save("wiki.sharded")
        sharded = ShardedIndex.load("wiki.sharded")
    """

    def __init__(self, path: Path, *, owned: bool, verify: bool, max_restarts: int, address: str | None):
        self.path = path
        self._owned = owned
        self._actors: list[Any] = []
        manifest = _read_manifest(path)
        self._manifest = manifest
        for name in _SETTINGS:
            setattr(self, name, manifest[name])
        self._count = int(manifest["count"])
        self._starts = [int(s["start"]) for s in manifest["shards"]]
        ray = ensure_ray(address)
        server = ray.remote(max_restarts=max_restarts, max_task_retries=max_restarts)(ShardServer)
        self._actors = [
            server.remote(os.fspath(path / str(s["folder"])), int(s["start"]), verify)
            for s in manifest["shards"]
        ]
        self._gather("load", [a.ping.remote() for a in self._actors])

    # ------------------------------------------------------------ construction

    @classmethod
    def from_index(
        cls,
        index: Any,
        shards: int,
        path: str | os.PathLike[str] | None = None,
        *,
        max_restarts: int = 3,
        address: str | None = None,
    ) -> ShardedIndex:
        """Cuts a host :class:`Index` into ``shards`` contiguous, balanced shards and serves them.

        Args:
            index: the index (its extra arrays, e.g. a document store, are not carried over).
            shards: 1 <= shards <= len(index).
            path: the folder to write (replaced if it holds a sharded index); None: a temporary
                folder removed by :meth:`close` (on a multi-host cluster give a shared path).
            max_restarts: restarts of a shard actor that dies (and retries of its call).
            address: the Ray cluster to join if Ray is not initialised.
        """
        from embedcore.index import Index

        require_ray()
        if not isinstance(index, Index):
            raise TypeError(f"index must be an embedcore.Index, got {type(index).__name__}")
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= max(len(index), 1):
            raise ValueError(
                f"shards must be an int in [1, {len(index)}] (the index's vectors), got {shards!r}"
            )
        if len(index) == 0:
            raise ValueError("index is empty; add vectors before sharding it")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative int, got {max_restarts!r}")
        target = None if path is None else Path(path)
        if target is not None:
            _check_target(target)
        parent = target.parent if target is not None else None
        tmp = Path(tempfile.mkdtemp(prefix=".sharded.", suffix=".tmp", dir=parent))
        try:
            _write_shards(index, shards, tmp)
            if target is not None:
                _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = target if target is not None else tmp
        return cls(final, owned=target is None, verify=False, max_restarts=max_restarts, address=address)

    @classmethod
    def build(cls, embeddings: Any, shards: int, path: Any = None, **kwargs: Any) -> ShardedIndex:
        """An index over ``embeddings`` (int8 ranges from all of them), cut into ``shards`` shards.

        Args:
            embeddings: (n, dim) float embeddings.
            shards, path: as in :meth:`from_index`.
            **kwargs: ``max_restarts`` and ``address`` as in :meth:`from_index`; the others are
                ``Index`` arguments (precision, metric, rescore, rescore_multiplier, ranges).
        """
        from embedcore.index import Index

        require_ray()
        if getattr(embeddings, "ndim", None) != 2:
            raise ValueError(f"embeddings must be 2-D (n, dim), got {type(embeddings).__name__}")
        serving = {name: kwargs.pop(name) for name in ("max_restarts", "address") if name in kwargs}
        index = Index(int(embeddings.shape[1]), **kwargs)
        index.add(embeddings)
        return cls.from_index(index, shards, path, **serving)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        verify: bool = True,
        max_restarts: int = 3,
        address: str | None = None,
    ) -> ShardedIndex:
        """Serves a saved sharded index: one actor per shard memory-maps its folder.

        Args:
            path: a folder written by :meth:`save` or :meth:`from_index` (visible to every node).
            verify: each actor checks its shard's SHA-256 sums on load.

        Raises:
            FileNotFoundError: no sharded index there.
            embedcore.persist.CorruptFolderError: a manifest or shard that fails verification.
        """
        require_ray()
        return cls(Path(path), owned=False, verify=verify, max_restarts=max_restarts, address=address)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Copies the sharded index to ``path`` (replaced atomically if it holds a sharded index)."""
        target = Path(path)
        if target.resolve() == self.path.resolve():
            return
        _check_target(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            for s in self._manifest["shards"]:
                shutil.copytree(self.path / s["folder"], tmp / s["folder"])
            shutil.copytree(self.path / TOP, tmp / TOP)
            _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # ------------------------------------------------------------ serving

    def __len__(self) -> int:
        return self._count

    @property
    def shards(self) -> int:
        return len(self._starts)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._manifest.get("user") or {})

    def __repr__(self) -> str:
        return (
            f"ShardedIndex(dim={self.dim}, precision={self.precision!r}, metric={self.metric!r}, "
            f"rescore={self.rescore!r}, n={len(self)}, shards={self.shards})"
        )

    def _gather(self, what: str, refs: list[Any]) -> list[Any]:
        """``ray.get`` of one call per shard; a shard that fails is named in the error."""
        import ray

        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except Exception as exc:
                # Bad input fails the same way on every shard: raise it as Index.search does.
                cause = getattr(exc, "cause", None)
                if isinstance(cause, (ValueError, TypeError)):
                    raise type(cause)(*cause.args) from None
                raise RuntimeError(
                    f"shard {i} ({self.path / shard_name(i)}) could not {what}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}"
                ) from None
        return out

    def search(self, queries: Any, k: int = 10, rescore_multiplier: int | None = None) -> tuple[Any, Any]:
        """Exact top-k search over all shards: the same results as ``Index.search``.

        Args:
            queries: (nq, dim) float numpy array or CPU tensor (or int8 / packed uint8 codes where
                ``Index.search`` takes them).
            k: results per query, 1 <= k <= len(self).
            rescore_multiplier: overrides the index's multiplier for this call.

        Returns:
            (scores, ids): (nq, k) as ``Index.search`` returns them (tensors for tensor queries).

        Raises:
            ValueError / TypeError: bad queries or k (as ``Index.search``).
            RuntimeError: a shard that cannot answer (named).
        """
        if not self._actors:
            raise RuntimeError("this ShardedIndex is closed")
        n = len(self)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be an int in [1, {n}] (the number of vectors in the index), got {k!r}")
        mult = self.rescore_multiplier if rescore_multiplier is None else rescore_multiplier
        if isinstance(mult, bool) or not isinstance(mult, (int, np.integer)) or mult < 1:
            raise ValueError(f"rescore_multiplier must be a positive int, got {mult!r}")
        tensor = type(queries).__module__.startswith("torch")
        q = queries.detach().cpu().numpy() if tensor else queries
        import ray

        ref = ray.put(q)
        parts = self._gather("search", [a.search.remote(ref, int(k), int(mult)) for a in self._actors])
        by_col = [list(col) for col in zip(*parts)]
        hamming = self.precision == "binary"
        if self.rescore is None:
            largest = not (self.metric == "l2" or hamming)
            scores, ids = merge.merge_topk(by_col[0], by_col[1], by_col[2], int(k), largest)
        else:
            scan_largest = not (hamming or self.metric == "l2")
            m = min(int(k) * int(mult), n)
            scores, ids = merge.merge_rescored(
                by_col[0], by_col[1], by_col[2], by_col[3], m, int(k), scan_largest, self.metric != "l2"
            )
        if tensor:
            import torch

            return torch.from_numpy(scores), torch.from_numpy(ids)
        return scores, ids

    def close(self) -> None:
        """Stops the shard actors and removes the folder if it was a temporary one."""
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)
            self._owned = False

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._owned:
                shutil.rmtree(self.path, ignore_errors=True)
        except Exception:
            pass
