"""Persistence: atomic folders with a verified manifest, and Index save/load round trips."""

from __future__ import annotations

import hashlib
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
    """Hidden names next to the folder and inside it, apart from the savers' lock file."""
    names = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    names += [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != persist.LOCK]
    return sorted(names)


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


def test_failed_pointer_swap_keeps_the_previous_version(rng, tmp_path, monkeypatch):
    path = tmp_path / "idx"
    _index(rng).save(path)
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(persist.POINTER):
            raise OSError("replace failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(persist.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        _index(rng, n=90).save(path)
    monkeypatch.undo()
    assert len(Index.load(path)) == 60
    assert _leftovers(path) == []
    assert sorted(p.name for p in path.iterdir()) == [persist.LOCK, persist.POINTER, "v00000001"]


def test_corrupted_file_fails_the_checksum(rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    codes = persist.current_folder(path) / "codes.npy"
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
    version = persist.current_folder(path)
    vectors = version / "rescore_vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-5])
    with pytest.raises(CorruptFolderError, match="truncated"):
        Index.load(path, verify=False)
    vectors.unlink()
    with pytest.raises(FileNotFoundError, match=r"rescore_vectors\.npy is missing"):
        Index.load(path)
    (version / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"v00000001 named by CURRENT is missing"):
        Index.load(path)
    (path / persist.POINTER).unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        Index.load(path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        Index.load(tmp_path / "nowhere")


def _write_manifest(path, text: str) -> None:
    """Replaces the live manifest and re-records its checksum in CURRENT, as a hand edit would."""
    file = persist.current_folder(path) / "manifest.json"
    file.write_text(text)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    (path / persist.POINTER).write_text(f"{file.parent.name} {digest}\n")


def _edit_manifest(path, edit) -> None:
    manifest = json.loads((persist.current_folder(path) / "manifest.json").read_text())
    edit(manifest)
    _write_manifest(path, json.dumps(manifest))


def test_manifest_checks(rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    original = (persist.current_folder(path) / "manifest.json").read_text()

    _edit_manifest(path, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(CorruptFolderError, match="newer embedcore"):
        Index.load(path)
    _write_manifest(path, original)
    _edit_manifest(path, lambda m: m["metadata"].update(count=59))
    with pytest.raises(CorruptFolderError, match="does not match the manifest"):
        Index.load(path)
    _write_manifest(path, original)
    _edit_manifest(path, lambda m: m["metadata"].update(precision="int4"))
    with pytest.raises(CorruptFolderError, match=r"metadata\.precision must be one of"):
        Index.load(path)
    _write_manifest(path, original)
    _edit_manifest(path, lambda m: m["metadata"].update(next_id="7"))
    with pytest.raises(CorruptFolderError, match="next_id must be a non-negative int"):
        Index.load(path)
    _write_manifest(path, original)
    _edit_manifest(path, lambda m: m.update(format="something.else"))
    with pytest.raises(CorruptFolderError, match=r"expected 'embedcore\.index'"):
        Index.load(path)
    _write_manifest(path, original[: len(original) // 2])
    with pytest.raises(CorruptFolderError, match="not valid JSON"):
        Index.load(path)
    _write_manifest(path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFolderError, match="nested too deeply"):
        Index.load(path)
    _write_manifest(path, original)
    Index.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("metadata"), r"invalid index manifest: metadata is missing"),
        (lambda m: m["metadata"].pop("next_id"), r"metadata\.next_id is missing"),
        (lambda m: m["metadata"].pop("user"), r"metadata\.user is missing"),
        (lambda m: m["metadata"].update(user=5), r"metadata\.user must be an object, got 5"),
        (lambda m: m["metadata"].update(dim=True), r"metadata\.dim must be a positive int"),
        (lambda m: m["metadata"].update(rescore="int4"), r"metadata\.rescore must be"),
        (lambda m: m["metadata"].update(rescore_multiplier=0), r"metadata\.rescore_multiplier must be"),
        (lambda m: m["metadata"].update(count=-1), r"metadata\.count must be a non-negative int"),
        (lambda m: m["metadata"].update(next_id=2**64), r"metadata\.next_id must be a non-negative int"),
        (lambda m: m["arrays"]["ids"].update(bytes="160"), r"invalid entry for array 'ids'"),
        (lambda m: m["arrays"]["ids"].update(shape=[60.0]), r"invalid entry for array 'ids'"),
    ],
)
def test_every_metadata_field_is_validated_naming_folder_and_field(edit, message, rng, tmp_path):
    path = tmp_path / "idx"
    _index(rng).save(path)
    _edit_manifest(path, edit)
    with pytest.raises(CorruptFolderError, match=message) as info:
        Index.load(path)
    assert str(tmp_path) in str(info.value)


def test_every_manifest_byte_is_covered_by_a_checksum(rng, tmp_path):
    """A substituted byte anywhere in the manifest (metadata included) is a CorruptFolderError, never a
    silently changed rescore_multiplier or next_id; the same for the pointer file."""
    path = tmp_path / "idx"
    _index(rng).save(path)
    version = persist.current_folder(path)
    for file in (version / "manifest.json", path / persist.POINTER):
        original = file.read_bytes()
        for pos in range(0, len(original), max(1, len(original) // 150)):
            data = bytearray(original)
            data[pos] = ord("7") if data[pos] != ord("7") else ord("8")
            file.write_bytes(bytes(data))
            with pytest.raises((CorruptFolderError, FileNotFoundError)):
                Index.load(path, verify=False)
        file.write_bytes(original)
    assert Index.load(path).rescore_multiplier == 3


def test_duplicate_ids_on_disk_are_rejected(rng, tmp_path):
    path = tmp_path / "idx"
    idx = _index(rng)
    idx.save(path)
    ids = idx.ids.copy()
    ids[1] = ids[0]
    file = persist.current_folder(path) / "ids.npy"
    np.save(file, ids)
    # Re-record size and checksum, as someone editing the folder by hand would.
    _edit_manifest(
        path,
        lambda m: m["arrays"]["ids"].update(bytes=file.stat().st_size, sha256=persist.sha256_file(file)),
    )
    with pytest.raises(CorruptFolderError, match="not unique"):
        Index.load(path)


def test_nothing_is_unpickled(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        persist.save_folder(tmp_path / "f", "k", {"a": np.array([{}], dtype=object)}, {})
    assert not (tmp_path / "f").exists()
    # An object array smuggled in under a valid manifest (checksum recomputed) is still refused.
    persist.save_folder(tmp_path / "f", "k", {"a": np.arange(3)}, {})
    file = persist.current_folder(tmp_path / "f") / "a.npy"
    np.save(file, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(
        tmp_path / "f",
        lambda m: m["arrays"]["a"].update(bytes=file.stat().st_size, sha256=persist.sha256_file(file)),
    )
    with pytest.raises(CorruptFolderError, match=r"not a readable \.npy"):
        persist.load_folder(tmp_path / "f", "k")


def test_forged_npy_header_is_refused_before_allocating(tmp_path):
    """A header that claims far more data than the file holds (43 TiB) fails on the size check; the
    manifest agrees with the forged file, as a hostile folder would."""
    persist.save_folder(tmp_path / "f", "k", {"a": np.arange(3)}, {})
    file = persist.current_folder(tmp_path / "f") / "a.npy"
    data = file.read_bytes()
    forged = data.replace(b"(3,)", b"(6000000000000,)".ljust(4)[:16])
    header_len = forged.index(b"\n") + 1
    forged = forged[:8] + (header_len - 10).to_bytes(2, "little") + forged[10:]
    file.write_bytes(forged)
    _edit_manifest(
        tmp_path / "f",
        lambda m: m["arrays"]["a"].update(bytes=file.stat().st_size, sha256=persist.sha256_file(file)),
    )
    for mmap in (False, True):
        with pytest.raises(CorruptFolderError, match="header declares 48000000000000 data bytes"):
            persist.load_folder(tmp_path / "f", "k", mmap=mmap)


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
