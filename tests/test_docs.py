"""The docs say what the code does: generated tables equal their sources, links lead somewhere, the README is a front door.

``python -m tests.test_docs --write`` rewrites the generated blocks after a change to the
catalog, the settings or the commands.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from migration_gate import cli
from migration_gate.checks import catalog
from tests.conftest import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"
MAX_README_LINES = 250
QUICK_START_BY_LINE = 60


def _catalog() -> str:
    return catalog.markdown(catalog.load(REPO / "checks"))


# (file, block name, what generates it): each block sits between <!-- NAME:begin ... --> and <!-- NAME:end -->.
GENERATED: list[tuple[Path, str, Callable[[], str]]] = [
    (DOCS / "checks.md", "catalog", _catalog),
    (DOCS / "options.md", "options", cli.options_markdown),
    (DOCS / "commands.md", "usage", cli.usage_markdown),
]


def _block(text: str, name: str) -> tuple[int, int]:
    begin = text.index(f"<!-- {name}:begin")
    start = text.index("-->", begin) + len("-->\n")
    return start, text.index(f"<!-- {name}:end -->")


def write() -> None:
    for path, name, generate in GENERATED:
        text = path.read_text(encoding="utf-8")
        start, end = _block(text, name)
        path.write_text(text[:start] + generate() + text[end:], encoding="utf-8")


@pytest.mark.parametrize(
    ("path", "name", "generate"), GENERATED, ids=[f"{p.name}:{n}" for p, n, _ in GENERATED]
)
def test_each_generated_block_equals_its_source(path: Path, name: str, generate: Callable[[], str]) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = _block(text, name)
    assert text[start:end] == generate(), (
        f"{path.name}'s {name} block is stale: python -m tests.test_docs --write"
    )


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES
    head = "\n".join(lines[:QUICK_START_BY_LINE])
    assert "make gate" in head and "make test" in head


def test_every_option_and_command_is_documented() -> None:
    options = (DOCS / "options.md").read_text(encoding="utf-8")
    commands = (DOCS / "commands.md").read_text(encoding="utf-8")
    for command in cli.COMMANDS:
        assert f"## `{command.name}`" in commands, f"docs/commands.md has no section for {command.name}"
    readme = README.read_text(encoding="utf-8")
    assert "docs/options.md" in readme and "docs/commands.md" in readme
    assert options.count("\n| ") >= len(cli.COMMANDS)


_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(path: Path) -> None:
    missing = [
        match["target"]
        for match in _LINK.finditer(path.read_text(encoding="utf-8"))
        if "://" not in match["target"] and not (path.parent / match["target"]).exists()
    ]
    assert missing == []


if __name__ == "__main__":  # python -m tests.test_docs --write
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_docs --write")
    write()
