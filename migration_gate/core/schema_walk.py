"""What migrations' statements do to tables, read with PostgreSQL's parser and never run.

A walk over the pending migrations' statements, in order, from the tables a database holds
now (their names and columns): which tables of the start each statement works on, what
it renames, moves to another schema, rewrites or drops, which columns a table loses, and
which rows are written into another table and under what condition.

* A table keeps its identity through ``RENAME`` and ``SET SCHEMA``; a table made by
  ``CREATE TABLE … AS`` or filled by ``INSERT … SELECT`` holds rows of the tables it reads
  (``origin``). So 008's ``activities_before_008`` is the activities of the start, and the
  new ``activities`` holds their rows: a statement on either scales with them.
* ``CREATE TABLE … AS`` keeps how each column is computed, and ``DELETE`` its condition, so
  the squads' notice can estimate from statistics which rows a condition selects.
* ``DO`` blocks are read too where their SQL is static (``EXECUTE`` of a built string is not).

What is not understood is left alone: the walk informs a forecast and a notice, it never
decides what runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast.enums import AlterTableType, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream

from migration_gate.core.plan import Migration, statement_tables

# The statements that take ACCESS EXCLUSIVE on the table they name: no reads, no writes.
EXCLUSIVE = {
    "AlterTableStmt",
    "RenameStmt",
    "AlterObjectSchemaStmt",
    "DropStmt",
    "TruncateStmt",
    "ClusterStmt",
}
# The statements that take SHARE (or more) on the table they name: reads go on, writes wait.
WRITES_BLOCKED = {"IndexStmt"}

KINDS = {
    "IndexStmt": "CREATE INDEX",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "CreateStmt": "CREATE TABLE",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "AlterTableStmt": "ALTER TABLE",
    "RenameStmt": "RENAME",
    "AlterObjectSchemaStmt": "SET SCHEMA",
    "DropStmt": "DROP",
    "DoStmt": "DO",
    "VacuumStmt": "ANALYZE",
    "VariableSetStmt": "SET",
    "TruncateStmt": "TRUNCATE",
}


def qualified(name: str) -> str:
    """``activities`` → ``public.activities``: the migrations run with the default search path."""
    return name if "." in name else f"public.{name}"


def _range_name(rangevar: Any) -> str:
    return f"{rangevar.schemaname or 'public'}.{rangevar.relname}"


@dataclass(eq=False)
class Table:
    """A table as the walk knows it at this point of the migrations."""

    name: str
    columns: list[str]
    started_as: str | None  # its name at the start; None: the migrations made it
    origin: frozenset[str]  # the tables of the start whose rows it holds
    computed: dict[str, Condition] = field(default_factory=dict)  # column → how CREATE TABLE AS computed it
    deletes: list[Condition] = field(default_factory=list)  # the conditions rows were deleted on since


@dataclass(frozen=True, eq=False)
class Scope:
    """The relations a statement names, by alias: tables of the walk, or its own DELETE CTEs."""

    aliases: dict[str, Table | Cte]
    # alias → ON clause, for a relation LEFT JOINed: its columns are NULL where the join found nothing.
    left_joined: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Condition:
    """An expression (a pglast node) and the scope its column references resolve in."""

    node: Any
    scope: Scope

    def sql(self) -> str:
        return str(RawStream()(self.node))


@dataclass(eq=False)
class Cte:
    """A ``WITH name AS (DELETE FROM t WHERE … RETURNING …)``: the rows it takes out of ``table``."""

    name: str
    table: Table | None
    conditions: list[Condition]


@dataclass(eq=False)
class Movement:
    """Rows written into ``into`` by one statement (or, ``whole_table``, a table moved into its schema)."""

    migration: str
    line: int
    into: Table
    source: Table | Cte | None
    conditions: list[Condition]
    whole_table: bool = False


@dataclass(frozen=True)
class Reading:
    """One statement: what it is, and the tables of the start it works on or locks."""

    migration: str
    line: int
    kind: str
    bases: frozenset[str]
    exclusive: frozenset[str]  # tables of the start it takes ACCESS EXCLUSIVE on
    writes_blocked: frozenset[str]  # tables of the start it takes SHARE on


class SchemaWalk:
    """The walk (see the module): ``read`` each migration in order, then look at ``tables``."""

    def __init__(self, start: dict[str, list[str]]) -> None:
        self.start = {qualified(name): list(columns) for name, columns in start.items()}
        self.tables: dict[str, Table] = {
            name: Table(name, list(columns), name, frozenset({name})) for name, columns in self.start.items()
        }
        self.movements: list[Movement] = []
        self._migration = ""
        self._line = 0

    def started(self, name: str) -> Table | None:
        """The table that was ``name`` at the start, wherever it is now (None: dropped)."""
        return next((t for t in self.tables.values() if t.started_as == name), None)

    def read(self, migration: Migration) -> list[Reading]:
        """Walk one migration's statements; what each works on, in order."""
        readings = []
        for statement in migration.statements():
            self._migration, self._line = migration.file_name, statement.line
            names = {qualified(name) for name in statement_tables(statement.sql)}
            bases = frozenset().union(*(self.tables[n].origin for n in names if n in self.tables))
            nodes = _parsed(statement.sql)
            kind = type(nodes[0]).__name__ if nodes else ""
            # Only a table the application had can keep it waiting: one the migration made is its own.
            locked = frozenset(
                table.started_as
                for name in (_targets(nodes[0]) if nodes else [])
                if (table := self.tables.get(name)) is not None and table.started_as is not None
            )
            for node in nodes:
                self._apply(node)
            readings.append(
                Reading(
                    migration.file_name,
                    statement.line,
                    KINDS.get(kind, kind),
                    bases,
                    locked if kind in EXCLUSIVE else frozenset(),
                    locked if kind in WRITES_BLOCKED else frozenset(),
                )
            )
        return readings

    # -- Each kind of statement ------------------------------------------------------------

    def _apply(self, node: Any) -> None:
        handler = getattr(self, f"_on_{type(node).__name__}", None)
        if handler is not None:
            handler(node)

    def _on_DoStmt(self, node: Any) -> None:
        for query in _plpgsql_statements(node):
            for inner in _parsed(query):
                self._apply(inner)

    def _on_CreateStmt(self, node: Any) -> None:
        name = _range_name(node.relation)
        columns = [
            element.colname for element in node.tableElts or () if type(element).__name__ == "ColumnDef"
        ]
        self.tables[name] = Table(name, columns, None, frozenset())

    def _on_CreateTableAsStmt(self, node: Any) -> None:
        name = _range_name(node.into.rel)
        scope, _ = self._select_scope(node.query)  # every row the query returns: its WHERE is in the rows
        computed: dict[str, Condition] = {}
        columns = list(node.into.colNames or ())
        for index, target in enumerate(node.query.targetList or ()):
            column = _target_name(target)
            if index >= len(columns):
                columns.append(column)
            computed[columns[index]] = Condition(target.val, scope)
        self.tables[name] = Table(name, columns, None, _driving(scope), computed)

    def _on_InsertStmt(self, node: Any) -> None:
        into = self.tables.get(_range_name(node.relation))
        if into is None or node.selectStmt is None:
            return
        ctes = self._ctes(node.withClause)
        scope, conditions = self._select_scope(node.selectStmt, ctes)
        into.origin = into.origin | _driving(scope)
        first = next(iter(scope.aliases.values()), None)
        if first is not None and into.name.split(".")[0] != "public":
            self.movements.append(Movement(self._migration, self._line, into, first, conditions))

    def _on_DeleteStmt(self, node: Any, ctes: dict[str, Cte] | None = None) -> Cte | None:
        table = self.tables.get(_range_name(node.relation))
        aliases: dict[str, Table | Cte] = dict(ctes or self._ctes(node.withClause))
        if table is not None:
            aliases[node.relation.alias.aliasname if node.relation.alias else node.relation.relname] = table
        for item in node.usingClause or ():
            self._from_item(item, aliases, {}, [])
        scope = Scope(aliases)
        conditions = [Condition(node.whereClause, scope)] if node.whereClause is not None else []
        if table is not None:
            table.deletes += conditions
        return Cte("", table, conditions)

    def _on_AlterTableStmt(self, node: Any) -> None:
        table = self.tables.get(_range_name(node.relation))
        if table is None:
            return
        for command in node.cmds or ():
            if command.subtype == AlterTableType.AT_AddColumn:
                table.columns.append(command.def_.colname)
            elif command.subtype == AlterTableType.AT_DropColumn and command.name in table.columns:
                table.columns.remove(command.name)

    def _on_RenameStmt(self, node: Any) -> None:
        if node.relation is None:
            return
        name = _range_name(node.relation)
        table = self.tables.get(name)
        if table is None:
            return
        if node.renameType == ObjectType.OBJECT_TABLE:
            table.name = f"{name.split('.')[0]}.{node.newname}"
            self.tables[table.name] = self.tables.pop(name)
        elif node.renameType == ObjectType.OBJECT_COLUMN and node.subname in table.columns:
            table.columns[table.columns.index(node.subname)] = node.newname

    def _on_AlterObjectSchemaStmt(self, node: Any) -> None:
        if node.objectType != ObjectType.OBJECT_TABLE or node.relation is None:
            return
        name = _range_name(node.relation)
        table = self.tables.pop(name, None)
        if table is None:
            return
        table.name = f"{node.newschema}.{node.relation.relname}"
        self.tables[table.name] = table
        if node.newschema != "public":
            self.movements.append(Movement(self._migration, self._line, table, table, [], whole_table=True))

    def _on_DropStmt(self, node: Any) -> None:
        if node.removeType != ObjectType.OBJECT_TABLE:
            return
        for parts in node.objects or ():
            self.tables.pop(qualified(".".join(part.sval for part in parts)), None)

    # -- FROM clauses and CTEs -----------------------------------------------------------

    def _ctes(self, with_clause: Any) -> dict[str, Cte]:
        ctes: dict[str, Cte] = {}
        for cte in with_clause.ctes if with_clause is not None else ():
            query = cte.ctequery
            if type(query).__name__ == "DeleteStmt":
                taken = self._on_DeleteStmt(query, ctes)
                assert taken is not None
                ctes[cte.ctename] = Cte(cte.ctename, taken.table, taken.conditions)
            else:
                ctes[cte.ctename] = Cte(cte.ctename, None, [])
        return ctes

    def _select_scope(self, select: Any, ctes: dict[str, Cte] | None = None) -> tuple[Scope, list[Condition]]:
        aliases: dict[str, Table | Cte] = dict(ctes or {})
        aliases.update(self._ctes(getattr(select, "withClause", None)))
        left_joined: dict[str, Any] = {}
        named: list[str] = []
        for item in getattr(select, "fromClause", None) or ():
            self._from_item(item, aliases, left_joined, named)
        scope = Scope({name: aliases[name] for name in named if name in aliases} | aliases, left_joined)
        where = getattr(select, "whereClause", None)
        return scope, [Condition(where, scope)] if where is not None else []

    def _from_item(
        self, item: Any, aliases: dict[str, Table | Cte], left_joined: dict[str, Any], named: list[str]
    ) -> None:
        kind = type(item).__name__
        if kind == "RangeVar":
            alias = item.alias.aliasname if item.alias else item.relname
            source = aliases.get(item.relname) if item.schemaname is None else None
            source = source or self.tables.get(_range_name(item))
            if source is not None:
                aliases[alias] = source
                named.append(alias)
        elif kind == "JoinExpr":
            self._from_item(item.larg, aliases, left_joined, named)
            before = set(aliases)
            self._from_item(item.rarg, aliases, left_joined, named)
            if item.jointype.name == "JOIN_LEFT" and item.quals is not None:
                for alias in set(aliases) - before:
                    left_joined[alias] = item.quals


