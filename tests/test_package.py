"""The package as installed: import hygiene, backend report, CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import embedcore as ec
from embedcore import _backend


def _run(code: str, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


REPO_ROOT = Path(__file__).resolve().parent.parent


def test_kernels_is_a_subpackage_not_a_top_level_module(tmp_path):
    # From a folder outside the checkout, only the installed layout is visible.
    result = _run("import embedcore.kernels as k; print(k.__name__)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["embedcore.kernels"]


def test_top_level_kernels_never_resolves_inside_the_checkout():
    # With the checkout's root first on sys.path (python -c, python -m, `python -m pytest`), the
    # name `kernels` belongs to Hugging Face's package, which transformers imports to load models.
    code = (
        "import importlib.util, json\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "places = [] if spec is None else [spec.origin or '', *(spec.submodule_search_locations or [])]\n"
        "print(json.dumps(places))\n"
    )
    result = _run(code, REPO_ROOT)
    assert result.returncode == 0, result.stderr
    ours = str(REPO_ROOT / "kernels")
    inside = [p for p in json.loads(result.stdout) if p and os.path.realpath(p).startswith(ours)]
    assert inside == [], f"`kernels` resolves inside the checkout: {inside}"


def test_transformers_and_embedcore_kernels_import_from_the_checkout_root():
    result = _run(
        "import transformers.models.bert.modeling_bert as m\n"
        "from transformers import AutoModel\n"
        "import embedcore.kernels.pooling as p\n"
        "print(p.__name__)\n",
        REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["embedcore.kernels.pooling"]


def test_cli_runs_from_the_checkout_root():
    result = subprocess.run([sys.executable, "-m", "embedcore.cli", "info"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "_C (native CPU):   loaded" in result.stdout


def test_distributions_carry_the_kernels_as_embedcore_kernels(tmp_path):
    # What a wheel gets is what build_py lays out; the sdist must carry the sources a wheel build needs.
    env = {**os.environ, "EMBEDCORE_CUDA": "0"}
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path / "lib")],
                           cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stderr
    kernels = tmp_path / "lib" / "embedcore" / "kernels"
    assert sorted(p.name for p in kernels.glob("*.py")) == sorted(
        p.name for p in (REPO_ROOT / "kernels").glob("*.py"))
    assert not kernels.is_symlink() and not (tmp_path / "lib" / "kernels").exists()

    sdist = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
                           cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert sdist.returncode == 0, sdist.stderr
    (archive,) = (tmp_path / "dist").glob("embedcore-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"embedcore/kernels/attention.py", "csrc/heap.h", "csrc/cuda/api.h"} <= names
    assert "kernels/__init__.py" not in names and "embedcore/kernels/__init__.py" not in names


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
    assert report["cpu_isa"] in _backend.CPU_ISAS
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
