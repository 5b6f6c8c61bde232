"""The playbook's first stage: everything that can be known before touching anything.

Any problem is one line and exit 2, and nothing is written: the migrations, the
corrections and the catalog of checks load, the ledger agrees with the files (an edited
correction is refused like an edited migration), the backup path and the report
directory are writable, the server answers, pg_dump/pg_restore/psql match its major
version, no session of ``fluxolab_devmode`` is connected (runbook 2.1; with a
``--before-window`` command, once it has run), and last the catalog's preflight checks
(``schema_drift``) pass on the database as found, unless ``--accept-drift`` says why not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from warnings import catch_warnings, simplefilter

import psycopg

from migration_gate.checks import catalog
from migration_gate.checks.catalog import Check, CheckContext, CheckSkipped
from migration_gate.checks.failures import CheckFailed
from migration_gate.core import corrections, dsn, ledger, runner, settings
from migration_gate.core.allowed_grantees import AllowedGrantee
from migration_gate.core.contract import APP_ROLE
from migration_gate.core.corrections import Correction
from migration_gate.core.drift import Reference
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import Exemption
from migration_gate.core.identity import DatabaseIdentity, identify
from migration_gate.core.plan import Migration, load_plan, touched_tables
from migration_gate.core.text import first_line
from migration_gate.history import store as history_store
from migration_gate.history.record import Target
from migration_gate.operations import backup_metadata, client_tools, forecast, run_lock, target_stats
from migration_gate.operations.report import CheckRecord
from migration_gate.operations.smoke_step import SmokeStep, why_smoke_cannot_run

Progress = Callable[[str], None]

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
# Sessions (not ours) holding a lock on one of the tables the pending migrations name.
_LOCK_HOLDERS = """
WITH touched AS (
    SELECT c.oid FROM unnest(%s::text[]) AS name
    CROSS JOIN LATERAL (SELECT to_regclass(name) AS oid) r
    JOIN pg_class c ON c.oid = r.oid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'p')
)
SELECT a.pid, coalesce(a.usename::text, '-'), coalesce(nullif(a.application_name, ''), '-'),
       string_agg(DISTINCT l.relation::regclass::text || ' ' || l.mode, ', '),
       coalesce(extract(epoch FROM now() - a.xact_start)::int, 0)
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation IN (SELECT oid FROM touched)
GROUP BY a.pid, a.usename, a.application_name, a.xact_start
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
    migrations_dir: Path = Path(settings.default("migrations_dir"))
    checks_dir: Path = Path(settings.default("checks_dir"))
    assume_yes: bool = False
    allow_active_sessions: bool = False
    smoke: SmokeStep | None = None  # None: smoke tests skipped, and the record says so
    smoke_skipped_because: str = "smoke tests not requested"
    prefer_bindirs: tuple[Path, ...] = ()  # client tools to try first (a rehearsal's disposable server)
    command: str = "playbook"
    # A migration waiting this long for a lock gives up and is retried, instead of queueing the application behind it.
    lock_timeout: str = settings.default("lock_timeout")
    allowed_grantees: tuple[AllowedGrantee, ...] = ()  # --allowed-grantee, for the privilege review
    corrections_dir: Path | None = None  # --corrections-dir: applied at their places in the one transaction
    accept_drift: str | None = (
        None  # --accept-drift NOTE: run although schema_drift fails; the note is recorded
    )
    before_window: str | None = None  # shell commands at the window's edges (operations.callbacks)
    after_window: str | None = None
    callback_timeout: float = float(settings.default("callback_timeout"))
    # Where schema_drift builds the expected schema (a rehearsal's own server; else one started for it).
    reference: Reference = field(default_factory=Reference)
    exemptions: tuple[Exemption, ...] = ()  # --exempt: a tenant table exempted from a rule, and why
    history: str | None = None  # --history: the change record's figures are appended there at the end
    history_target: Target | None = (
        None  # a rehearsal files its run under its source, not its disposable copy
    )
    forecast_from: Path | None = None  # --forecast-from: a change record to forecast this window from
    window_budget: float | None = None  # --window-budget, in seconds: a longer forecast stops the run here


@dataclass
class Preflight:
    identity: DatabaseIdentity
    tools: client_tools.ClientTools
    plan: list[Migration]
    pending: list[Migration]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)  # every one in --corrections-dir
    scheduled: list[Correction] = field(default_factory=list)  # those this run will apply
    checked: list[CheckRecord] = field(default_factory=list)  # the preflight checks' results
    accepted_drift: dict[str, object] | None = None
    version: int = 0  # the ledger's head as the run found it
    tables: list[target_stats.TableSize] = field(default_factory=list)  # rows and bytes at the start
    forecast: forecast.Forecast | None = None
    lock: run_lock.RunLock | None = None  # this run's hold on the database, until its last record


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
    for existing in (path, backup_metadata.metadata_path(path)):
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


