"""Zero-count invariants: SQL files that select the rows that must not exist.

Each file in ``checks/`` starts with a header::

    -- name: users_without_default_workspace
    -- from: 006
    -- meaning: users with no default workspace

followed by one SELECT returning the offending rows, keys first. The name is the file's
own (``<name>.sql``), ``from`` the migration from which the invariant holds. An optional
``-- at: last`` checks it only at the last checkpoint (where the application meets the
schema) instead of at every checkpoint from ``from``. An optional
``-- covers: tenant_member_workspace[credentials]`` (a comma-separated list) says which
table this file judges for which rule (docs/contract.md §8): that rule then leaves the table
to it. Adding a check is adding a file; a malformed one is refused with one line naming the
file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from migration_gate.checks.failures import CheckFailed, sample_section
from migration_gate.core.errors import PlanError, UsageError
from migration_gate.core.plan import split

SAMPLE_SIZE = 10
HEADER_KEYS = ("name", "from", "meaning")
OPTIONAL_KEYS = ("at", "covers")
AT_VALUES = ("every", "last")
_HEADER_LINE = re.compile(r"^--\s*(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A rule and the table it is about, as a test id names them: tenant_foreign_key[api_keys].
RULE_TABLE = re.compile(r"^(?P<rule>[a-z][a-z0-9_]*)\[(?P<table>[^\[\]\s,:]+)\]$")


class InvariantFileError(UsageError):
    """A check file the gate cannot use: a bad header or SQL that is not one SELECT."""


@dataclass(frozen=True)
class Invariant:
    name: str
    from_version: int
    meaning: str
    sql: str = field(repr=False)  # the SELECT of the offending rows, header and final ';' removed
    path: Path = field(repr=False)
    at: str = "every"  # or "last": only at the last checkpoint
    covers: tuple[tuple[str, str], ...] = ()  # (rule, table): what it judges in a rule's stead

    def __repr__(self) -> str:
        return f"Invariant({self.name})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass(frozen=True)
class InvariantResult:
    """The offending rows of one invariant: how many, and the first ``SAMPLE_SIZE`` of them."""

    invariant: Invariant
    count: int
    columns: tuple[str, ...]
    sample: list[tuple[Any, ...]]
    where: str = ""

    @property
    def passed(self) -> bool:
        return self.count == 0

    def rerun_sql(self) -> str:
        origin = f"-- {self.invariant.path.name}" + (f", on {self.where}" if self.where else "")
        return f"{origin}\n{self.invariant.sql};"

    def failure(self) -> CheckFailed:
        return CheckFailed(
            self.invariant.name,
            f"{self.count} offending row(s)" + (f" at {self.where}" if self.where else "") + " (must be 0)",
            [
                ("meaning", self.invariant.meaning),
                ("count", str(self.count)),
                sample_section(self.count, self.columns, self.sample),
                ("SQL to run again by hand", self.rerun_sql()),
            ],
            count=self.count,
        )

    def assert_zero(self) -> None:
        __tracebackhide__ = True
        if not self.passed:
            raise self.failure()


def parse(path: Path) -> Invariant:
    """One check file; anything malformed raises InvariantFileError with one line."""
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines) and lines[index].lstrip().startswith("--"):
        match = _HEADER_LINE.match(lines[index].strip())
        if match and match["key"] in (*HEADER_KEYS, *OPTIONAL_KEYS):
            if match["key"] in header:
                raise InvariantFileError(f"{path}: header repeats '{match['key']}:'")
            header[match["key"]] = match["value"]
        index += 1
    body_lines = lines[index:]
    missing = [key for key in HEADER_KEYS if not header.get(key)]
    if missing:
        raise InvariantFileError(
            f"{path}: header lacks {', '.join(repr(k + ':') for k in missing)}; a check file starts with "
            "'-- name: <file name>', '-- from: NNN', '-- meaning: <one line>'"
        )
    if header["name"] != path.stem or not _NAME.match(header["name"]):
        raise InvariantFileError(
            f"{path}: header name {header['name']!r} must be the file's name ({path.stem!r}), lower_snake_case"
        )
    if not re.fullmatch(r"\d{3}", header["from"]):
        raise InvariantFileError(f"{path}: 'from: {header['from']}' must be a migration number such as 006")
    at = header.get("at", "every")
    if at not in AT_VALUES:
        raise InvariantFileError(f"{path}: 'at: {at}' must be one of {', '.join(AT_VALUES)}")
    covers = []
    for pair in (pair.strip() for pair in header.get("covers", "").split(",") if pair.strip()):
        match = RULE_TABLE.match(pair)
        if match is None:
            raise InvariantFileError(
                f"{path}: 'covers: {pair}' must be RULE[TABLE], e.g. tenant_foreign_key[api_keys]"
            )
        covers.append((match["rule"], match["table"]))
    # The header's lines stay as blank lines, so a parse error names the file's own line.
    sql = "\n" * index + "\n".join(body_lines)
    try:
        statements = split(sql, str(path))
    except PlanError as exc:
        raise InvariantFileError(str(exc)) from None
    if len(statements) != 1 or not re.match(r"(?is)^\s*(WITH|SELECT)\b", statements[0].sql):
        raise InvariantFileError(f"{path}: the body must be exactly one SELECT of the offending rows")
    return Invariant(
        header["name"],
        int(header["from"]),
        header["meaning"],
        statements[0].sql.strip(),
        path,
        at,
        tuple(covers),
    )


def load(directory: Path | str) -> list[Invariant]:
    """Every ``*.sql`` invariant in ``directory``, by migration then name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"checks directory {str(directory)!r} does not exist")
    invariants = [parse(path) for path in sorted(directory.glob("*.sql"))]
    if not invariants:
        raise InvariantFileError(f"no invariant files (*.sql) in {str(directory)!r}")
    return sorted(invariants, key=lambda inv: (inv.from_version, inv.name))


def count_and_sample(
    conn: psycopg.Connection, query: str
) -> tuple[int, tuple[str, ...], list[tuple[Any, ...]]]:
    """How many rows ``query`` selects, its column names, and the first ``SAMPLE_SIZE`` rows.

    The sample is read only when there is one: a query that finds nothing (the usual case)
    runs once, planned for the whole table. Planned under a LIMIT instead, PostgreSQL
    expects the rows it is asked for to come soon and walks a million activities through
    an index, one probe each, to find that there are none.
    """
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM ({query}) AS offending LIMIT 0")
        columns = tuple(column.name for column in cur.description or ())
        row = cur.execute(f"SELECT count(*) FROM ({query}) AS offending").fetchone()
        count = int(row[0]) if row else 0
        sample = (
            cur.execute(f"SELECT * FROM ({query}) AS offending LIMIT {SAMPLE_SIZE}").fetchall()
            if count
            else []
        )
    return count, columns, sample


def run(conn: psycopg.Connection, invariant: Invariant, where: str = "") -> InvariantResult:
    """Count the offending rows and fetch the first ``SAMPLE_SIZE`` of them, with their column names."""
    count, columns, sample = count_and_sample(conn, invariant.sql)
    return InvariantResult(invariant, count, columns, sample, where)


def check(conn: psycopg.Connection, invariant: Invariant, where: str = "") -> InvariantResult:
    """Run ``invariant`` and raise CheckFailed unless it finds nothing."""
    __tracebackhide__ = True
    result = run(conn, invariant, where)
    result.assert_zero()
    return result
