"""``migration-gate notice``: the squads' notice before a window (runbook section 1), ready to send.

Section 1 asks to align the squads on what 008 removes and to freeze the integrations
that depend on it. The notice says it from the target itself, read-only (a session with
``default_transaction_read_only`` and a statement timeout; the catalog and its
statistics, never a row count):

* the pending migrations (the target's ledger against the files);
* what they remove from ``public``: tables and columns, read from their statements with
  PostgreSQL's parser (``core.schema_walk``: renames, ``CREATE TABLE … AS``, ``DROP``, DO
  blocks' static SQL), and where the data is kept;
* what moves to ``legacy_archive``, with estimated rows: with ``--record``, the share the
  staging run moved (counted by PostgreSQL as it wrote them) scaled to the target's
  tables; otherwise from the target's statistics, ``reltuples`` times the fraction each
  condition selects (``pg_stats.null_frac`` for ``IS NULL``; a condition on another row,
  a join, applied evenly);
* the tables locked, as the record measured them (or as the statements say, without one);
* the expected window (``forecast``) when a record is given;
* the integrations to freeze: the webhooks, when the migrations touch their tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from migration_gate.core import dsn, ledger, runner
from migration_gate.core.contract import ARCHIVE_SCHEMA
from migration_gate.core.errors import UsageError
from migration_gate.core.plan import Migration
from migration_gate.core.schema_walk import Condition, Cte, Movement, Reading, SchemaWalk, Table
from migration_gate.operations import forecast, target_stats

_COLUMNS = """
SELECT n.nspname || '.' || c.relname, a.attname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('information_schema', 'migration_gate')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, a.attnum
"""
_NULL_FRACTIONS = """
SELECT schemaname || '.' || tablename, attname, null_frac::float8
FROM pg_stats WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'migration_gate')
"""
# The most common values of a column and their share of the rows (webhook events by status).
_COMMON_VALUES = """
SELECT most_common_vals::text::text[], most_common_freqs
FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = %s
"""
# The integrations the squads freeze, and the tables each one reads.
INTEGRATIONS = {"webhooks": ("public.webhook_registrations", "public.webhook_events")}
IN_FLIGHT = ("pending", "processing")


@dataclass(frozen=True)
class Catalog:
    """What the notice reads from the target (read-only)."""

    database: str
    version: int
    columns: dict[str, list[str]]
    sizes: dict[str, target_stats.TableSize]
    null_fractions: dict[tuple[str, str], float]
    in_flight: float | None  # share of webhook events pending or processing (pg_stats), None: unknown
    read_at: str


def read_catalog(url: str) -> Catalog:
    with dsn.connect(url, options=dsn.read_only_options(target_stats.READ_TIMEOUT)) as conn:
        database = str(conn.info.dbname)
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(_COLUMNS):
            columns.setdefault(str(table), []).append(str(column))
        fractions = {(str(t), str(c)): float(f) for t, c, f in conn.execute(_NULL_FRACTIONS)}
        return Catalog(
            database,
            target_stats.ledger_head(conn),
            columns,
            {size.name: size for size in target_stats.table_sizes(conn)},
            fractions,
            _in_flight(conn),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )


def _in_flight(conn: psycopg.Connection) -> float | None:
    row = conn.execute(_COMMON_VALUES, ("public", "webhook_events", "status")).fetchone()
    if row is None or row[0] is None:
        return None
    return sum(float(freq) for value, freq in zip(row[0], row[1], strict=True) if value in IN_FLIGHT)


# -- Estimates from statistics -------------------------------------------------------------


# Which way a share (or a figure) can be off: EXACT as far as statistics go, an upper bound
# (a condition without statistics counts as every row; a CASE is NULL at most where its
# ELSE is), a lower bound (one less an upper bound), or MIXED (bounds both ways).
EXACT, AT_MOST, AT_LEAST, MIXED = 0, 1, -1, None
Direction = int | None


def _and(first: Direction, second: Direction) -> Direction:
    """The direction of a product of two shares."""
    if first == EXACT:
        return second
    if second == EXACT or first == second:
        return first
    return MIXED


def _flip(direction: Direction) -> Direction:
    """The direction of one less a share."""
    return -direction if direction is not None else MIXED


@dataclass(frozen=True)
class Estimate:
    """Rows, with how they were reckoned, and which way they can be off (``bound``: see EXACT)."""

    rows: float | None
    basis: str
    bound: Direction = EXACT


class Estimator:
    """Rows a movement carries, from ``reltuples`` and the share each condition selects (see the module)."""

    def __init__(self, catalog: Catalog, walk: SchemaWalk) -> None:
        self.catalog, self.walk = catalog, walk

    def movement(self, movement: Movement) -> Estimate:
        if movement.whole_table:
            return self._surviving(movement.into)
        base = self._rows_of(movement.source)
        share, how, whole, bound = self._share([*self._cte_conditions(movement.source), *movement.conditions])
        if base.rows is None:
            return base
        if not whole:
            how.append("at most: a condition has no statistics (ANALYZE the table for an estimate)")
        return Estimate(base.rows * share, " x ".join([base.basis, *how]), bound)

    def _rows_of(self, source: Table | Cte | None) -> Estimate:
        table = source.table if isinstance(source, Cte) else source
        if table is None:
            return Estimate(None, "its source is not a table of the target")
        if len(table.origin) != 1:
            return Estimate(None, f"{table.name} mixes rows of several tables")
        (name,) = table.origin
        size = self.catalog.sizes.get(name)
        if size is None:
            return Estimate(None, f"no statistics for {name}")
        return Estimate(
            float(size.rows), f"{size.rows:,} rows of {name.removeprefix('public.')} ({size.basis})"
        )

    def _surviving(self, table: Table) -> Estimate:
        """A table moved whole: its rows at the start, less what was deleted from it since."""
        base = self._rows_of(table)
        if base.rows is None:
            return base
        rows, how, unknown = base.rows, [base.basis], False
        bound: Direction = EXACT
        for condition in table.deletes:
            share, said, whole, deleted = self._share([condition])
            if not whole:
                # What it deleted is not known: the table as it started is the most it can hold.
                bound, unknown = _and(bound, AT_MOST), True
                continue
            if said:
                rows *= 1 - share
                bound = _and(bound, _flip(deleted))
                how.append(f"(1 - {' x '.join(said)})")
        if unknown:
            how.append(
                "at most: a deletion's condition has no statistics (ANALYZE the table for an estimate)"
            )
        return Estimate(rows, " x ".join(how), bound)

    def _cte_conditions(self, source: Table | Cte | None) -> list[Condition]:
        return source.conditions if isinstance(source, Cte) else []

    def _share(self, conditions: list[Condition]) -> tuple[float, list[str], bool, Direction]:
        """The share of rows the conditions select, how, whether every part could be estimated,
        and which way the share can be off.

        A part that cannot be estimated counts as all rows: the share is then an upper bound.
        """
        share, how, whole = 1.0, [], True
        bound: Direction = EXACT
        for condition in conditions:
            for part in _conjuncts(condition.node):
                found = self._part(part, condition)
                if found is None:
                    whole, bound = False, _and(bound, AT_MOST)
                else:
                    share *= found[0]
                    how.append(found[1])
                    bound = _and(bound, found[2])
        return share, how, whole, bound

    def _part(self, node: Any, condition: Condition) -> tuple[float, str, Direction] | None:
        kind = type(node).__name__
        if kind == "NullTest" and type(node.arg).__name__ == "ColumnRef":
            found = self._null_share(node.arg, condition)
            if found is None:
                return None
            share, said, bound = found
            if node.nulltesttype.name == "IS_NOT_NULL":
                return 1 - share, f"(1 - {said})", _flip(bound)
            return share, said, bound
        if kind == "A_Expr" and getattr(node.name[0], "sval", "") == "=":
            # a.id = cte.id: the rows another DELETE of the statement took, spread evenly.
            for side in (node.lexpr, node.rexpr):
                source = _resolve(side, condition)
                if isinstance(source, Cte):
                    share, how, whole, bound = self._share(source.conditions)
                    if not whole:
                        return None
                    return share, " x ".join(how) or f"the rows {source.name} takes", bound
        return None

    def _null_share(self, ref: Any, condition: Condition) -> tuple[float, str, Direction] | None:
        """The share of rows where the column ``ref`` names is NULL, following how it was computed."""
        alias, column = _column(ref)
        source = _resolve(ref, condition)
        if isinstance(source, Cte) or source is None:
            return None
        joined = condition.scope.left_joined.get(alias or "")
        if joined is not None:  # NULL where the LEFT JOIN found nothing: where its key is NULL
            for side in (joined.lexpr, joined.rexpr):
                if type(side).__name__ == "ColumnRef" and _column(side)[0] != alias:
                    return self._null_share(side, Condition(side, condition.scope))
            return None
        computed = source.computed.get(column)
        if computed is not None:
            return self._expression_null_share(computed)
        # A table of the start, or one filled from one: the column as the start had it, if it did.
        for name in sorted(source.origin) if source.started_as is None else [source.started_as]:
            if column in self.walk.start.get(name, []) and (name, column) in self.catalog.null_fractions:
                share = self.catalog.null_fractions[(name, column)]
                return share, f"null_frac({name.removeprefix('public.')}.{column}) {share:.4f}", EXACT
        return None

    def _expression_null_share(self, computed: Condition) -> tuple[float, str, Direction] | None:
        node = computed.node
        kind = type(node).__name__
        if kind == "ColumnRef":
            return self._null_share(node, computed)
        if kind == "CaseExpr" and node.defresult is not None:
            # NULL at most where its ELSE is: each WHEN that matches gives a value (as 008's does).
            found = self._expression_null_share(Condition(node.defresult, computed.scope))
            if found is None:
                return None
            return found[0], f"at most {found[1]}", _and(found[2], AT_MOST)
        return None


def _conjuncts(node: Any) -> list[Any]:
    if type(node).__name__ == "BoolExpr" and node.boolop.name == "AND_EXPR":
        return [part for arg in node.args for part in _conjuncts(arg)]
    return [node]


def _column(ref: Any) -> tuple[str | None, str]:
    names = [getattr(field, "sval", "*") for field in ref.fields]
    return (names[-2] if len(names) > 1 else None), names[-1]


def _resolve(ref: Any, condition: Condition) -> Table | Cte | None:
    if type(ref).__name__ != "ColumnRef":
        return None
    alias, column = _column(ref)
    aliases = condition.scope.aliases
    if alias is not None:
        return aliases.get(alias)
    tables = [source for source in aliases.values() if isinstance(source, Table) and column in source.columns]
    return tables[0] if len(tables) == 1 else None


# -- The notice ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    table: str
    rows: float | None
    basis: str
    comes_from: str


def _record_archived(record: forecast.Record, walk: SchemaWalk, catalog: Catalog) -> dict[str, Archived]:
    """legacy_archive's rows as the staging run counted them, scaled by its source table's size."""
    start = {table.name: table.rows for table in record.tables}
    counted: dict[str, int] = {}
    for migration in record.data["migrations"]:
        for old, new in (migration.get("renamed") or {}).items():
            if new.startswith(f"{ARCHIVE_SCHEMA}.") and old in start:
                counted[new] = counted.get(new, 0) + start[old]
        for table, counts in (migration.get("rows") or {}).items():
            if table.startswith(f"{ARCHIVE_SCHEMA}."):
                counted[table] = counted.get(table, 0) + int(counts["inserted"]) - int(counts["deleted"])
    found = {}
    for name, rows in counted.items():
        table = walk.tables.get(name)
        origin = sorted(table.origin) if table is not None else []
        if (
            len(origin) != 1
            or origin[0] not in start
            or origin[0] not in catalog.sizes
            or not start[origin[0]]
        ):
            found[name] = Archived(name, float(rows), "as the record counted it", ", ".join(origin) or "-")
            continue
        ratio = catalog.sizes[origin[0]].rows / start[origin[0]]
        found[name] = Archived(
            name,
            rows * ratio,
            f"{rows:,} of {start[origin[0]]:,} on the record, x{ratio:.2f}",
            origin[0],
        )
    return found


def _fmt(rows: float | None, bound: Direction = EXACT) -> str:
    if rows is None:
        return "unknown"
    return f"{_MARKS.get(bound, '≈')} {round(rows):,}"


_MARKS: dict[Direction, str] = {EXACT: "≈", AT_MOST: "≤", AT_LEAST: "≥"}


def notice(url: str, plan: list[Migration], record_path: Path | None = None) -> str:
    """The notice (see the module) as Markdown."""
    record = forecast.load_record(record_path) if record_path is not None else None
    catalog = read_catalog(url)
    with dsn.connect(url, options=dsn.read_only_options(target_stats.READ_TIMEOUT)) as conn:
        applied = ledger.read(conn)
    if not applied and any(name.startswith("public.") for name in catalog.columns):
        raise UsageError(
            f"{catalog.database} has tables in public but no migration_gate.ledger: which migrations it holds is "
            "not known; adopt it first with 'migration-gate baseline --database URL --to 004'"
        )
    pending = runner.plan_run(plan, applied)
    walk = SchemaWalk(catalog.columns)
    readings: list[Reading] = []
    for migration in pending:
        readings += walk.read(migration)
    expected = None
    if record is not None:
        target = target_stats.TargetStats(catalog.database, catalog.version, list(catalog.sizes.values()))
        expected = forecast.forecast(record, target, plan)
    out = [f"# Maintenance window on {catalog.database}: what changes, and what to freeze", ""]
    if not pending:
        return "\n".join([*out, f"Nothing is pending: {catalog.database} is at {catalog.version:03d}.", ""])
    out += [
        f"The application is stopped for the whole window (runbook 2.1). {catalog.database} is at "
        f"{catalog.version:03d}; the window applies {len(pending)} migration(s) in one transaction, then checks "
        "and smoke tests; any failure puts the database back as it was.",
        "",
    ]
    if expected is not None:
        out += [
            "## Expected window",
            "",
            f"- **{forecast.format_seconds(expected.window_s)}**, between {forecast.format_seconds(expected.low_s)} "
            f"and {forecast.format_seconds(expected.high_s)} (forecast from {record_path}, the target's catalog "
            "statistics and the measured error of the forecast)",
            f"- If a failure after the commit needs the backup restored: "
            f"{forecast.format_seconds(expected.restore.seconds)} more",
            "",
        ]
    out += ["## Pending migrations", ""] + [f"- `{m.file_name}`" for m in pending] + [""]
    out += _removed(walk, catalog)
    out += _archive(walk, catalog, record)
    out += _locks(readings, record)
    out += _integrations(readings, catalog)
    out += [
        f"_Read from {catalog.database}'s catalog statistics at {catalog.read_at} (read-only; no table was "
        "counted): figures marked ≈ are estimates, ≤ upper bounds, ≥ lower bounds._",
        "",
    ]
    return "\n".join(out)


def _removed(walk: SchemaWalk, catalog: Catalog) -> list[str]:
    lines = []
    for name, columns in sorted(walk.start.items()):
        if not name.startswith("public."):
            continue
        now = walk.tables.get(name)
        short = name.removeprefix("public.")
        if now is None:
            moved = walk.started(name)
            where = f": moved to `{moved.name}`" if moved is not None else ": dropped, with its rows"
            lines.append(f"- the table `{short}`{where}")
            continue
        for column in columns:
            if column not in now.columns:
                lines.append(f"- the column `{short}.{column}`{_kept(walk, name, column)}")
    if not lines:
        return ["## What they remove", "", "Nothing: no table or column of `public` goes.", ""]
    return ["## What they remove", "", *lines, ""]


def _kept(walk: SchemaWalk, table: str, column: str) -> str:
    """Where a removed column's values are kept: tables outside public made of that table's rows with it."""
    keeping = sorted(
        (
            other
            for other in walk.tables.values()
            if not other.name.startswith("public.") and table in other.origin and column in other.columns
        ),
        key=lambda other: other.started_as != table,  # the old table itself first
    )
    if not keeping:
        return ": dropped with its values"
    places = [
        f"`{other.name}`" + (f" (by `{other.columns[0]}`)" if other.columns[0] != column else "")
        for other in keeping
    ]
    return f": kept in {' and '.join(places)}; whatever reads it must read it there"


def _archive(walk: SchemaWalk, catalog: Catalog, record: forecast.Record | None) -> list[str]:
    if not walk.movements:
        return []
    estimator = Estimator(catalog, walk)
    recorded = _record_archived(record, walk, catalog) if record is not None else {}
    rows: dict[str, list[str]] = {}
    for movement in walk.movements:
        name = movement.into.name
        if not name.startswith(f"{ARCHIVE_SCHEMA}.") or name in rows:
            continue
        comes_from = ", ".join(sorted(t.removeprefix("public.") for t in movement.into.origin)) or "-"
        condition = _condition(movement)
        if name in recorded:
            found = recorded[name]
            rows[name] = [name, _fmt(found.rows), comes_from, condition, found.basis]
        else:
            estimate = estimator.movement(movement)
            rows[name] = [name, _fmt(estimate.rows, estimate.bound), comes_from, condition, estimate.basis]
    lines = [
        f"## What moves to {ARCHIVE_SCHEMA}",
        "",
        "| table | rows | from | condition | estimated from |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows.values()]
    return [*lines, ""]


def _condition(movement: Movement) -> str:
    """The conditions that pick the rows, as SQL; a CTE they name is spelt out after them."""
    if movement.whole_table:
        deleted = " and ".join(f"`{c.sql()}`" for c in movement.into.deletes if _plain(c))
        return f"the old table itself{', less the rows where ' + deleted if deleted else ''}"
    conditions = [
        *(movement.source.conditions if isinstance(movement.source, Cte) else []),
        *movement.conditions,
    ]
    said = [f"`{c.sql()}`" for c in conditions]
    for condition in conditions:
        for alias, source in condition.scope.aliases.items():
            if isinstance(source, Cte) and source.conditions and f"{alias}." in condition.sql():
                said.append(f"({alias}: {' and '.join(f'`{c.sql()}`' for c in source.conditions)})")
    return " and ".join(said) or "every row"


def _plain(condition: Condition) -> bool:
    """A condition on the table's own columns (not a join to a CTE, which the table of moves says)."""
    return not any(isinstance(source, Cte) for source in condition.scope.aliases.values()) or (
        "." not in condition.sql()
    )


