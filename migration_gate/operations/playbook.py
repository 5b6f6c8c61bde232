"""``migration-gate playbook``: the staging runbook as one command, stage by stage.

1. **Preflight** — nothing is touched, and any problem is one line and exit 2: the
   migrations and checks load, the ledger agrees with the files, the backup path and the
   report directory are writable, the server answers, pg_dump/pg_restore/psql match its
   major version, and no session of ``fluxolab_devmode`` is connected (playbook 2.1).
2. **Backup** — a fingerprint of the database (schema and data), then ``pg_dump
   --format=custom``, with a ``.meta.json`` beside it naming the database it came from.
3. **Migrate and validate in one transaction** — every pending migration runs in the
   same transaction (PostgreSQL's DDL is transactional), with its ledger row, under the
   runner's advisory lock. After 006 and after 007 the invariants that hold from there
   are counted (playbook section 3); after the last one, every invariant, the structure
   (NOT NULLs, nothing invalid, payload gone, the archive, conservation), the indexes'
   plans, the privileges of ``fluxolab_devmode`` and the ledger. Any failure, a count
   other than zero or a failing statement is a ROLLBACK: the database is exactly as it
   was, which the fingerprint then proves (sequences, which ``nextval`` moves outside
   transactions, are put back first).
4. **Smoke tests** (``smoke/``) against the reference API serving the committed database.
5. **Restore** — only when something fails after the commit (or a rollback somehow did
   not give back the same fingerprint): confirmed on a terminal or by ``--yes``, only
   into the database the backup came from, and verified against the backup's fingerprint.
6. **The change record** — ``report.json`` and ``report.md``, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.checks import explain, invariants, ledger_check, privileges, profile_audit, structure
from migration_gate.checks.failures import CheckFailed
from migration_gate.core import dsn, ledger, runner
from migration_gate.core.contract import APP_ROLE, LEGACY_TABLES
from migration_gate.core.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    GateError,
    MigrationFailed,
    UsageError,
)
from migration_gate.core.plan import Migration, load_plan
from migration_gate.operations import backup, fingerprint
from migration_gate.operations.report import ChangeRecord, CheckRecord, MigrationRecord, StepRecord, now
from migration_gate.plugin.databases import CHECKPOINTS

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]
# (url of the committed database, progress) → one record per smoke test
SmokeRunner = Callable[[str, Progress], list[CheckRecord]]

# The checkpoints where the playbook pauses (section 3): after 006 and after 007.
PAUSES = {int(last): name for name, last in CHECKPOINTS.items() if last is not None and name != "legacy"}
# A migration waiting this long for a lock stops (and rolls back) instead of queueing the application behind it.
LOCK_TIMEOUT = "60s"
# The smallest version from which the pre-005 snapshot (conservation) is known: 005 must still be pending.
SCOPING_VERSION = 5

_APP_SESSIONS = """
WITH RECURSIVE app(oid) AS (
    SELECT oid FROM pg_roles WHERE rolname = %s
    UNION
    SELECT m.member FROM pg_auth_members m JOIN app ON m.roleid = app.oid
)
SELECT a.pid, a.usename, coalesce(nullif(a.application_name, ''), '-'), coalesce(host(a.client_addr), 'local')
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.usesysid IN (SELECT oid FROM app) AND a.pid <> pg_backend_pid()
ORDER BY a.pid
"""
_OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend'"
)


@dataclass(frozen=True)
class PlaybookOptions:
    database_url: str
    backup_path: Path
    report_dir: Path
    migrations_dir: Path = Path("migrations")
    checks_dir: Path = Path("checks")
    assume_yes: bool = False
    allow_active_sessions: bool = False
    smoke: SmokeRunner | None = None  # None: smoke tests skipped, and the record says so
    smoke_skipped_because: str = "smoke tests not requested"
    prefer_bindirs: tuple[Path, ...] = ()  # client tools to try first (a rehearsal's disposable server)
    command: str = "playbook"


@dataclass
class Preflight:
    identity: backup.DatabaseIdentity
    tools: backup.ClientTools
    plan: list[Migration]
    pending: list[Migration]
    invariants: list[invariants.Invariant]
    warnings: list[str] = field(default_factory=list)


class Stop(Exception):
    """The run stops here (before the commit): a failing migration, a nonzero count, a failed check."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- 1. Preflight ----------------------------------------------------------------------


