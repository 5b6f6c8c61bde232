"""The application's queries and the indexes made for them, judged by PostgreSQL's own plans.

Three questions per index, each a check:
- **definition**: the index exists on the right table, is valid and ready, and leads with
  the columns the contract names (an index of the same name on another column fails here);
- **usable**: with ``enable_seqscan`` off in a local transaction, the plan of the
  application's query scans that very index (Index Scan, Index Only Scan or Bitmap Index
  Scan whose "Index Name" is it);
- **chosen**: with the database's own planner settings, after ``ANALYZE``, at a volume
  where an index pays, the planner picks it.

The query is planned as the application runs it: a prepared statement with the
workspace as a parameter, planned generically (``plan_cache_mode = force_generic_plan``),
so the plan is the one for "a workspace", not for one particular id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from migration_gate.checks.failures import CheckFailed

INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})
# Below this many rows a sequential scan is the right plan, so "chosen" proves nothing.
MIN_ROWS_FOR_CHOSEN = 10_000
_STATEMENT = "migration_gate_application_query"


@dataclass(frozen=True)
class ApplicationQuery:
    """A query the application runs, and the index of the contract that serves it."""

    name: str
    index: str
    table: str
    leading_columns: tuple[str, ...]
    sql: str  # takes the workspace id as $1
    from_version: int

    def rerun_sql(self, *, seqscan: bool) -> str:
        settings = "" if seqscan else "SET LOCAL enable_seqscan = off;\n"
        return (
            f"BEGIN;\n{settings}SET LOCAL plan_cache_mode = force_generic_plan;\n"
            f"PREPARE q(bigint) AS {self.sql};\nEXPLAIN EXECUTE q(1);\nROLLBACK;\nDEALLOCATE q;"
        )


CREDENTIALS_OF_A_WORKSPACE = ApplicationQuery(
    name="credentials_of_a_workspace",
    index="idx_credentials_workspace",
    table="credentials",
    leading_columns=("workspace_id",),
    sql="SELECT * FROM public.credentials WHERE workspace_id = $1",
    from_version=7,
)
LATEST_ACTIVITIES_OF_A_WORKSPACE = ApplicationQuery(
    name="latest_activities_of_a_workspace",
    index="idx_activities_workspace",
    table="activities",
    leading_columns=("workspace_id", "created_at"),
    sql="SELECT * FROM public.activities WHERE workspace_id = $1 ORDER BY created_at DESC LIMIT 50",
    from_version=8,
)
APPLICATION_QUERIES = (CREDENTIALS_OF_A_WORKSPACE, LATEST_ACTIVITIES_OF_A_WORKSPACE)


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree, depth first."""
    yield node
    for child in node.get("Plans", ()):
        yield from walk(child)


def index_scans(plan: dict[str, Any]) -> list[str]:
    """The names of the indexes the plan scans."""
    return [node["Index Name"] for node in walk(plan) if node.get("Node Type") in INDEX_SCANS]


def uses_index(plan: dict[str, Any], index: str) -> bool:
    return index in index_scans(plan)


def render(plan: dict[str, Any]) -> str:
    """A plan as indented lines, enough to see what was scanned and how."""

    def lines(node: dict[str, Any], depth: int) -> Iterator[str]:
        label = node.get("Node Type", "?")
        if node.get("Scan Direction") == "Backward":
            label += " Backward"
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
        if "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        for key in ("Index Cond", "Filter"):
            if key in node:
                label += f"  [{key}: {node[key]}]"
        yield "  " * depth + ("-> " if depth else "") + label
        for child in node.get("Plans", ()):
            yield from lines(child, depth + 1)

    return "\n".join(lines(plan, 0))


def _deallocate(conn: psycopg.Connection) -> None:
    # A prepared statement outlives a rolled-back transaction (and a failed EXPLAIN): drop it ourselves.
    if conn.info.transaction_status == TransactionStatus.INERROR:
        return
    if conn.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", (_STATEMENT,)).fetchone():
        conn.execute(f"DEALLOCATE {_STATEMENT}")


def explain(conn: psycopg.Connection, query: ApplicationQuery, *, seqscan: bool = True) -> dict[str, Any]:
    """The generic plan of ``query`` (root node); ``seqscan=False`` disables sequential scans locally.

    Runs in a transaction (a savepoint inside the caller's) that is always rolled back, so
    the SET LOCALs never outlive it.
    """
    _deallocate(conn)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            if not seqscan:
                conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute(f"PREPARE {_STATEMENT}(bigint) AS {query.sql}")
            row = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {_STATEMENT}(0)").fetchone()
    finally:
        _deallocate(conn)
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


@dataclass(frozen=True)
class IndexDefinition:
    table: str
    columns: tuple[str, ...]
    valid: bool
    ready: bool
    definition: str


