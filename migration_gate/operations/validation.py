"""The playbook's third stage: every pending migration and the catalog's checks, in one transaction.

Each migration is applied by the runner's own ``apply`` (in a savepoint of the run's one
transaction, with its ledger row). After 006 and after 007 (the runbook's pauses,
docs/contract.md §3) and after the last migration, the catalog's checks that hold there
run, each in a savepoint of its own so that an SQL error fails that check and not the
transaction; each result is recorded under the check's catalog name, with the
checkpoint. At the last checkpoint the rule families are expanded to every table they
judge there (``<rule>[<table>]``). Any failure raises ``Stop``: the caller rolls back. The
checks the catalog marks ``after_commit`` (the plans of the application's queries) run
once the transaction has committed, on a connection of their own; those it marks
``preflight`` (``schema_drift``) ran before the backup, on the database as found.
Corrections run in the same transaction, each at its place (``core.corrections``), and
are recorded with their reason and checksum.

The catalog is read before and after each migration, in the same transaction
(``schema.ChangeProbe``): the record keeps what each one added, altered or dropped, and
for each table it added, how each rule that judged it went.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql

from migration_gate.checks import catalog, explain, profile_audit, role_report
from migration_gate.checks.catalog import Check, CheckContext, CheckSkipped, LegacySnapshot
from migration_gate.checks.failures import CheckFailed
from migration_gate.core import corrections, ledger, runner, schema
from migration_gate.core.allowed_grantees import AllowedGrantee
from migration_gate.core.corrections import Correction
from migration_gate.core.errors import MigrationFailed
from migration_gate.core.exemptions import Exemption
from migration_gate.core.locks import LOCK_RETRY, LockWatch
from migration_gate.core.plan import Checkpoint, Migration, checkpoint_name, checkpoints
from migration_gate.core.signals import Cancellation
from migration_gate.core.text import first_line
from migration_gate.operations.migration_effects import EffectsProbe
from migration_gate.operations.report import ChangeRecord, CheckRecord, MigrationRecord, judged_new_tables

Progress = Callable[[str], None]

# 005 must still be pending for the run to see the legacy tables as they were (conservation).
SCOPING_VERSION = 5
# The last checkpoint of a run that applied nothing: the database as it is.
CURRENT = "current"


class RunStopped(Exception):
    """The run ends at ``where``, for ``reason``."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


class Stop(RunStopped):
    """The run stops here (before the commit): a failing migration, a nonzero count, a failed check."""


