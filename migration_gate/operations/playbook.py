"""``migration-gate playbook``: the staging runbook as one command, stage by stage.

1. **Preflight** (``preflight``): nothing is touched; any problem is one line and exit 2.
2. **Backup**: a fingerprint of the database (schema and data), then ``pg_dump
   --format=custom``, with a ``.meta.json`` beside it naming the database it came from.
3. **Migrate and validate in one transaction** (``validation``): every pending migration,
   with its ledger row, under the runner's advisory lock; the catalog's checks after 006,
   after 007 and after the last one. Any failure is a ROLLBACK: the database is exactly
   as it was, which the fingerprint then proves (sequences, which ``nextval`` moves
   outside transactions, are put back first).
4. **After the commit**: the plans of the application's queries, then the smoke tests
   (``smoke/``) against the reference API serving the committed database.
5. **Restore**: only when something fails after the commit (or a rollback somehow did
   not give back the same fingerprint): confirmed on a terminal or by ``--yes``, only
   into the database the backup came from, and verified against the backup's fingerprint.
6. **The change record**: ``report.json`` and ``report.md``, whatever happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from migration_gate.core import dsn, runner
from migration_gate.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, GateError, UsageError
from migration_gate.operations import backup, fingerprint
from migration_gate.operations.preflight import PlaybookOptions, Preflight, preflight
from migration_gate.operations.report import ChangeRecord, CheckRecord, StepRecord, now
from migration_gate.operations.validation import Stop, Validation, first_line

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]

# A migration waiting this long for a lock stops (and rolls back) instead of queueing the application behind it.
LOCK_TIMEOUT = "60s"


# -- The run ---------------------------------------------------------------------------


def restore_command(options: PlaybookOptions) -> str:
    """The command that restores the backup, without the password (libpq takes it from PGPASSWORD)."""
    parts = dsn.parse(options.database_url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    url = f"postgresql://{user}{host}:{port}/{parts.get('dbname', '')}"
    return f"migration-gate restore --database '{url}' --backup '{options.backup_path.absolute()}'"


class Run:
    """One playbook run: the stages in order, each recorded."""

    def __init__(
        self,
        options: PlaybookOptions,
        pre: Preflight,
        record: ChangeRecord,
        progress: Progress,
        confirm: Confirm,
    ) -> None:
        self.options = options
        self.pre = pre
        self.record = record
        self.progress = progress
        self.confirm = confirm
        self.before: fingerprint.Fingerprint | None = None
        self.validation: Validation | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        with self.record.step(name, self.progress):
            yield

    def carry_out(self) -> None:
        options, record = self.options, self.record
        url = options.database_url
        try:
            with self.step("fingerprint before"):
                self.before = fingerprint.take(url, self.pre.tools, self.progress)
            record.fingerprint = {"before": self.before.summary()}
            with self.step("backup"):
                started = time.perf_counter()
                size = backup.dump(url, options.backup_path, self.pre.tools, self.progress)
                metadata = backup.BackupMetadata(
                    self.pre.identity, self.before.to_json(), self.pre.tools.version
                )
                meta_path = backup.write_metadata(options.backup_path, metadata)
                record.backup = {
                    "path": str(options.backup_path.absolute()),
                    "bytes": size,
                    "seconds": round(time.perf_counter() - started, 3),
                    "metadata": str(meta_path.absolute()),
                    "pg_dump": f"{self.pre.tools.pg_dump} ({self.pre.tools.version})",
                }
                self.progress(f"backup: {options.backup_path} ({size} bytes)")
        except (GateError, OSError, psycopg.Error) as exc:
            record.stop(record.steps[-1].name, first_line(exc), "not_started", EXIT_USAGE)
            return
        try:
            self.migrate_and_validate()
        except Stop as stop:
            record.stop(stop.where, stop.reason, "rolled_back", EXIT_FAILED)
            self.verify_unchanged()
            return
        if not self.index_plans():
            return
        if options.smoke is None:
            record.smoke.append(CheckRecord("smoke", "skipped", options.smoke_skipped_because))
        else:
            with self.step("smoke tests"):
                record.smoke = options.smoke(url, self.progress)
            failed = [s.name for s in record.smoke if s.status == "failed"]
            if failed:
                record.steps[-1].status = "failed"
                record.stop(
                    "smoke tests",
                    f"{len(failed)} smoke test(s) failed: {', '.join(failed)}",
                    "needs_restore",
                    EXIT_FAILED,
                )
                self.restore()
                return
        record.outcome, record.exit_code = "migrated_and_validated", EXIT_OK

    def index_plans(self) -> bool:
        """After the commit: do the application's queries use their indexes? (False: stopped, restored.)

        Not inside the migration's transaction: an index built there after updates to its
        table (HOT chains broken) carries ``indcheckxmin`` and no plan of that same
        transaction may use it.
        """
        assert self.validation is not None
        with self.step("index plans"), dsn.connect(self.options.database_url) as conn:
            failed = self.validation.after_commit(conn)
            if failed:
                self.record.steps[-1].status = "failed"
        if failed:
            self.record.stop(
                "index plans",
                f"{len(failed)} check(s) failed: {', '.join(failed)}",
                "needs_restore",
                EXIT_FAILED,
            )
            self.restore()
            return False
        return True

    def migrate_and_validate(self) -> None:
        with (
            self.step("migrate and validate (one transaction)"),
            dsn.connect(self.options.database_url) as conn,
        ):
            sequences = fingerprint.sequence_states(conn)
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            with runner.advisory_lock(conn, self.progress):
                self.validation = Validation(
                    conn,
                    self.pre.plan,
                    self.pre.checks,
                    self.record,
                    self.progress,
                    str(self.options.migrations_dir),
                    allowed_grantees=self.options.allowed_grantees,
                )
                try:
                    with conn.transaction():
                        self.validation.migrate()
                        self.progress("committing")
                except Stop:
                    self.progress("rolled back: nothing of this run is left in the database")
                    moved = fingerprint.reset_sequences(conn, sequences)
                    if moved:
                        self.progress(f"sequences put back where they were: {', '.join(moved)}")
                    raise
                except psycopg.Error as exc:  # rolled back (by psycopg, or by the server if the session died)
                    raise Stop("migrate and validate", f"database error: {first_line(exc)}") from None

    def verify_unchanged(self) -> None:
        """Prove the database is what the backup holds; if it is not, restore the backup."""
        assert self.before is not None
        try:
            with self.step("verify the database is as before"):
                after = fingerprint.take(self.options.database_url, self.pre.tools, self.progress)
        except GateError as exc:
            self.record.warnings.append(f"could not verify the database after the rollback: {exc}")
            self.restore()
            return
        differences = fingerprint.differences(self.before, after)
        assert self.record.fingerprint is not None
        self.record.fingerprint.update(
            after=after.summary(), matches=not differences, differences=differences
        )
        if differences:
            self.progress("the database differs from before: " + "; ".join(differences[:3]))
            self.restore()
        else:
            self.progress("verified: the database is exactly as it was (schema and data)")

    def restore(self) -> None:
        """Restore the backup into the same database, once confirmed; verify it."""
        record, options = self.record, self.options
        record.outcome = "needs_restore"
        record.next_action = restore_command(options)
        question = f"restore {self.pre.identity.database} from {options.backup_path}?"
        if not self.confirm(question):
            record.restore = {
                "performed": False,
                "why": "not confirmed: no --yes, and no terminal or the answer was no",
            }
            self.progress(f"NOT restored: the database needs restoring; run: {record.next_action}")
            return
        try:
            with self.step("restore backup"):
                outcome = restore_from_backup(
                    options.database_url, options.backup_path, self.pre.tools, self.progress
                )
        except GateError as exc:
            record.restore = {"performed": False, "why": str(exc)}
            record.reason = f"{record.reason}; restore failed: {exc}"
            self.progress(f"restore FAILED: {exc}; run: {record.next_action}")
            return
        record.restore = {"performed": True, "seconds": record.steps[-1].seconds, "exact": not outcome}
        assert record.fingerprint is not None
        record.fingerprint.update(after_restore_matches=not outcome, differences=outcome)
        if outcome:
            record.reason = f"{record.reason}; the restored database still differs from the backup"
            return
        record.outcome, record.next_action = "restored", None
        self.progress("restored and verified: the database is exactly as it was (schema and data)")


def restore_from_backup(
    url: str,
    path: Path,
    tools: backup.ClientTools | None = None,
    progress: Progress = lambda line: None,
    confirm: Confirm = lambda question: True,
) -> list[str]:
    """Restore a playbook backup into the database it came from; what still differs (empty: exact).

    Refuses (UsageError, nothing touched) an unreadable archive, a backup without its
    record, any database but the one the backup was taken from, or no confirmation.
    """
    metadata = backup.read_metadata(path)
    with dsn.connect(url) as conn:
        target = backup.identify(conn)
    tools = tools or backup.find_tools(target.server_major)
    backup.check_archive(path, tools)
    backup.verify_target(metadata, target, path)
    if not confirm(f"restore {target.database} from {path}, dropping what it holds now?"):
        raise UsageError(f"restore of {target.database} not confirmed (pass --yes): nothing was changed")
    backup.restore(url, path, tools, progress)
    after = fingerprint.take(url, tools, progress)
    return fingerprint.differences(fingerprint.Fingerprint.from_json(metadata.fingerprint), after)


def run(
    options: PlaybookOptions,
    progress: Progress = lambda line: None,
    confirm: Confirm = lambda question: False,
    rehearsal: dict[str, Any] | None = None,
) -> ChangeRecord:
    """Carry out the playbook; the change record (written to ``options.report_dir``) says how it went.

    A preflight problem raises UsageError before anything is touched or written.
    """
    started = time.perf_counter()
    pre = preflight(options, progress)
    record = ChangeRecord(options.command, dsn.describe(options.database_url))
    record.identity = pre.identity.to_json()
    record.warnings += pre.warnings
    record.rehearsal = rehearsal
    pending = ", ".join(m.label for m in pre.pending) or "none"
    record.steps.append(
        StepRecord(
            "preflight",
            "ok",
            round(time.perf_counter() - started, 3),
            f"pending migrations: {pending}; pg_dump/pg_restore/psql {pre.tools.version}",
        )
    )
    try:
        Run(options, pre, record, progress, confirm).carry_out()
    except KeyboardInterrupt:
        record.stop(record.steps[-1].name, "interrupted by the operator", "running", 130)
        raise
    except (OSError, psycopg.Error) as exc:  # not a verdict on the migrations: the run could not go on
        record.stop(record.steps[-1].name, f"unexpected error: {first_line(exc)}", "running", EXIT_FAILED)
        if options.backup_path.exists():
            record.next_action = restore_command(options)
    finally:
        record.finished_at = now()
        paths = record.write(options.report_dir, options.database_url)
        progress(f"change record: {paths[1]} ({record.outcome})")
    return record
