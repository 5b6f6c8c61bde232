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


# How a row of each placed table is called in a finding.
ROW_NAMES = {
    "credentials": "credential",
    "webhook_registrations": "webhook registration",
    "webhook_events": "webhook event",
    "activities": "activity",
}
# A failure lists this many findings, then how many more there are: enough to act on.
SHOWN_FINDINGS = 20


class PropertyViolation(AssertionError):
    """005→008 disagreed with the model, broke an invariant or lost a row on one dataset."""


def _where(placement: Placement) -> str:
    if placement == ARCHIVED:
        return "legacy_archive"
    if placement == "absent":
        return "nowhere (the row is gone)"
    return f"workspace {placement}"


@dataclass
class _Findings:
    """Each disagreement as a sentence a pull request's author can act on."""

    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def report(self, migrations: list[Migration]) -> str:
        shown = self.problems[:SHOWN_FINDINGS]
        more = len(self.problems) - len(shown)
        ran = ", ".join(migration.file_name for migration in migrations)
        return (
            f"{len(self.problems)} disagreement(s) with the rules after the migrations ran ({ran}):\n  "
            + "\n  ".join(shown)
            + (f"\n  … and {more} more" if more > 0 else "")
        )


def _rows(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query.encode()).fetchall()


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else 0


def _ids(ids: Any) -> str:
    listed = sorted(ids)
    return ", ".join(str(i) for i in listed) if listed else "none"


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

    def __repr__(self) -> str:
        return f"<the migrations {self.migrations[0].label}→{self.migrations[-1].label} on a database at 004>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

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
        __tracebackhide__ = True
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
                    # The file, the line and PostgreSQL's error: never the file's text.
                    raise PropertyViolation(f"a migration failed on this dataset: {exc}") from None
            cases = self._compare(conn, dataset, legacy_workspaces, before, counts, findings)
        if findings.problems:
            raise PropertyViolation(findings.report(self.migrations))
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
                    f"user {owner_id}: the rules give at most one personal workspace; "
                    f"the migrations created {personal[owner_id]} and {workspace_id}"
                )
            personal[owner_id] = workspace_id
        if set(personal) != dataset.users_owning_nothing():
            findings.add(
                f"personal workspaces: the rules give one to each user who owns none "
                f"({_ids(dataset.users_owning_nothing())}); the migrations gave one to {_ids(personal)}"
            )
            return set()  # the model needs the personal workspaces to say anything more
        model = expected(dataset, personal)

        defaults = dict(_rows(conn, "SELECT id, default_workspace_id FROM public.users"))
        for user_id in sorted(set(model.default_workspace) | set(defaults)):
            want_default, got_default = model.default_workspace.get(user_id), defaults.get(user_id)
            if want_default != got_default:
                findings.add(
                    f"user {user_id}: the rules make workspace {want_default} its default; "
                    f"the migrations made it {got_default}"
                )
        memberships = {
            (w, u): code
            for w, u, code in _rows(
                conn,
                "SELECT m.workspace_id, m.user_id, p.code FROM public.workspace_members m "
                "JOIN public.profiles p ON p.id = m.profile_id",
            )
        }
        for workspace_id, user_id in sorted(set(model.memberships) | set(memberships)):
            want_profile = model.memberships.get((workspace_id, user_id))
            got_profile = memberships.get((workspace_id, user_id))
            if want_profile != got_profile:
                findings.add(
                    f"user {user_id} in workspace {workspace_id}: the rules give profile {want_profile or 'none'}; "
                    f"the migrations left {got_profile or 'no membership'}"
                )

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
            row_name = ROW_NAMES[table]
            for key in sorted(set(placed) & set(archived)):
                findings.add(
                    f"{row_name} {key}: the rules keep it in one place; it is in public and in legacy_archive"
                )
            actual = {**placed, **dict.fromkeys(archived, ARCHIVED)}
            for key, (want, got) in _mismatches(model.placements(table), actual).items():
                findings.add(
                    f"{row_name} {key}: the rules place it in {_where(want)}; the migrations put it in {_where(got)}"
                )
            # Conservation: rows before 005 = rows in public + rows in legacy_archive.
            if counts[table] != len(placed) + len(archived):
                findings.add(
                    f"{table}: {counts[table]} rows before 005; the migrations left {len(placed)} in public "
                    f"and {len(archived)} in legacy_archive"
                )
            for key in sorted(key for key, row in archived.items() if before[table].get(key) != row):
                findings.add(f"{row_name} {key}: archived with values that differ from its legacy row")
        users_after = _count(conn, "public.users")
        if users_after != counts["users"]:
            findings.add(f"users: {counts['users']} rows before 005; the migrations left {users_after}")
        workspaces_after = [row[0] for row in _rows(conn, "SELECT id FROM public.workspaces")]
        if sorted(workspaces_after) != sorted(model.workspaces):
            findings.add(
                f"workspaces: the rules keep the legacy ones and add the personal ones ({_ids(model.workspaces)}); "
                f"the migrations left {_ids(workspaces_after)}"
            )

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
                findings.add(
                    f"activity {activity_id}: the rules keep its payload {legacy_payload} in "
                    f"legacy_archive.activity_payloads; the migrations kept {found or 'nothing'}"
                )
        for activity_id in sorted(set(payloads) - kept):
            findings.add(
                f"activity {activity_id}: the rules archive it with its payload; "
                "legacy_archive.activity_payloads holds a payload for it too"
            )

        for invariant in self.invariant_checks:
            result = invariants.run(conn, invariant)
            if not result.passed:
                first = ", ".join(
                    f"{column} {value}"
                    for column, value in zip(result.columns, result.sample[0], strict=False)
                )
                findings.add(
                    f"invariant {invariant.name}: {result.count} offending row(s), the first: {first}"
                )
        return dirty_cases(dataset, model, personal)
