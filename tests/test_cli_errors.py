"""Hostile inputs to the command line: one line naming the file (and line), non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from embedcore import persist
from embedcore.corpus import demo_model_path, read_texts


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "embedcore.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_files_name_the_file_and_line(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "ok"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    wide = tmp_path / "wide.csv"
    wide.write_text("text\nshort\n" + "x" * 131_073 + "\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("one\ntwo\ndrei \xfcber\n".encode("latin-1"))
    cases = [(deep, "deep.jsonl line 2: JSON nested too deeply"), (wide, "wide.csv line 3: unreadable CSV"),
             (latin, "latin.txt line 3: not valid UTF-8")]
    for file, message in cases:
        with pytest.raises(ValueError, match=message):
            read_texts(file)
    # Through the CLI: the input is read before any model is loaded, so these runs are quick.
    for file, message in cases:
        _one_line_error(_run("encode", "--input", str(file), "--output", str(tmp_path / "o.npy")), message)
    assert not (tmp_path / "o.npy").exists()


def test_forged_npy_header_and_deep_manifest(tmp_path):
    emb = tmp_path / "emb.npy"
    np.save(emb, np.ones((3, 4), np.float32))
    text = emb.read_bytes()
    header_end = text.index(b"\n") + 1
    header = text[10:header_end].replace(b"(3, 4)", b"(3000000000000, 4)")
    header = header.rstrip(b"\n ")
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"  # a header padded as numpy pads it
    emb.write_bytes(text[:8] + len(header).to_bytes(2, "little") + header + text[header_end:])
    out = tmp_path / "idx"
    for command in (("index", "build", "--output", str(out)), ("tune",), ("inspect",)):
        _one_line_error(
            _run(*command, "--embeddings", str(emb)),
            "--embeddings", "emb.npy: its .npy header declares 48000000000000 data bytes",
        )
    np.save(emb, np.ones((3, 4), np.float32))
    assert _run("index", "build", "--embeddings", str(emb), "--output", str(out)).returncode == 0
    version = persist.current_folder(out)
    nested = b"[" * 100_000 + b"]" * 100_000
    (version / "manifest.json").write_bytes(nested)
    digest = persist.sha256_file(version / "manifest.json")
    (out / persist.POINTER).write_text(f"{version.name} {digest}\n")
    _one_line_error(_run("search", "--index", str(out), "--query-embeddings", str(emb)), "nested too deeply",
                    str(out))
    result = _run("--debug", "search", "--index", str(out), "--query-embeddings", str(emb))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_truncated_model_file_is_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    source = demo_model_path()
    for entry in source.iterdir():
        if entry.name != "model.safetensors":
            os.symlink(entry, model / entry.name)
    (model / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:5000])
    (tmp_path / "t.txt").write_text("hello\n")
    _one_line_error(
        _run("encode", "--input", str(tmp_path / "t.txt"), "--output", str(tmp_path / "o.npy"), "--model",
             str(model)),
        f"model {model} cannot be loaded",
    )
