"""Corrections: the hand fixes of the nights between windows, written down and replayed (docs/window.md).

The runbook asks to "document any manual correction applied in staging" (section 6). A
correction is a SQL file in a directory (``--corrections-dir``) with a header::

    -- reason: tmp_fix_idx was made by hand on staging for the 2024-05 slowness (INC-123)
    -- after: 004
    CREATE INDEX IF NOT EXISTS tmp_fix_idx ON public.activities (action);

``-- reason:`` is required; ``-- after: NNN`` names its place in the plan (default: before
the first pending migration). It is applied like a migration, in the same transaction
as the plan, and kept in the ledger's ``migration_gate.corrections`` with its checksum,
its reason, the migration it followed on this database, and its text (``schema_drift``
replays it from there). Its identity is its file name: the same directory replays the
same corrections on production, and one edited after it was applied is refused, like an
edited migration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

from migration_gate.core import ledger
from migration_gate.core.errors import PlanError, UsageError
from migration_gate.core.plan import Migration, Statement, checksum, find, split

CORRECTIONS_TABLE = "migration_gate.corrections"
_HEADER_LINE = re.compile(r"^--\s*(?P<key>reason|after)\s*:\s*(?P<value>.*?)\s*$")

CREATE_CORRECTIONS = (
    b"CREATE TABLE IF NOT EXISTS migration_gate.corrections ("
    b"name text PRIMARY KEY, reason text NOT NULL, after_version integer NOT NULL, sql text NOT NULL,"
    + ledger.APPLIED_COLUMNS
    + b")"
)


@dataclass(frozen=True)
class Correction:
    """One correction file: its name (its identity), text, checksum, reason, and declared place."""

    name: str
    sql: str = field(repr=False)
    checksum: str
    reason: str
    after: int | None  # the migration it follows, as declared; None: before the first pending one

    def __repr__(self) -> str:
        return f"Correction({self.name})"

    def statements(self) -> list[Statement]:
        return split(self.sql, self.name)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "reason": self.reason, "checksum": self.checksum, "after": self.after}


def parse(name: str, sql: str, plan: list[Migration]) -> Correction:
    """A correction from its file's text; no reason, a bad place or no statement is refused (PlanError)."""
    header: dict[str, str] = {}
    for line in sql.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break  # the header is the comments before the first statement
        match = _HEADER_LINE.match(stripped)
        if match:
            if match["key"] in header:
                raise PlanError(f"{name}: two '-- {match['key']}:' lines")
            header[match["key"]] = match["value"]
    if not header.get("reason"):
        raise PlanError(
            f"{name}: no '-- reason:' line: a correction says why it exists (docs/window.md), nothing was applied"
        )
    after = find(plan, header["after"], f"{name}: -- after:").version if "after" in header else None
    if not split(sql, name):
        raise PlanError(f"{name}: no SQL statement after its header")
    return Correction(name, sql, checksum(sql), header["reason"], after)


def read_file(path: Path, plan: list[Migration]) -> Correction:
    if not path.is_file():
        raise UsageError(f"correction {str(path)!r} does not exist")
    return parse(path.name, path.read_text(encoding="utf-8"), plan)


def load(directory: Path | str, plan: list[Migration]) -> list[Correction]:
    """Every ``*.sql`` of ``directory``, by name; the first malformed one is refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"corrections directory {str(directory)!r} does not exist")
    return [read_file(path, plan) for path in sorted(directory.glob("*.sql"))]


# -- The corrections a database has applied ----------------------------------------------


@dataclass(frozen=True)
class AppliedCorrection:
    """A row of ``migration_gate.corrections``: what ran, and after which migration on this database."""

    name: str
    checksum: str
    reason: str
    after: int  # the last migration applied before it here (0: none)
    sql: str = field(repr=False)
    applied_at: datetime

    def correction(self) -> Correction:
        """As a correction to replay where it ran (``schema_drift``'s expected build)."""
        return Correction(self.name, self.sql, self.checksum, self.reason, self.after)


def ensure(conn: psycopg.Connection) -> None:
    ledger.create(conn, CREATE_CORRECTIONS)


def read(conn: psycopg.Connection) -> dict[str, AppliedCorrection]:
    """The applied corrections by name, in the order they ran; an absent table is an empty one."""
    if not ledger.exists(conn, CORRECTIONS_TABLE):
        return {}
    rows = conn.execute(
        "SELECT name, checksum, reason, after_version, sql, applied_at FROM migration_gate.corrections"
        " ORDER BY after_version, applied_at, name"
    ).fetchall()
    return {row[0]: AppliedCorrection(*row) for row in rows}


def record(conn: psycopg.Connection, correction: Correction, after: int, duration_ms: float) -> None:
    """Keep it in the ledger (created when missing: only a database that has corrections gets the table)."""
    ensure(conn)
    conn.execute(
        "INSERT INTO migration_gate.corrections (name, checksum, reason, after_version, sql, duration_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            correction.name,
            correction.checksum,
            correction.reason,
            after,
            correction.sql,
            round(duration_ms, 3),
        ),
    )


def verify(corrections: Iterable[Correction], recorded: Mapping[str, AppliedCorrection]) -> None:
    """Refuse a correction edited since it was applied here, as an edited migration is refused."""
    for correction in corrections:
        applied = recorded.get(correction.name)
        if applied is not None and applied.checksum != correction.checksum:
            raise PlanError(
                f"correction {correction.name} was edited after it was applied (ledger sha256 "
                f"{applied.checksum[:12]}…, file {correction.checksum[:12]}…): restore the file or write a new "
                "correction; nothing was applied"
            )


@dataclass(frozen=True)
class Schedule:
    """Where a run applies each pending correction: first (before its first migration), or after one."""

    start: int  # the last migration applied when the run starts (0: none)
    first: list[Correction] = field(default_factory=list)
    after: dict[int, list[Correction]] = field(default_factory=dict)
    waiting: list[Correction] = field(default_factory=list)  # their place is beyond this run

    def following(self, version: int) -> list[Correction]:
        return self.after.get(version, [])

    @property
    def pending(self) -> list[Correction]:
        return [*self.first, *(c for version in sorted(self.after) for c in self.after[version])]


def schedule(
    corrections: Iterable[Correction],
    recorded: Mapping[str, AppliedCorrection],
    applied: Iterable[int],
    todo: list[Migration],
) -> Schedule:
    """Place each correction not applied yet in a run that applies ``todo`` on a database at ``applied``.

    A correction without ``-- after:`` goes before the first pending migration; on a
    database with no migration applied there is nothing to correct yet, and it waits. One
    whose place is behind the database (``after: 004`` on a database at 008) is refused:
    ``migration-gate correct`` applies it there now.
    """
    corrections = sorted(corrections, key=lambda c: c.name)
    verify(corrections, recorded)
    start = max(applied, default=0)
    running = {migration.version for migration in todo}
    planned = Schedule(start)
    for correction in corrections:
        if correction.name in recorded:
            continue
        place = correction.after if correction.after is not None else (start or None)
        if place is None or (place > start and place not in running):
            planned.waiting.append(correction)
        elif place in running:
            planned.after.setdefault(place, []).append(correction)
        elif place == start:
            planned.first.append(correction)
        else:
            raise PlanError(
                f"correction {correction.name} belongs after {place:03d}, and this database is already at "
                f"{start:03d}: apply it there with 'migration-gate correct {correction.name} --database URL'"
            )
    return planned
