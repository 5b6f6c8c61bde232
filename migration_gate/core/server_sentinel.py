"""Stops a disposable server whose owner died without stopping it, and removes its files.

``DisposableServer.start`` runs this file as a process of its own (``python -I -S
server_sentinel.py BASE [WRAPPER_DIR]``, in a session of its own, so that a Ctrl-C or a
signal to the owner's process group does not reach it) and keeps the write end of a pipe
to its standard input. A clean ``stop()`` writes ``stopped`` and closes it: the sentinel
leaves. When the owner dies any other way (SIGKILL, an out-of-memory kill, a CI job
cancelled), the operating system closes the pipe: the sentinel reads end of file, shuts
the postmaster of ``BASE/data`` down (SIGQUIT, an immediate shutdown, then SIGKILL if it
lingers) and removes ``BASE`` and the staged binaries. Standard library only: it starts in
a few milliseconds and imports nothing of the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

STOPPED = b"stopped"
SHUTDOWN_WAIT = 10.0


def postmaster_pid(base: Path) -> int | None:
    """The running postmaster of ``base/data``, from its postmaster.pid, or None."""
    try:
        pid = int((base / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def shut_down(base: Path) -> None:
    pid = postmaster_pid(base)
    if pid is None:
        return
    for sig, wait in ((signal.SIGQUIT, SHUTDOWN_WAIT), (signal.SIGKILL, SHUTDOWN_WAIT)):
        try:
            os.kill(pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while postmaster_pid(base) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if postmaster_pid(base) is None:
            return


def main(argv: list[str]) -> int:
    base, *wrapper = (Path(arg) for arg in argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    said = sys.stdin.buffer.read()  # until the owner closes the pipe, or dies
    if said.strip() == STOPPED:
        return 0
    shut_down(base)
    for directory in (base, *wrapper):
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
