"""The shape of trioroom/ that issue 16 set: checked, so that it stays.

- no import circle between trioroom's modules, counting imports made only
  for type checking and imports inside functions;
- no module over 800 lines and no class over 500;
- few attribute accesses to another object's ``_private`` members.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trioroom"
#: Accesses to ``x._name`` where ``x`` is not ``self``/``cls``: the budget.
PRIVATE_ACCESS_BUDGET = 15


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, tuple[Path, ast.Module]]:
    return {
        module_name(path): (path, ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def imports_of(name: str, path: Path, tree: ast.Module, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or ""
            root = f"{base}.{module}".strip(".") if node.level else module
            targets = [root] + [f"{root}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle() -> None:
    mods = modules()
    known = set(mods)
    # A package's __init__ re-exports its submodules: importing "pkg.mod"
    # runs pkg/__init__ first, but that is Python's order, not a circle of
    # ours; only the edges the code writes count.
    graph = {name: imports_of(name, path, tree, known) for name, (path, tree) in mods.items()}
    for name in graph:
        parent = name.rpartition(".")[0]
        graph[name].discard(parent)  # "from . import x" inside a package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_800_lines_and_no_class_over_500() -> None:
    too_big = []
    for name, (path, tree) in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > 800:
            too_big.append(f"module {name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > 500:
                    too_big.append(f"class {name}.{node.name}: {size} lines")
    assert too_big == []


def private_accesses() -> list[str]:
    found = []
    for name, (_path, tree) in modules().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_few_accesses_to_private_members_of_other_objects() -> None:
    found = private_accesses()
    assert len(found) <= PRIVATE_ACCESS_BUDGET, "\n".join(found)
