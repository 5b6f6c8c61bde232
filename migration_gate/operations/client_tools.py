"""pg_dump, pg_restore and psql of the server's major, and how they are run.

Client tools are found beside the server when that is known (the disposable server's own
binaries), then in ``MIGRATION_GATE_PG_BINDIR``, the installations of the server's major
found here (the system's, PyPI's: ``migration_gate.core.installations``), the usual
per-version install directories and ``PATH``; a tool whose major version differs from the
server's is refused, since a pg_dump older than the server cannot dump it and a newer one
writes archives an older pg_restore cannot read.

A password never reaches a command line (visible in ``ps``): the tools get the URL's
other parts as a conninfo and the password in ``PGPASSWORD``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from psycopg.conninfo import make_conninfo

from migration_gate.core import dsn, installations, settings
from migration_gate.core.errors import GateError, UsageError

Progress = Callable[[str], None]

CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")
BINDIR_ENV = settings.env("pg_bindir")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<major>\d+)(?:\.(?P<minor>\d+))?")


class ClientToolFailed(GateError):
    """pg_dump, pg_restore or psql failed; the message is their error line, without a password."""


@dataclass(frozen=True)
class ClientTools:
    """pg_dump, pg_restore and psql of one PostgreSQL major version."""

    pg_dump: str
    pg_restore: str
    psql: str
    major: int
    version: str


def tool_version(path: str) -> tuple[int, str] | None:
    """``(15, "15.18")`` from ``pg_dump --version``; None when it does not run."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if not match:
        return None
    version = match["major"] + (f".{match['minor']}" if match["minor"] else "")
    return int(match["major"]), version


def _candidate_dirs(major: int, prefer: Iterable[Path]) -> list[Path]:
    dirs = [Path(p) for p in prefer]
    if os.environ.get(BINDIR_ENV):
        dirs.append(Path(os.environ[BINDIR_ENV]))
    dirs += [found.bindir for found in installations.installations() if found.major == major]
    dirs += [
        Path(f"/usr/lib/postgresql/{major}/bin"),  # Debian, Ubuntu
        Path(f"/usr/pgsql-{major}/bin"),  # RHEL, Fedora (PGDG)
        Path(f"/opt/homebrew/opt/postgresql@{major}/bin"),
        Path(f"/usr/local/opt/postgresql@{major}/bin"),
    ]
    return dirs


def find_tools(server_major: int, prefer: Iterable[Path] = ()) -> ClientTools:
    """The client tools for a server of ``server_major``; refused (exit 2) when missing or of another version.

    A rehearsal dumps its source with the tools of its disposable server, of the same major
    or a newer one: it asks for that server's major.
    """
    found: dict[str, tuple[str, int, str]] = {}
    dirs = _candidate_dirs(server_major, prefer)
    for name in CLIENT_TOOLS:
        candidates = [str(d / name) for d in dirs]
        on_path = shutil.which(name)
        if on_path:
            candidates.append(on_path)
        rejected: list[str] = []
        for candidate in dict.fromkeys(candidates):
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                continue
            version = tool_version(candidate)
            if version is None:
                rejected.append(f"{candidate} does not run")
                continue
            major, text = version
            if major == server_major:
                found[name] = (candidate, major, text)
                break
            rejected.append(f"{candidate} is version {text}")
        if name not in found:
            why = "; ".join(rejected) if rejected else "not found on PATH or in the usual directories"
            raise UsageError(
                f"{name} for PostgreSQL {server_major} is needed ({why}): install the PostgreSQL "
                f"{server_major} client tools (Debian: apt-get install postgresql-client-{server_major}) "
                f"or set {BINDIR_ENV} to their directory"
            )
    dump_path, major, text = found["pg_dump"]
    return ClientTools(dump_path, found["pg_restore"][0], found["psql"][0], major, text)


def tool_connection(url: str, read_only: bool = False) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the environment carrying it, for pg_dump and friends."""
    parts = dsn.parse(url)
    password = parts.pop("password", None)
    if read_only:
        parts["options"] = f"{parts.get('options', '')} -c default_transaction_read_only=on".strip()
    env = dict(os.environ)  # without a password in the URL, libpq's PGPASSWORD or ~/.pgpass still apply
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**parts), env


def pump_stderr(
    stream: IO[str], sink: list[str], progress: Progress, show: Callable[[str], str | None]
) -> None:
    for raw in stream:
        line = raw.rstrip("\n")
        sink.append(line)
        shown = show(line)
        if shown:
            progress(shown)


def as_text(stream: IO[bytes]) -> IO[str]:
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")


def silent(line: str) -> None:
    return None


def error_line(lines: Sequence[str], url: str, fallback: str) -> str:
    """The tool's own error line (the last one naming an error), without a password."""
    for line in reversed(lines):
        if re.search(r"\b(error|FATAL|ERROR|could not|invalid|unexpected|failed)\b", line, re.I):
            return dsn.scrub(" ".join(line.split()), url)
    for line in reversed(lines):
        if line.strip():
            return dsn.scrub(" ".join(line.split()), url)
    return fallback
