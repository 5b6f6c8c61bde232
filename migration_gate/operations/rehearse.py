"""``migration-gate rehearse``: the playbook on a disposable copy of a source database.

How the team tries 005→008 on staging's data before the real window. The source is only
ever read: every session on it (ours, pg_dump's, pg_dumpall's) runs with
``default_transaction_read_only``. Its roles (``pg_dumpall --roles-only
--no-role-passwords``: names, attributes and memberships, never a password) and its
database (``pg_dump --format=custom``, with the database's own ACL and settings) are
copied into a disposable PostgreSQL, where the playbook runs as its superuser with
``--yes`` implied (restoring there harms nothing). That server is of the source's major
when one is installed here, else the nearest newer one, and the record says which. The
change record is the playbook's, with a ``rehearsal`` section saying what was copied from
where and how long it took.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.checks import catalog
from migration_gate.core import corrections, dsn, settings
from migration_gate.core.allowed_grantees import AllowedGrantee
from migration_gate.core.drift import Reference
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import Exemption
from migration_gate.core.identity import DatabaseIdentity, identify
from migration_gate.core.installations import installation_for
from migration_gate.core.plan import load_plan
from migration_gate.core.server import SUPERUSER, DisposableServer
from migration_gate.history import store as history_store
from migration_gate.history.record import DISPOSABLE, Target
from migration_gate.operations import backup, baseline, client_tools, playbook, preflight
from migration_gate.operations.report import ChangeRecord

Progress = playbook.Progress

RESERVED_NAMES = ("postgres", "template0", "template1")
# Database-level statements of a dump's --create script: settings and the database's ACL.
_DATABASE_LEVEL = re.compile(
    r"^(ALTER DATABASE \S+ SET |ALTER ROLE \S+ IN DATABASE |(GRANT|REVOKE) .* ON DATABASE )"
)


@dataclass(frozen=True)
class RehearsalOptions:
    source_url: str
    report_dir: Path
    migrations_dir: Path = Path(settings.default("migrations_dir"))
    checks_dir: Path = Path(settings.default("checks_dir"))
    smoke_dir: Path | None = Path("smoke")
    pg_ctl: str | None = None
    pg_version: int | None = None  # default: the source's major, when installed here
    # The source was migrated up to this version by another runner (no ledger): adopt the copy first.
    baseline: str | None = None
    allowed_grantees: tuple[AllowedGrantee, ...] = ()  # --allowed-grantee, for the privilege review
    corrections_dir: Path | None = None  # replayed on the copy at their places, as on production
    accept_drift: str | None = None
    exemptions: tuple[Exemption, ...] = ()  # --exempt: a tenant table exempted from a rule, and why
    history: str | None = None  # --history: the rehearsal is appended there, as a run of its source


def _source_identity(url: str) -> tuple[DatabaseIdentity, str]:
    """Who the source is, and who owns its database; read-only, like every session on it."""
    with dsn.connect(url, options=dsn.read_only_options("60s")) as conn:
        identity = identify(conn)
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    return identity, str(row[0]) if row else SUPERUSER


def _tool_error(done: subprocess.CompletedProcess[str], url: str, what: str) -> UsageError:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return UsageError(f"{what}: {dsn.scrub(lines[-1] if lines else f'exit code {done.returncode}', url)}")


def copy_roles(
    source_url: str, source_db: str, tools: client_tools.ClientTools, server: DisposableServer
) -> int:
    """The source cluster's roles into the disposable one (no passwords); how many statements ran."""
    conninfo, env = client_tools.tool_connection(source_url, read_only=True)
    done = subprocess.run(
        [str(Path(tools.pg_dump).with_name("pg_dumpall")), "--roles-only", "--no-role-passwords",
         f"--dbname={conninfo}", "-l", source_db],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise _tool_error(done, source_url, "cannot read the source's roles (pg_dumpall --roles-only)")
    applied = 0
    with server.admin() as conn:
        for line in backup.script_lines(done.stdout):
            statement = line.strip()
            if not statement or statement.startswith(("--", "SET ")):
                continue
            # The disposable server's own superuser stays as it is.
            if re.match(rf"^(CREATE|ALTER) ROLE {SUPERUSER}\b", statement):
                continue
            try:
                conn.execute(statement.encode("utf-8"))
            except psycopg.errors.DuplicateObject:
                continue
            applied += 1
    return applied


def restore_copy(
    source_dump: Path,
    name: str,
    owner: str,
    tools: client_tools.ClientTools,
    server: DisposableServer,
    progress: Progress,
) -> str:
    """A database ``name`` on the disposable server holding the dump, with the source's ACL and settings."""
    with server.admin() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'").format(
                sql.Identifier(name), sql.Identifier(owner if exists else SUPERUSER)
            )
        )
    url = server.url(name)
    conninfo, env = client_tools.tool_connection(url)
    started = time.perf_counter()
    progress(f"restoring the source's dump into the disposable database {name} …")
    done = subprocess.run(
        [tools.pg_restore, "--exit-on-error", "--single-transaction", f"--dbname={conninfo}", str(source_dump)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise _tool_error(done, url, "cannot restore the source's dump into the disposable server")
    script = subprocess.run(
        [tools.pg_restore, "--create", "--schema-only", "--file=-", str(source_dump)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    source_name = _archive_database_name(script.stdout)
    with dsn.connect(url) as conn:
        for line in backup.script_lines(script.stdout):
            if _DATABASE_LEVEL.match(line) and source_name:
                statement = line.replace(
                    f" DATABASE {source_name} ", f" DATABASE {sql.Identifier(name).as_string(conn)} "
                )
                statement = statement.replace(
                    f" DATABASE {source_name};", f" DATABASE {sql.Identifier(name).as_string(conn)};"
                )
                conn.execute(statement.encode("utf-8"))
    progress(f"restored in {time.perf_counter() - started:.3f} s")
    return url


def _archive_database_name(create_script: str) -> str | None:
    """The (quoted as pg_dump quotes it) database name of a --create script."""
    match = re.search(r"^CREATE DATABASE (\S+) WITH ", create_script, re.M)
    return match.group(1) if match else None


def rehearse(options: RehearsalOptions, progress: Progress = lambda line: None) -> ChangeRecord:
    """Dump the source read-only, restore it into a disposable server, run the playbook there.

    Anything that stops before the playbook starts raises UsageError (exit 2): the source
    was only read, and no change record is written.
    """
    plan = load_plan(options.migrations_dir)  # refuse bad migrations, corrections or checks before a server
    catalog.check_exemptions(catalog.load(options.checks_dir), options.exemptions)
    if options.corrections_dir is not None:
        corrections.load(options.corrections_dir, plan)
    preflight.check_report_dir(options.report_dir)
    if options.smoke_dir is not None and not options.smoke_dir.is_dir():
        raise UsageError(f"--smoke-dir {options.smoke_dir} does not exist (or pass --no-smoke)")
    identity, owner = _source_identity(options.source_url)
    progress(f"source: {identity.describe()} (read-only)")
    if options.history is not None:  # before the dump: a source that cannot be a history is refused now
        history_store.check(options.history, identity)
    # The copy runs on the source's major when one is installed: a dump restores into the
    # same major or a newer one, never an older.
    installation, note = installation_for(
        identity.server_major, options.pg_ctl, options.pg_version, newer_only=True
    )
    if note:
        progress(note)
    with (
        DisposableServer(installation=installation) as server,
        tempfile.TemporaryDirectory(prefix="migration-gate-rehearsal-") as tmp,
    ):
        # The tools of the copy's installation: at least as new as the source, the copy's own.
        bindir = installation.bindir
        tools = client_tools.find_tools(installation.major, [bindir])
        source_dump = Path(tmp) / "source.backup"
        started = time.perf_counter()
        progress("dumping the source (read-only) …")
        try:
            size = backup.dump(options.source_url, source_dump, tools, progress, read_only=True)
        except client_tools.ClientToolFailed as exc:
            raise UsageError(f"cannot dump the source: {exc}") from None
        dump_seconds = time.perf_counter() - started
        roles = copy_roles(options.source_url, identity.database, tools, server)
        name = (
            identity.database if identity.database not in RESERVED_NAMES else f"rehearsal_{identity.database}"
        )
        started = time.perf_counter()
        url = restore_copy(source_dump, name, owner, tools, server, progress)
        adopted = []
        if options.baseline is not None:
            adopted = baseline.baseline(
                url,
                plan,
                options.baseline,
                pg_ctl=str(installation.pg_ctl),
                pg_version=installation.major,
                progress=progress,
            )
        rehearsal = {
            "source": identity.describe(),
            "source_dump_bytes": size,
            "source_dump_seconds": round(dump_seconds, 3),
            "roles_copied": f"{roles} statement(s) from pg_dumpall --roles-only --no-role-passwords",
            "copy_restore_seconds": round(time.perf_counter() - started, 3),
            "disposable_server": f"{installation.describe()} on 127.0.0.1:{server.port}, database {name}, as {SUPERUSER}",
            "disposable_server_major": note or f"the source's own, PostgreSQL {installation.major}",
            "note": "the backup below was taken from the disposable copy and is gone with it",
            "baseline": [m.file_name for m in adopted],
        }
        smoke = None
        if options.smoke_dir is not None:
            from migration_gate.operations.smoke_step import SmokeStep

            smoke = SmokeStep(options.smoke_dir)
        run_options = preflight.PlaybookOptions(
            database_url=url,
            backup_path=Path(tmp) / "rehearsal.backup",
            report_dir=options.report_dir,
            migrations_dir=options.migrations_dir,
            checks_dir=options.checks_dir,
            assume_yes=True,
            smoke=smoke,
            smoke_skipped_because="--no-smoke",
            prefer_bindirs=(bindir,),
            command="rehearse",
            allowed_grantees=options.allowed_grantees,
            corrections_dir=options.corrections_dir,
            accept_drift=options.accept_drift,
            reference=Reference(server=server),  # schema_drift's build beside the copy: no second server
            exemptions=options.exemptions,
            history=options.history,
            # The copy is gone with its server: the run belongs to the source's series, as a disposable copy.
            history_target=replace(Target.of(identity, dsn.describe(options.source_url)), mode=DISPOSABLE),
        )
        return playbook.run(run_options, progress, confirm=lambda question: True, rehearsal=rehearsal)
