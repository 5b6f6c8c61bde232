"""The package's layout: subsystems in folders, imports one way (each floor only imports the floors below)."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGE = REPO / "migration_gate"
# From the bottom: a module may import its own floor and the ones below it, never above.
FLOORS = ("core", "checks", "reference", "history", "operations", "data", "plugin", "bench", "cli")


def floor(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return FLOORS.index(part) if part in FLOORS else -1


def imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("migration_gate"):
                found |= {
                    f"{node.module}.{alias.name}"
                    if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/"))
                    .with_suffix(".py")
                    .exists()
                    else node.module
                    for alias in node.names
                }
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("migration_gate")}
        graph[module] = found
    return graph


def test_every_module_lives_in_a_subsystem_folder() -> None:
    loose = [path.name for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "cli")]
    assert loose == [], f"modules outside the subsystem folders: {loose}"
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(
        FLOORS[:-1]
    )


def test_nothing_imports_upward() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in imports().items()
        for target in targets
        if floor(target) > floor(module)
    )
    assert upward == []


def test_no_import_cycles() -> None:
    graph = imports()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target in graph and len(path) < 40:
                visit(target, [*path, target])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []
