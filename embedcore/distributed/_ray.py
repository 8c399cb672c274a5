"""The one place that imports Ray: a clear message without the ``ray`` extra, and a local start.

Everything in :mod:`embedcore.distributed` gets Ray from :func:`require_ray`, so ``import embedcore``
and ``import embedcore.distributed`` work without Ray installed; only a call that needs Ray fails,
naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

INSTALL_HINT = "embedcore.distributed needs Ray: pip install 'embedcore[ray]'"


class MissingRayError(ImportError):
    """Ray (the ``ray`` extra of embedcore) is not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`MissingRayError` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise MissingRayError(INSTALL_HINT) from None


def ensure_ray(address: str | None = None) -> Any:
    """The ``ray`` module with a connected runtime.

    Args:
        address: a cluster to join ("auto", "ray://host:10001", ...); None joins the cluster that
            ``RAY_ADDRESS`` names, or starts a local one without the dashboard. Ignored when Ray is
            already initialised in this process.
    """
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray
