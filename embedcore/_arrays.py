"""Conversions at the public boundary: numpy arrays and torch tensors in, the same kind out."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_tensor(x: Any) -> bool:
    """True for a torch.Tensor, without importing torch when the caller never used it."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def check_array(x: Any, name: str) -> None:
    """Raises TypeError unless ``x`` is a numpy array or a dense torch tensor (ValueError: a meta one)."""
    if not (isinstance(x, np.ndarray) or is_tensor(x)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if is_tensor(x):
        if str(x.layout) != "torch.strided":
            raise TypeError(f"{name} is a {x.layout} tensor; pass a dense one ({name}.to_dense())")
        if x.device.type == "meta":
            raise ValueError(f"{name} is on the meta device, which holds no values")


def cpu_numpy(x: Any, name: str) -> np.ndarray:
    """A C-contiguous numpy view (or copy) of a numpy array or CPU tensor.

    bfloat16 tensors, which numpy cannot hold, become float32 (exact).
    """
    check_array(x, name)
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on {x.device}; expected a CPU tensor here")
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        x = t.contiguous().numpy()
    return np.ascontiguousarray(x)


def like(result: np.ndarray, template: Any) -> Any:
    """``result`` as the same kind as ``template``: a torch tensor on its device, or numpy."""
    if is_tensor(template):
        import torch

        return torch.from_numpy(np.ascontiguousarray(result)).to(template.device)
    return result
