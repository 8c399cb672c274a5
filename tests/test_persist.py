"""Persistence: atomic folders with a verified manifest, and Index save/load round trips."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from embedcore import persist
from embedcore.index import FORMAT_VERSION, RESCORE_MODES, Index
from embedcore.persist import CorruptFolderError

DIM = 19
# Every (precision, rescore) pair the index supports.
CONFIGS = [(p, r) for p, modes in RESCORE_MODES.items() for r in modes]


def _index(rng, precision="binary", rescore="int8", metric="cos", n=60) -> Index:
    idx = Index(DIM, precision, metric, rescore, rescore_multiplier=3)
    idx.add(rng.standard_normal((n, DIM)).astype(np.float32), ids=np.arange(n) * 7 + 3)
    return idx


def _is_mapped(array: np.ndarray) -> bool:
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base
    return False


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize(("precision", "rescore"), CONFIGS)
def test_index_round_trip(precision, rescore, mmap, rng, tmp_path):
    idx = _index(rng, precision, rescore, metric="l2" if precision == "float16" else "cos")
    idx.remove([3, 10])
    idx.metadata = {"model": "m", "note": [1, 2]}
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    before = idx.search(q, 8)
    idx.save(tmp_path / "idx", extra_arrays={"doc_offsets": np.arange(4)})
    loaded = Index.load(tmp_path / "idx", mmap=mmap)
    assert repr(loaded) == repr(idx)
    assert loaded.metadata == idx.metadata
    np.testing.assert_array_equal(loaded.ids, idx.ids)
    np.testing.assert_array_equal(loaded.extra_arrays["doc_offsets"], np.arange(4))
    if idx.ranges is not None:
        np.testing.assert_array_equal(loaded.ranges, idx.ranges)
    after = loaded.search(q, 8)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert _is_mapped(loaded.ids) == mmap
    # A loaded (read-only, memory-mapped) index still grows and shrinks; default ids continue.
    loaded.add(rng.standard_normal((3, DIM)).astype(np.float32))
    assert loaded.ids[-3:].tolist() == [idx.next_id, idx.next_id + 1, idx.next_id + 2]
    loaded.remove([17])
    assert len(loaded) == len(idx) + 2
    assert _leftovers(tmp_path / "idx") == []


def test_save_replaces_atomically_and_interrupted_save_keeps_the_previous_index(rng, tmp_path, monkeypatch):
    path = tmp_path / "idx"
    old = _index(rng)
    old.save(path)
    new = _index(rng, n=90)
    calls = 0
    real_save = np.save

    def failing_save(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:  # the second array: the first file of the new index is already written
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(persist.np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        new.save(path)
    monkeypatch.undo()
    assert calls == 2
    kept = Index.load(path)
    np.testing.assert_array_equal(kept.ids, old.ids)
    assert _leftovers(path) == []
    new.save(path)  # a completed save replaces the folder
    assert len(Index.load(path)) == 90
    assert _leftovers(path) == []


def test_failed_rename_restores_the_previous_folder(rng, tmp_path, monkeypatch):
    path = tmp_path / "idx"
    _index(rng).save(path)
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(persist.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        _index(rng, n=90).save(path)
    monkeypatch.undo()
    assert len(Index.load(path)) == 60
    assert _leftovers(path) == []


def test_corrupted_file_fails_the_checksum(rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    codes = path / "codes.npy"
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0x01
    codes.write_bytes(bytes(data))
    with pytest.raises(CorruptFolderError, match=r"codes\.npy does not match its SHA-256"):
        Index.load(path)
    # Without the checksum pass the altered bits go unnoticed: that is what verify=True is for.
    Index.load(path, verify=False)


def test_truncated_and_missing_files_fail_loudly(rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    vectors = path / "rescore_vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-5])
    with pytest.raises(CorruptFolderError, match="truncated"):
        Index.load(path, verify=False)
    vectors.unlink()
    with pytest.raises(FileNotFoundError, match=r"rescore_vectors\.npy is missing"):
        Index.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        Index.load(path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        Index.load(tmp_path / "nowhere")


def _edit_manifest(path, edit) -> None:
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    edit(manifest)
    file.write_text(json.dumps(manifest))


def test_manifest_checks(rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    original = (path / "manifest.json").read_text()

    _edit_manifest(path, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(CorruptFolderError, match="newer embedcore"):
        Index.load(path)
    (path / "manifest.json").write_text(original)
    _edit_manifest(path, lambda m: m["metadata"].update(count=59))
    with pytest.raises(CorruptFolderError, match="does not match the manifest"):
        Index.load(path)
    (path / "manifest.json").write_text(original)
    _edit_manifest(path, lambda m: m["metadata"].update(precision="int4"))
    with pytest.raises(CorruptFolderError, match="inconsistent index manifest"):
        Index.load(path)
    (path / "manifest.json").write_text(original)
    _edit_manifest(path, lambda m: m["metadata"].update(next_id="7"))
    with pytest.raises(CorruptFolderError, match="next_id must be a non-negative int"):
        Index.load(path)
    (path / "manifest.json").write_text(original)
    _edit_manifest(path, lambda m: m.update(format="something.else"))
    with pytest.raises(CorruptFolderError, match=r"expected 'embedcore\.index'"):
        Index.load(path)
    (path / "manifest.json").write_text(original[: len(original) // 2])
    with pytest.raises(CorruptFolderError, match="not valid JSON"):
        Index.load(path)


def test_duplicate_ids_on_disk_are_rejected(rng, tmp_path):
    path = tmp_path / "idx"
    idx = _index(rng)
    idx.save(path)
    ids = idx.ids.copy()
    ids[1] = ids[0]
    np.save(path / "ids.npy", ids)
    # Re-record size and checksum, as someone editing the folder by hand would.
    _edit_manifest(
        path,
        lambda m: m["arrays"]["ids"].update(
            bytes=(path / "ids.npy").stat().st_size, sha256=persist.sha256_file(path / "ids.npy")
        ),
    )
    with pytest.raises(CorruptFolderError, match="not unique"):
        Index.load(path)


def test_nothing_is_unpickled(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        persist.save_folder(tmp_path / "f", "k", {"a": np.array([{}], dtype=object)}, {})
    assert not (tmp_path / "f").exists()
    # An object array smuggled in under a valid manifest (checksum recomputed) is still refused.
    persist.save_folder(tmp_path / "f", "k", {"a": np.arange(3)}, {})
    np.save(tmp_path / "f" / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(
        tmp_path / "f",
        lambda m: m["arrays"]["a"].update(
            bytes=(tmp_path / "f" / "a.npy").stat().st_size,
            sha256=persist.sha256_file(tmp_path / "f" / "a.npy"),
        ),
    )
    with pytest.raises(CorruptFolderError, match=r"not a readable \.npy"):
        persist.load_folder(tmp_path / "f", "k")


def test_save_folder_bad_input(tmp_path):
    with pytest.raises(ValueError, match="array name"):
        persist.save_folder(tmp_path / "f", "k", {"../x": np.arange(3)}, {})
    with pytest.raises(TypeError, match="JSON"):
        persist.save_folder(tmp_path / "f", "k", {}, {"x": object()})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        persist.save_folder(tmp_path / "file", "k", {}, {})
    with pytest.raises(FileNotFoundError):
        persist.save_folder(tmp_path / "missing" / "f", "k", {}, {})
    with pytest.raises(ValueError, match="reserved"):
        Index(3).save(tmp_path / "g", extra_arrays={"ids": np.arange(2)})


def test_save_npy_atomic(tmp_path, monkeypatch):
    target = tmp_path / "emb.npy"
    persist.save_npy_atomic(target, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(np.load(target), np.arange(6.0).reshape(2, 3))
    monkeypatch.setattr(persist.np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError, match="simulated"):
        persist.save_npy_atomic(target, np.zeros(3))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(target), np.arange(6.0).reshape(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]