def lock_holders(conn: psycopg.Connection, pending: list[Migration]) -> list[str]:
    """Sessions holding locks on the tables the pending migrations touch: each will make a migration wait."""
    rows = conn.execute(_LOCK_HOLDERS, (sorted(touched_tables(pending)),)).fetchall()
    return [
        f"pid {pid} ({user}, {application}) holds {locks}, in a transaction open for {seconds} s"
        for pid, user, application, locks, seconds in rows
    ]


def unfinished(conn: psycopg.Connection) -> list[str]:
    """Earlier runs on this database that never finished, with where their records are."""
    found = []
    for entry in ledger.unfinished_runs(conn):
        where = ""
        try:
            record = json.loads((Path(entry.report_dir) / "report.json").read_text(encoding="utf-8"))
            step, migration = record["in_progress"]["step"], record["in_progress"]["migration"]
            where = f" in step {step!r}" + (f", migration {migration}" if migration else "")
        except (OSError, ValueError, KeyError, TypeError):
            where = " (its record cannot be read here)"
        found.append(
            f"an earlier {entry.command} run ({entry.run_id}, started {entry.started_at:%Y-%m-%d %H:%M:%S %Z}) "
            f"did not finish{where}: its record is {Path(entry.report_dir) / 'report.json'}, its backup {entry.backup}"
        )
    return found


def app_sessions(conn: psycopg.Connection) -> list[str]:
    """Sessions of the application's role (or a role that is a member of it) on this database."""
    rows = conn.execute(_APP_SESSIONS, (APP_ROLE,)).fetchall()
    return [f"pid {pid} ({user}, {application}, from {client})" for pid, user, application, client in rows]


PREFLIGHT = "preflight"  # the checkpoint the preflight checks are recorded at: the database as found


def run_preflight_checks(
    conn: psycopg.Connection, plan: list[Migration], checks: list[Check], options: PlaybookOptions, where: str
) -> list[tuple[CheckRecord, CheckFailed | None]]:
    """The catalog's preflight checks on the database as found, each recorded by name (and its failure)."""
    results: list[tuple[CheckRecord, CheckFailed | None]] = []
    context = CheckContext(
        conn,
        plan,
        PREFLIGHT,
        where,
        migrations_dir=str(options.migrations_dir),
        allowed_grantees=options.allowed_grantees,
        reference=options.reference,
    )
    for check in (check for check in checks if check.preflight):
        started = time.perf_counter()
        with catch_warnings(record=True) as said:  # a note (built on another major) goes in the record
            simplefilter("always")
            try:
                check.verify(context)
                record, failure = (
                    CheckRecord(check.name, "passed", "; ".join(str(w.message) for w in said)),
                    None,
                )
            except CheckSkipped as skipped:
                record, failure = CheckRecord(check.name, "skipped", skipped.reason), None
            except CheckFailed as failed:
                record, failure = CheckRecord(check.name, "failed", failed.summary, failed.render()), failed
            except psycopg.Error as exc:  # the check could not say: no verdict, so no run either
                failure = CheckFailed(check.name, f"the check's SQL failed: {first_line(exc)}")
                record = CheckRecord(check.name, "failed", failure.summary)
        record.checkpoint, record.seconds = PREFLIGHT, round(time.perf_counter() - started, 3)
        results.append((record, failure))
    return results


def judge_drift(
    results: list[tuple[CheckRecord, CheckFailed | None]], accept_drift: str | None
) -> dict[str, object] | None:
    """Refuse (UsageError) a failed preflight check, unless ``--accept-drift`` accepts it: then what was accepted."""
    failed = [(record, failure) for record, failure in results if failure is not None]
    if not failed:
        return None
    record, failure = failed[0]
    if accept_drift is None:
        raise UsageError(
            f"{record.name}: {record.summary}; write them down as corrections (migration-gate correct) or pass "
            "--accept-drift NOTE to run anyway: nothing was touched"
        )
    differences: list[str] = []
    for record, failure in failed:
        record.status = "accepted"
        record.summary = f"accepted with --accept-drift ({accept_drift}): {record.summary}"
        assert failure is not None
        differences += dict(failure.sections).get("differences", failure.summary).splitlines()
    return {"note": accept_drift, "differences": differences}


