"""The disposable server: found, started as an unprivileged user under root, never orphaned."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migration_gate.core import dsn, installations, server
from migration_gate.core.errors import UsageError
from migration_gate.core.server import DisposableServer
from tests.conftest import REPO, Run, run_pytest


def _postmaster_uid(disposable: DisposableServer) -> int:
    pid = int((disposable.base / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_the_server_never_runs_as_root(disposable_server: DisposableServer) -> None:
    uid = _postmaster_uid(disposable_server)
    assert uid != 0
    if os.geteuid() != 0:
        assert uid == os.geteuid(), "an ordinary user runs the server directly"


def test_it_listens_on_loopback_only(disposable_server: DisposableServer) -> None:
    with dsn.connect(disposable_server.url()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def _exists(disposable: DisposableServer, url: str) -> bool:
    with disposable.admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dsn.parse(url)["dbname"],))
        return found.fetchone() is not None


def test_a_temporary_database_is_dropped_when_its_block_raises_sessions_and_all(
    disposable_server: DisposableServer,
) -> None:
    with (
        pytest.raises(RuntimeError, match="the block failed"),
        disposable_server.temporary_database("t_janitor") as url,
    ):
        assert _exists(disposable_server, url)
        left_open = dsn.connect(url)  # a session the block forgot: the drop ends it
        raise RuntimeError("the block failed")
    assert not _exists(disposable_server, url)
    with pytest.raises(psycopg.OperationalError):
        left_open.execute("SELECT 1")
    left_open.close()


def test_temporary_databases_of_one_prefix_never_meet_and_copy_their_template(
    disposable_server: DisposableServer,
) -> None:
    with disposable_server.temporary_database("t_janitor") as first:
        with dsn.connect(first) as conn:
            conn.execute("CREATE TABLE kept (n int)")
        template = str(dsn.parse(first)["dbname"])
        with disposable_server.temporary_database("t_janitor", template=template) as second:
            assert second != first
            with dsn.connect(second) as conn:
                assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        assert not _exists(disposable_server, second)
        assert _exists(disposable_server, first)
    assert not _exists(disposable_server, first)


def _hide_every_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installations, "SEARCH_GLOBS", ())
    monkeypatch.setattr(installations, "PYPI_SERVERS", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv(installations.PG_CTL_ENV, raising=False)
    monkeypatch.delenv(installations.PG_VERSION_ENV, raising=False)


def test_without_server_binaries_the_error_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_every_server(monkeypatch)
    with pytest.raises(
        UsageError, match=r"pip install 'migration-gate\[server\]'.*apt-get install postgresql"
    ):
        installations.find_installation()


def _pytest_gate(*args: str, env: dict[str, str] | None = None) -> Run:
    """The gate's collection, on a machine without any PostgreSQL server installed."""
    return run_pytest("-q", "-p", "tests.hide_servers", "checks/test_gate.py", *args, env=env, timeout=120)


