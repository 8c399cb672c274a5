"""The package's import graph: imports flow one way (DESIGN.md's layers), with no cycle.

Every import statement counts, including those inside functions: an import cycle hidden in a
function body is still a cycle. Read from the source with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    """Module name -> source file, for embedcore/ and kernels/ (installed as embedcore.kernels)."""
    found = {}
    for path in sorted((ROOT / "embedcore").rglob("*.py")) + sorted((ROOT / "kernels").glob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.parts[:2] == ("embedcore", "kernels"):
            continue  # the symlink to kernels/, read once through kernels/
        parts = list(rel.parts)
        if parts[0] == "kernels":
            parts = ["embedcore", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the embedcore modules its import statements name (anywhere in the file)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    if target in modules:
                        edges.add(target)  # `from pkg import module`
                    elif base in modules:
                        edges.add(base)  # `from module import name`
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_hidden_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


# Which layer each module belongs to; a module may import only from its own layer or lower ones.
_LAYERS = [
    ("embedcore._spec", "embedcore._version", "embedcore._arrays"),  # leaves: no embedcore import
    ("embedcore.kernels",),
    ("embedcore._backend", "embedcore.ops"),
    ("embedcore.models", "embedcore.persist", "embedcore.corpus"),
]


def _layer(module: str) -> int:
    for level, prefixes in enumerate(_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return len(_LAYERS)  # index, cli, demo, bench, the facade


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_flow_down(module):
    upward = sorted(t for t in import_graph()[module] if _layer(t) > _layer(module))
    assert upward == [], f"{module} imports from a higher layer: {upward}"


def test_leaf_specs_import_no_torch_or_triton():
    for name in ("_spec.py", "_version.py"):
        nodes = list(ast.walk(ast.parse((ROOT / "embedcore" / name).read_text())))
        imported = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom)}
        assert not imported & {"torch", "triton", "embedcore"}, (name, imported)
