"""Test configuration shared by every test file.

Triton kernels run on the CPU through Triton's interpreter when no CUDA device exists. The variable
must be set before triton is first imported, and without initialising CUDA here: the driver library
is probed through torch only when torch is already importable, never on a GPU at import time of a
test module.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest


def _cuda_present() -> bool:
    # nvidia-smi (or /dev/nvidia0) is a cheap, side-effect-free hint that a GPU exists; without it
    # torch.cuda would still be asked later, inside tests marked `cuda`.
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


if not _cuda_present():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("cuda") for item in items):
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA device")
            for item in items:
                if item.get_closest_marker("cuda"):
                    item.add_marker(skip)


@pytest.fixture(params=["scalar", "avx2", "avx512", "avx512_vpopcnt"])
def isa(request) -> str:
    """Runs the test once per CPU kernel level this machine and build have (others are skipped),
    with embedcore._C switched to that level for the test's duration."""
    from embedcore import _backend

    native = _backend.require_native()
    if request.param not in native.available_isas():
        pytest.skip(f"{request.param} not available on this CPU/build")
    before = native.isa()
    native.set_isa(request.param)
    yield request.param
    native.set_isa(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
