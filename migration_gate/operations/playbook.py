"""``migration-gate playbook``: the staging runbook as one command, stage by stage.

1. **Preflight** (``preflight``): nothing is touched; any problem is one line and exit 2;
   ``schema_drift`` last. Then the ``--before-window`` command (``callbacks``): the
   application into maintenance mode; if it fails, the run stops, nothing changed.
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
6. **The change record**: ``report.json`` and ``report.md``, whatever happened; then the
   ``--after-window`` command, whatever happened, and the record again with its result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from migration_gate.core import dsn, ledger, runner
from migration_gate.core.contract import APP_ROLE
from migration_gate.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, GateError, UsageError
from migration_gate.core.identity import identify
from migration_gate.core.locks import LockWatch
from migration_gate.core.signals import cancelling, deferred_interrupts
from migration_gate.core.text import first_line
from migration_gate.history.record import Target, from_change_record
from migration_gate.history.store import History
from migration_gate.operations import backup, backup_metadata, callbacks, client_tools, fingerprint
from migration_gate.operations import restore as restoring
from migration_gate.operations.preflight import PlaybookOptions, Preflight, app_sessions, preflight
from migration_gate.operations.report import JSON_NAME, ChangeRecord, CheckRecord, StepRecord, now
from migration_gate.operations.smoke_step import SmokeResult
from migration_gate.operations.validation import RunStopped, Stop, Validation

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]

EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT
# After the --before-window command, the application's sessions get this long to go.
APP_SESSIONS_GRACE_SECONDS = 5.0
# Migrated and validated, but the runbook's section 5 did not run (--no-smoke, or no test ran).
WITHOUT_SMOKE = "migrated_and_validated_without_smoke"
# A failed smoke step's reason names this many tests; the record keeps every one.
SMOKE_FAILURES_NAMED = 3

# What the record says of the database in each state the run can leave it in.
UNCHANGED = "unchanged: nothing was touched"
AS_BEFORE = "exactly as before the run (verified: schema, data and sequences)"
NOT_VERIFIED = "rolled back, but the verification could not run: check it, or restore the backup"
MIGRATED = "migrated: every pending migration is applied"
RESTORED = "restored from the backup (verified)"
NEEDS_RESTORE = "NOT as before: migrated, and the backup must be restored (command below)"


class Interrupted(RunStopped):
    """A signal (``reason``: its name) stopped the run at ``where``: raised once the clean-up is done.

    Not a ``Stop``: what a stop rolls back and records, an interruption has already done.
    """

    @property
    def signal_name(self) -> str:
        return self.reason


def restore_command(options: PlaybookOptions) -> str:
    """The command that restores the backup, without the password (libpq takes it from PGPASSWORD)."""
    parts = dsn.parse(options.database_url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    url = f"postgresql://{user}{host}:{port}/{parts.get('dbname', '')}"
    return f"migration-gate restore --database '{url}' --backup '{options.backup_path.absolute()}'"


def _signal_name(interrupt: KeyboardInterrupt) -> str:
    return str(interrupt) or "SIGINT"


class Run:
    """One playbook run: the stages in order, each recorded, and what any stop leaves behind."""

    def __init__(
        self,
        options: PlaybookOptions,
        pre: Preflight,
        record: ChangeRecord,
        progress: Progress,
        confirm: Confirm,
        run_id: str,
    ) -> None:
        self.options = options
        self.pre = pre
        self.record = record
        self.progress = progress
        self.confirm = confirm
        self.run_id = run_id
        self.before: fingerprint.Fingerprint | None = None
        self.validation: Validation | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        with self.record.step(name, self.progress):
            yield

    def carry_out(self) -> None:
        """Every stage; returns once the record says how it went (interrupted ones included)."""
        try:
            if not self.before_window() or not self.back_up():
                return
            self.note_run()
            try:
                self.migrate_and_validate()
            except Stop as stop:
                self.record.stop(stop.where, stop.reason, "rolled_back", EXIT_FAILED)
                self.verify_unchanged()
                return
            self.record.database = MIGRATED
            self.after_commit()
        except Interrupted as interrupted:
            self.record.stop(
                interrupted.where,
                f"interrupted by {interrupted.signal_name}",
                "interrupted",
                EXIT_INTERRUPTED,
            )
        except KeyboardInterrupt as interrupt:  # between two stages: nothing was running
            self.record.database = self.record.database or UNCHANGED
            self.record.stop(
                self.where(), f"interrupted by {_signal_name(interrupt)}", "interrupted", EXIT_INTERRUPTED
            )
            if self.record.database == MIGRATED:
                self.restore(interrupted=True)
        finally:
            with deferred_interrupts(self.progress):
                self.finish_run()

    def window_command(self, name: str, command: str, **extra: str) -> bool:
        """Run a window command as a step of the record; whether it ended well (KeyboardInterrupt goes on up)."""
        window = callbacks.WindowCommand(name, command, self.options.callback_timeout)
        env = callbacks.environment(self.run_id, self.record.target, **extra)
        try:
            with self.record.step(
                f"{callbacks.FLAGS[name].removeprefix('--')} command", self.progress
            ) as step:
                result = window.run(env)
                step.detail = f"{result.describe()} in {result.seconds:.3f} s"
                if not result.ok:
                    step.status = "failed"
        finally:
            if window.result is not None:
                self.record.callbacks[name] = window.result
                self.record.save()
        self.progress(f"{callbacks.FLAGS[name]}: {result.describe()} in {result.seconds:.3f} s")
        if not result.ok:
            for line in result.output_tail.splitlines():
                self.progress(f"  | {line}")
        return result.ok

    def before_window(self) -> bool:
        """The --before-window command, then the application's sessions gone; False when the run stops here."""
        options = self.options
        if options.before_window is None:
            return True
        if not self.window_command(callbacks.BEFORE_WINDOW, options.before_window):
            ran = self.record.callbacks[callbacks.BEFORE_WINDOW]
            return self.not_started(f"the --before-window command {ran.describe()}: no backup taken")
        if options.allow_active_sessions:
            return True
        deadline = time.monotonic() + APP_SESSIONS_GRACE_SECONDS
        try:
            with dsn.connect(options.database_url) as conn:
                while (sessions := app_sessions(conn)) and time.monotonic() < deadline:
                    time.sleep(0.1)
        except (GateError, psycopg.Error) as exc:
            return self.not_started(
                f"could not count the sessions of {APP_ROLE} after the --before-window command: {first_line(exc)}"
            )
        if sessions:
            return self.not_started(
                f"{len(sessions)} session(s) of {APP_ROLE} still connected {APP_SESSIONS_GRACE_SECONDS:g} s after "
                f"the --before-window command ({'; '.join(sessions[:5])}): it is to stop the application "
                "(or pass --allow-active-sessions)"
            )
        return True

    def not_started(self, reason: str) -> bool:
        """Stop before the backup: nothing in the database was touched. False, for the caller to return."""
        self.record.database = UNCHANGED
        self.record.stop("before-window command", f"{reason}; nothing changed", "not_started", EXIT_FAILED)
        return False

    def after_window(self, report: Path) -> None:
        """The --after-window command, whatever happened; a failure is a warning, and exit 3 after a success."""
        options, record = self.options, self.record
        if options.after_window is None:
            return
        position = dict(record.in_progress)  # where the run was stopped, if it was: kept
        with deferred_interrupts(self.progress):  # the application is waiting on it: never cut short
            ok = self.window_command(
                callbacks.AFTER_WINDOW,
                options.after_window,
                outcome=record.outcome,
                record=str(report.absolute()),
            )
        record.in_progress = position
        if ok:
            return
        ran = record.callbacks[callbacks.AFTER_WINDOW]
        record.warnings.append(
            f"the --after-window command {ran.describe()}: the application may still be in maintenance mode; "
            f"run it by hand: {options.after_window}"
        )
        if record.exit_code == EXIT_OK:
            record.exit_code = callbacks.EXIT_AFTER_WINDOW_FAILED

    def back_up(self) -> bool:
        """The backup and its fingerprint; False when the run stops here (nothing touched)."""
        options, record, url = self.options, self.record, self.options.database_url
        try:
            record.backup = {"path": str(options.backup_path.absolute()), "state": "being written"}
            with self.step("backup and fingerprint (one snapshot)"):
                if options.smoke is not None:
                    # While pg_dump and the fingerprint keep PostgreSQL busy and this thread waits.
                    options.smoke.prewarm()
                started = time.perf_counter()
                size, self.before = backup_and_fingerprint(
                    url, options.backup_path, self.pre.tools, self.progress
                )
                record.fingerprint = {"before": self.before.summary()}
                metadata = backup_metadata.BackupMetadata(
                    self.pre.identity, self.before.to_json(), self.pre.tools.version
                )
                meta_path = backup_metadata.write_metadata(options.backup_path, metadata)
                record.backup = {
                    "path": str(options.backup_path.absolute()),
                    "state": "written",
                    "bytes": size,
                    "seconds": round(time.perf_counter() - started, 3),
                    "metadata": str(meta_path.absolute()),
                    "pg_dump": f"{self.pre.tools.pg_dump} ({self.pre.tools.version})",
                }
                self.progress(f"backup: {options.backup_path} ({size} bytes)")
        except (GateError, OSError, psycopg.Error) as exc:
            record.database = UNCHANGED
            record.stop(record.steps[-1].name, first_line(exc), "not_started", EXIT_USAGE)
            return False
        except KeyboardInterrupt as interrupt:
            record.database = UNCHANGED
            if not options.backup_path.exists():
                record.backup = None
            raise Interrupted(self.where(), _signal_name(interrupt)) from None
        return True

    def where(self) -> str:
        """The step in progress, and the migration when one is running."""
        step, migration = self.record.in_progress["step"], self.record.in_progress["migration"]
        return f"{step}, migration {migration}" if migration else str(step or self.record.steps[-1].name)

    def note_run(self) -> None:
        """This run in the database's own record of runs; say which earlier ones never finished."""
        try:
            with dsn.connect(self.options.database_url) as conn:
                earlier = ledger.begin_run(
                    conn,
                    self.run_id,
                    self.options.command,
                    str(self.options.report_dir.absolute()),
                    str(self.options.backup_path.absolute()),
                    self.pre.lock.pid if self.pre.lock is not None else None,
                )
        except (GateError, psycopg.Error) as exc:
            self.record.warnings.append(f"this run is not in migration_gate.runs: {first_line(exc)}")
            return
        for entry in earlier:
            self.progress(f"note: run {entry.run_id} is now marked as superseded by this one")

    def finish_run(self) -> None:
        try:
            with dsn.connect(self.options.database_url) as conn:
                ledger.finish_run(conn, self.run_id, self.record.outcome)
        except (GateError, psycopg.Error):
            return  # the record on disk says how the run ended; this row is a courtesy for the next run

    def migrate_and_validate(self) -> None:
        """Every pending migration and the catalog's checks in one transaction; Stop (rolled back) on failure.

        A signal cancels the running statement (``cancelling``): the transaction rolls back as
        on any error, then the sequences are put back and the fingerprint proves the rest.
        """
        with (
            self.step("migrate and validate (one transaction)"),
            dsn.connect(self.options.database_url) as conn,
        ):
            sequences = fingerprint.sequence_states(conn)
            runner.session_timeouts(conn, self.options.lock_timeout, "0")
            self.validation = Validation(
                conn,
                self.pre.plan,
                self.pre.checks,
                self.record,
                self.progress,
                str(self.options.migrations_dir),
                allowed_grantees=self.options.allowed_grantees,
                corrections=self.pre.corrections,
                exemptions=self.options.exemptions,
            )
            watching = self.options.lock_timeout != "0"
            with cancelling(conn) as cancellation:
                try:
                    with (
                        runner.advisory_lock(conn, self.progress),
                        LockWatch(self.options.database_url, conn.info.backend_pid)
                        if watching
                        else _nothing() as watch,
                    ):
                        self.validation.watch = watch
                        self.validation.cancellation = cancellation
                        with conn.transaction():
                            self.validation.migrate()
                            cancellation.check()
                            self.progress("committing")
                except KeyboardInterrupt as interrupt:  # between two statements: nothing was running
                    self.interrupted(sequences, _signal_name(interrupt))
                except (Stop, psycopg.Error) as stopped:
                    if cancellation.signal is not None:  # the error is the cancelled statement's
                        self.interrupted(sequences, cancellation.signal)
                    if isinstance(stopped, Stop):
                        self.put_back(sequences, "rolled back: nothing of this run is left in the database")
                        raise
                    # Rolled back (by psycopg, or by the server if the session died).
                    self.put_back(sequences, "rolled back after a database error")
                    raise Stop("migrate and validate", f"database error: {first_line(stopped)}") from None

    def interrupted(self, sequences: dict[str, tuple[int, bool]], signal_name: str) -> NoReturn:
        """A signal stopped the transaction (rolled back): put the sequences back, prove the rest, end the run."""
        where, position = self.where(), dict(self.record.in_progress)
        self.record.stop(where, f"interrupted by {signal_name}", "interrupted", EXIT_INTERRUPTED)
        self.put_back(sequences, f"{signal_name}: rolled back, nothing of this run is left in the database")
        self.verify_unchanged(interrupted=True)
        self.record.in_progress = position  # where the signal landed, not the verification after it
        raise Interrupted(where, signal_name)

    def put_back(self, sequences: dict[str, tuple[int, bool]], said: str) -> None:
        """Sequences, which nextval moves outside transactions, back where they were (on a session of its own)."""
        with deferred_interrupts(self.progress):
            self.progress(said)
            try:
                with dsn.connect(self.options.database_url) as conn:
                    moved = fingerprint.reset_sequences(conn, sequences)
            except (GateError, psycopg.Error) as exc:
                self.record.warnings.append(f"could not put the sequences back: {first_line(exc)}")
                return
            if moved:
                self.progress(f"sequences put back where they were: {', '.join(moved)}")

    def after_commit(self) -> None:
        """The plans of the application's queries, then the smoke tests; a failure (or a signal) asks for a restore."""
        try:
            if not self.index_plans():
                return
            self.smoke()
        except KeyboardInterrupt as interrupt:
            where = self.where()
            self.record.stop(
                where, f"interrupted by {_signal_name(interrupt)}", "interrupted", EXIT_INTERRUPTED
            )
            self.progress(f"interrupted after the commit, during {where}: the database is migrated")
            self.restore(interrupted=True)
            raise Interrupted(where, _signal_name(interrupt)) from None

    def smoke(self) -> None:
        """The runbook's section 5; a run without it says so in its outcome (``WITHOUT_SMOKE``)."""
        record, options = self.record, self.options
        if options.smoke is None:
            record.smoke.append(CheckRecord("smoke", "skipped", options.smoke_skipped_because))
            record.outcome, record.exit_code = WITHOUT_SMOKE, EXIT_OK
            return
        result = SmokeResult()
        try:
            with self.step("smoke tests"):
                options.smoke(options.database_url, self.progress, result)
        finally:
            record.smoke, record.smoke_cleanup = result.records, result.cleanup
        failed = [s.name for s in record.smoke if s.status == "failed"]
        if failed:
            record.steps[-1].status = "failed"
            record.stop("smoke tests", smoke_failures(failed), "needs_restore", EXIT_FAILED)
            self.restore()
            return
        if not result.proven:
            problems = "; ".join(result.cleanup.get("problems", [])) or "no report"
            record.stop(
                "smoke clean-up",
                f"the smoke step's clean-up is not proven: {problems}",
                "cleanup_not_proven",
                EXIT_FAILED,
            )
            return
        ran = any(s.status == "passed" for s in record.smoke)
        record.outcome, record.exit_code = ("migrated_and_validated" if ran else WITHOUT_SMOKE), EXIT_OK

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

    def verify_unchanged(self, interrupted: bool = False) -> None:
        """Prove the database is what the backup holds; if it is not, restore the backup."""
        assert self.before is not None
        with deferred_interrupts(self.progress):
            try:
                with self.step("verify the database is as before"):
                    after = fingerprint.take(
                        self.options.database_url, self.pre.tools, self.progress, digest=self.before.digest
                    )
            except GateError as exc:
                self.record.warnings.append(f"could not verify the database after the rollback: {exc}")
                self.record.database = NOT_VERIFIED
                if not interrupted:
                    self.restore()
                return
            differences = fingerprint.differences(self.before, after)
            assert self.record.fingerprint is not None
            self.record.fingerprint.update(
                after=after.summary(), matches=not differences, differences=differences
            )
            if differences:
                self.progress("the database differs from before: " + "; ".join(differences[:3]))
                self.record.database = NEEDS_RESTORE
                self.restore(interrupted=interrupted)
            else:
                self.record.database = AS_BEFORE
                self.progress("verified: the database is exactly as it was (schema and data)")
            self.record.save()

    def restore(self, interrupted: bool = False) -> None:
        """Restore the backup into the same database, once confirmed; verify it."""
        record, options = self.record, self.options
        if not interrupted:
            record.outcome = "needs_restore"
        record.database = NEEDS_RESTORE
        record.next_action = restore_command(options)
        question = f"restore {self.pre.identity.database} from {options.backup_path}?"
        with deferred_interrupts(self.progress):
            if not self.confirm(question):
                record.restore = {
                    "performed": False,
                    "why": "not confirmed: no --yes, and no terminal or the answer was no",
                }
                self.progress(f"NOT restored: the database needs restoring; run: {record.next_action}")
                record.save()
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
                record.save()
                return
        record.restore = {"performed": True, "seconds": record.steps[-1].seconds, "exact": not outcome}
        assert record.fingerprint is not None
        record.fingerprint.update(after_restore_matches=not outcome, differences=outcome)
        if outcome:
            record.reason = f"{record.reason}; the restored database still differs from the backup"
            record.save()
            return
        if not interrupted:
            record.outcome = "restored"
        record.database, record.next_action = RESTORED, None
        self.progress("restored and verified: the database is exactly as it was (schema and data)")
        record.save()