def index_definition(conn: psycopg.Connection, index: str, schema: str = "public") -> IndexDefinition | None:
    row = conn.execute(
        """
        SELECT t.relname, i.indisvalid, i.indisready AND i.indislive, pg_get_indexdef(i.indexrelid),
               ARRAY(SELECT coalesce(a.attname, pg_get_indexdef(i.indexrelid, k.n::int, true))
                     FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
                     WHERE k.n <= i.indnkeyatts
                     ORDER BY k.n)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s
        """,
        (schema, index),
    ).fetchone()
    if row is None:
        return None
    table, valid, ready, definition, columns = row
    return IndexDefinition(table, tuple(columns), valid, ready, definition)


def definition_sql(query: ApplicationQuery) -> str:
    return (
        "SELECT i.indexrelid::regclass, i.indrelid::regclass, i.indisvalid, i.indisready, i.indislive,\n"
        "       pg_get_indexdef(i.indexrelid)\n"
        f"FROM pg_index i WHERE i.indexrelid = to_regclass('public.{query.index}');"
    )


def check_definition(conn: psycopg.Connection, query: ApplicationQuery) -> IndexDefinition:
    """The index exists on the query's table, is valid and ready, and leads with the contract's columns."""
    __tracebackhide__ = True
    found = index_definition(conn, query.index)
    problems = []
    if found is None:
        problems.append(f"public.{query.index} does not exist")
    else:
        if found.table != query.table:
            problems.append(f"it is on table {found.table}, not {query.table}")
        if not found.valid:
            problems.append(
                "it is not valid (pg_index.indisvalid = false: a failed CREATE INDEX CONCURRENTLY?)"
            )
        if not found.ready:
            problems.append("it is not ready for inserts (pg_index.indisready/indislive = false)")
        leading = found.columns[: len(query.leading_columns)]
        if leading != query.leading_columns:
            problems.append(
                f"it leads with ({', '.join(leading)}), the contract says ({', '.join(query.leading_columns)})"
            )
    if problems:
        raise CheckFailed(
            query.index,
            "; ".join(problems),
            [
                ("index", found.definition if found else "(none)"),
                ("expected", f"an index on {query.table} ({', '.join(query.leading_columns)}, ...), valid"),
                ("SQL to run again by hand", definition_sql(query)),
            ],
        )
    assert found is not None
    return found


def _plan_failure(
    query: ApplicationQuery, plan: dict[str, Any], summary: str, *, seqscan: bool
) -> CheckFailed:
    return CheckFailed(
        query.index,
        summary,
        [
            ("application query", query.sql),
            ("plan", render(plan)),
            ("indexes scanned", ", ".join(index_scans(plan)) or "(none)"),
            ("SQL to run again by hand", query.rerun_sql(seqscan=seqscan)),
        ],
    )


# Why a plan that does not scan the index fails, with sequential scans off (usable) or as the planner likes (chosen).
NOT_USABLE = "not usable: even with enable_seqscan off the plan does not scan {index}"
NOT_CHOSEN = "not chosen: with default planner settings the plan does not scan {index}"


def _check_plan_scans_index(
    conn: psycopg.Connection, query: ApplicationQuery, *, seqscan: bool
) -> dict[str, Any]:
    __tracebackhide__ = True
    check_definition(conn, query)
    plan = explain(conn, query, seqscan=seqscan)
    if not uses_index(plan, query.index):
        failure = (NOT_CHOSEN if seqscan else NOT_USABLE).format(index=query.index)
        raise _plan_failure(query, plan, failure, seqscan=seqscan)
    return plan


def check_usable(conn: psycopg.Connection, query: ApplicationQuery) -> dict[str, Any]:
    """With sequential scans off, the query's plan scans the contract's index (which must be right)."""
    __tracebackhide__ = True
    return _check_plan_scans_index(conn, query, seqscan=False)


def too_small_for_chosen(
    conn: psycopg.Connection, query: ApplicationQuery, min_rows: int = MIN_ROWS_FOR_CHOSEN
) -> str | None:
    """Why "chosen" proves nothing on this table (too few rows, never analyzed), or None."""
    row = conn.execute(
        "SELECT c.reltuples::bigint FROM pg_class c WHERE c.oid = to_regclass(%s)", (f"public.{query.table}",)
    ).fetchone()
    if row is None or row[0] is None:
        return f"public.{query.table} does not exist"
    estimate = int(row[0])
    if estimate < 0:
        return f"public.{query.table} has never been analyzed: the planner has no statistics to choose with"
    if estimate < min_rows:
        return (
            f"public.{query.table} holds about {estimate} rows (< {min_rows}): at that size a sequential "
            "scan is the right plan, so whether the planner chooses the index proves nothing"
        )
    return None


def check_chosen(conn: psycopg.Connection, query: ApplicationQuery) -> dict[str, Any]:
    """With the database's own planner settings, the planner picks the contract's index."""
    __tracebackhide__ = True
    return _check_plan_scans_index(conn, query, seqscan=True)
