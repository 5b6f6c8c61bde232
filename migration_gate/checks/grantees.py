"""The privilege review of every grantee: who else holds what, in every schema (docs/contract.md §5, §8).

``privileges`` asks what ``fluxolab_devmode`` can do; this module reads the grants
themselves, from the catalogs, at the level where each is made: a table (or view, or
sequence) in ``pg_class.relacl``, a column in ``pg_attribute.attacl``, a schema in
``pg_namespace.nspacl``, and future objects in ``pg_default_acl`` (the entries for the
schemas and the global ones). ``aclexplode`` turns each ACL into (grantee, privilege,
grant option, grantor) rows. The schemas reviewed are the database's own
(``schema.OWN_SCHEMAS``): every one but the system's (``pg_catalog``,
``information_schema``, toast and temporary ones), an extension's and the gate's own
``migration_gate``; an extension's tables are the extension's. A schema a migration makes
for itself and grants to nobody has nothing to review. A grant may only go to

- the object's owner (for default privileges, the role they belong to);
- ``fluxolab_devmode``, within its contract (§4.5): nothing in legacy_archive, no columns;
- PUBLIC, where PostgreSQL itself puts it: USAGE on schema public, and what
  ``acldefault`` gives PUBLIC on future functions and types;
- a role the operator declares (``--allowed-grantee ROLE[:PRIVILEGES]``).

Anything else fails, naming object, grantee and privilege. Privileges reached through a
role membership are not grants here: a grant made directly to a member of an allowed role
is that member's own grant and needs its own declaration; the role report
(``role_report``) shows who is a member of what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psycopg

from migration_gate.checks.failures import CheckFailed
from migration_gate.checks.privileges import (
    DESIRED_PUBLIC_SCHEMA,
    DESIRED_SEQUENCE,
    DESIRED_TABLE,
    TABLE_KINDS,
)
from migration_gate.core.allowed_grantees import PUBLIC, AllowedGrantee
from migration_gate.core.contract import APP_ROLE
from migration_gate.core.schema import own_schemas

# initdb's own =U on schema public (003 takes away the CREATE that servers before 15 gave).
INITDB_PUBLIC_USAGE = ("schema", "public", PUBLIC, "USAGE")
RELATION_WORDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
}
# pg_default_acl.defaclobjtype of what lives in a schema → what the entry's future objects are.
FUTURE_OBJECTS = {"r": "tables", "S": "sequences", "f": "functions", "T": "types"}


@dataclass(frozen=True)
class Grant:
    """One (object, grantee, privilege) of an ACL, at the level where it is granted."""

    level: str  # table, sequence, column, schema, default privileges
    subject: str  # e.g. "table public.credentials", "column public.credentials.secret"
    schema: str  # the schema it lies in ("" for default privileges in every schema)
    kind: str  # relkind for tables and sequences; defaclobjtype for default privileges
    grantee: str  # a role name, or PUBLIC
    privilege: str
    grantable: bool
    grantor: str
    to_owner: bool  # the grantee is the object's owner (for default privileges, their role)
    postgres_default: bool = False  # PUBLIC holds what acldefault itself gives it there

    def privilege_text(self) -> str:
        return self.privilege + (" WITH GRANT OPTION" if self.grantable else "")

    def line(self) -> str:
        return f"{self.subject}: {self.privilege_text()} granted to {self.grantee} (by {self.grantor})"


def _contract_of_the_application_role(grant: Grant) -> frozenset[str]:
    """What §4.5 lets fluxolab_devmode hold at this grant's place: public only, never a column."""
    if grant.schema != "public":
        return frozenset()
    if grant.level == "table":
        return DESIRED_TABLE
    if grant.level == "sequence":
        return DESIRED_SEQUENCE
    if grant.level == "schema":
        return DESIRED_PUBLIC_SCHEMA
    if grant.level == "default privileges":
        return {"r": DESIRED_TABLE, "S": DESIRED_SEQUENCE}.get(grant.kind, frozenset())
    return frozenset()


def allowed(grant: Grant, declared: Sequence[AllowedGrantee] = ()) -> bool:
    """Whether this grant may be there: the owner, the contract, PostgreSQL's own, or a declaration."""
    if grant.to_owner or grant.postgres_default:
        return True
    if grant.grantee == APP_ROLE:
        return not grant.grantable and grant.privilege in _contract_of_the_application_role(grant)
    if (grant.level, grant.schema, grant.grantee, grant.privilege_text()) == INITDB_PUBLIC_USAGE:
        return True
    return any(allowance.allows(grant) for allowance in declared)


# grantee, privilege, grant option, grantor: the columns every level reads from aclexplode.
_ACL = (
    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,\n"
    "       a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor) AS grantor"
)

_RELATION_GRANTS = f"""
SELECT c.relkind::text AS kind, n.nspname AS schema, format('%%I.%%I', n.nspname, c.relname) AS object,
       {_ACL}, a.grantee = c.relowner AS to_owner, false AS postgres_default
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind::text = ANY(%(kinds)s)
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3, 4, 5
"""

_COLUMN_GRANTS = f"""
SELECT c.relkind::text AS kind, n.nspname AS schema,
       format('%%I.%%I.%%I', n.nspname, c.relname, att.attname) AS object,
       {_ACL}, a.grantee = c.relowner AS to_owner, false AS postgres_default
FROM pg_attribute att
JOIN pg_class c ON c.oid = att.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(att.attacl) AS a
WHERE n.nspname = ANY(%(schemas)s) AND att.attnum > 0 AND NOT att.attisdropped
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3, 4, 5
"""

