"""The package's rooms keep to themselves: what each wing may import, read from the source.

Every import statement counts, also one inside a function (it runs when that function does),
and the rule holds for everything a module reaches through other `fedrec_app` modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedrec_app"
HEAVY = ("tensorflow", "keras", "flwr", "ray")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Every module name `module`'s own import statements name (`from a import b`: a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _with_parents(name: str) -> Iterable[str]:
    """`a.b.c` imports run `a/__init__`, `a.b/__init__` too."""
    parts = name.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def reach(module: str) -> dict[str, list[str]]:
    """Every module `module` imports, directly or through fedrec_app modules, with one path."""
    paths: dict[str, list[str]] = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in direct_imports(current):
            for target in _with_parents(name):
                if target in paths:
                    continue
                paths[target] = [*paths[current], target]
                if target in MODULES:
                    todo.append(target)
    return paths


def in_room(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def violations(room: str, forbidden: Iterable[str]) -> list[str]:
    """`module -> … -> forbidden` chains for every module of `room`."""
    found = []
    for module in sorted(m for m in MODULES if in_room(m, room)):
        for target, path in reach(module).items():
            if any(in_room(target, bad) for bad in forbidden):
                found.append(" -> ".join(path))
    return found


RULES = [
    ("fedrec_app.gateway", ["fedrec_app.node", "fedrec_app.server", *HEAVY]),
    ("fedrec_app.node", ["fedrec_app.server"]),
    ("fedrec_app.server", ["fedrec_app.node"]),
    ("fedrec_app.data", ["flwr", "keras", "tensorflow"]),
]


@pytest.mark.parametrize(("room", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_room_imports_nothing_forbidden(room: str, forbidden: list[str]) -> None:
    assert any(in_room(m, room) for m in MODULES), f"no modules in {room}"
    assert violations(room, forbidden) == []


def test_the_checker_sees_a_reach_through_another_module() -> None:
    # client_app reaches the node's trainer client, and through the core's model TensorFlow:
    # the rules above would catch either, so the checker can fail.
    assert violations("fedrec_app.client_app", ["fedrec_app.node"])
    assert violations("fedrec_app.core.central", ["tensorflow"])


def test_the_package_root_holds_at_most_ten_modules() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 10, root


def test_long_modules_say_why_at_their_top() -> None:
    """A module over 400 lines explains itself in its first docstring ("400 lines: …")."""
    unexplained = []
    for name, path in sorted(MODULES.items()):
        lines = path.read_text().splitlines()
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        if len(lines) > 400 and "400 lines" not in doc:
            unexplained.append(f"{name}: {len(lines)} lines")
    assert unexplained == []