def _locks(readings: list[Reading], record: forecast.Record | None) -> list[str]:
    lines = ["## Tables locked during the window", ""]
    if record is not None:
        held: dict[str, str] = {}
        for migration in record.data["migrations"]:
            for table in migration.get("locked") or {}:
                held.setdefault(table, migration["file_name"])
        lines += [
            "ACCESS EXCLUSIVE (no reads, no writes) from the migration named until the window's commit, "
            "as the staging run measured it:",
            "",
        ]
        lines += [f"- `{table}` (from {migration})" for table, migration in sorted(held.items())]
        return [*lines, ""]
    exclusive = sorted({table for reading in readings for table in reading.exclusive})
    writes = sorted({table for reading in readings for table in reading.writes_blocked} - set(exclusive))
    lines += [f"- `{table}`: ACCESS EXCLUSIVE (no reads, no writes) until the commit" for table in exclusive]
    lines += [f"- `{table}`: SHARE (reads only) until the commit" for table in writes]
    lines += ["", "_From the statements; a record (`--record`) gives what the staging run measured._"]
    return [*lines, ""]


def _integrations(readings: list[Reading], catalog: Catalog) -> list[str]:
    touched = {table for reading in readings for table in reading.bases}
    lines = []
    for integration, tables in INTEGRATIONS.items():
        if not touched & set(tables):
            continue
        registrations = catalog.sizes.get(tables[0])
        events = catalog.sizes.get(tables[1])
        detail = []
        if registrations is not None:
            without_user = catalog.null_fractions.get((tables[0], "user_id"))
            detail.append(f"{_fmt(registrations.rows)} registrations")
            if without_user is not None:
                detail.append(
                    f"{_fmt(registrations.rows * without_user)} of them without a user, which move to "
                    f"{ARCHIVE_SCHEMA} and stop delivering"
                )
        if events is not None and catalog.in_flight is not None:
            detail.append(f"{_fmt(events.rows * catalog.in_flight)} events pending or processing")
        names = ", ".join(f"`{table.removeprefix('public.')}`" for table in tables)
        lines.append(
            f"- **{integration}** ({names}): stop the delivery worker and tell the endpoints' owners before the "
            f"window; {'; '.join(detail)}"
        )
    if not lines:
        return []
    return ["## Integrations to freeze", "", *lines, ""]
