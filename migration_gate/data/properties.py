"""One property-test example: load a legacy dataset at 004, migrate 005→008, compare with the model.

Each example runs in one transaction on a database already migrated to 004 and is
rolled back at the end (PostgreSQL's DDL is transactional), so an example costs a few
INSERTs and the migrations on a handful of rows: no database is created per example.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migration_gate.checks import invariants
from migration_gate.core import dsn, runner
from migration_gate.core.errors import MigrationFailed
from migration_gate.core.plan import Migration, Statement
from migration_gate.data.model import ARCHIVED, LegacyDataset, Placement, dirty_cases, expected

# Legacy tables whose rows 008 may move to legacy_archive, with their pre-005 columns;
# jsonb as text, its canonical form, so that 1e400 or 30.0 never pass through a float.
ARCHIVABLE = {
    "webhook_registrations": "id, user_id, target_url, event_types, secret, active, created_at",
    "webhook_events": "id, registration_id, event_type, body::text, status, attempts, created_at, processed_at",
    "activities": "id, user_id, action, payload::text, created_at",
}
PLACED = ("credentials", "webhook_registrations", "webhook_events", "activities")
LEGACY_TABLES = ("users", "workspaces", "workspace_members", "credentials", *ARCHIVABLE)


class PropertyViolation(AssertionError):
    """005→008 disagreed with the model, broke an invariant or lost a row on one dataset."""


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)

    def differ(self, what: str, want: Any, got: Any) -> None:
        if want != got:
            self.problems.append(f"{what}: the model says {want!r}, the database has {got!r}")

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def _rows(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query.encode()).fetchall()


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else 0


def _mismatches(
    want: dict[int, Placement], got: dict[int, Placement]
) -> dict[int, tuple[Placement, Placement]]:
    return {
        key: (want.get(key, "absent"), got.get(key, "absent"))
        for key in sorted(set(want) | set(got))
        if want.get(key) != got.get(key)
    }


@dataclass
class PropertyHarness:
    """A connection to a database at 004 and the migrations to judge (005→ the plan's last)."""

    url: str
    migrations: list[Migration]
    invariant_checks: list[invariants.Invariant]
    _statements: list[tuple[Migration, list[Statement]]] = field(init=False, default_factory=list)
    _conn: psycopg.Connection | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # Split once: each example would otherwise parse every file again.
        self._statements = [(m, m.statements()) for m in self.migrations]

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = dsn.connect(self.url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @contextmanager
    def _example(self) -> Iterator[psycopg.Connection]:
        conn = self.conn
        with conn.transaction(force_rollback=True):
            yield conn

    def check(self, dataset: LegacyDataset) -> set[str]:
        """Raise PropertyViolation, listing every disagreement, unless 005→008 did what the model says.

        Returns the model's DIRTY_CASES this dataset exercised.
        """
        findings = _Findings()
        with self._example() as conn:
            try:
                conn.execute(dataset.to_sql().encode())
            except psycopg.Error as exc:
                # A dataset the 004 schema rejects is a strategy bug, not a migration bug.
                raise RuntimeError(f"the generated dataset does not load at 004: {exc}") from None
            legacy_workspaces = {row[0] for row in _rows(conn, "SELECT id FROM public.workspaces")}
            before = {
                table: {row[0]: row for row in _rows(conn, f"SELECT {columns} FROM public.{table}")}
                for table, columns in ARCHIVABLE.items()
            }
            counts = {table: _count(conn, f"public.{table}") for table in LEGACY_TABLES}
            for migration, statements in self._statements:
                try:
                    runner.apply(conn, migration, statements=statements)
                except MigrationFailed as exc:
                    raise PropertyViolation(f"a migration failed on this dataset: {exc}") from None
            cases = self._compare(conn, dataset, legacy_workspaces, before, counts, findings)
        if findings.problems:
            raise PropertyViolation(
                f"{len(findings.problems)} disagreement(s) after 005→008:\n  "
                + "\n  ".join(findings.problems)
            )
        return cases

    def _compare(
        self,
        conn: psycopg.Connection,
        dataset: LegacyDataset,
        legacy_workspaces: set[int],
        before: dict[str, dict[int, tuple[Any, ...]]],
        counts: dict[str, int],
        findings: _Findings,
    ) -> set[str]:
        # 006's personal workspaces: exactly one, new, for each user who owned none.
        personal: dict[int, int] = {}
        for workspace_id, owner_id in _rows(conn, "SELECT id, owner_id FROM public.workspaces ORDER BY id"):
            if workspace_id in legacy_workspaces:
                continue
            if owner_id in personal:
                findings.add(
                    f"user {owner_id} got more than one new workspace ({personal[owner_id]}, {workspace_id})"
                )
            personal[owner_id] = workspace_id
        findings.differ(
            "users given a personal workspace", sorted(dataset.users_owning_nothing()), sorted(personal)
        )
        if set(personal) != dataset.users_owning_nothing():
            return set()  # the model needs the personal workspaces to say anything more
        model = expected(dataset, personal)

        defaults = dict(_rows(conn, "SELECT id, default_workspace_id FROM public.users"))
        findings.differ("default workspaces (user → workspace)", model.default_workspace, defaults)
        memberships = {
            (w, u): code
            for w, u, code in _rows(
                conn,
                "SELECT m.workspace_id, m.user_id, p.code FROM public.workspace_members m "
                "JOIN public.profiles p ON p.id = m.profile_id",
            )
        }
        wrong_memberships = {
            key: (model.memberships.get(key, "absent"), memberships.get(key, "absent"))
            for key in sorted(set(model.memberships) | set(memberships))
            if model.memberships.get(key) != memberships.get(key)
        }
        if wrong_memberships:
            findings.add(f"memberships (workspace, user) → (model, database): {wrong_memberships}")

        for table in PLACED:
            placed: dict[int, Placement] = dict(_rows(conn, f"SELECT id, workspace_id FROM public.{table}"))
            archived = (
                {
                    row[0]: row
                    for row in _rows(conn, f"SELECT {ARCHIVABLE[table]} FROM legacy_archive.{table}")
                }
                if table in ARCHIVABLE
                else {}
            )
            both = set(placed) & set(archived)
            if both:
                findings.add(f"{table}: rows both in public and in legacy_archive: {sorted(both)}")
            actual = {**placed, **dict.fromkeys(archived, ARCHIVED)}
            wrong = _mismatches(model.placements(table), actual)
            if wrong:
                findings.add(f"{table} id → (model, database): {wrong}")
            # Conservation: rows before 005 = rows in public + rows in legacy_archive.
            findings.differ(
                f"{table}: rows before 005 vs public + legacy_archive",
                counts[table],
                len(placed) + len(archived),
            )
            changed = [key for key, row in archived.items() if before[table].get(key) != row]
            if changed:
                findings.add(f"legacy_archive.{table}: rows differ from their legacy copy: {changed}")
        findings.differ("users: rows before 005 vs after", counts["users"], _count(conn, "public.users"))
        findings.differ(
            "workspaces after 006 (legacy + personal)",
            sorted(model.workspaces),
            sorted(row[0] for row in _rows(conn, "SELECT id FROM public.workspaces")),
        )

        # Every legacy payload can be found again, unchanged.
        # Every legacy payload can be found again, unchanged: archived activities carry
        # theirs (compared above), the others' are in activity_payloads.
        payloads = dict(
            _rows(conn, "SELECT activity_id, payload::text FROM legacy_archive.activity_payloads")
        )
        kept = {key for key, placement in model.activities.items() if placement != ARCHIVED}
        for activity_id in sorted(kept):
            legacy_payload = before["activities"][activity_id][3]
            found = payloads.get(activity_id)
            if found != legacy_payload:
                findings.add(f"activity {activity_id}: payload {legacy_payload!r} found again as {found!r}")
        strays = sorted(set(payloads) - kept)
        if strays:
            findings.add(
                f"legacy_archive.activity_payloads: rows for activities not kept in public: {strays}"
            )

        for invariant in self.invariant_checks:
            result = invariants.run(conn, invariant)
            if not result.passed:
                findings.add(
                    f"invariant {invariant.name}: {result.count} offending row(s), e.g. {result.sample[:3]}"
                )
        return dirty_cases(dataset, model, personal)
