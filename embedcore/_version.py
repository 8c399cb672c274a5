"""The package version, in a leaf module so that any layer can report it without the facade."""

from __future__ import annotations

__version__ = "0.1.0"
