"""A disposable PostgreSQL server, started through pytest-postgresql's executor.

PostgreSQL refuses to run as root, and CI and most containers run as root: there the
server runs as an unprivileged OS user (``postgres`` by default) through ``runuser``;
an ordinary user runs it directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import port_for
import psycopg
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor

from migration_gate.core import dsn
from migration_gate.core.errors import UsageError

SUPERUSER = "postgres"
SERVER_SETTINGS = (
    # Throwaway data: durability buys nothing here, and it costs the gate seconds.
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=100 -c shared_buffers=256MB -c maintenance_work_mem=256MB -c work_mem=32MB "
    "-c max_wal_size=4GB -c checkpoint_timeout=30min"
)
# Where distributions put the server binaries when they are not on PATH.
SEARCH_GLOBS = ("/usr/lib/postgresql/*/bin/pg_ctl",)
INSTALL_HINT = (
    "PostgreSQL server binaries (pg_ctl, initdb, postgres) not found on PATH or under "
    "/usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) or set MIGRATION_GATE_PG_CTL to pg_ctl's path"
)


def find_pg_ctl(explicit: str | None = None) -> Path:
    """``pg_ctl`` from an explicit path, MIGRATION_GATE_PG_CTL, PATH, or the newest Debian install."""
    debian = sorted(
        (path for pattern in SEARCH_GLOBS for path in glob.glob(pattern)),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    candidates = [explicit, os.environ.get("MIGRATION_GATE_PG_CTL"), shutil.which("pg_ctl"), *debian]
    for candidate in candidates:
        if candidate is None:
            continue
        bindir = Path(candidate).parent
        if os.access(candidate, os.X_OK) and (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return Path(candidate)
    raise UsageError(INSTALL_HINT)


def _server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MIGRATION_GATE_PG_OS_USER", "postgres")
    for candidate in (name, "nobody"):
        try:
            return pwd.getpwnam(candidate)
        except KeyError:
            continue
    raise UsageError(
        f"running as root, and no unprivileged OS user {name!r} to run PostgreSQL as: create one"
    )


def _drop_privileges_wrapper(base: Path, pg_ctl: Path, user: pwd.struct_passwd) -> Path:
    """A pg_ctl that runs as ``user``: pytest-postgresql's executor calls it like the real one."""
    runner = shutil.which("runuser") or shutil.which("setpriv")
    if runner is None:
        raise UsageError(
            "running as root needs runuser or setpriv (util-linux) to start PostgreSQL as another user"
        )
    if runner.endswith("runuser"):
        command = f'exec "{runner}" -u "{user.pw_name}" -- "{pg_ctl}" "$@"'
    else:
        command = (
            f'exec "{runner}" --reuid={user.pw_uid} --regid={user.pw_gid} --init-groups -- "{pg_ctl}" "$@"'
        )
    wrapper = base / "pg_ctl"
    wrapper.write_text(f"#!/bin/sh\n{command}\n")
    wrapper.chmod(stat.S_IRWXU)
    return wrapper


class DisposableServer:
    """A PostgreSQL cluster in a temporary directory, gone when stopped."""

    def __init__(self, pg_ctl: str | None = None, port: int | None = None) -> None:
        self.pg_ctl = find_pg_ctl(pg_ctl)
        self.port = port or port_for.select_random()
        self.base = Path(tempfile.mkdtemp(prefix="migration-gate-"))
        self.bindir = self.pg_ctl.parent
        user = _server_os_user()
        executable = self.pg_ctl
        if user is not None:
            os.chown(self.base, user.pw_uid, user.pw_gid)
            # The wrapper lives beside the data, readable by root only.
            wrapper_dir = Path(tempfile.mkdtemp(prefix="migration-gate-bin-"))
            executable = _drop_privileges_wrapper(wrapper_dir, self.pg_ctl, user)
            self._wrapper_dir: Path | None = wrapper_dir
        else:
            self._wrapper_dir = None
        self.executor = PostgreSQLExecutor(
            executable=str(executable),
            host="127.0.0.1",
            port=self.port,
            datadir=str(self.base / "data"),
            unixsocketdir=str(self.base),
            logfile=str(self.base / "postgresql.log"),
            startparams="-w -t 60",
            dbname="postgres",
            user=SUPERUSER,
            postgres_options=SERVER_SETTINGS,
        )
        self.started = False

    def start(self) -> DisposableServer:
        try:
            self.executor.start()
        except (subprocess.CalledProcessError, OSError, Exception) as exc:
            log = self._log_tail()
            self.stop()
            raise UsageError(
                f"could not start the disposable PostgreSQL ({type(exc).__name__}): {log}"
            ) from None
        self.started = True
        self._wait_until_accepting()
        return self

    def _wait_until_accepting(self, timeout: float = 60.0) -> None:
        """The port opens before recovery ends ("the database system is starting up"): wait for a session."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise UsageError(f"the disposable PostgreSQL did not accept connections: {exc}") from None
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            lines = (self.base / "postgresql.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no server log"
        return lines[-1] if lines else "empty server log"

    def stop(self) -> None:
        """Stop the server, whatever state start() left it in, then delete its files."""
        if self.started or self._postmaster_pid() is not None:
            # Stopping a throwaway server must not mask the error that brought us here.
            with contextlib.suppress(Exception):
                self.executor.stop()
            self.started = False
        self._kill_leftover_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)
        if self._wrapper_dir is not None:
            shutil.rmtree(self._wrapper_dir, ignore_errors=True)

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.base / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _kill_leftover_postmaster(self, timeout: float = 10.0) -> None:
        """If pg_ctl could not stop it, an immediate shutdown: deleting its data under it would orphan it."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while self._postmaster_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> DisposableServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def binary(self, name: str) -> str:
        """A client binary of the same version as the server (pg_dump, pg_restore, psql)."""
        # pg_ctl may be a symlink (/usr/local/bin/pg_ctl → /usr/lib/postgresql/15/bin/pg_ctl)
        # in a directory that holds no client tools: look beside its target too.
        for bindir in (self.bindir, self.pg_ctl.resolve().parent):
            if (bindir / name).exists():
                return str(bindir / name)
        return str(self.bindir / name)

    def admin(self) -> psycopg.Connection:
        return dsn.connect(self.url())

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name`` (empty, or a copy of ``template``) and return its URL."""
        with self.admin() as conn:
            if template:
                # CREATE DATABASE ... TEMPLATE needs the template to have no other sessions.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (template,),
                )
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
