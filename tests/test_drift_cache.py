"""The expected schema kept on disk for the next process: used only when it is exactly what was asked for.

``schema_drift`` and ``baseline`` build the schema the migrations make on an empty
database; the nightly run and each playbook's preflight would otherwise start a server
for it every time. Each test here has a cache directory of its own (its prefix) and
stands for a new process by emptying the in-process cache.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from migration_gate.core import drift
from migration_gate.core.drift import Reference
from migration_gate.core.plan import Migration, load_plan
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import REPO


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache of this test's own, removed afterwards; the in-process cache emptied before and after."""
    prefix = f"migration-gate-expected-test-{uuid.uuid4().hex[:8]}-"
    monkeypatch.setattr(drift, "CACHE_PREFIX", prefix)
    monkeypatch.setattr(drift, "_BUILT", {})
    path = Path(drift.tempfile.gettempdir()) / f"{prefix}{os.getuid()}"
    yield path
    for child in path.glob("*") if path.is_dir() else ():
        child.unlink()
    if path.is_dir():
        path.rmdir()


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the builds on a server: one per schema the cache could not give."""
    counted: list[int] = []
    build = drift._build

    def counting(*args: object, **kwargs: object) -> object:
        counted.append(1)
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(drift, "_build", counting)
    return counted


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "_BUILT", {})


def expected(
    gate: CheckpointDatabases, plan: list[Migration], lines: list[str] | None = None
) -> drift.Expected:
    return Reference(gate.server).expected(
        plan, [], gate.server.installation.major, progress=(lines if lines is not None else []).append
    )


def test_the_next_process_takes_the_expected_schema_from_disk_and_says_so(
    gate: CheckpointDatabases, cache_dir: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = load_plan(REPO / "migrations")
    first = expected(gate, plan)
    assert builds == [1] and len(list(cache_dir.glob("*.json"))) == 1
    assert cache_dir.stat().st_mode & 0o777 == 0o700

    new_process(monkeypatch)
    lines: list[str] = []
    again = expected(gate, plan, lines)
    assert builds == [1], "built again although the same files were kept"
    assert (
        again.schema == first.schema and again.built_from == first.built_from and again.server == first.server
    )
    assert any(line.startswith("001→008 as built earlier on a disposable PostgreSQL") for line in lines), (
        lines
    )


def test_other_files_or_an_edited_migration_build_again(
    gate: CheckpointDatabases,
    cache_dir: Path,
    builds: list[int],
    monkeypatch: pytest.MonkeyPatch,
    migrations_copy: Path,
) -> None:
    plan = load_plan(REPO / "migrations")
    first = expected(gate, plan)
    (migrations_copy / "009_note.sql").write_text("ALTER TABLE public.credentials ADD COLUMN note text;\n")
    new_process(monkeypatch)
    longer = expected(gate, load_plan(migrations_copy))
    assert builds == [1, 1]
    assert ("column", "public.credentials.note") in longer.schema
    assert ("column", "public.credentials.note") not in first.schema


@pytest.mark.parametrize(
    "spoil",
    ["corrupt", "another key", "a symlink", "a directory others can enter"],
)
def test_a_doubtful_cache_is_passed_over_and_the_schema_built_again(
    gate: CheckpointDatabases,
    cache_dir: Path,
    builds: list[int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    spoil: str,
) -> None:
    plan = load_plan(REPO / "migrations")
    first = expected(gate, plan)
    (kept,) = cache_dir.glob("*.json")
    if spoil == "corrupt":
        kept.write_text(kept.read_text()[:100])
    elif spoil == "another key":
        # Objects that are not the migrations', under this file's name: a key that is not the one asked for.
        content = json.loads(kept.read_text())
        content["key"] = content["key"].replace("[", "[[", 2)
        content["objects"] = []
        kept.write_text(json.dumps(content))
    elif spoil == "a symlink":
        elsewhere = tmp_path / "planted.json"
        elsewhere.write_text(kept.read_text())
        kept.unlink()
        kept.symlink_to(elsewhere)
    else:
        cache_dir.chmod(0o777)

    new_process(monkeypatch)
    again = expected(gate, plan)
    assert builds == [1, 1], f"{spoil}: the cache was trusted"
    assert again.schema == first.schema
