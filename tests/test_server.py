"""The disposable server: found, started as an unprivileged user under root, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from migration_gate.core import dsn, server
from migration_gate.core.errors import UsageError
from migration_gate.core.server import DisposableServer


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


def test_without_server_binaries_the_error_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "SEARCH_GLOBS", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("MIGRATION_GATE_PG_CTL", raising=False)
    with pytest.raises(UsageError, match=r"apt-get install postgresql"):
        server.find_pg_ctl()


def test_pytest_without_server_binaries_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PATH": "/nonexistent",
        "MIGRATION_GATE_PG_CTL": str(tmp_path / "missing" / "pg_ctl"),
    }
    # Only the Debian location is still searched: hide it by pointing the glob nowhere.
    code = textwrap.dedent(
        """
        import sys, pytest
        import migration_gate.core.server as server
        server.SEARCH_GLOBS = ()
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(repo / "checks" / "test_gate.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "apt-get install postgresql" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


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


@pytest.mark.skipif(
    os.geteuid() != 0, reason="already running as an ordinary user: every other test covers it"
)
@pytest.mark.skipif(
    not SYSTEM_PYTHON.exists(),
    reason="no system python3 that an unprivileged user may run (this venv's is root's)",
)
def test_an_ordinary_user_runs_the_server_directly() -> None:
    """Laptops: no runuser wrapper, the server runs as the user who started the gate."""
    repo = Path(__file__).resolve().parents[1]
    site_packages = next((repo / ".venv" / "lib").glob("python3*/site-packages"))
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
        ["runuser", "-u", "postgres", "--", str(SYSTEM_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{site_packages}:{repo}"},
        cwd="/tmp",
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    euid, server_uid, without_wrapper, answer = done.stdout.split()
    assert euid == server_uid != "0"
    assert without_wrapper == "True"
    assert answer == "1"
