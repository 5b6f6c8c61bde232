"""The gate against its floor: the same migrations applied by hand and by the gate, from a cold start.

The floor starts a server with ``pg_ctl`` (same settings as the disposable server) and
applies 001→008 with ``psql -v ON_ERROR_STOP=1 -f`` for each file; the gate starts
``DisposableServer`` and applies 001→008 with this project's runner (ledger, checksums,
advisory lock, one transaction per file). Both on an empty database, median of several runs.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import port_for

from migration_gate.core import runner
from migration_gate.core.errors import UsageError
from migration_gate.core.installations import Installation, runnable_installation
from migration_gate.core.plan import Migration
from migration_gate.core.server import (
    SERVER_SETTINGS,
    SUPERUSER,
    DisposableServer,
    as_server_user,
    server_os_user,
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GateRun:
    floor_s: float
    gate_s: float

    @property
    def ratio(self) -> float:
        return self.gate_s / self.floor_s

    def as_json(self) -> dict[str, Any]:
        return {
            "floor_s": round(self.floor_s, 4),
            "gate_s": round(self.gate_s, 4),
            "ratio": round(self.ratio, 4),
        }


def floor_once(installation: Installation, plan: list[Migration]) -> float:
    """Seconds to start a server with pg_ctl and apply every file with psql."""
    base = Path(tempfile.mkdtemp(prefix="migration-gate-floor-"))
    user = server_os_user()
    if user is not None:
        shutil.chown(base, user.pw_uid, user.pw_gid)
    pg_ctl = runnable_installation(installation, user).pg_ctl
    port = port_for.select_random()
    data = base / "data"
    psql = str(installation.binary("psql"))
    started = time.perf_counter()
    try:
        # From a directory the server's OS user can enter, like the disposable server's wrapper.
        subprocess.run(
            as_server_user(
                [str(pg_ctl), "initdb", "-s", "-D", str(data), "-o", f"--username={SUPERUSER} --auth=trust"],
                user,
            ),
            check=True,
            capture_output=True,
            cwd=base,
        )
        options = f"-F -p {port} -c unix_socket_directories='{base}' {SERVER_SETTINGS}"
        subprocess.run(
            as_server_user(
                [str(pg_ctl), "start", "-w", "-s", "-D", str(data), "-o", options, "-l", str(base / "log")],
                user,
            ),
            check=True,
            capture_output=True,
            cwd=base,
        )
        files = [arg for migration in plan for arg in ("-f", str(migration.path))]
        subprocess.run(
            [
                psql,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                *files,
            ],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise UsageError(f"the floor run failed: {detail[-1] if detail else exc}") from None
    finally:
        subprocess.run(
            as_server_user([str(pg_ctl), "stop", "-s", "-m", "immediate", "-D", str(data)], user),
            check=False,
            capture_output=True,
            cwd=base,
        )
        shutil.rmtree(base, ignore_errors=True)


def gate_once(installation: Installation, plan: list[Migration]) -> float:
    """Seconds to start the DisposableServer and apply every file with the runner."""
    started = time.perf_counter()
    server = DisposableServer(installation=installation).start()
    try:
        runner.migrate(server.url(), plan)
        return time.perf_counter() - started
    finally:
        server.stop()


def run_gate(installation: Installation, plan: list[Migration], runs: int, progress: Progress) -> GateRun:
    floors, gates = [], []
    for attempt in range(1, runs + 1):
        # Interleaved, so that a burst of load elsewhere on the machine hits both alike.
        floors.append(floor_once(installation, plan))
        gates.append(gate_once(installation, plan))
        progress(f"gate run {attempt}/{runs}: floor {floors[-1]:.3f} s, gate {gates[-1]:.3f} s")
    return GateRun(statistics.median(floors), statistics.median(gates))
