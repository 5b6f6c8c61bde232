"""The playbook's safety net: pg_dump/pg_restore of the server's version, and restoring only
the database that was backed up, exactly as it was.

Client tools are found beside the server when that is known (the disposable server's own
binaries), then in ``MIGRATION_GATE_PG_BINDIR``, the installations of the server's major
found here (the system's, PyPI's: ``migration_gate.core.installations``), the usual
per-version install directories and ``PATH``; a tool whose major version differs from the
server's is refused, since a pg_dump older than the server cannot dump it and a newer one
writes archives an older pg_restore cannot read.

A password never reaches a command line (visible in ``ps``): the tools get the URL's
other parts as a conninfo and the password in ``PGPASSWORD``.

Restoring: ``pg_restore --clean --if-exists`` alone drops only what the backup holds, so
whatever the migrations created after it (the ``legacy_archive`` schema, new tables,
ledger rows) would survive. Instead the restore drops what the database holds *now* (the
DROP section of a ``pg_dump --clean`` of its current schema, which pg_dump orders by
dependency), then replays the backup, all through one ``psql --single-transaction``: a
restore that fails leaves the database as it was before the restore began.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from migration_gate.core import dsn, installations
from migration_gate.core.errors import GateError, UsageError
from migration_gate.core.identity import DatabaseIdentity

Progress = Callable[[str], None]

CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")
BINDIR_ENV = "MIGRATION_GATE_PG_BINDIR"
METADATA_SUFFIX = ".meta.json"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<major>\d+)(?:\.(?P<minor>\d+))?")
# pg_dump ≥ 15.14 frames its scripts with \restrict KEY / \unrestrict KEY, a fresh key each run.
_RESTRICT = re.compile(r"^\\(un)?restrict\b")


class BackupFailed(GateError):
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


def _pump_stderr(
    stream: IO[str], sink: list[str], progress: Progress, show: Callable[[str], str | None]
) -> None:
    for raw in stream:
        line = raw.rstrip("\n")
        sink.append(line)
        shown = show(line)
        if shown:
            progress(shown)


def _text(stream: IO[bytes]) -> IO[str]:
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")


def _silent(line: str) -> None:
    return None


def _error_line(lines: Sequence[str], url: str, fallback: str) -> str:
    """The tool's own error line (the last one naming an error), without a password."""
    for line in reversed(lines):
        if re.search(r"\b(error|FATAL|ERROR|could not|invalid|unexpected|failed)\b", line, re.I):
            return dsn.scrub(" ".join(line.split()), url)
    for line in reversed(lines):
        if line.strip():
            return dsn.scrub(" ".join(line.split()), url)
    return fallback


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
            target=_pump_stderr, args=(process.stderr, lines, progress, _dump_progress), daemon=True
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
            raise BackupFailed(f"pg_dump failed: {_error_line(self.lines, self.url, f'exit code {code}')}")
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
        reason = _error_line(done.stderr.splitlines(), "", f"pg_restore exit code {done.returncode}")
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
        raise BackupFailed(
            f"pg_dump --schema-only failed: {_error_line(done.stderr.splitlines(), url, str(done.returncode))}"
        )
    return script_lines(done.stdout)


def drop_section(clean: list[str], plain: list[str]) -> list[str]:
    """The lines of ``clean`` (a --clean script) up to the end of its DROPs: header and drops.

    The two scripts are the same but for the DROP block pg_dump inserts after the header,
    so it is found without parsing SQL: after the common prefix, ``clean`` is that block
    followed by exactly the rest of ``plain``.
    """
    start = 0
    while start < min(len(clean), len(plain)) and clean[start] == plain[start]:
        start += 1
    extra = len(clean) - len(plain)
    if extra < 0 or clean[start + extra :] != plain[start:]:
        raise BackupFailed("cannot isolate the DROP statements of pg_dump --clean: refusing to restore blind")
    return clean[: start + extra]


