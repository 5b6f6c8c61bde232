"""The window's edges: ``--before-window`` and ``--after-window`` commands (runbook 2.1 and 7; docs/window.md).

The runbook puts the application into maintenance mode before the window and reactivates
it afterwards. The playbook runs each as a shell command: the before command after the
preflight and ahead of the backup (a failure stops the run there, nothing changed), the
after command at the end whatever happened, once the change record holds the outcome.
Each runs in a session of its own (a Ctrl-C on the terminal is the playbook's to handle,
and a timeout stops every process the command started), with its output kept in a
temporary file, of which the record keeps the tail.

Environment, besides the playbook's own: ``MIGRATION_GATE_RUN_ID``,
``MIGRATION_GATE_TARGET`` (``user@host:port/dbname``, never a password) and, for the
after command, ``MIGRATION_GATE_OUTCOME`` and ``MIGRATION_GATE_RECORD`` (report.json).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from typing import IO

from migration_gate.operations.report import CallbackRecord

BEFORE_WINDOW = "before_window"
AFTER_WINDOW = "after_window"
FLAGS = {BEFORE_WINDOW: "--before-window", AFTER_WINDOW: "--after-window"}
# The after command failed while the database's outcome was a success: the application may
# still be in maintenance mode (docs/window.md). A stopped or interrupted run keeps its own code.
EXIT_AFTER_WINDOW_FAILED = 3

TAIL_LINES = 20
TAIL_BYTES = 16_384
# A command asked to stop (SIGTERM to its process group) gets this long before SIGKILL.
GRACE_SECONDS = 5.0


def environment(run_id: str, target: str, **extra: str) -> dict[str, str]:
    """The playbook's environment, with the run and the target (and, after, the outcome and record)."""
    names = {f"MIGRATION_GATE_{key.upper()}": value for key, value in extra.items()}
    return {**os.environ, "MIGRATION_GATE_RUN_ID": run_id, "MIGRATION_GATE_TARGET": target, **names}


def _tail(output: IO[bytes]) -> str:
    output.seek(0, os.SEEK_END)
    size = output.tell()
    output.seek(max(0, size - TAIL_BYTES))
    lines = output.read().decode("utf-8", errors="replace").rstrip().splitlines()
    return "\n".join(lines[-TAIL_LINES:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's whole process group, then SIGKILL after a grace period."""
    for signum, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class WindowCommand:
    """One window command; ``result`` holds how it ended, even when a signal stopped the wait for it."""

    def __init__(self, name: str, command: str, timeout: float) -> None:
        self.name, self.command, self.timeout = name, command, timeout
        self.result: CallbackRecord | None = None

    def run(self, env: dict[str, str]) -> CallbackRecord:
        """Run it through the shell and wait, at most ``timeout`` seconds; KeyboardInterrupt stops it too."""
        self.result = result = CallbackRecord(self.command)
        started = time.perf_counter()
        with tempfile.TemporaryFile(prefix="migration-gate-window-") as output:
            try:
                process = subprocess.Popen(
                    self.command, shell=True, env=env, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                result.status, result.output_tail = "could not start", str(exc)
                return result
            try:
                result.exit_status = process.wait(timeout=self.timeout)
                result.status = "ok" if result.exit_status == 0 else "failed"
            except subprocess.TimeoutExpired:
                _stop(process)
                result.status, result.exit_status = "timed out", process.returncode
            except KeyboardInterrupt as interrupt:
                _stop(process)
                result.status = f"interrupted by {interrupt or 'SIGINT'}"
                result.exit_status = process.returncode
                raise
            finally:
                result.seconds = round(time.perf_counter() - started, 3)
                result.output_tail = result.output_tail or _tail(output)
        return result
