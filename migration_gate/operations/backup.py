"""The backup: ``pg_dump --format=custom`` in the background, and the schema scripts pg_dump writes."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from migration_gate.core.errors import UsageError
from migration_gate.operations.client_tools import (
    ClientToolFailed,
    ClientTools,
    error_line,
    pump_stderr,
    tool_connection,
)

Progress = Callable[[str], None]

# pg_dump ≥ 15.14 frames its scripts with \restrict KEY / \unrestrict KEY, a fresh key each run.
_RESTRICT = re.compile(r"^\\(un)?restrict\b")


def _dump_progress(line: str) -> str | None:
    match = re.search(r'dumping contents of table "(?P<table>[^"]+)"', line)
    return f"  backup: {match['table']}" if match else None


class Dump:
    """``pg_dump --format=custom`` running in the background: ``wait`` for its size, or ``abort`` it."""

    def __init__(
        self, url: str, path: Path, process: subprocess.Popen[str], lines: list[str], reader: threading.Thread
    ) -> None:
        self.url, self.path, self.process, self.lines, self.reader = url, path, process, lines, reader

    @classmethod
    def start(
        cls,
        url: str,
        path: Path,
        tools: ClientTools,
        progress: Progress = lambda line: None,
        *,
        read_only: bool = False,
        snapshot: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> Dump:
        conninfo, env = tool_connection(url, read_only=read_only)
        command = [
            tools.pg_dump,
            "--format=custom",
            "--verbose",
            f"--file={path}",
            *([f"--snapshot={snapshot}"] if snapshot else []),
            *extra_args,
            f"--dbname={conninfo}",
        ]
        lines: list[str] = []
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        assert process.stderr is not None
        reader = threading.Thread(
            target=pump_stderr, args=(process.stderr, lines, progress, _dump_progress), daemon=True
        )
        reader.start()
        return cls(url, path, process, lines, reader)

    def wait(self) -> int:
        """The backup's size in bytes; a failed dump leaves no file."""
        code = self.process.wait()
        self.reader.join()
        self._close()
        if code != 0:
            self.path.unlink(missing_ok=True)
            raise ClientToolFailed(f"pg_dump failed: {error_line(self.lines, self.url, f'exit code {code}')}")
        return self.path.stat().st_size

    def abort(self) -> None:
        """Stop it (interrupted, or what ran beside it failed): a half-written backup is no backup."""
        self.process.kill()
        self.process.wait()
        self.reader.join()
        self._close()
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.process.stderr is not None:
            self.process.stderr.close()


def dump(
    url: str,
    path: Path,
    tools: ClientTools,
    progress: Progress = lambda line: None,
    *,
    read_only: bool = False,
    extra_args: Sequence[str] = (),
) -> int:
    """``pg_dump --format=custom`` of ``url`` into ``path``; its size in bytes. A failed dump leaves no file."""
    running = Dump.start(url, path, tools, progress, read_only=read_only, extra_args=extra_args)
    try:
        return running.wait()
    except BaseException:
        running.abort()
        raise


def check_archive(path: Path, tools: ClientTools) -> int:
    """The number of entries of a readable custom-format archive; a corrupt one is refused (exit 2)."""
    if not path.is_file():
        raise UsageError(f"backup file {str(path)!r} does not exist")
    done = subprocess.run(
        [tools.pg_restore, "--list", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = error_line(done.stderr.splitlines(), "", f"pg_restore exit code {done.returncode}")
        raise UsageError(f"backup file {str(path)!r} is not a readable pg_dump archive ({reason})")
    return sum(1 for line in done.stdout.splitlines() if line and not line.startswith(";"))


def script_lines(text: str) -> list[str]:
    """A pg_dump script's lines, without the per-run \\restrict keys."""
    return [line for line in text.splitlines() if not _RESTRICT.match(line)]


def schema_script(
    url: str,
    tools: ClientTools,
    *,
    clean: bool = False,
    exclude_tables: Sequence[str] = (),
    snapshot: str | None = None,
) -> list[str]:
    """``pg_dump --schema-only`` of the database as it is now, or in ``snapshot`` (``clean``: with its DROP section)."""
    conninfo, env = tool_connection(url)
    command = [
        tools.pg_dump,
        "--schema-only",
        *(f"--exclude-table={table}" for table in exclude_tables),
        *([f"--snapshot={snapshot}"] if snapshot else []),
        f"--dbname={conninfo}",
    ]
    if clean:
        command[2:2] = ["--clean", "--if-exists"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise ClientToolFailed(
            f"pg_dump --schema-only failed: {error_line(done.stderr.splitlines(), url, str(done.returncode))}"
        )
    return script_lines(done.stdout)