def _probe_writable(directory: Path, what: str) -> None:
    """Really create (and remove) a file there: permissions, read-only mounts and root all answer truly."""
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".migration-gate-probe-")
    except OSError as exc:
        raise UsageError(f"{what}: cannot write in {directory} ({exc.strerror or exc})") from None
    os.close(handle)
    os.unlink(probe)


def check_backup_path(path: Path) -> None:
    """The backup goes to a new file in a writable directory: an existing backup is never overwritten."""
    for existing in (path, backup.metadata_path(path)):
        if existing.exists():
            raise UsageError(
                f"--backup {path}: {existing} already exists; a backup is never overwritten, choose a new path"
            )
    parent = path.absolute().parent
    if not parent.exists():
        raise UsageError(f"--backup {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"--backup {path}: {parent} is not a directory")
    _probe_writable(parent, f"--backup {path}")


def check_report_dir(directory: Path) -> None:
    """A new or empty-of-records directory we can write in (created only once preflight passes)."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--report-dir {directory}: exists and is not a directory")
    if (directory / "report.json").exists():
        raise UsageError(
            f"--report-dir {directory} already holds a change record (report.json): choose a new directory"
        )
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--report-dir {directory}: {existing} is not a directory")
    _probe_writable(existing, f"--report-dir {directory}")


def app_sessions(conn: psycopg.Connection) -> list[str]:
    """Sessions of the application's role (or a role that is a member of it) on this database."""
    rows = conn.execute(_APP_SESSIONS, (APP_ROLE,)).fetchall()
    return [f"pid {pid} ({user}, {application}, from {client})" for pid, user, application, client in rows]


def preflight(options: PlaybookOptions, progress: Progress) -> Preflight:
    """Everything that can be known before touching anything; any problem raises UsageError (exit 2)."""
    plan = load_plan(options.migrations_dir)
    checks = invariants.load(options.checks_dir)
    check_backup_path(options.backup_path)
    check_report_dir(options.report_dir)
    with dsn.connect(options.database_url) as conn:
        identity = backup.identify(conn)
        progress(f"target: {identity.describe()}")
        applied = ledger.read(conn)
        if not applied:
            tables = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            ).fetchone()
            if tables and tables[0]:
                raise UsageError(
                    f"{identity.database} has {tables[0]} table(s) in public but no migration_gate.ledger: another "
                    "runner migrated it, and the playbook will not guess which files it applied: adopt it first "
                    "with 'migration-gate baseline --database URL --to 004' (it checks the schema is exactly that)"
                )
        todo = runner.plan_run(plan, applied)  # refuses drift and holes before anything runs
        sessions = app_sessions(conn)
        others_row = conn.execute(_OTHER_SESSIONS).fetchone()
        size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    tools = backup.find_tools(identity.server_major, options.prefer_bindirs)
    warnings = []
    if sessions:
        listed = "; ".join(sessions[:5]) + (f"; and {len(sessions) - 5} more" if len(sessions) > 5 else "")
        if not options.allow_active_sessions:
            raise UsageError(
                f"{len(sessions)} session(s) of {APP_ROLE} still connected to {identity.database} ({listed}): "
                "stop the application first (playbook 2.1) or pass --allow-active-sessions"
            )
        warnings.append(
            f"--allow-active-sessions: {len(sessions)} session(s) of {APP_ROLE} connected: {listed}"
        )
    others = int(others_row[0]) if others_row else 0
    if others > len(sessions):
        warnings.append(f"{others - len(sessions)} other client session(s) connected to {identity.database}")
    database_bytes = int(size_row[0]) if size_row else 0
    free = shutil.disk_usage(options.backup_path.absolute().parent).free
    if free < database_bytes:
        warnings.append(
            f"{free} bytes free beside the backup for a {database_bytes}-byte database: "
            "the compressed dump is usually smaller, but watch it"
        )
    for warning in warnings:
        progress(f"warning: {warning}")
    return Preflight(identity, tools, plan, todo, checks, warnings)


# -- 3. Migrate and validate, in one transaction ---------------------------------------