def preflight(options: PlaybookOptions, progress: Progress, run_id: str) -> Preflight:
    """Everything that can be known before touching anything; any problem raises UsageError (exit 2).

    Once everything passed, the run holds the database (``run_lock``) until the caller
    releases ``Preflight.lock``.
    """
    plan = load_plan(options.migrations_dir)
    checks = catalog.load(options.checks_dir)
    found = corrections.load(options.corrections_dir, plan) if options.corrections_dir else []
    catalog.check_exemptions(checks, options.exemptions)
    forecast_record = forecast.load_record(options.forecast_from) if options.forecast_from else None
    check_backup_path(options.backup_path)
    check_report_dir(options.report_dir)
    with dsn.connect(options.database_url) as conn:
        identity = identify(conn)
        progress(f"target: {identity.describe()}")
        if options.history is not None:  # refused now, not after the window: nothing is written yet
            history_store.check(options.history, identity)
        busy = run_lock.other_run(conn)  # first: every other problem may be that run's doing
        if busy is not None:
            raise run_lock.refusal(busy)
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
        # Refuses an edited correction, or one whose place the database has passed.
        placed = corrections.schedule(found, corrections.read(conn), applied, todo)
        cannot_smoke = why_smoke_cannot_run(conn) if options.smoke is not None else None
        if cannot_smoke is not None:
            raise UsageError(
                f"the smoke tests (runbook section 5) cannot run: {cannot_smoke}; or pass --no-smoke, "
                "and the record will say section 5 did not run"
            )
        sessions = app_sessions(conn)
        holders = lock_holders(conn, todo) if todo else []
        earlier = unfinished(conn)
        others_row = conn.execute(_OTHER_SESSIONS).fetchone()
        size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        sizes = target_stats.table_sizes(conn)
    tools = client_tools.find_tools(identity.server_major, options.prefer_bindirs)
    warnings = []
    if sessions:
        listed = "; ".join(sessions[:5]) + (f"; and {len(sessions) - 5} more" if len(sessions) > 5 else "")
        if options.before_window and not options.allow_active_sessions:
            progress(
                f"{len(sessions)} session(s) of {APP_ROLE} connected: the --before-window command is to end them"
            )
        elif not options.allow_active_sessions:
            raise UsageError(
                f"{len(sessions)} session(s) of {APP_ROLE} still connected to {identity.database} ({listed}): "
                "stop the application first (playbook 2.1) or pass --allow-active-sessions"
            )
        warnings.append(
            f"--allow-active-sessions: {len(sessions)} session(s) of {APP_ROLE} connected: {listed}"
        )
    warnings += earlier
    warnings += [f"a session holds a lock the migrations need: {holder}" for holder in holders]
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
    for waiting in placed.waiting:
        place = f"after {waiting.after:03d}" if waiting.after else "before the first pending migration"
        warnings.append(f"correction {waiting.name} waits: its place ({place}) is not reached by this run")
    if placed.pending:
        progress(f"corrections to apply: {', '.join(c.name for c in placed.pending)}")
    with dsn.connect(options.database_url) as conn:
        checked = run_preflight_checks(conn, plan, checks, options, f"preflight ({identity.database})")
    accepted = judge_drift(checked, options.accept_drift)
    for record, _ in checked:
        progress(f"{record.name}: {record.status}" + (f": {record.summary}" if record.summary else ""))
    if accepted is not None:
        warnings.append(f"schema drift accepted with --accept-drift: {options.accept_drift}")
    for warning in warnings:
        progress(f"warning: {warning}")
    version = max(applied, default=0)
    expected = None
    if forecast_record is not None:
        expected = forecast_window(
            forecast_record,
            target_stats.TargetStats(identity.database, version, sizes),
            plan,
            options,
            progress,
        )
    lock = run_lock.RunLock.take(options.database_url, options.command, run_id)
    return Preflight(
        identity,
        tools,
        plan,
        todo,
        checks,
        warnings=warnings,
        corrections=found,
        scheduled=placed.pending,
        checked=[record for record, _ in checked],
        accepted_drift=accepted,
        version=version,
        tables=sizes,
        forecast=expected,
        lock=lock,
    )


def forecast_window(
    record: forecast.Record,
    target: target_stats.TargetStats,
    plan: list[Migration],
    options: PlaybookOptions,
    progress: Progress,
) -> forecast.Forecast:
    """The window forecast from ``record``, said; one longer than ``--window-budget`` stops the run here."""
    expected = forecast.forecast(record, target, plan, smoke=options.smoke is not None)
    progress(f"forecast from {options.forecast_from}:")
    for line in expected.table():
        progress(f"  {line}")
    budget = options.window_budget
    if budget is not None and expected.window_s > budget:
        raise UsageError(
            f"the forecast window is {forecast.format_seconds(expected.window_s)} "
            f"({forecast.format_seconds(expected.low_s)}-{forecast.format_seconds(expected.high_s)}), over the "
            f"--window-budget of {forecast.format_seconds(budget)}: stopped before the backup, nothing was changed"
        )
    return expected
