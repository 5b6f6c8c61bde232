"""A disposable PostgreSQL server, started through pytest-postgresql's executor.

Which PostgreSQL it runs is ``migration_gate.core.installations``' choice. PostgreSQL
refuses to run as root, and CI and most containers run as root: there the server runs as
an unprivileged OS user through ``runuser`` (``MIGRATION_GATE_PG_OS_USER``, else
``postgres`` when it exists, else ``nobody``; none is ever created), from a directory that
user can enter; an ordinary user runs it directly.

A started server is watched by a sentinel process (``server_sentinel``): if the process
that started it dies without stopping it (SIGKILL, a cancelled CI job), the sentinel shuts
the server down and removes its files, so no PostgreSQL outlives its gate.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import port_for
import psycopg
from mirakuru import base as mirakuru_base
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor

from migration_gate.core import dsn, server_sentinel, settings
from migration_gate.core.cluster_template import ClusterTemplate
from migration_gate.core.errors import UsageError
from migration_gate.core.installations import Installation, find_installation, runnable_installation

# mirakuru's exit hook kills every process whose mirakuru_uuid *contains* the exiting
# process's pid (a substring test, not a prefix): any Python on the machine that exits with
# pid 462 kills a server whose marker reads "32715:…426462…", someone else's. Our servers
# are stopped by whoever started them (stop(), the fixtures' finally, __exit__).
atexit.unregister(mirakuru_base.cleanup_subprocesses)

SUPERUSER = "postgres"
SERVER_SETTINGS = (
    # Throwaway data: durability buys nothing here, and it costs the gate seconds.
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=100 -c shared_buffers=256MB -c maintenance_work_mem=256MB -c work_mem=32MB "
    "-c max_wal_size=4GB -c checkpoint_timeout=30min"
)
OS_USER_ENV = settings.env("pg_os_user")
# What initdb is given (by pytest-postgresql's executor, and ours): part of a cluster template's key.
INITDB_OPTIONS = f"--username={SUPERUSER} --auth=trust --no-sync"
# A random port can be taken between its choice and the server's bind (another gate on the
# same machine, another xdist worker): a new one is chosen this many times.
PORT_ATTEMPTS = 5
# Run as a script of its own (standard library only) by each started server: see server_sentinel.
SENTINEL = Path(server_sentinel.__file__)
# Tried in this order when OS_USER_ENV is unset: the distributions' server user, then the
# user every Unix has for processes that must own nothing else.
OS_USER_FALLBACKS = ("postgres", "nobody")


def server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    chosen = os.environ.get(OS_USER_ENV) or None
    for name in (chosen,) if chosen else OS_USER_FALLBACKS:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if user.pw_uid == 0:
            raise UsageError(
                f"{OS_USER_ENV}={name}: PostgreSQL refuses to run as root; name an unprivileged user"
            )
        return user
    if chosen:
        raise UsageError(f"{OS_USER_ENV}={chosen}: no such OS user to run PostgreSQL as")
    raise UsageError(
        "running as root, and neither a 'postgres' nor a 'nobody' OS user exists to run PostgreSQL as: "
        f"set {OS_USER_ENV} to an unprivileged user"
    )


def as_server_user(command: list[str], user: pwd.struct_passwd | None) -> list[str]:
    """``command`` run as ``user`` (through runuser, or setpriv); unchanged when ``user`` is None."""
    if user is None:
        return command
    runner = shutil.which("runuser") or shutil.which("setpriv")
    if runner is None:
        raise UsageError(
            "running as root needs runuser or setpriv (util-linux) to start PostgreSQL as another user"
        )
    if runner.endswith("runuser"):
        return [runner, "-u", user.pw_name, "--", *command]
    return [runner, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *command]


def _drop_privileges_wrapper(directory: Path, pg_ctl: Path, user: pwd.struct_passwd, cwd: Path) -> Path:
    """A pg_ctl that runs as ``user`` from ``cwd``: pytest-postgresql's executor calls it like the real one.

    From a directory the user cannot enter (root's home, a mode-700 checkout), PostgreSQL 15's
    tools say 'could not change directory' on stderr at every start.
    """
    command = " ".join(f'"{part}"' for part in as_server_user([str(pg_ctl)], user))
    wrapper = directory / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\ncd "{cwd}" || exit 1\nexec {command} "$@"\n')
    wrapper.chmod(stat.S_IRWXU)
    return wrapper


class _Executor(PostgreSQLExecutor):
    """pytest-postgresql's executor, with initdb told not to fsync, and its cluster a template's copy.

    Throwaway data, as the server's own fsync=off says: initdb's final sync of every file
    was up to half of a disposable server's start on a busy disk (schema_drift starts one).
    The first server of an installation and OS user keeps its fresh cluster as a template
    (``cluster_template``); every later one copies it instead of running initdb again.
    """

    template: ClusterTemplate | None = None

    def _build_initdb_command(self, initdb_options: list[str], pgdata: str | None = None) -> list[str]:
        return list(super()._build_initdb_command([*initdb_options, "--no-sync"], pgdata))

    def _run_initdb(self, command: list[str]) -> None:
        template = self.template
        if template is not None and not template.ready():

            def initdb(pgdata: Path) -> None:
                at = command.index("--pgdata") + 1
                super(_Executor, self)._run_initdb([*command[:at], str(pgdata), *command[at + 1 :]])

            with contextlib.suppress(OSError, subprocess.SubprocessError):  # then initdb as ever, below
                template.build(initdb)
        if template is not None and template.ready():
            template.copy_to(Path(self.datadir))
        else:
            super()._run_initdb(command)


class _PortTaken(Exception):
    """The port chosen was in use by the time the server tried to bind it."""


class DisposableServer:
    """A PostgreSQL cluster in a temporary directory, gone when stopped."""

    def __init__(
        self,
        pg_ctl: str | None = None,
        port: int | None = None,
        *,
        pg_version: object = None,
        installation: Installation | None = None,
    ) -> None:
        self.installation = installation or find_installation(pg_ctl, pg_version)
        user = server_os_user()
        # The binaries the server's OS user runs: a staged copy when it cannot reach the install.
        runnable = runnable_installation(self.installation, user)
        self.pg_ctl = runnable.pg_ctl
        self.port = port or port_for.select_random()
        self.base = Path(tempfile.mkdtemp(prefix="migration-gate-"))
        executable = self.pg_ctl
        if user is not None:
            os.chown(self.base, user.pw_uid, user.pw_gid)
            # The wrapper lives apart from the data, readable by root only.
            wrapper_dir = Path(tempfile.mkdtemp(prefix="migration-gate-bin-"))
            executable = _drop_privileges_wrapper(wrapper_dir, self.pg_ctl, user, self.base)
            self._wrapper_dir: Path | None = wrapper_dir
        else:
            self._wrapper_dir = None
        self._executable = executable
        self._port_chosen = port is not None
        self._sentinel: subprocess.Popen[bytes] | None = None
        self.executor = self._executor()
        self.started = False

    def _executor(self) -> PostgreSQLExecutor:
        executor = _Executor(
            executable=str(self._executable),
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
        # pg_ctl's own complaints ("could not start server") belong in our error, not on stderr.
        executor._stderr = subprocess.PIPE
        owner = server_os_user()
        uid, gid = (owner.pw_uid, owner.pw_gid) if owner is not None else (os.geteuid(), os.getegid())
        executor.template = ClusterTemplate.for_server(
            self.installation.bindir, self.installation.version, INITDB_OPTIONS, uid, gid
        )
        return executor

    def start(self) -> DisposableServer:
        """Start it, on another random port when the one chosen was taken before the server bound it."""
        self._watch()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
                break
            except _PortTaken:
                if self._port_chosen or attempt == PORT_ATTEMPTS:
                    self.stop()
                    raise UsageError(
                        f"could not start the disposable PostgreSQL: port {self.port} is taken"
                    ) from None
                # The stale executor removes its data directory when collected: remove it now, and
                # let the new one initialise its own, rather than have it vanish under a running server.
                stale = self.executor
                self.port = port_for.select_random()
                self.executor = self._executor()
                stale.clean_directory()
                del stale
            except UsageError:
                self.stop()
                raise
            except Exception as exc:
                log = self._log_tail()
                self.stop()
                raise UsageError(
                    f"could not start the disposable PostgreSQL ({type(exc).__name__}): {log}"
                ) from None
        self.started = True
        self._wait_until_accepting()
        return self

    def _start_once(self) -> None:
        """pg_ctl start -w, waited for: the port answering proves nothing, another server may hold it.

        mirakuru returns as soon as something accepts on the port; only pg_ctl's exit status and
        our own postmaster.pid say that the server there is this one.
        """
        try:
            self.executor.start()
        except AlreadyRunning:
            raise _PortTaken from None
        except ProcessExitedWithError as exc:
            self._failed(exc.exit_code, "")
        process = self.executor.process
        assert process is not None
        try:
            _, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            raise UsageError(
                "could not start the disposable PostgreSQL: pg_ctl did not return in 90 s"
            ) from None
        if process.returncode != 0:
            self._failed(process.returncode, stderr or "")
        if self._postmaster_pid() is None or self._postmaster_port() != self.port:
            raise UsageError(
                f"could not start the disposable PostgreSQL: pg_ctl returned but no server of ours "
                f"listens on port {self.port}: {self._log_tail()}"
            )

    def _failed(self, exit_code: int | None, stderr: str) -> NoReturn:
        log = self._log_text()
        if "Address already in use" in log or "could not bind" in log:
            raise _PortTaken
        complaint = stderr.strip().splitlines()
        raise UsageError(
            "could not start the disposable PostgreSQL: "
            f"{self._log_tail()} ({complaint[0] if complaint else f'pg_ctl exit {exit_code}'})"
        )

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

    def _log_text(self) -> str:
        try:
            return (self.base / "postgresql.log").read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        if not (self.base / "postgresql.log").exists():
            return "no server log"
        lines = self._log_text().strip().splitlines()
        return lines[-1] if lines else "empty server log"

    def _postmaster_port(self) -> int | None:
        """The port in our postmaster.pid (its fourth line)."""
        try:
            lines = (self.base / "data" / "postmaster.pid").read_text().split("\n")
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

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
        self._release()

    def _watch(self) -> None:
        """A sentinel that stops the server and removes its files if this process dies without stop().

        See ``server_sentinel``: it holds the read end of a pipe only this process writes to.
        """
        if self._sentinel is not None:
            return
        self._sentinel = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SENTINEL), str(self.base)]
            + ([str(self._wrapper_dir)] if self._wrapper_dir is not None else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _release(self) -> None:
        """stop() did the sentinel's work: tell it so, and wait for it to leave."""
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is None or sentinel.stdin is None:
            return
        with contextlib.suppress(OSError):
            sentinel.stdin.write(server_sentinel.STOPPED)
            sentinel.stdin.close()
        try:
            sentinel.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sentinel.kill()
            sentinel.wait()

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

    @property
    def version(self) -> str:
        return self.installation.version

    @property
    def major(self) -> int:
        return self.installation.major

    def binary(self, name: str) -> str:
        """A program of the server's own installation: pg_dump, pg_restore and psql of its version."""
        return str(self.installation.binary(name))

    def __repr__(self) -> str:
        return f"<disposable PostgreSQL {self.version} on 127.0.0.1:{self.port}>"

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
        """Drop ``name``, ending whatever sessions are still connected to it."""
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @contextlib.contextmanager
    def temporary_database(self, prefix: str, template: str | None = None) -> Iterator[str]:
        """A new database (empty, or a copy of ``template``) for the block, its URL; dropped on exit.

        Dropped whatever happened in the block, sessions left open included. The name is
        ``prefix`` and a random suffix: two blocks at once, or one after a crash, never meet.
        """
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        url = self.create_database(name, template)
        try:
            yield url
        finally:
            self.drop_database(name)
