"""The package as installed: import hygiene, backend report, CLI entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import embedcore as ec


def _run(code: str, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_kernels_is_a_subpackage_not_a_top_level_module(tmp_path):
    # From a folder outside the checkout, only the installed layout is visible.
    result = _run(
        "import importlib.util, embedcore.kernels as k;"
        "print(k.__name__, importlib.util.find_spec('kernels'))",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["embedcore.kernels", "None"]


def test_imports_cleanly_without_triton(tmp_path):
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import embedcore, embedcore._backend as b\n"
        "r = embedcore.info()\n"
        "assert r['triton'] == 'absent', r\n"
        "assert embedcore.topk is not None\n"
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Triton:            absent" in result.stdout


def test_info_reports_native_and_isa(capsys):
    report = ec.info()
    out = capsys.readouterr().out
    assert report["native"] is True
    assert report["cpu_isa"] in ("scalar", "avx2", "avx512")
    assert report["cpu_isa"] in report["cpu_isas_available"]
    assert f"ISA {report['cpu_isa']}" in out
    assert report["torch"] and report["transformers"]


def test_cpu_isa_env_caps_the_level(tmp_path):
    result = _run("import embedcore._C as c; print(c.isa())", tmp_path, EMBEDCORE_CPU_ISA="scalar")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "scalar"


def test_backend_env_validation(monkeypatch):
    from embedcore import _backend

    monkeypatch.setenv("EMBEDCORE_BACKEND", "torch")
    assert _backend.force_reference()
    monkeypatch.setenv("EMBEDCORE_BACKEND", "cuda-please")
    with pytest.raises(ValueError, match="EMBEDCORE_BACKEND"):
        _backend.force_reference()
    monkeypatch.setenv("EMBEDCORE_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="EMBEDCORE_NUM_THREADS"):
        _backend.num_threads()


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ec.nope  # noqa: B018


def test_cli_info_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "embedcore.cli", "info"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "_C (native CPU):   loaded" in result.stdout
