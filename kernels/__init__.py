"""Triton kernels and their launchers, installed as ``embedcore.kernels``.

Only ``@triton.jit`` functions and thin launchers (shape checks, grid, allocation) live here; the
dispatch and the PyTorch references live in ``embedcore.ops``. Importing a kernel module needs
triton; ``embedcore.ops`` imports them lazily.
"""
