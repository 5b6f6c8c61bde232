"""``core.schema_walk``: what migrations do to tables, read with PostgreSQL's parser and never run.

The forecast scales each statement by the tables it works on, and the notice says what
goes and what moves: both rest on the walk following a table through renames, schema
moves and copies. Each case is written as a migration would be, and parsed for real.
"""

from __future__ import annotations

from pathlib import Path

from migration_gate.core.contract import LEGACY_COLUMNS
from migration_gate.core.plan import Migration, load_plan
from migration_gate.core.schema_walk import Cte, SchemaWalk
from tests.conftest import REPO

AT_004 = {
    **{table: list(columns) for table, columns in LEGACY_COLUMNS.items()},
    "profiles": ["id", "code", "name"],
}


def pending(directory: Path = REPO / "migrations") -> list[Migration]:
    return [migration for migration in load_plan(directory) if migration.version > 4]


def walked(migrations: list[Migration], start: dict[str, list[str]] = AT_004) -> SchemaWalk:
    walk = SchemaWalk(start)
    for migration in migrations:
        walk.read(migration)
    return walk


def test_008s_activities_are_followed_through_the_rename_the_copy_and_the_move_to_the_archive() -> None:
    walk = walked(pending())
    new = walk.tables["public.activities"]
    assert new.started_as is None and new.origin == {"public.activities"}, "a copy holds the old rows"
    assert "payload" not in new.columns and "workspace_id" in new.columns
    old = walk.started("public.activities")
    assert old is not None and old.name == "legacy_archive.activity_payloads"
    assert old.columns == ["activity_id", "payload"]
    assert walk.tables["public.webhook_events"].origin == {"public.webhook_events"}
    assert walk.started("public.webhook_events") is None, "the old events table is dropped"


def test_each_statement_says_which_tables_of_the_start_it_works_on_and_locks() -> None:
    walk = SchemaWalk(AT_004)
    readings = {}
    for migration in pending():
        readings.update({(migration.label, r.line): r for r in walk.read(migration)})
    by_text = {
        (migration.label, statement.line): statement.sql.split("\n")[0].rstrip(";")
        for migration in pending()
        for statement in migration.statements()
    }
    index = next(k for k, text in by_text.items() if text.startswith("CREATE INDEX idx_activities_workspace"))
    assert readings[index].kind == "CREATE INDEX" and readings[index].bases == {"public.activities"}
    assert readings[index].writes_blocked == frozenset(), (
        "the index is on the new table, which nobody sees yet"
    )
    rename = next(
        k for k, text in by_text.items() if text == "ALTER TABLE activities RENAME TO activities_before_008"
    )
    assert readings[rename].exclusive == {"public.activities"}
    create = next(
        k for k, text in by_text.items() if text.startswith("CREATE TABLE legacy_archive.activities")
    )
    assert readings[create].bases == frozenset() and readings[create].exclusive == frozenset()


def test_rows_written_into_the_archive_keep_their_source_and_condition() -> None:
    walk = walked(pending())
    moves = {movement.into.name: movement for movement in walk.movements}
    registrations = moves["legacy_archive.webhook_registrations"]
    assert (
        isinstance(registrations.source, Cte)
        and registrations.source.table is walk.tables["public.webhook_registrations"]
    )
    assert [c.sql() for c in registrations.source.conditions] == ["user_id IS NULL AND workspace_id IS NULL"]
    assert moves["legacy_archive.activity_payloads"].whole_table
    assert [c.sql() for c in walk.started("public.activities").deletes][-1] == "payload IS NULL"  # type: ignore[union-attr]


def test_a_do_blocks_static_sql_is_walked_and_a_built_string_is_not(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE t (a int, b int, c int);\n")
    (directory / "002_b.sql").write_text(
        "DO $$\nBEGIN\n    ALTER TABLE t DROP COLUMN a;\n    EXECUTE format('ALTER TABLE %I DROP COLUMN b', 't');\nEND\n$$;\n"
        "ALTER TABLE t RENAME COLUMN c TO d;\nALTER TABLE t SET SCHEMA elsewhere;\n"
    )
    walk = walked(load_plan(directory), start={})
    assert walk.tables["elsewhere.t"].columns == ["b", "d"]
    assert [movement.into.name for movement in walk.movements] == ["elsewhere.t"]