def test_pytest_without_server_binaries_stops_with_one_line_and_exit_2() -> None:
    unset = {name: "" for name in os.environ if name.startswith("MIGRATION_GATE_PG_")}
    done = _pytest_gate(env={**unset, "PATH": "/nonexistent"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "apt-get install postgresql" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_pg_ctl_that_is_not_a_server_is_refused_not_skipped(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "pg_ctl"
    done = _pytest_gate(f"--pg-ctl={missing}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--pg-ctl {missing}: not a PostgreSQL pg_ctl" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("value", ["eighteen", "18.1", "7"])
def test_a_pg_version_that_is_not_a_major_is_a_usage_error(value: str) -> None:
    done = _pytest_gate(env={installations.PG_VERSION_ENV: value})
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"--pg-version {value!r}: expected a PostgreSQL major version" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_every_major_found_can_be_chosen_and_the_header_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(installations.PG_CTL_ENV, raising=False)
    found = installations.installations()
    assert found, "make installs PyPI's server: at least one installation"
    for major in {i.major for i in found}:
        chosen = installations.find_installation(pg_version=major)
        assert chosen.major == major
        assert chosen.version.startswith(f"{major}.")
        for tool in ("pg_dump", "pg_restore", "psql"):
            assert chosen.binary(tool).exists(), f"{chosen}: no {tool} in its own bin directory"
    done = run_pytest("--co", "checks/test_gate.py", f"--pg-version={found[-1].major}", timeout=120)
    assert f"migration-gate: disposable PostgreSQL {found[-1].version} (" in done.stdout, done.stdout


def test_a_major_not_installed_is_refused_naming_what_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(installations.PG_CTL_ENV, raising=False)
    with pytest.raises(UsageError, match=r"no PostgreSQL 99 server found \(found: \d+\.\d+ \("):
        installations.find_installation(pg_version=99)


def test_pg_ctl_and_pg_version_that_disagree_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(installations.PG_CTL_ENV, raising=False)
    first = installations.installations()[0]
    with pytest.raises(
        UsageError, match=rf"is PostgreSQL {re.escape(first.version)}, and --pg-version asks for 99"
    ):
        installations.find_installation(str(first.pg_ctl), 99)


def test_a_copy_is_rebuilt_on_the_database_major_else_the_nearest_said_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(installations.PG_CTL_ENV, raising=False)
    monkeypatch.delenv(installations.PG_VERSION_ENV, raising=False)
    majors = sorted({i.major for i in installations.installations()})
    for major in majors:
        chosen, note = installations.installation_for(major)
        assert (chosen.major, note) == (major, None)
    older = majors[0] - 1
    chosen, note = installations.installation_for(older, newer_only=True)
    assert chosen.major == majors[0]
    assert note is not None and f"no PostgreSQL {older} server here" in note
    with pytest.raises(UsageError, match=r"no server here is at least that new"):
        installations.installation_for(majors[-1] + 1, newer_only=True)


def test_root_without_a_postgres_user_runs_the_server_as_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    monkeypatch.delenv(server.OS_USER_ENV, raising=False)
    monkeypatch.setattr(server, "OS_USER_FALLBACKS", ("no-such-user-here", "nobody"))
    with DisposableServer() as disposable:
        assert _postmaster_uid(disposable) == pwd.getpwnam("nobody").pw_uid


def test_an_os_user_named_but_missing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    monkeypatch.setenv(server.OS_USER_ENV, "no-such-user-here")
    with pytest.raises(UsageError, match=r"MIGRATION_GATE_PG_OS_USER=no-such-user-here: no such OS user"):
        server.server_os_user()


def _closed_directory(tmp_path: Path) -> Path:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    return closed


def test_a_pypi_server_the_os_user_cannot_reach_is_run_from_a_staged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    monkeypatch.delenv(installations.PG_VERSION_ENV, raising=False)  # this test's --pg-ctl decides
    pypi = [bindir for bindir, _ in installations.pypi_bindirs()]
    assert pypi, "make installs PyPI's server (the server extra)"
    pginstall = pypi[0].parent
    closed = _closed_directory(tmp_path) / "site-packages"
    package = closed / pginstall.parent.name
    shutil.copytree(pginstall, package / "pginstall", symlinks=True, ignore=shutil.ignore_patterns("include"))
    libs = pginstall.parent.with_name(pginstall.parent.name + ".libs")
    if libs.is_dir():
        shutil.copytree(libs, closed / libs.name, symlinks=True)
    with DisposableServer(str(package / "pginstall" / "bin" / "pg_ctl")) as disposable:
        assert not disposable.pg_ctl.is_relative_to(tmp_path), "the OS user cannot run it from there"
        assert disposable.installation.bindir == (package / "pginstall" / "bin").resolve()
        with dsn.connect(disposable.url()) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith(disposable.version)
    shutil.rmtree(disposable.pg_ctl.parents[3])  # the staged copy of this test's throwaway install


def test_nothing_reaches_stderr_from_a_directory_the_os_user_cannot_enter(tmp_path: Path) -> None:
    """PostgreSQL 15's tools print 'could not change directory' when started from one."""
    script = textwrap.dedent(
        """
        from migration_gate.core.server import DisposableServer
        with DisposableServer() as disposable:
            print(disposable.version)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=_closed_directory(tmp_path),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_sigterm_stops_the_server_and_removes_its_files(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from migration_gate.core.server import DisposableServer
        from migration_gate.core.signals import interrupt_on_signals
        interrupt_on_signals()
        with DisposableServer() as disposable:
            pid = open(disposable.base / "data" / "postmaster.pid").readline().strip()
            print(disposable.base, pid, flush=True)
            time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    base, pid = process.stdout.readline().split()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the postmaster outlived the gate"
    assert not Path(base).exists(), "the server's files were left behind"


def _gone(pid: str, base: str, within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while (Path(f"/proc/{pid}").exists() or Path(base).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists() and not Path(base).exists()


def test_a_server_whose_owner_is_killed_is_shut_down_and_its_files_removed() -> None:
    # SIGKILL leaves no handler to run: the sentinel, told nothing, stops the server. The
    # owner's child (here a sleep) inherits nothing that keeps the sentinel waiting.
    script = textwrap.dedent(
        """
        import subprocess, time
        from migration_gate.core.server import DisposableServer
        disposable = DisposableServer().start()
        child = subprocess.Popen(["sleep", "300"])
        pid = open(disposable.base / "data" / "postmaster.pid").readline().strip()
        print(disposable.base, pid, child.pid, flush=True)
        time.sleep(300)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    base, pid, child = owner.stdout.readline().split()
    try:
        assert Path(f"/proc/{pid}").exists() and Path(base).is_dir()
        owner.kill()
        owner.wait(timeout=10)
        assert _gone(pid, base), "the postmaster or its files outlived an owner killed with SIGKILL"
    finally:
        os.kill(int(child), signal.SIGKILL)


def test_a_clean_stop_leaves_no_sentinel_behind() -> None:
    disposable = DisposableServer().start()
    sentinel = disposable._sentinel
    assert sentinel is not None and sentinel.poll() is None, "a started server is watched"
    disposable.stop()
    assert sentinel.returncode == 0 and disposable._sentinel is None
    assert not disposable.base.exists()


def test_a_server_pg_ctl_could_not_stop_is_shut_down_before_its_files_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disposable = DisposableServer().start()
    pid = int((disposable.base / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def broken_stop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("pg_ctl stop failed")

    monkeypatch.setattr(disposable.executor, "stop", broken_stop)
    disposable.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not disposable.base.exists()


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory any user can enter (pytest's tmp_path is under a mode-700 /tmp/pytest-of-root)."""
    directory = Path(tempfile.mkdtemp(prefix="migration-gate-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _readable_copy_of_the_package(shared: Path) -> tuple[Path, Path]:
    """The package and this venv's site-packages where any user can read them (the checkout may be mode 700)."""
    site = shared / "site-packages"
    source = shared / "src"
    shutil.copytree(
        sysconfig.get_paths()["purelib"],  # this interpreter's: make's .venv, or a tox environment's
        site,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            "mypy", "mypyc", "*__mypyc*", "pip", "pygments", "pglast", "__pycache__"
        ),
    )
    shutil.copytree(
        REPO / "migration_gate", source / "migration_gate", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(["chmod", "-R", "a+rX", str(shared)], check=True)
    return site, source


@pytest.mark.skipif(
    os.geteuid() != 0, reason="already running as an ordinary user: every other test covers it"
)
@pytest.mark.skipif(
    not SYSTEM_PYTHON.exists(),
    reason="no system python3 that an unprivileged user may run (this venv's is root's)",
)
def test_an_ordinary_user_runs_the_server_directly(shared: Path) -> None:
    """Laptops: no runuser wrapper, the server runs as the user who started the gate."""
    user = server.server_os_user()
    assert user is not None
    site_packages, source = _readable_copy_of_the_package(shared)
    script = textwrap.dedent(
        """
        import os
        from migration_gate.core.server import DisposableServer
        from migration_gate.core import dsn
        with DisposableServer() as disposable:
            pid = int(open(disposable.base / "data" / "postmaster.pid").readline())
            uid = os.stat(f"/proc/{pid}").st_uid
            with dsn.connect(disposable.url()) as conn:
                answer = conn.execute("SELECT 1").fetchone()[0]
            print(os.geteuid(), uid, disposable._wrapper_dir is None, answer)
        """
    )
    done = subprocess.run(
        ["runuser", "-u", user.pw_name, "--", str(SYSTEM_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{site_packages}:{source}"},
        cwd="/tmp",
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    euid, server_uid, without_wrapper, answer = done.stdout.split()
    assert euid == server_uid != "0"
    assert without_wrapper == "True"
    assert answer == "1"


def _listening_socket() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_a_port_taken_before_the_server_binds_it_is_traded_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the choice of a random port and the bind, another process can take it.

    Something else answering on that port must not pass for our server: pg_ctl's exit status
    and our postmaster.pid decide, and a new port is chosen.
    """
    with _listening_socket() as taken:
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        real_select = server.port_for.select_random
        monkeypatch.setattr(server.port_for, "select_random", lambda: next(ports, None) or real_select())
        # The race itself: the port looked free when it was checked, the once before the start.
        real_check = server.PostgreSQLExecutor.pre_start_check
        checks: list[int] = []

        def raced_check(executor: server.PostgreSQLExecutor) -> bool:
            checks.append(executor.port)
            return False if len(checks) == 1 else real_check(executor)

        monkeypatch.setattr(server.PostgreSQLExecutor, "pre_start_check", raced_check)
        with DisposableServer() as disposable:
            assert checks[0] == taken_port
            assert disposable.port != taken_port
            with dsn.connect(disposable.url()) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
            assert row is not None
            assert Path(row[0]).resolve() == (disposable.base / "data").resolve()


def test_a_port_asked_for_and_taken_is_one_clear_error() -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} is taken"):
            DisposableServer(port=port).start()


def test_another_python_exiting_never_stops_our_server() -> None:
    """mirakuru's atexit hook kills every process whose marker *contains* the exiting pid: never one of ours.

    Here the child's pid is made to be the owner's, which the server's marker begins with;
    on a busy machine any exiting Python whose pid is a substring of it did the same.
    """
    script = (
        "import os, subprocess, sys, psycopg\n"
        "from migration_gate.core.server import DisposableServer\n"
        "with DisposableServer() as server:\n"
        "    child = f'import os, migration_gate.core.server; os.getpid = lambda: {os.getpid()}'\n"
        "    subprocess.run([sys.executable, '-c', child], check=True)\n"
        "    psycopg.connect(server.url(), connect_timeout=5).close()\n"
        "    print('alive')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr[-2000:]