class Validation:
    """The in-transaction part, and the after-commit checks: migrations, checkpoints, the catalog, recorded."""

    def __init__(
        self,
        conn: psycopg.Connection,
        plan: list[Migration],
        checks: list[Check],
        record: ChangeRecord,
        progress: Progress,
        migrations_dir: str = "",
        allowed_grantees: tuple[AllowedGrantee, ...] = (),
        corrections: Sequence[Correction] = (),
        exemptions: tuple[Exemption, ...] = (),
    ) -> None:
        self.conn, self.plan, self.checks = conn, plan, checks
        self.corrections = corrections
        self.record, self.progress, self.migrations_dir = record, progress, migrations_dir
        self.allowed_grantees = allowed_grantees
        self.exemptions = exemptions
        self.changes = schema.ChangeProbe()
        self.legacy: LegacySnapshot | None = None
        self.no_legacy_because = (
            "005 was already applied before this run: no pre-005 snapshot to compare with"
        )
        self.last = CURRENT
        self.committed = False
        # With a lock_timeout, a migration that cannot get its locks is retried (a savepoint each time).
        self.retry = LOCK_RETRY
        self.watch: LockWatch | None = None
        # Set by the playbook while signals cancel statements: checked at every statement's and check's door.
        self.cancellation: Cancellation | None = None

    def migrate(self) -> None:
        """Apply what is pending, pausing at each checkpoint; raise Stop at the first failure."""
        conn = self.conn
        ledger.ensure(conn)  # a savepoint inside the run's transaction: rolled back with it
        recorded = ledger.read(conn)
        todo = runner.plan_run(self.plan, recorded)  # again, now that we hold the lock
        placed = corrections.schedule(self.corrections, corrections.read(conn), recorded, todo)
        if not todo:
            self.progress("nothing to apply: every migration is already applied")
        pauses = {point.version: point for point in checkpoints(self.plan)[:-1] if not point.legacy}
        self.correct(placed.first, placed.start)
        for migration in todo:
            if migration.version == SCOPING_VERSION:
                self.legacy = LegacySnapshot.take(conn)
            self.record.migrating(migration.file_name)  # in the record before it is said
            self.progress(f"applying {migration.file_name} …")
            effects = (
                EffectsProbe()
            )  # what it locks, rewrites and writes: the forecast's and the notice's facts
            try:
                applied = runner.apply_retrying(
                    conn,
                    migration,
                    [effects, *([self.cancellation] if self.cancellation is not None else []), self.changes],
                    retry=self.retry,
                    watch=self.watch,
                    progress=self.progress,
                )
            except MigrationFailed as failed:
                raise Stop(f"migration {migration.file_name}", str(failed)) from None
            self.record.migrations.append(
                MigrationRecord(
                    migration.file_name,
                    round(applied.seconds, 3),
                    [
                        {"line": t.line, "seconds": round(t.seconds, 3), "statement": t.summary}
                        for t in applied.statements
                    ],
                    changes=[
                        change.to_json() for change in self.changes.by_migration.get(migration.file_name, [])
                    ],
                    **effects.finish(conn).to_json(),
                )
            )
            self.progress(f"{migration.file_name:<45} {applied.seconds:8.3f} s")
            self.correct(placed.following(migration.version), migration.version)
            if migration.version in pauses:
                self.checkpoint(pauses[migration.version], last=False)
        self.record.migrating(None)
        last_version = self.plan[-1].version
        self.last = checkpoint_name(last_version) if todo else CURRENT
        self.checkpoint(Checkpoint(self.last, last_version), last=True)

    def correct(self, due: list[Correction], after: int) -> None:
        """The corrections placed right after migration ``after``, each in a savepoint, recorded."""
        for correction in due:
            if self.cancellation is not None:
                self.cancellation.check()
            self.record.migrating(correction.name)
            self.progress(f"applying correction {correction.name} …")
            try:
                seconds = runner.apply_correction(self.conn, correction, after)
            except MigrationFailed as failed:
                raise Stop(f"correction {correction.name}", str(failed)) from None
            self.record.corrections.append(
                {**correction.to_json(), "applied_after": after, "seconds": round(seconds, 3)}
            )
            self.progress(f"{correction.name:<45} {seconds:8.3f} s  (correction: {correction.reason})")

    def context(self, conn: psycopg.Connection, checkpoint: str) -> CheckContext:
        return CheckContext(
            conn,
            self.plan,
            checkpoint,
            checkpoint,
            self.legacy,
            self.no_legacy_because,
            self.migrations_dir,
            allowed_grantees=self.allowed_grantees,
            exemptions=self.exemptions,
        )

    def checkpoint(self, point: Checkpoint, *, last: bool) -> None:
        """Run every check that holds at ``point`` (but the after-commit ones); any failure stops the run."""
        due = [
            check
            for check in catalog.at_checkpoint(self.checks, point.version, last=last)
            if not check.after_commit and not check.preflight
        ]
        if last:
            due = catalog.expand(due, self.conn, holds_from=point.version)
        counts: dict[str, int] = {}
        context = self.context(self.conn, point.name)
        results = [self.run(check, context, counts) for check in due]
        self.record.checkpoints[point.name] = counts
        if last:
            self.judge_new_tables(due, point.name)
        audit = profile_audit.profile_audit(self.conn, point.name)
        self.record.profile_audit[point.name] = dict(audit.figures)
        shown = ", ".join(f"{n} {c}" for n, c in counts.items()) or "no invariant holds yet"
        self.progress(f"checkpoint {point.name}: {shown}")
        figures = ", ".join(f"{code} {count}" for code, count in audit.figures.items()) or "no rows"
        self.progress(f"profile audit {point.name}: {figures}")
        failed = [check.name for check, ok in zip(due, results, strict=True) if not ok]
        self.progress(f"checks at {point.name}: {results.count(True)} passed, {len(failed)} failed")
        if last:
            self.report_roles()
        if failed:
            offending = ", ".join(f"{name} = {counts[name]}" if name in counts else name for name in failed)
            raise Stop(f"checkpoint {point.name}", f"{len(failed)} check(s) failed: {offending}")

    def judge_new_tables(self, judged: list[Check], checkpoint: str) -> None:
        """For each table a migration added, how each rule that judged it went at the last checkpoint."""
        outcomes = {
            record.name: record.status + (f": {record.summary}" if record.status == "skipped" else "")
            for record in self.record.checks
            if record.checkpoint == checkpoint
        }
        results: dict[str, dict[str, str]] = defaultdict(dict)
        for check in judged:
            via = "" if check.family is not None else f" ({check.name})"
            for rule, table in check.judges if check.name in outcomes else ():
                results[table][rule] = outcomes[check.name] + via
        for migration in self.record.migrations:
            migration.new_tables = judged_new_tables(migration.changes, results)

    def report_roles(self) -> None:
        """The cluster's roles, as figures in the record (docs/contract.md §5): reported, never a verdict."""
        report = role_report.role_report(self.conn)
        self.record.roles = report.roles
        for line in report.lines():
            self.progress(f"roles: {line}")

    def run(self, check: Check, context: CheckContext, counts: dict[str, int] | None = None) -> bool:
        """One check in a savepoint (an SQL error fails that check, not the transaction); recorded by name."""
        if self.cancellation is not None:
            self.cancellation.check()
        started = time.perf_counter()
        checks_before = len(self.record.checks)
        try:
            return self._run(check, context, counts)
        finally:
            for record in self.record.checks[checks_before:]:
                record.seconds = round(time.perf_counter() - started, 3)

    def _run(self, check: Check, context: CheckContext, counts: dict[str, int] | None) -> bool:
        conn = context.conn
        try:
            with conn.transaction():
                result = check.verify(context)
            if check.invariant is not None and counts is not None:
                counts[check.name] = getattr(result, "count", 0)
        except CheckSkipped as skipped:
            self.record.checks.append(
                CheckRecord(check.name, "skipped", skipped.reason, checkpoint=context.checkpoint)
            )
            self.progress(f"  skipped {check.name}: {skipped.reason}")
            return True
        except CheckFailed as failed:
            if check.invariant is not None and counts is not None and failed.count is not None:
                counts[check.name] = failed.count
            self.record.checks.append(
                CheckRecord(check.name, "failed", failed.summary, failed.render(), context.checkpoint)
            )
            self.progress(f"  FAILED {check.name}: {failed.summary}")
            return False
        except psycopg.Error as exc:
            message = first_line(exc)
            self.record.checks.append(
                CheckRecord(
                    check.name, "failed", f"the check's SQL failed: {message}", checkpoint=context.checkpoint
                )
            )
            self.progress(f"  FAILED {check.name}: {message}")
            return False
        self.record.checks.append(CheckRecord(check.name, "passed", checkpoint=context.checkpoint))
        return True

    def after_commit(self, conn: psycopg.Connection) -> list[str]:
        """The after-commit checks at the last checkpoint, with fresh statistics; the names of those that failed."""
        version = self.plan[-1].version
        due = [
            check for check in catalog.at_checkpoint(self.checks, version, last=True) if check.after_commit
        ]
        for query in explain.APPLICATION_QUERIES:
            if due and query.from_version <= version:  # statistics as the application will meet them
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("public", query.table)))
        context = self.context(conn, self.last)
        return [check.name for check in due if not self.run(check, context)]
