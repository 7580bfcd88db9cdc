"""The package's shape: imports run one way, and no package reaches into another's private parts.

Both are read from the source with `ast` (every import, including those inside functions: a lazy
import that closes a cycle is still a cycle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "axion_ray"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(target module, imported names, line) for every import of an `axion_ray` module in `path`."""
    out = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "axion_ray"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "axion_ray":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            if submodules:
                out += [(m, [], node.lineno) for m in submodules]
            rest = [n for n in names if f"{base}.{n}" not in modules]
            if rest or not submodules:
                out.append((base, rest, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t, _, _ in _imports(name, path, modules) if t in modules and t != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles inside axion_ray: {cycles}"


def _top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_private_imports_across_packages():
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        for target, names, line in _imports(name, path, modules):
            if _top_package(target) == _top_package(name):
                continue
            private_module = any(part.startswith("_") and part != "__init__" for part in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_") and n not in ("__version__",)]
            if private_module or private_names:
                crossings.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} {private_names or ''}")
    assert not crossings, "private parts used across packages:\n" + "\n".join(crossings)


def test_the_checks_can_fail():
    """The cycle finder finds a cycle, so a passing test above means something."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _top_package("axion_ray.pipeline._datasource") == "pipeline"