class Validation:
    """The in-transaction part: migrations, their checkpoints and the final checks, recorded."""

    def __init__(
        self, conn: psycopg.Connection, pre: Preflight, record: ChangeRecord, progress: Progress
    ) -> None:
        self.conn, self.pre, self.record, self.progress = conn, pre, record, progress
        self.legacy_counts: dict[str, int] | None = None
        self.legacy_payloads: int | None = None

    def migrate(self, options: PlaybookOptions) -> None:
        conn = self.conn
        ledger.ensure(conn)  # a savepoint inside the run's transaction: rolled back with it
        todo = runner.plan_run(self.pre.plan, ledger.read(conn))  # again, now that we hold the lock
        if not todo:
            self.progress("nothing to apply: every migration is already applied")
        for migration in todo:
            if migration.version == SCOPING_VERSION:
                self._snapshot_legacy()
            self.progress(f"applying {migration.file_name} …")
            started = time.perf_counter()
            try:
                timings = runner.execute(conn, migration)
            except MigrationFailed as failed:
                raise Stop(f"migration {migration.file_name}", str(failed)) from None
            seconds = time.perf_counter() - started
            ledger.record(conn, migration, seconds * 1000)
            self.record.migrations.append(
                MigrationRecord(
                    migration.file_name,
                    round(seconds, 3),
                    [
                        {"line": t.line, "seconds": round(t.seconds, 3), "statement": t.summary}
                        for t in timings
                    ],
                )
            )
            self.progress(f"{migration.file_name:<45} {seconds:8.3f} s")
            if migration.version in PAUSES:
                self.checkpoint(PAUSES[migration.version], migration.version)
        last = self.pre.plan[-1]
        final = f"after_{last.version:03d}" if todo else "current"
        self.checkpoint(final, last.version)
        self.final_checks(last.version, options)

    def _snapshot_legacy(self) -> None:
        """Rows per legacy table just before 005: the left side of every conservation equation."""
        self.legacy_counts = {}
        for table in LEGACY_TABLES:
            row = self.conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
            self.legacy_counts[table] = int(row[0]) if row else 0
        self.legacy_payloads = structure.legacy_payload_count(self.conn)

    def checkpoint(self, name: str, version: int) -> None:
        """Count every invariant that holds from ``version``; any nonzero count stops the run."""
        counts: dict[str, int] = {}
        failures: list[CheckFailed] = []
        for invariant in self.pre.invariants:
            if invariant.from_version > version:
                continue
            try:
                with self.conn.transaction():
                    result = invariants.run(self.conn, invariant, where=name)
            except psycopg.Error as exc:
                raise Stop(
                    f"checkpoint {name}", f"invariant {invariant.name} could not run: {_first_line(exc)}"
                ) from None
            counts[invariant.name] = result.count
            if not result.passed:
                failures.append(result.failure())
        self.record.checkpoints[name] = counts
        audit = profile_audit.profile_audit(self.conn, name)
        self.record.profile_audit[name] = dict(audit.figures)
        shown = ", ".join(f"{n} {c}" for n, c in counts.items()) or "no invariant holds yet"
        self.progress(f"checkpoint {name}: {shown}")
        figures = ", ".join(f"{code} {count}" for code, count in audit.figures.items()) or "no rows"
        self.progress(f"profile audit {name}: {figures}")
        for failure in failures:
            self.record.checks.append(CheckRecord(failure.check, "failed", failure.summary, failure.render()))
        if failures:
            offending = ", ".join(f"{f.check} = {counts[f.check]}" for f in failures)
            raise Stop(f"checkpoint {name}", f"{offending} (must be 0)")

    def check(self, name: str, run: Callable[[], object]) -> bool:
        """One check in a savepoint (an SQL error fails that check, not the transaction)."""
        try:
            with self.conn.transaction():
                run()
        except CheckFailed as failed:
            self.record.checks.append(CheckRecord(name, "failed", failed.summary, failed.render()))
            self.progress(f"  FAILED {name}: {failed.summary}")
            return False
        except psycopg.Error as exc:
            message = _first_line(exc)
            self.record.checks.append(CheckRecord(name, "failed", f"the check's SQL failed: {message}"))
            self.progress(f"  FAILED {name}: {message}")
            return False
        self.record.checks.append(CheckRecord(name, "passed"))
        return True

    def skip(self, name: str, why: str) -> None:
        self.record.checks.append(CheckRecord(name, "skipped", why))
        self.progress(f"  skipped {name}: {why}")

    def final_checks(self, version: int, options: PlaybookOptions) -> None:
        conn = self.conn
        results: list[bool] = []
        check = self.check

        def add(name: str, run: Callable[[], object]) -> None:
            results.append(check(name, run))

        for required in structure.NOT_NULL_COLUMNS:
            if required.from_version <= version:
                add(f"not_null[{required.label}]", partial(structure.check_not_null, conn, required))
        add("no_invalid_indexes", lambda: structure.check_no_invalid_indexes(conn))
        add("no_invalid_constraints", lambda: structure.check_no_invalid_constraints(conn))
        if version >= structure.PAYLOAD_GONE_FROM_VERSION:
            add("activities_payload_gone", lambda: structure.check_payload_gone(conn))
        if version >= structure.ARCHIVE_FROM_VERSION:
            add("legacy_archive_present", lambda: structure.check_archive_present(conn))
        if self.legacy_counts is not None and version >= structure.ARCHIVE_FROM_VERSION:
            counts = self.legacy_counts
            for table in LEGACY_TABLES:
                add(f"conservation[{table}]", partial(structure.check_conservation, conn, table, counts))
            payloads = self.legacy_payloads or 0
            add("conservation[activity_payloads]", lambda: structure.check_payloads_conserved(conn, payloads))
        else:
            self.skip(
                "conservation", "005 was already applied before this run: no pre-005 snapshot to compare with"
            )
        for query in explain.APPLICATION_QUERIES:
            if query.from_version <= version:  # whether plans use it is checked after the commit
                add(f"index_definition[{query.index}]", partial(explain.check_definition, conn, query))
        add("privileges[every relation in public]", lambda: privileges.check_every_relation(conn))
        add("privileges[database]", lambda: privileges.check_database(conn))
        add("privileges[schema public]", lambda: privileges.check_public_schema(conn))
        add("privileges[PUBLIC on schema public]", lambda: privileges.check_public_role_cannot_create(conn))
        if version >= SCOPING_VERSION:
            add("privileges[legacy_archive closed]", lambda: privileges.check_archive_closed(conn))
        add("privileges[role attributes]", lambda: privileges.check_role_attributes(conn))
        add("privileges[default privileges]", lambda: privileges.check_default_privileges(conn))
        add("ledger", lambda: ledger_check.check_ledger(conn, self.pre.plan, str(options.migrations_dir)))
        failed = [c.name for c in self.record.checks if c.status == "failed"]
        self.progress(f"checks: {results.count(True)} passed, {len(failed)} failed")
        if failed:
            raise Stop("validation", f"{len(failed)} check(s) failed: {', '.join(failed)}")


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
            record.stop(record.steps[-1].name, _first_line(exc), "not_started", EXIT_USAGE)
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
        version = self.pre.plan[-1].version
        queries = [q for q in explain.APPLICATION_QUERIES if q.from_version <= version]
        failed: list[str] = []
        with self.step("index plans"), dsn.connect(self.options.database_url) as conn:
            validation = Validation(conn, self.pre, self.record, self.progress)
            for query in queries:
                if not validation.check(
                    f"index_usable[{query.index}]", partial(explain.check_usable, conn, query)
                ):
                    failed.append(f"index_usable[{query.index}]")
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("public", query.table)))
                too_small = explain.too_small_for_chosen(conn, query)
                if too_small:
                    validation.skip(f"index_chosen[{query.index}]", too_small)
                elif not validation.check(
                    f"index_chosen[{query.index}]", partial(explain.check_chosen, conn, query)
                ):
                    failed.append(f"index_chosen[{query.index}]")
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
                try:
                    with conn.transaction():
                        Validation(conn, self.pre, self.record, self.progress).migrate(self.options)
                        self.progress("committing")
                except Stop:
                    self.progress("rolled back: nothing of this run is left in the database")
                    moved = fingerprint.reset_sequences(conn, sequences)
                    if moved:
                        self.progress(f"sequences put back where they were: {', '.join(moved)}")
                    raise
                except psycopg.Error as exc:  # rolled back (by psycopg, or by the server if the session died)
                    raise Stop("migrate and validate", f"database error: {_first_line(exc)}") from None

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
        record.stop(record.steps[-1].name, f"unexpected error: {_first_line(exc)}", "running", EXIT_FAILED)
        if options.backup_path.exists():
            record.next_action = restore_command(options)
    finally:
        record.finished_at = now()
        paths = record.write(options.report_dir, options.database_url)
        progress(f"change record: {paths[1]} ({record.outcome})")
    return record
