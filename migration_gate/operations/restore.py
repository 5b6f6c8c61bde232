"""Restoring a backup into the database it came from, exactly as it was.

``pg_restore --clean --if-exists`` alone drops only what the backup holds, so whatever the
migrations created after it (the ``legacy_archive`` schema, new tables, ledger rows)
would survive. Instead the restore drops what the database holds *now* (the DROP section
of a ``pg_dump --clean`` of its current schema, which pg_dump orders by dependency), then
replays the backup, all through one ``psql --single-transaction``: a restore that fails
leaves the database as it was before the restore began.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.core import dsn
from migration_gate.operations.backup import check_archive, schema_script
from migration_gate.operations.client_tools import (
    ClientToolFailed,
    ClientTools,
    as_text,
    error_line,
    pump_stderr,
    silent,
    tool_connection,
)

Progress = Callable[[str], None]


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
        raise ClientToolFailed(
            "cannot isolate the DROP statements of pg_dump --clean: refusing to restore blind"
        )
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
        threading.Thread(target=pump_stderr, args=(as_text(psql.stderr), psql_errors, progress, silent)),
        threading.Thread(target=pump_stderr, args=(as_text(script.stderr), script_errors, progress, silent)),
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
        raise ClientToolFailed(
            f"restore failed and was rolled back: {error_line(psql_errors, url, f'psql exit code {psql_code}')}"
        )
    if script_code != 0:
        raise ClientToolFailed(
            f"pg_restore could not read {backup}: {error_line(script_errors, url, str(script_code))}"
        )
