"""No import circle among torchconv's modules, and every name one module
imports from another is in that module's ``__all__``.

The graph is read from the sources: a module's top-level imports (those
inside a top-level ``if`` or ``try`` included; imports inside functions run
later and are not edges). Importing a module's own parent package is not an
edge: the parent is always being imported already. A circle would make the
import order matter and leave a module half-defined while another reads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "torchconv"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _top_level_imports(tree: ast.Module):
    for node in tree.body:
        yield from (n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))) \
            if isinstance(node, (ast.If, ast.Try)) else [node]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
                # ``from . import x`` imports the submodule x; ``from .m import f`` imports m.
                named = [f"{source}.{alias.name}" for alias in node.names]
                targets = [t for t in named if t in modules or t.endswith("._C")]
                if len(targets) < len(named):
                    targets.append(source)
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and not name.startswith(t + ".")}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` (a path that returns to its start), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "torchconv._library" in graph["torchconv.functional"]
    assert "torchconv._autograd" in graph["torchconv._vmap"]


def test_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_a_circle_is_found():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def _imported_names() -> dict[str, set[str]]:
    """The names each torchconv module is asked for by the others:
    ``from .m import name`` and ``m.name`` after ``from . import m``."""
    modules = _modules()
    asked: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        attributes = [(n.value.id, n.attr) for n in ast.walk(tree)
                      if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            origin = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                if f"{origin}.{alias.name}" in modules:  # a module: its attributes used here
                    local = alias.asname or alias.name
                    used = {attr for owner, attr in attributes if owner == local}
                    asked.setdefault(f"{origin}.{alias.name}", set()).update(used)
                elif origin in modules and origin != name:
                    asked.setdefault(origin, set()).add(alias.name)
    return asked


def test_imported_names_are_in_all():
    import importlib

    wrong = []
    for module_name, names in sorted(_imported_names().items()):
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        submodules = {m.rpartition(".")[2] for m in _modules() if m.startswith(module_name + ".")}
        missing = sorted(n for n in names if not n.startswith("_") and n not in submodules
                         and (exported is None or n not in exported))
        if missing:
            wrong.append(f"{module_name}: {missing}" + (" (no __all__)" if exported is None else ""))
    assert not wrong, "names imported from these modules are not in their __all__:\n" + "\n".join(wrong)
