"""Real text and the real model for tests: the bundled Wikipedia summaries and all-MiniLM-L6-v2.

Both come from the ``demo`` extra and are located by :mod:`embedcore.corpus` (without importing the
corpus package, whose ``__init__`` is broken); tests that need them skip when the extra is missing.
"""

from __future__ import annotations

import functools

import pytest

from embedcore import corpus


@functools.cache
def _all_summaries() -> tuple[dict[str, str], ...]:
    try:
        return tuple(corpus.load_wiki_summaries())
    except corpus.MissingExtraError as exc:
        pytest.skip(str(exc))


def load_summaries(n: int) -> list[dict[str, str]]:
    """The first ``n`` Wikipedia summaries in a stable order (sorted by title).

    Args:
        n: How many summaries, ``0 <= n <=`` the corpus size (~10,000).

    Returns:
        A new list of ``n`` dicts with the string keys ``title``, ``extract`` and ``description``.
    """
    rows = _all_summaries()
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= len(rows):
        raise ValueError(f"n must be an int in [0, {len(rows)}], got {n!r}")
    return [dict(r) for r in rows[:n]]


def minilm_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (skips the test when the demo extra is missing)."""
    try:
        return str(corpus.demo_model_path())
    except corpus.MissingExtraError as exc:
        pytest.skip(str(exc))
