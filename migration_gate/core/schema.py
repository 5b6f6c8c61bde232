"""A database's schema as comparable objects: what migrations build, what changed, what drifted.

One read of the catalogs gives every object the migrations can make, each under a stable
key (its kind and qualified name) with a definition to compare: schemas, tables, views,
materialized views, sequences, columns (type, NOT NULL, default, identity, generation,
collation), constraints, indexes, functions and procedures (their whole definition, with
``SECURITY DEFINER`` and ``SET search_path``), triggers, enum and domain types, and, when
asked, the grants on each (grantee by grantee).

Three things read it (docs/contract.md §5 and §6):

- the summary of what each migration added, altered or dropped (a snapshot before and
  after it, on the gate's own database);
- ``schema_drift``: the target's schema against what its ledger's migrations and
  corrections build on an empty database (grants and owners left out);
- ``baseline``'s proof that a database another runner migrated is exactly at a version.

What is left out is not the migrations' doing: the system's schemas (``pg_catalog``,
``information_schema``, toast and temporary ones), the gate's own ``migration_gate``,
extensions and everything an extension owns, and PostgreSQL 18's rows for NOT NULL
constraints (``attnotnull`` says it on every major; only what 18 adds, NOT VALID and NO
INHERIT, is kept, on the column). Definitions are read with ``search_path`` set to
``pg_catalog`` alone, so every name in them is schema-qualified and a database's own
``search_path`` cannot make two equal schemas read differently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from migration_gate.core.plan import Migration

GATE_SCHEMA = "migration_gate"

# Kinds, in the order a reader meets them (the summary lists changes in this order).
KINDS = (
    "schema",
    "type",
    "table",
    "view",
    "materialized view",
    "sequence",
    "column",
    "constraint",
    "index",
    "function",
    "procedure",
    "trigger",
    "grant",
)

# The database's own schemas: not the system's, not an extension's (pg_depend 'e'), not ``exclude``.
# The checks that review "every schema" (grants, invalid indexes and constraints, functions) read
# the same list, with the same parameter.
OWN_SCHEMAS = """
SELECT n.oid, n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> ALL(%(exclude)s)
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
"""

_OBJECTS = f"""
WITH ours AS ({OWN_SCHEMAS}),
rels AS (
    SELECT c.oid, s.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
           c.relacl, c.relowner, format('%%I.%%I', s.nspname, c.relname) AS qualified
    FROM pg_class c JOIN ours s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
),
procs AS (
    SELECT p.oid, p.prokind, p.proacl, p.proowner,
           format('%%I.%%I(%%s)', s.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS signature
    FROM pg_proc p JOIN ours s ON s.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
)
SELECT 'schema' AS kind, format('%%I', nspname) AS name, '' AS parent, 'schema' AS definition FROM ours
UNION ALL
SELECT 'type', format('%%I.%%I', s.nspname, t.typname), '',
       CASE t.typtype
           WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                      FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
           ELSE 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                || coalesce(' DEFAULT ' || t.typdefault, '')
                || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(c.oid), ' ' ORDER BY c.conname)
                             FROM pg_constraint c WHERE c.contypid = t.oid), '')
       END
FROM pg_type t JOIN ours s ON s.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd')
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT CASE relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                    ELSE 'table' END,
       qualified, '',
       CASE relkind
           WHEN 'v' THEN pg_get_viewdef(oid, true)
           WHEN 'm' THEN pg_get_viewdef(oid, true)
           WHEN 'S' THEN (SELECT format('%%s start %%s increment %%s min %%s max %%s cache %%s%%s',
                                       format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin,
                                       q.seqmax, q.seqcache, CASE WHEN q.seqcycle THEN ' cycle' ELSE '' END)
                          FROM pg_sequence q WHERE q.seqrelid = rels.oid)
           ELSE CASE relkind WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table' ELSE 'table' END
                || CASE relpersistence WHEN 'u' THEN ' unlogged' ELSE '' END
                || CASE WHEN relrowsecurity THEN ' row level security' ELSE '' END
                || CASE WHEN relforcerowsecurity THEN ' forced' ELSE '' END
                || coalesce(' partitioned by ' || pg_get_partkeydef(oid), '')
       END