def smoke_failures(failed: list[str]) -> str:
    """``33 smoke test(s) failed: a, b, c and 30 more (all in the record)``: one readable line."""
    named = ", ".join(failed[:SMOKE_FAILURES_NAMED])
    more = len(failed) - SMOKE_FAILURES_NAMED
    return f"{len(failed)} smoke test(s) failed: {named}" + (
        f" and {more} more (every one in the change record)" if more > 0 else ""
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def backup_and_fingerprint(
    url: str, path: Path, tools: client_tools.ClientTools, progress: Progress
) -> tuple[int, fingerprint.Fingerprint]:
    """The backup and the fingerprint that proves it, read from one exported snapshot, side by side.

    pg_dump works in its own process while this one digests the tables: the window pays
    for the longer of the two, not for both, and the fingerprint is exactly of what the
    backup holds.
    """
    with dsn.connect(url, autocommit=False) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = holder.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        # zlib's fastest level: the backup is a fifth larger, and pg_dump takes half the time.
        running = backup.Dump.start(
            url, path, tools, progress, snapshot=snapshot, extra_args=["--compress=1"]
        )
        try:
            before = fingerprint.take(url, tools, progress, snapshot=snapshot)
            size = running.wait()
        except BaseException:
            running.abort()
            raise
        holder.rollback()  # pg_dump and the digests have read it: the snapshot may go
    return size, before


def restore_from_backup(
    url: str,
    path: Path,
    tools: client_tools.ClientTools | None = None,
    progress: Progress = lambda line: None,
    confirm: Confirm = lambda question: True,
) -> list[str]:
    """Restore a playbook backup into the database it came from; what still differs (empty: exact).

    Refuses (UsageError, nothing touched) an unreadable archive, a backup without its
    record, any database but the one the backup was taken from, or no confirmation.
    """
    metadata = backup_metadata.read_metadata(path)
    with dsn.connect(url) as conn:
        target = identify(conn)
    tools = tools or client_tools.find_tools(target.server_major)
    backup.check_archive(path, tools)
    backup_metadata.verify_target(metadata, target, path)
    if not confirm(f"restore {target.database} from {path}, dropping what it holds now?"):
        raise UsageError(f"restore of {target.database} not confirmed (pass --yes): nothing was changed")
    restoring.restore(url, path, tools, progress)
    before = fingerprint.Fingerprint.from_json(metadata.fingerprint)
    after = fingerprint.take(url, tools, progress, digest=before.digest)
    return fingerprint.differences(before, after)


def append_to_history(options: PlaybookOptions, record: ChangeRecord, progress: Progress) -> None:
    """The change record's figures, appended to ``--history``; a failure is a warning in the record.

    The exit code keeps saying what happened to the database: a run that migrated and
    validated is not undone by a history that could not be written.
    """
    assert options.history is not None
    try:
        with dsn.connect(options.database_url) as conn:
            target = options.history_target or Target.of(identify(conn), dsn.describe(options.database_url))
            head = ledger.head(conn)
        with History(options.history, create=True) as history:
            number = history.append(from_change_record(record.to_json(), target, head))
    except (GateError, psycopg.Error) as exc:
        warning = f"this run was NOT appended to the history: {first_line(exc)}"
        record.warnings.append(warning)
        progress(f"warning: {warning}")
        return
    progress(f"history: run {number} appended to {history.described}")


def run(
    options: PlaybookOptions,
    progress: Progress = lambda line: None,
    confirm: Confirm = lambda question: False,
    rehearsal: dict[str, Any] | None = None,
) -> ChangeRecord:
    """Carry out the playbook; the change record (in ``options.report_dir``) says how it went.

    A preflight problem raises UsageError before anything is touched or written. From then
    on the record is rewritten at every step; an interruption (exit 130) is handled here:
    rolled back and verified before the commit, a restore (asked, or --yes) after it.
    """
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:12]
    pre = preflight(options, progress, run_id)
    try:
        return _carry_out(options, pre, run_id, started, progress, confirm, rehearsal)
    finally:
        if pre.lock is not None:  # after the last record: the next run may start
            pre.lock.release()