_SCHEMA_GRANTS = f"""
SELECT 'n' AS kind, n.nspname AS schema, format('%%I', n.nspname) AS object,
       {_ACL}, a.grantee = n.nspowner AS to_owner, false AS postgres_default
FROM pg_namespace n
CROSS JOIN LATERAL aclexplode(n.nspacl) AS a
WHERE n.nspname = ANY(%(schemas)s)
ORDER BY 3, 4, 5
"""

# Entries for the reviewed schemas and the global ones (defaclnamespace 0), which reach them
# all; a global entry for what lives outside schemas (future schemas, large objects) reaches
# none. PUBLIC keeps what acldefault gives it (EXECUTE on functions, USAGE on types).
_DEFAULT_GRANTS = f"""
SELECT d.defaclobjtype::text AS kind, coalesce(n.nspname, '') AS schema,
       pg_get_userbyid(d.defaclrole) AS object, {_ACL}, a.grantee = d.defaclrole AS to_owner,
       a.grantee = 0 AND NOT a.is_grantable AND EXISTS (
           SELECT FROM aclexplode(acldefault(
               (CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype::text END)::"char", d.defaclrole
           )) AS builtin
           WHERE builtin.grantee = 0 AND builtin.privilege_type = a.privilege_type
       ) AS postgres_default
FROM pg_default_acl d
LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) AS a
WHERE d.defaclobjtype::text = ANY(%(kinds)s) AND (d.defaclnamespace = 0 OR n.nspname = ANY(%(schemas)s))
ORDER BY 2, 3, 1, 4, 5
"""


def _relation(kind: str, schema: str, name: str) -> str:
    return f"{RELATION_WORDS[kind]} {name}"


def _future(kind: str, schema: str, owner: str) -> str:
    where = f"in schema {schema}" if schema else "in every schema"
    return f"default privileges of {owner} {where}, future {FUTURE_OBJECTS[kind]}"


@dataclass(frozen=True)
class Level:
    """Where a grant can be made, and how the review reads the grants made there."""

    check: str  # the catalog's name of its review
    name: str  # Grant.level
    what: str  # for the failure's summary
    where: str  # for the catalog's "what fails it"
    sql: str
    kinds: tuple[str, ...]
    subject: Callable[[str, str, str], str]  # (kind, schema, object) → "table public.credentials"

    def grants(self, conn: psycopg.Connection, schemas: Sequence[str]) -> list[Grant]:
        rows = conn.execute(self.sql, {"schemas": list(schemas), "kinds": list(self.kinds)})
        return [
            Grant(self.name, self.subject(kind, schema, name), schema, kind, *acl)
            for kind, schema, name, *acl in rows.fetchall()
        ]

    def rerun(self, schemas: Sequence[str]) -> str:
        """The review's own query, ready for psql: every grant of this level, allowed or not."""

        def array(values: Iterable[str]) -> str:
            return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]::text[]"

        query = self.sql.replace("%%", "%").replace("%(schemas)s", array(schemas))
        return query.replace("%(kinds)s", array(self.kinds)).strip() + ";"

    def review(self, conn: psycopg.Connection, declared: Sequence[AllowedGrantee] = ()) -> list[Grant]:
        """Fail on every grant not allowed, naming object, grantee and privilege; the grants read otherwise."""
        __tracebackhide__ = True
        schemas = own_schemas(conn)
        grants = self.grants(conn, schemas)
        refused = [grant for grant in grants if not allowed(grant, declared)]
        if not refused:
            return grants
        named = ", ".join(sorted({grant.grantee for grant in refused}))
        declared_text = ", ".join(str(allowance) for allowance in declared) or "none"
        raise CheckFailed(
            self.check,
            f"{len(refused)} grant(s) on {self.what} to a grantee that is neither the owner, "
            f"{APP_ROLE} within its contract, nor declared: {named}",
            [
                ("grants not allowed", "\n".join(grant.line() for grant in refused)),
                (
                    "allowed",
                    f"the owner; {APP_ROLE} as docs/contract.md §4.5 says; PUBLIC where PostgreSQL puts it "
                    f"(USAGE on schema public); declared with --allowed-grantee: {declared_text}",
                ),
                (
                    "what to do",
                    "REVOKE the grant, or, if it is meant to be there, declare the role with "
                    "--allowed-grantee ROLE[:PRIVILEGE,...] (or the allowed_grantee ini option)",
                ),
                ("SQL to run again by hand", self.rerun(schemas)),
            ],
            count=len(refused),
        )


TABLES = Level(
    "grantees[tables]",
    "table",
    "tables and views",
    "on a table or view of any schema but the system's",
    _RELATION_GRANTS,
    tuple(TABLE_KINDS),
    _relation,
)
SEQUENCES = Level(
    "grantees[sequences]",
    "sequence",
    "sequences",
    "on a sequence of any schema but the system's",
    _RELATION_GRANTS,
    ("S",),
    _relation,
)
COLUMNS = Level(
    "grantees[columns]",
    "column",
    "columns",
    "on a column of a table of any schema but the system's",
    _COLUMN_GRANTS,
    (),
    lambda kind, schema, name: f"column {name}",
)
SCHEMAS = Level(
    "grantees[schemas]",
    "schema",
    "the schemas",
    "on any schema but the system's",
    _SCHEMA_GRANTS,
    (),
    lambda kind, schema, name: f"schema {name}",
)
DEFAULT_PRIVILEGES = Level(
    "grantees[default_privileges]",
    "default privileges",
    "future objects (default privileges)",
    "in the default privileges (future objects) for any schema but the system's, or every schema",
    _DEFAULT_GRANTS,
    tuple(FUTURE_OBJECTS),
    _future,
)
# One entry of the catalog each, in this order.
LEVELS = (TABLES, SEQUENCES, COLUMNS, SCHEMAS, DEFAULT_PRIVILEGES)