FROM rels
UNION ALL
SELECT 'column', format('%%s.%%I', r.qualified, a.attname), r.qualified,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attcollation <> 0 AND a.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = a.atttypid)
               THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce((SELECT CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED'
                                ELSE ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) END
                    FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum), '')
       || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                             WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
       || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(c.oid), ' ')
                    FROM pg_constraint c
                    WHERE c.conrelid = a.attrelid AND c.contype = 'n' AND c.conkey = ARRAY[a.attnum]
                      AND (NOT c.convalidated OR c.connoinherit)), '')
FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'constraint', format('%%s.%%I', r.qualified, c.conname), r.qualified, pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN rels r ON r.oid = c.conrelid
WHERE c.contype <> 'n'
UNION ALL
SELECT 'index', format('%%I.%%I', s.nspname, ic.relname), t.qualified,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN ours s ON s.oid = ic.relnamespace
JOIN rels t ON t.oid = i.indrelid
UNION ALL
SELECT CASE prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, signature, '',
       CASE WHEN prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(oid) END
FROM procs
UNION ALL
SELECT 'trigger', format('%%s.%%I', r.qualified, tg.tgname), r.qualified, pg_get_triggerdef(tg.oid)
FROM pg_trigger tg JOIN rels r ON r.oid = tg.tgrelid
WHERE NOT tg.tgisinternal
"""

# Grants, grantee by grantee, on what the objects above are; owners' own grants are not grants.
_GRANTS = f"""
WITH ours AS ({OWN_SCHEMAS}),
acls AS (
    SELECT 'schema ' || format('%%I', n.nspname) AS subject, n.nspacl AS acl, n.nspowner AS owner
    FROM pg_namespace n JOIN ours s ON s.oid = n.oid
    UNION ALL
    SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                          ELSE 'table ' END || format('%%I.%%I', s.nspname, c.relname),
           c.relacl, c.relowner
    FROM pg_class c JOIN ours s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 'column ' || format('%%I.%%I.%%I', s.nspname, c.relname, a.attname), a.attacl, c.relowner
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ours s ON s.oid = c.relnamespace
    WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END
           || format('%%I.%%I(%%s)', s.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           coalesce(p.proacl, acldefault('f', p.proowner)), p.proowner
    FROM pg_proc p JOIN ours s ON s.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
)
SELECT 'grant',
       subject || ' to ' || CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(e.grantee)::text END,
       subject,
       string_agg(e.privilege_type || CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                  ORDER BY e.privilege_type)
FROM acls CROSS JOIN LATERAL aclexplode(acl) AS e
WHERE e.grantee <> owner
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class SchemaObject:
    """One object of the schema: its kind, its qualified name, what it belongs to, its definition."""

    kind: str
    name: str
    parent: str  # the table of a column, constraint, index or trigger; the object of a grant
    definition: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def describe(self) -> str:
        """The object for a person: ``index public.tmp_fix_idx on public.activities (action)``."""
        if self.kind == "index":
            return f"{self.kind} {self.name} on {self.parent} {_index_columns(self.definition)}"
        if self.kind in ("column", "type", "sequence"):
            return f"{self.kind} {self.name} {self.definition}"
        if self.kind == "constraint":
            return f"{self.kind} {self.name} {self.definition}"
        if self.kind == "grant":
            return f"{self.kind} of {self.definition} on {self.name}"
        return f"{self.kind} {self.name}"


def _index_columns(definition: str) -> str:
    """``(action)`` from ``CREATE INDEX … USING btree (action)``: the part after the access method."""
    _, _, rest = definition.partition(" USING ")
    _, _, columns = rest.partition(" ")
    return columns or definition


Schema = Mapping[tuple[str, str], SchemaObject]


def own_schemas(conn: psycopg.Connection, exclude: tuple[str, ...] = (GATE_SCHEMA,)) -> list[str]:
    """The names of the database's own schemas (``OWN_SCHEMAS``), sorted."""
    rows = conn.execute(f"SELECT nspname FROM ({OWN_SCHEMAS}) AS own ORDER BY 1", {"exclude": list(exclude)})
    return [str(row[0]) for row in rows.fetchall()]


@contextmanager
def _qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """Every name in a definition schema-qualified: read with ``search_path`` = pg_catalog, then put back."""
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    previous = str(row[0]) if row else ""
    conn.execute("SELECT set_config('search_path', 'pg_catalog', false)")
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", (previous,))


def snapshot(
    conn: psycopg.Connection, *, grants: bool = False, exclude: tuple[str, ...] = (GATE_SCHEMA,)
) -> dict[tuple[str, str], SchemaObject]:
    """Every object of the database's own schemas (not ``exclude``), by key; with ``grants``, each grant too."""
    params = {"exclude": list(exclude)}
    with _qualified_names(conn):
        rows = conn.execute(_OBJECTS, params).fetchall()
        if grants:
            rows += conn.execute(_GRANTS, params).fetchall()
    objects = (
        SchemaObject(str(kind), str(name), str(parent), str(definition))
        for kind, name, parent, definition in rows
    )
    return {obj.key: obj for obj in objects}


ADDED, ALTERED, DROPPED = "added", "altered", "dropped"


@dataclass(frozen=True)
class Change:
    """One object that ``after`` has and ``before`` had not (added), or lost (dropped), or defines otherwise."""

    action: str
    before: SchemaObject | None
    after: SchemaObject | None

    @property
    def object(self) -> SchemaObject:
        found = self.after or self.before
        assert found is not None
        return found

    @property
    def kind(self) -> str:
        return self.object.kind

    def line(self) -> str:
        """``added index public.api_keys_workspace_idx on public.api_keys (workspace_id)``."""
        if self.action == ALTERED and self.before is not None and self.after is not None:
            return f"{ALTERED} {self.after.kind} {self.after.name}: {self.before.definition!r} → {self.after.definition!r}"
        return f"{self.action} {self.object.describe()}"

    def to_json(self) -> dict[str, str]:
        return {
            "action": self.action,
            "kind": self.kind,
            "name": self.object.name,
            "parent": self.object.parent,
            "before": self.before.definition if self.before else "",
            "after": self.after.definition if self.after else "",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Change:
        def side(definition: str, present: bool) -> SchemaObject | None:
            return SchemaObject(data["kind"], data["name"], data["parent"], definition) if present else None

        return cls(
            data["action"],
            side(data["before"], data["action"] != ADDED),
            side(data["after"], data["action"] != DROPPED),
        )


def diff(before: Schema, after: Schema) -> list[Change]:
    """Every object added, altered or dropped from ``before`` to ``after``, by kind then name."""
    changes = [Change(ADDED, None, after[key]) for key in after.keys() - before.keys()]
    changes += [Change(DROPPED, before[key], None) for key in before.keys() - after.keys()]
    changes += [
        Change(ALTERED, before[key], after[key])
        for key in before.keys() & after.keys()
        if before[key].definition != after[key].definition
    ]
    order = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(
        changes, key=lambda change: (order.get(change.kind, len(order)), change.object.name, change.action)
    )


@dataclass
class ChangeProbe:
    """A hook of the runner's ``apply``: what each migration added, altered or dropped, grants included.

    The catalog is read in the migration's own transaction before its first statement and
    again once it has ended, on the same connection; the runner leaves a hook's time out of
    the migration's duration. Consecutive migrations on one connection share a snapshot:
    the one after a migration is the one before the next.
    """

    by_migration: dict[str, list[Change]] = field(default_factory=dict)
    _connection: psycopg.Connection | None = None
    _migration: str = ""
    _before: Schema | None = None
    _last: Schema | None = None  # after the last migration on ``_connection``

    def before(self, conn: psycopg.Connection, migration: Migration) -> None:
        if conn is not self._connection or self._last is None:
            self._connection, self._last = conn, snapshot(conn, grants=True)
        self._migration = migration.file_name
        self._before = self._last

    def after_statement(
        self, conn: psycopg.Connection, timing: object, started: float, hooks_so_far: float
    ) -> None:
        """Nothing between statements: a migration's changes are what its transaction leaves."""

    def after_commit(self, ended: float, hooks_total: float) -> None:
        assert self._connection is not None and self._before is not None
        self._last = snapshot(self._connection, grants=True)
        self.by_migration[self._migration] = diff(self._before, self._last)