def default_acl_resets(conn: psycopg.Connection) -> list[str]:
    """Revoke every schema-level default privilege now in place (pg_dump --clean never drops them).

    The backup's script grants back those it holds. Only schema-level entries (additive
    over the built-in defaults) and only roles the restoring role may act for.
    """
    rows = conn.execute(
        """
        SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text,
               CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END
        FROM pg_default_acl d
        JOIN pg_namespace n ON n.oid = d.defaclnamespace
        CROSS JOIN LATERAL aclexplode(d.defaclacl) a
        WHERE pg_has_role(d.defaclrole, 'MEMBER')
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        """
    ).fetchall()
    kinds = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES"}
    statements = []
    for role, schema, kind, grantee in rows:
        if kind not in kinds:
            continue
        target = "PUBLIC" if grantee is None else sql.Identifier(grantee).as_string(conn)
        statements.append(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {sql.Identifier(role).as_string(conn)} IN SCHEMA "
            f"{sql.Identifier(schema).as_string(conn)} REVOKE ALL ON {kinds[kind]} FROM {target};"
        )
    return statements


def restore(url: str, backup: Path, tools: ClientTools, progress: Progress = lambda line: None) -> None:
    """Make the database at ``url`` what ``backup`` holds: drop what is there now, replay the backup.

    One psql session, ``--single-transaction`` and ``ON_ERROR_STOP``: all or nothing.
    """
    check_archive(backup, tools)
    with dsn.connect(url) as conn:
        resets = default_acl_resets(conn)
    drops = drop_section(schema_script(url, tools, clean=True), schema_script(url, tools))
    conninfo, env = tool_connection(url)
    # Bytes, not text: table data is passed through untouched, whatever its encoding.
    psql = subprocess.Popen(
        [
            tools.psql,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
            f"--dbname={conninfo}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    script = subprocess.Popen(
        [tools.pg_restore, "--file=-", str(backup)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert psql.stdin is not None and psql.stderr is not None
    assert script.stdout is not None and script.stderr is not None
    psql_errors: list[str] = []
    script_errors: list[str] = []
    readers = [
        threading.Thread(target=_pump_stderr, args=(_text(psql.stderr), psql_errors, progress, _silent)),
        threading.Thread(target=_pump_stderr, args=(_text(script.stderr), script_errors, progress, _silent)),
    ]
    for reader in readers:
        reader.start()
    try:
        psql.stdin.write("".join(f"{line}\n" for line in [*resets, *drops]).encode("utf-8"))
        for line in script.stdout:
            if line.startswith(b"COPY "):
                progress(f"  restore: {line.split()[1].decode('utf-8', 'replace')}")
            psql.stdin.write(line)
        psql.stdin.close()
    except BrokenPipeError:  # psql stopped at an error; its stderr says which
        script.kill()
    finally:
        script_code = script.wait()
        psql_code = psql.wait()
        for reader in readers:
            reader.join()
    if psql_code != 0:
        raise BackupFailed(
            f"restore failed and was rolled back: {_error_line(psql_errors, url, f'psql exit code {psql_code}')}"
        )
    if script_code != 0:
        raise BackupFailed(
            f"pg_restore could not read {backup}: {_error_line(script_errors, url, str(script_code))}"
        )


@dataclass
class BackupMetadata:
    """What the sidecar ``<backup>.meta.json`` records: whose backup this is, and what it held."""

    identity: DatabaseIdentity
    fingerprint: dict[str, Any]
    pg_dump_version: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity.to_json(),
            "fingerprint": self.fingerprint,
            "pg_dump_version": self.pg_dump_version,
            "created_at": self.created_at,
        }


def metadata_path(backup: Path) -> Path:
    return backup.with_name(backup.name + METADATA_SUFFIX)


def write_metadata(backup: Path, metadata: BackupMetadata) -> Path:
    path = metadata_path(backup)
    path.write_text(json.dumps(metadata.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metadata(backup: Path) -> BackupMetadata:
    path = metadata_path(backup)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BackupMetadata(
            DatabaseIdentity.from_json(data["identity"]),
            data["fingerprint"],
            data["pg_dump_version"],
            data["created_at"],
        )
    except FileNotFoundError:
        raise UsageError(
            f"no {path.name} beside {backup.name}: only a backup taken by 'migration-gate playbook' "
            "records which database it may be restored into"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable backup record ({type(exc).__name__})") from None


def verify_target(metadata: BackupMetadata, target: DatabaseIdentity, backup: Path) -> None:
    """Refuse (exit 2) to restore ``backup`` into any database but the one it was taken from."""
    if not target.same_database_as(metadata.identity):
        raise UsageError(
            f"refusing to restore {backup.name}: it was taken from {metadata.identity.describe()}, "
            f"not from {target.describe()}"
        )