def _carry_out(
    options: PlaybookOptions,
    pre: Preflight,
    run_id: str,
    started: float,
    progress: Progress,
    confirm: Confirm,
    rehearsal: dict[str, Any] | None,
) -> ChangeRecord:
    record = ChangeRecord(options.command, dsn.describe(options.database_url), run_id=run_id)
    record.identity = pre.identity.to_json()
    record.start_version, record.tables = pre.version, [table.to_json() for table in pre.tables]
    record.forecast = pre.forecast.to_json() if pre.forecast is not None else None
    record.warnings += pre.warnings
    record.rehearsal = rehearsal
    record.checks += pre.checked
    record.accepted_drift = pre.accepted_drift
    record.exemptions = [exemption.to_json() for exemption in options.exemptions]
    pending = ", ".join(m.label for m in pre.pending) or "none"
    record.steps.append(
        StepRecord(
            "preflight",
            "ok",
            round(time.perf_counter() - started, 3),
            f"pending migrations: {pending}; pg_dump/pg_restore/psql {pre.tools.version}",
        )
    )
    record.autosave(options.report_dir, options.database_url)
    window = Run(options, pre, record, progress, confirm, run_id)
    try:
        window.carry_out()
    except (OSError, psycopg.Error) as exc:  # not a verdict on the migrations: the run could not go on
        record.stop(
            record.steps[-1].name, f"unexpected error: {first_line(exc)}", "unexpected_error", EXIT_FAILED
        )
        if options.backup_path.exists():
            record.next_action = restore_command(options)
    finally:
        record.finished_at = now()
        record.seconds = round(time.perf_counter() - started, 3)
        if record.outcome != "interrupted":  # an interrupted run keeps saying where it was stopped
            record.in_progress = {"step": None, "migration": None}
        if options.history is not None:
            with deferred_interrupts(progress):
                append_to_history(options, record, progress)
        paths = record.write(options.report_dir, options.database_url)
        window.after_window(options.report_dir / JSON_NAME)
        if options.after_window is not None:
            paths = record.write(options.report_dir, options.database_url)
        progress(f"change record: {paths[1]} ({record.outcome})")
    return record
