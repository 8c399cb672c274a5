"""Index folders under concurrent readers and writers, killed saves, foreign and old-layout folders."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedcore import persist
from embedcore.index import Index
from embedcore.persist import CorruptFolderError

LEGACY = Path(__file__).parent / "data" / "legacy_index"
STEPS = ("written", "renamed", "pointed", "collected")

# A child process that saves version ``i`` of a small index: ``i % 5 + 2`` vectors, ids ``i * 100 + j``,
# metadata {"i": i}, so a reader can check that arrays and manifest come from one save.
_SAVER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from embedcore import persist
    from embedcore.index import Index

    def save(path, i):
        n = i % 5 + 2
        idx = Index(4, "int8", "l2", "float32")
        idx.add(np.arange(n * 4, dtype=np.float32).reshape(n, 4) + i, ids=np.arange(n) + i * 100)
        idx.metadata = {"i": i}
        idx.save(path, extra_arrays={"tag": np.full(n, i)})
    """
)


def _run(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SAVER + textwrap.dedent(code), *args],
                            stderr=subprocess.PIPE, text=True)


def _check_consistent(idx: Index) -> int:
    """The save number of a loaded index, after checking that all its parts come from that save."""
    i = idx.metadata["i"]
    n = i % 5 + 2
    assert len(idx) == n
    np.testing.assert_array_equal(idx.ids, np.arange(n) + i * 100)
    np.testing.assert_array_equal(idx.extra_arrays["tag"], np.full(n, i))
    return i


def test_save_refuses_a_folder_of_other_files(tmp_path):
    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    idx = Index(8)
    idx.add(np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"mydocs exists and is not an embedcore folder .*'thesis\.tex'"):
        idx.save(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # no lock file left either
    empty = tmp_path / "empty"
    empty.mkdir()
    idx.save(empty)  # an empty folder holds nothing to lose
    assert len(Index.load(empty)) == 2


def test_user_files_inside_an_index_folder_survive_saves(tmp_path):
    path = tmp_path / "idx"
    idx = Index(3)
    idx.add(np.eye(3, dtype=np.float32))
    idx.save(path)
    (path / "notes.txt").write_text("mine")
    (path / "v_keep").mkdir()
    for _ in range(3):
        idx.save(path)
    assert (path / "notes.txt").read_text() == "mine" and (path / "v_keep").is_dir()


def test_old_layout_folder_loads_and_migrates(tmp_path):
    path = tmp_path / "legacy"
    shutil.copytree(LEGACY, path)
    legacy_files = sorted(p.name for p in path.iterdir())
    x = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    fresh = Index(5, "binary", "cos", "int8", rescore_multiplier=3)
    fresh.add(x, ids=[3, 5, 8, 13])
    after = []
    for _ in range(3):
        idx = Index.load(path)
        assert repr(idx) == repr(fresh)
        assert idx.metadata == {"note": "written by the single-folder layout"}
        np.testing.assert_array_equal(idx.extra_arrays["doc_offsets"], np.arange(5))
        for a, b in zip(idx.search(x, 3), fresh.search(x, 3)):
            np.testing.assert_array_equal(a, b)
        idx.save(path, extra_arrays={"doc_offsets": np.arange(5)})
        after.append({p.name for p in path.iterdir()})
    # The first save kept the old files as the previous version; the second removed them.
    fixed = {persist.LOCK, persist.POINTER}
    assert after[0] == set(legacy_files) | fixed | {"v00000001"}
    assert after[1] == fixed | {"v00000001", "v00000002"}
    assert after[2] == fixed | {"v00000002", "v00000003"}


def test_reader_during_300_resaves_sees_only_complete_versions(tmp_path):
    path = tmp_path / "idx"
    writer = _run(
        """
        for i in range(300):
            save(sys.argv[1], i)
        """,
        str(path),
    )
    seen, failures = [], []
    while writer.poll() is None:
        try:
            seen.append(_check_consistent(Index.load(path, mmap=len(seen) % 2 == 0)))
        except FileNotFoundError:
            if seen:  # before the first save completes there is nothing to load
                failures.append("missing")
        except (CorruptFolderError, AssertionError) as exc:
            failures.append(repr(exc))
    assert writer.returncode == 0, writer.stderr.read()
    assert failures == []
    assert seen == sorted(seen) and len(set(seen)) > 1  # versions only move forward
    assert _check_consistent(Index.load(path)) == 299
    assert sorted(p.name for p in path.iterdir()) == [persist.LOCK, persist.POINTER, "v00000299", "v00000300"]


def test_two_writers_are_serialised(tmp_path):
    path = tmp_path / "idx"
    writers = [
        _run(
            """
            for i in range(int(sys.argv[2]), int(sys.argv[2]) + 30):
                save(sys.argv[1], i)
            """,
            str(path),
            str(start),
        )
        for start in (0, 1000)
    ]
    loads = 0
    while any(w.poll() is None for w in writers):
        try:
            _check_consistent(Index.load(path))
            loads += 1
        except FileNotFoundError:
            assert loads == 0
    for w in writers:
        assert w.returncode == 0, w.stderr.read()
    assert _check_consistent(Index.load(path)) in (29, 1029)
    assert len([p for p in path.iterdir() if p.name.startswith("v")]) == 2
    assert not [p for p in path.iterdir() if p.name.startswith((".tmp", ".trash"))]


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_each_save_step_leaves_a_loadable_index(step, tmp_path):
    path = tmp_path / "idx"
    child = _run(
        """
        save(sys.argv[1], 1)
        def die(name):
            if name == sys.argv[2]:
                os.kill(os.getpid(), signal.SIGKILL)
        persist._step = die
        save(sys.argv[1], 2)
        """,
        str(path),
        step,
    )
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    expected = 1 if step in ("written", "renamed") else 2
    assert _check_consistent(Index.load(path)) == expected
    # The next save cleans what the killed one left (a temporary or an orphaned version folder).
    idx = Index.load(path, mmap=False)
    idx.save(path, extra_arrays=idx.extra_arrays)
    names = sorted(p.name for p in path.iterdir())
    assert not [n for n in names if n.startswith((".tmp", ".trash"))]
    assert len([n for n in names if n.startswith("v")]) == 2
    assert _check_consistent(Index.load(path)) == expected


def test_a_killed_first_save_does_not_block_the_next(tmp_path):
    path = tmp_path / "idx"
    for step in ("written", "renamed"):
        child = _run(
            """
            def die(name):
                if name == sys.argv[2]:
                    os.kill(os.getpid(), signal.SIGKILL)
            persist._step = die
            save(sys.argv[1], 1)
            """,
            str(path),
            step,
        )
        child.wait()
        assert child.returncode == -signal.SIGKILL
        with pytest.raises(FileNotFoundError):
            Index.load(path)
    idx = Index(4)
    idx.add(np.eye(4, dtype=np.float32))
    idx.save(path)
    assert len(Index.load(path)) == 4
    assert sorted(p.name for p in path.iterdir()) == [persist.LOCK, persist.POINTER, "v00000002"]


def test_a_foreign_manifest_json_is_not_taken_for_an_index(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my app", "icons": []}')
    idx = Index(4)
    idx.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="not an embedcore folder"):
        idx.save(web)
    assert (web / "manifest.json").read_text() == '{"name": "my app", "icons": []}'