def _driving(scope: Scope) -> frozenset[str]:
    """The origin of the rows a query returns: its first FROM item's (the others are looked up)."""
    first = next(iter(scope.aliases.values()), None)
    table = first.table if isinstance(first, Cte) else first
    return table.origin if table is not None else frozenset()


def _targets(node: Any) -> list[str]:
    """The tables a statement acts on (not those it only reads), qualified."""
    kind = type(node).__name__
    if kind in ("AlterTableStmt", "RenameStmt", "AlterObjectSchemaStmt", "IndexStmt", "ClusterStmt"):
        return [_range_name(node.relation)] if node.relation is not None else []
    if kind == "TruncateStmt":
        return [_range_name(relation) for relation in node.relations]
    if kind == "DropStmt" and node.removeType == ObjectType.OBJECT_TABLE:
        return [qualified(".".join(part.sval for part in parts)) for parts in node.objects]
    return []


def _target_name(target: Any) -> str:
    if target.name:
        return str(target.name)
    value = target.val
    if type(value).__name__ == "ColumnRef":
        return str(value.fields[-1].sval)
    return "?column?"


def _parsed(sql: str) -> list[Any]:
    try:
        return [raw.stmt for raw in pglast.parse_sql(sql)]
    except ParseError:
        return []


def _plpgsql_statements(do: Any) -> Iterator[str]:
    """The static SQL statements of a DO block, in the order they are written."""
    body = next((item.arg.sval for item in do.args or () if item.defname == "as"), None)
    if body is None:
        return
    try:
        tree = pglast.parse_plpgsql(
            f"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$ {body} $body$"
        )
    except ParseError:
        return
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            execsql = node.get("PLpgSQL_stmt_execsql")
            if isinstance(execsql, dict):
                query = execsql.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query")
                if isinstance(query, str):
                    yield query
                continue
            stack[:0] = list(node.values())
        elif isinstance(node, list):
            stack[:0] = node
