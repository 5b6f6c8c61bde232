"""What a database holds, from its catalog alone: each table's rows and bytes, and its ledger's head.

Cheap enough for a production preflight and never a scan: ``reltuples`` and ``relpages``
(kept by VACUUM and ANALYZE) and the sizes PostgreSQL reports without reading a row
(``pg_relation_size``, ``pg_indexes_size``, ``pg_total_relation_size``). A table that
grew since its statistics were taken is estimated as the planner estimates it: its
density (``reltuples / relpages``) times the pages it has now. A table never analyzed
falls back to the statistics collector's live-tuple count and, where the collector has
none either (a database just restored or copied), to the planner's own estimate from its
pages (``EXPLAIN``, which reads no row); each says so.

The playbook and ``rehearse`` keep these figures in the change record (``tables``) as the
run found them; the forecast and the squads' notice read them from a target read-only
(``read``) and scale what the record measured by them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.core import dsn, ledger

# Every table that holds data, outside the system's schemas and the gate's own.
_TABLE_SIZES = """
SELECT n.nspname || '.' || c.relname, c.reltuples::float8, c.relpages::bigint,
       pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid),
       coalesce(s.n_live_tup, 0), current_setting('block_size')::int,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('information_schema', 'migration_gate') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""
NO_STATISTICS = "no statistics (never analyzed or vacuumed)"
# A statement timeout that bounds every catalog read on a target the gate only reads.
READ_TIMEOUT = "10s"


@dataclass(frozen=True)
class TableSize:
    """One table as the catalog sees it: estimated rows, heap bytes, index bytes, all of it with TOAST."""

    name: str  # schema-qualified: public.activities
    rows: int
    bytes: int  # the heap (main fork)
    index_bytes: int
    total_bytes: int  # heap, TOAST and indexes
    basis: str  # where ``rows`` comes from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableSize:
        return cls(
            str(data["name"]),
            int(data["rows"]),
            int(data["bytes"]),
            int(data["index_bytes"]),
            int(data["total_bytes"]),
            str(data.get("basis", "")),
        )


def _estimate(reltuples: float, relpages: int, heap_bytes: int, live: int, block: int) -> tuple[int, str]:
    pages_now = heap_bytes // block
    if reltuples >= 0 and relpages > 0:
        if pages_now == relpages:
            return round(reltuples), "reltuples"
        return round(reltuples / relpages * pages_now), "reltuples per page x pages now"
    if reltuples >= 0 and pages_now == 0:
        return 0, "empty"
    if live > 0:
        return live, "n_live_tup (never analyzed)"
    return 0, NO_STATISTICS


def table_sizes(conn: psycopg.Connection) -> list[TableSize]:
    """Every table of the database (but the system's and the gate's own), from the catalog: no row is read."""
    sizes = []
    for name, reltuples, relpages, heap, indexes, total, live, block, quoted in conn.execute(
        _TABLE_SIZES
    ).fetchall():
        rows, basis = _estimate(float(reltuples), int(relpages), int(heap), int(live), int(block))
        if basis == NO_STATISTICS and int(heap) > 0:
            planned = _planner_rows(conn, str(quoted))
            if planned is not None:
                rows, basis = planned, "the planner's estimate from its pages (never analyzed)"
        sizes.append(TableSize(str(name), rows, int(heap), int(indexes), int(total), basis))
    return sizes


def _planner_rows(conn: psycopg.Connection, quoted: str) -> int | None:
    """The rows the planner expects of a table without statistics, from its size: EXPLAIN reads no row.

    In a savepoint: a table the role may not read leaves the statistics' answer, and the
    caller's transaction, as they were.
    """
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("EXPLAIN (FORMAT JSON) SELECT FROM {}").format(sql.SQL(quoted))
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0][0]["Plan"]["Plan Rows"]) if row is not None else None


def ledger_head(conn: psycopg.Connection) -> int:
    """The last migration the ledger records (0: none, or no ledger)."""
    return max(ledger.read(conn), default=0)


@dataclass(frozen=True)
class TargetStats:
    """A target as the forecast and the notice need it: where its ledger stands, and its tables."""

    database: str
    version: int
    tables: list[TableSize]

    def by_name(self) -> dict[str, TableSize]:
        return {table.name: table for table in self.tables}


def read(url: str) -> TargetStats:
    """The target's tables and ledger head, in a read-only session with a statement timeout."""
    with dsn.connect(url, options=dsn.read_only_options(READ_TIMEOUT)) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        return TargetStats(str(row[0]), ledger_head(conn), table_sizes(conn))


def total(tables: list[TableSize], attribute: str) -> int:
    return sum(int(getattr(table, attribute)) for table in tables)
