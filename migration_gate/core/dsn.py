"""Database URLs: parsing, redacting the password, and connecting with errors fit for people."""

from __future__ import annotations

import functools
import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from migration_gate.core.errors import UsageError

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#\s]*:)(?P<password>[^@/?#\s]*)(?P<tail>@)", re.I
)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#\s]*)", re.I)


def redact(text: str) -> str:
    """Hide every password a URL or conninfo string in ``text`` may carry."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    text = _QUERY_PASSWORD.sub(r"\g<head>***", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def scrub(text: str, url: str | None) -> str:
    """Redact ``text`` and also remove the literal password of ``url`` wherever it appears."""
    text = redact(text)
    password = password_of(url) if url else None
    if password:
        text = text.replace(password, "***")
    return text


@functools.lru_cache(maxsize=16)
def password_of(url: str) -> str | None:
    """The URL's password, if any. Cached: a record scrubs thousands of strings with the same URL,
    and parsing it each time was a quarter of a small playbook's CPU."""
    try:
        return conninfo_to_dict(url).get("password")  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        return None


def parse(url: str) -> dict[str, Any]:
    """The URL's parts; a URL psycopg cannot read is a usage error (exit 2)."""
    if not url or not url.strip():
        raise UsageError("no database URL given: pass --database URL (postgresql://user@host:port/dbname)")
    try:
        return conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"cannot read database URL {redact(url)!r}: {scrub(str(exc), url)}") from None


def describe(url: str) -> str:
    """``user@host:port/dbname`` for headers and logs: never the password."""
    parts = parse(url)
    host = parts.get("host") or "local socket"
    port = parts.get("port") or "5432"
    return f"{parts.get('user', '')}@{host}:{port}/{parts.get('dbname', '')}".lstrip("@")


def connect(
    url: str, *, autocommit: bool = True, connect_timeout: int = 10, **kwargs: Any
) -> psycopg.Connection:
    """Connect, turning every connection failure into one line without the password."""
    parse(url)
    kwargs.setdefault("application_name", "migration-gate")
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot connect to {describe(url)}: {scrub(first, url)}") from None
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"cannot use database URL {redact(url)!r}: {scrub(str(exc), url)}") from None


def read_only_options(statement_timeout: str) -> str:
    """Session options for a database the gate only reads (staging, a rehearsal's source).

    Read-only so nothing can change; a short lock_timeout so a check waits on the
    application, never the reverse.
    """
    return (
        f"-c default_transaction_read_only=on -c statement_timeout={statement_timeout} "
        "-c lock_timeout=2s -c idle_in_transaction_session_timeout=60s"
    )
