"""Finding, ordering and splitting migration files: the plan, before anything touches a database."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
from pglast.parser import ParseError
from pglast.visitors import referenced_relations

from migration_gate.core.contract import LEGACY_VERSION, PAUSE_AFTER
from migration_gate.core.errors import PlanError, UsageError

MIGRATION_NAME = re.compile(r"^(?P<version>\d{3})_(?P<slug>[A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Statement:
    """One statement of a migration file, with the line it starts on (1-based)."""

    sql: str
    line: int
    offset: int


@dataclass(frozen=True)
class Migration:
    version: int
    file_name: str
    path: Path
    sql: str = field(repr=False)
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}"

    def __repr__(self) -> str:
        return f"Migration({self.file_name})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints dataclasses field by field, the whole SQL included: the name is enough.
        printer.text(repr(self))

    def statements(self) -> list[Statement]:
        return split(self.sql, self.file_name)


def split(sql: str, file_name: str) -> list[Statement]:
    """Split with PostgreSQL's own parser so an error can name its line."""
    try:
        slices = pglast.split(sql, with_parser=True, only_slices=True)
    except ParseError as exc:
        position = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = sql.count("\n", 0, position) + 1
        raise PlanError(f"{file_name}:{line}: cannot parse: {exc.args[0]}") from None
    return [Statement(sql[piece], sql.count("\n", 0, piece.start) + 1, piece.start) for piece in slices]


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def load_plan(directory: Path | str) -> list[Migration]:
    """Every migration in ``directory``, ordered; a gap, a duplicate or a stray name is refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"migrations directory {str(directory)!r} does not exist")
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise PlanError(
                f"{path.name}: not a migration name; expected NNN_name.sql (e.g. 009_add_index.sql)"
            )
        version = int(match["version"])
        if version in migrations:
            raise PlanError(
                f"duplicate migration number {version:03d}: {migrations[version].file_name} and {path.name}"
            )
        sql = path.read_text(encoding="utf-8")
        migrations[version] = Migration(version, path.name, path, sql, checksum(sql))
    if not migrations:
        raise PlanError(f"no migration files (NNN_name.sql) in {str(directory)!r}")
    ordered = [migrations[v] for v in sorted(migrations)]
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise PlanError(
                f"gap in migration numbering: {expected:03d} is missing before {migration.file_name}"
            )
    return ordered


def find(plan: list[Migration], spec: str, option: str) -> Migration:
    """``006``, ``6`` or ``006_workspace_defaults.sql`` → that migration; anything else is refused."""
    spec = spec.strip()
    for migration in plan:
        if spec == migration.file_name or (spec.isdigit() and int(spec) == migration.version):
            return migration
    known = ", ".join(m.label for m in plan)
    raise PlanError(f"{option} {spec!r}: unknown migration version (known: {known})")


def select(plan: list[Migration], start: str | None = None, stop: str | None = None) -> list[Migration]:
    """The migrations from ``start`` to ``stop`` inclusive, refusing a reversed range."""
    first = find(plan, start, "--from") if start else plan[0]
    last = find(plan, stop, "--to") if stop else plan[-1]
    if first.version > last.version:
        raise PlanError(f"--from {first.file_name} comes after --to {last.file_name}")
    return [m for m in plan if first.version <= m.version <= last.version]


LEGACY_CHECKPOINT = "legacy"


@dataclass(frozen=True)
class Checkpoint:
    """A point of the run where the database is looked at: its name and the last migration applied."""

    name: str
    version: int

    @property
    def legacy(self) -> bool:
        return self.name == LEGACY_CHECKPOINT


def checkpoint_name(version: int) -> str:
    return f"after_{version:03d}"


def checkpoints(plan: list[Migration]) -> list[Checkpoint]:
    """``legacy`` (004 and its data), after each pause of the runbook, and after the plan's last migration.

    The last is named after the last migration applied: ``after_009`` once a 009 exists, so a
    reader of a failing 009 is never told that 008 broke (docs/contract.md §3).
    """
    last = plan[-1].version
    points = [Checkpoint(LEGACY_CHECKPOINT, LEGACY_VERSION)] if last > LEGACY_VERSION else []
    points += [Checkpoint(checkpoint_name(v), v) for v in PAUSE_AFTER if LEGACY_VERSION < v < last]
    return [*points, Checkpoint(checkpoint_name(last), last)]


def touched_tables(migrations: list[Migration]) -> set[str]:
    """The tables the migrations' statements name, as written (``credentials``, ``legacy_archive.activities``).

    Read by PostgreSQL's parser, DO blocks included (their static SQL); dynamic SQL built
    in a string is not seen.
    """
    found: set[str] = set()
    for migration in migrations:
        for statement in migration.statements():
            found |= statement_tables(statement.sql)
    return found


def statement_tables(sql: str) -> set[str]:
    """The tables one statement names, as written; a DO block's static SQL included."""
    found = _relations(sql)
    if re.match(r"(?is)^\s*DO\b", sql):
        found |= _plpgsql_relations(sql)
    return found


def _relations(sql: str) -> set[str]:
    try:
        return set(referenced_relations(sql))
    except ParseError:
        return set()


def _plpgsql_relations(do_statement: str) -> set[str]:
    """The relations the SQL inside a DO block names (parsed as the body of a function)."""
    tree: Any = pglast.parse_sql(do_statement)[0].stmt
    body = next((item.arg.sval for item in tree.args if item.defname == "as"), None)
    if body is None:
        return set()
    try:
        parsed = pglast.parse_plpgsql(
            f"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$ {body} $body$"
        )
    except ParseError:
        return set()
    found: set[str] = set()
    stack: list[Any] = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            expression = node.get("PLpgSQL_expr")
            if isinstance(expression, dict) and isinstance(expression.get("query"), str):
                query = expression["query"]
                found |= _relations(query if expression.get("parseMode", 0) == 0 else f"SELECT {query}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
