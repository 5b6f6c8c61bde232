"""What ``fluxolab_devmode`` may do, compared with what it should: missing and extra both fail.

Effective privileges come from ``has_table_privilege`` and its siblings, which see grants
made to PUBLIC and to roles the application role belongs to (``pg_read_all_data``
included); ``information_schema.role_table_grants`` shows only direct grants, so it would
miss exactly the leaks that matter. Default privileges come from ``pg_default_acl``. As in
pgTAP, every comparison is a desired set against the actual one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import psycopg

from migration_gate.checks.failures import CheckFailed, format_list
from migration_gate.core.contract import APP_ROLE, ARCHIVE_SCHEMA, PUBLIC_TABLES

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# PostgreSQL 17 adds MAINTAIN (VACUUM, ANALYZE, REINDEX, ...); older servers refuse the name.
MAINTAIN_FROM_SERVER_VERSION = 170000
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
# TEMPORARY is left out: PostgreSQL grants it to PUBLIC by default and it reaches no data.
DATABASE_PRIVILEGES = ("CONNECT", "CREATE")

DESIRED_TABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
DESIRED_SEQUENCE = frozenset({"USAGE", "SELECT"})
DESIRED_PUBLIC_SCHEMA = frozenset({"USAGE"})
DESIRED_DATABASE = frozenset({"CONNECT"})
NOTHING: frozenset[str] = frozenset()
# Role attributes that give more than LOGIN does; rolinherit (on by default) is not one.
ROLE_ATTRIBUTES = {
    "rolsuper": "SUPERUSER",
    "rolcreatedb": "CREATEDB",
    "rolcreaterole": "CREATEROLE",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}
# What has_table_privilege applies to (tables, partitioned tables, views, matviews, foreign tables).
TABLE_KINDS = ["r", "p", "v", "m", "f"]
RELKINDS = {"table": TABLE_KINDS, "sequence": ["S"]}
DESIRED_RELATION = {"table": DESIRED_TABLE, "sequence": DESIRED_SEQUENCE}

# The identity column behind each sequence of the contract's tables in public.
CONTRACT_SEQUENCES = tuple(f"{table}.id" for table in PUBLIC_TABLES if table != "workspace_members")


@dataclass(frozen=True)
class PrivilegeDiff:
    """Desired against actual for one object."""

    subject: str
    desired: frozenset[str]
    actual: frozenset[str]

    @property
    def missing(self) -> frozenset[str]:
        return self.desired - self.actual

    @property
    def extra(self) -> frozenset[str]:
        return self.actual - self.desired

    @property
    def exact(self) -> bool:
        return self.desired == self.actual

    def line(self) -> str:
        return f"{self.subject}: missing {format_list(self.missing)}; extra {format_list(self.extra)}"


def _fail_unless_exact(check: str, diffs: Sequence[PrivilegeDiff], rerun: str, role: str = APP_ROLE) -> None:
    __tracebackhide__ = True
    wrong = [diff for diff in diffs if not diff.exact]
    if not wrong:
        return
    missing = sum(len(diff.missing) for diff in wrong)
    extra = sum(len(diff.extra) for diff in wrong)
    raise CheckFailed(
        check,
        f"{role} has {missing} privilege(s) missing and {extra} extra on {len(wrong)} object(s)",
        [
            (
                "missing",
                "\n".join(f"{d.subject}: {format_list(d.missing)}" for d in wrong if d.missing) or "(none)",
            ),
            (
                "extra",
                "\n".join(f"{d.subject}: {format_list(d.extra)}" for d in wrong if d.extra) or "(none)",
            ),
            ("desired", "\n".join(f"{d.subject}: {format_list(d.desired)}" for d in wrong)),
            ("SQL to run again by hand", rerun),
        ],
    )


def _with_grant_options(privileges: Iterable[str]) -> list[str]:
    # Holding a privilege WITH GRANT OPTION lets the application hand it on: an extra of its own.
    names = list(privileges)
    return names + [f"{name} WITH GRANT OPTION" for name in names]


def table_privilege_names(conn: psycopg.Connection) -> tuple[str, ...]:
    """The table privileges this server knows: MAINTAIN too from PostgreSQL 17, so a grant of it is seen."""
    maintain = conn.info.server_version >= MAINTAIN_FROM_SERVER_VERSION
    return (*TABLE_PRIVILEGES, "MAINTAIN") if maintain else TABLE_PRIVILEGES


def _sql_array(names: Iterable[str]) -> str:
    return "ARRAY[" + ",".join(f"'{name}'" for name in names) + "]"


def _held(
    conn: psycopg.Connection, function: str, target: str, params: dict[str, object], privileges: Iterable[str]
) -> frozenset[str]:
    rows = conn.execute(
        f"SELECT p FROM unnest(%(privileges)s::text[]) AS p WHERE {function}(%(role)s, {target}, p)",
        {"privileges": _with_grant_options(privileges), **params},
    ).fetchall()
    return frozenset(row[0] for row in rows)


def _relation_oid(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return int(row[0]) if row else None


def relations(conn: psycopg.Connection, schema: str, kinds: Iterable[str]) -> list[str]:
    """Names of the relations of the given relkinds in ``schema``, sorted."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = ANY(%s) ORDER BY c.relname",
        (schema, list(kinds)),
    ).fetchall()
    return [row[0] for row in rows]


def relation_privileges(
    conn: psycopg.Connection, kind: str, name: str, schema: str = "public", role: str = APP_ROLE
) -> frozenset[str]:
    """What ``role`` holds on the ``kind`` (table or sequence) ``schema.name``: nothing when there is none."""
    oid = _relation_oid(conn, schema, name)
    if oid is None:
        return NOTHING
    known = table_privilege_names(conn) if kind == "table" else SEQUENCE_PRIVILEGES
    return _held(conn, f"has_{kind}_privilege", "%(oid)s::oid", {"role": role, "oid": oid}, known)


def _relation_diffs(
    conn: psycopg.Connection, schema: str, desired: Mapping[str, frozenset[str]], skip: Collection[str] = ()
) -> list[PrivilegeDiff]:
    """Each table and sequence of ``schema`` but ``skip``, its privileges against ``desired`` for its kind."""
    return [
        PrivilegeDiff(f"{kind} {schema}.{name}", wanted, relation_privileges(conn, kind, name, schema))
        for kind, wanted in desired.items()
        for name in relations(conn, schema, RELKINDS[kind])
        if name not in skip
    ]


def schema_privileges(conn: psycopg.Connection, schema: str, role: str = APP_ROLE) -> frozenset[str]:
    """``role`` may be 'public', PostgreSQL's name for the PUBLIC pseudo-role in these functions."""
    return _held(
        conn, "has_schema_privilege", "%(schema)s", {"role": role, "schema": schema}, SCHEMA_PRIVILEGES
    )


def database_privileges(conn: psycopg.Connection, role: str = APP_ROLE) -> frozenset[str]:
    return _held(conn, "has_database_privilege", "current_database()", {"role": role}, DATABASE_PRIVILEGES)


def _require_relation(conn: psycopg.Connection, schema: str, name: str, kind: str) -> None:
    __tracebackhide__ = True
    if _relation_oid(conn, schema, name) is None:
        raise CheckFailed(f"{schema}.{name}", f"the {kind} {schema}.{name} does not exist", [])


def _rerun(function: str, target: str, privileges: Iterable[str], role: str = APP_ROLE) -> str:
    """SQL asking ``function`` about each privilege of ``role`` on ``target`` (SQL), with grant option or not."""
    columns = ",\n       ".join(
        f"{function}('{role}', {target}, '{p}') AS \"{p}\"" for p in _with_grant_options(privileges)
    )
    return f"SELECT {columns};"


def _exact(
    check: str,
    subject: str,
    desired: frozenset[str],
    actual: frozenset[str],
    rerun: str,
    role: str = APP_ROLE,
) -> PrivilegeDiff:
    """``role`` holds exactly ``desired`` on one object: the diff, else CheckFailed with what is missing and extra."""
    __tracebackhide__ = True
    diff = PrivilegeDiff(subject, desired, actual)
    _fail_unless_exact(check, [diff], rerun, role)
    return diff


def _check_relation(conn: psycopg.Connection, kind: str, name: str, schema: str) -> PrivilegeDiff:
    __tracebackhide__ = True
    _require_relation(conn, schema, name, kind)
    known = table_privilege_names(conn) if kind == "table" else SEQUENCE_PRIVILEGES
    rerun = _rerun(f"has_{kind}_privilege", f"'{schema}.{name}'", known)
    actual = relation_privileges(conn, kind, name, schema)
    return _exact(f"{schema}.{name}", f"{kind} {schema}.{name}", DESIRED_RELATION[kind], actual, rerun)


def check_table(conn: psycopg.Connection, table: str, schema: str = "public") -> PrivilegeDiff:
    """Exactly SELECT/INSERT/UPDATE/DELETE on ``schema.table``."""
    __tracebackhide__ = True
    return _check_relation(conn, "table", table, schema)


def identity_sequence(conn: psycopg.Connection, column: str, schema: str = "public") -> str | None:
    """The sequence behind ``table.column`` (identity or serial), by name."""
    table, _, name = column.partition(".")
    row = conn.execute(
        "SELECT pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s)", (schema, table, name)
    ).fetchone()
    qualified = row[0] if row else None
    return qualified.split(".", 1)[1].strip('"') if qualified else None


def check_sequence(conn: psycopg.Connection, sequence: str, schema: str = "public") -> PrivilegeDiff:
    """Exactly USAGE/SELECT on ``schema.sequence`` (no UPDATE: setval is not the application's)."""
    __tracebackhide__ = True
    return _check_relation(conn, "sequence", sequence, schema)


def check_identity_sequence(conn: psycopg.Connection, column: str, schema: str = "public") -> PrivilegeDiff:
    """The sequence behind ``table.column`` exists and has exactly USAGE/SELECT."""
    __tracebackhide__ = True
    sequence = identity_sequence(conn, column, schema)
    if sequence is None:
        raise CheckFailed(f"{schema}.{column}", f"{schema}.{column} has no identity sequence", [])
    return check_sequence(conn, sequence, schema)


def check_every_relation(
    conn: psycopg.Connection, schema: str = "public", skip: Iterable[str] = ()
) -> list[PrivilegeDiff]:
    """Every table and sequence in ``schema`` (but those in ``skip``) has exactly its grants.

    Catches a table the contract does not know, created without the default privileges.
    """
    __tracebackhide__ = True
    diffs = _relation_diffs(conn, schema, DESIRED_RELATION, set(skip))
    rerun = (
        "SELECT c.relname, c.relkind, p, has_table_privilege('fluxolab_devmode', c.oid, p)\n"
        f"FROM pg_class c CROSS JOIN unnest({_sql_array(table_privilege_names(conn))}) p\n"
        f"WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind IN ('r','p','v','m','f') ORDER BY 1, 3;"
    )
    _fail_unless_exact(f"every relation in {schema}", diffs, rerun)
    return diffs


def check_database(conn: psycopg.Connection) -> PrivilegeDiff:
    """CONNECT on the current database, and not CREATE (no new schemas)."""
    __tracebackhide__ = True
    rerun = _rerun("has_database_privilege", "current_database()", DATABASE_PRIVILEGES)
    return _exact(
        "database privileges", "database (current)", DESIRED_DATABASE, database_privileges(conn), rerun
    )


def check_public_schema(conn: psycopg.Connection) -> PrivilegeDiff:
    """USAGE but no CREATE on schema public."""
    __tracebackhide__ = True
    rerun = _rerun("has_schema_privilege", "'public'", SCHEMA_PRIVILEGES)
    return _exact(
        "schema public", "schema public", DESIRED_PUBLIC_SCHEMA, schema_privileges(conn, "public"), rerun
    )


def check_public_role_cannot_create(conn: psycopg.Connection) -> PrivilegeDiff:
    """PUBLIC (every role) has no CREATE on schema public."""
    __tracebackhide__ = True
    actual = schema_privileges(conn, "public", role="public") & {"CREATE", "CREATE WITH GRANT OPTION"}
    rerun = _rerun("has_schema_privilege", "'public'", ["CREATE"], role="public")
    return _exact(
        "PUBLIC on schema public", "schema public, for PUBLIC", NOTHING, actual, rerun, role="PUBLIC"
    )


def check_archive_closed(conn: psycopg.Connection) -> list[PrivilegeDiff]:
    """Nothing at all in legacy_archive: not the schema, not a table, not a sequence (no schema, no access)."""
    __tracebackhide__ = True
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (ARCHIVE_SCHEMA,)).fetchone() is None:
        return []
    diffs = [PrivilegeDiff(f"schema {ARCHIVE_SCHEMA}", NOTHING, schema_privileges(conn, ARCHIVE_SCHEMA))]
    diffs += _relation_diffs(conn, ARCHIVE_SCHEMA, {kind: NOTHING for kind in RELKINDS})
    rerun = (
        f"SELECT has_schema_privilege('{APP_ROLE}', '{ARCHIVE_SCHEMA}', 'USAGE'),"
        f" has_schema_privilege('{APP_ROLE}', '{ARCHIVE_SCHEMA}', 'CREATE');\n"
        f"SELECT c.relname, p, has_table_privilege('{APP_ROLE}', c.oid, p)\n"
        f"FROM pg_class c CROSS JOIN unnest({_sql_array(table_privilege_names(conn))}) p\n"
        f"WHERE c.relnamespace = '{ARCHIVE_SCHEMA}'::regnamespace AND c.relkind IN ('r','p','v','m','f') ORDER BY 1, 2;"
    )
    _fail_unless_exact(ARCHIVE_SCHEMA, diffs, rerun)
    return diffs


def role_extras(conn: psycopg.Connection, role: str = APP_ROLE) -> frozenset[str]:
    """Attributes beyond LOGIN/NOLOGIN, and roles ``role`` is a member of (it gets their rights)."""
    columns = ", ".join(ROLE_ATTRIBUTES)
    row = conn.execute(f"SELECT {columns} FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        return frozenset({"(role does not exist)"})
    extras = {label for label, held in zip(ROLE_ATTRIBUTES.values(), row, strict=True) if held}
    memberships = conn.execute(
        "SELECT 'member of ' || g.rolname FROM pg_auth_members m "
        "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
        (role,),
    ).fetchall()
    return frozenset(extras | {row[0] for row in memberships})


def check_role_attributes(conn: psycopg.Connection) -> PrivilegeDiff:
    """Not a superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, a member of no other role."""
    __tracebackhide__ = True
    rerun = (
        f"SELECT rolname, {', '.join(ROLE_ATTRIBUTES)}, rolcanlogin FROM pg_roles WHERE rolname = '{APP_ROLE}';\n"
        f"SELECT roleid::regrole FROM pg_auth_members WHERE member = '{APP_ROLE}'::regrole;"
    )
    return _exact("role attributes", f"role {APP_ROLE}", NOTHING, role_extras(conn), rerun)


def migration_role(conn: psycopg.Connection) -> str:
    """The role that runs the migrations: the owner of the ledger it writes, else of public.users."""
    row = conn.execute(
        "SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = coalesce("
        "to_regclass('migration_gate.ledger'), to_regclass('public.users'))"
    ).fetchone()
    if row is None or row[0] is None:
        raise CheckFailed(
            "default privileges", "cannot tell the migration role: no ledger and no public.users", []
        )
    return str(row[0])


def default_privileges(
    conn: psycopg.Connection, owner: str, objtype: str, schema: str = "public", role: str = APP_ROLE
) -> frozenset[str]:
    """What ``role`` gets on objects ``owner`` creates in ``schema`` later: global and schema entries."""
    rows = conn.execute(
        """
        SELECT DISTINCT acl.privilege_type || CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
        FROM pg_default_acl d
        CROSS JOIN LATERAL aclexplode(d.defaclacl) AS acl
        WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(owner)s)
          AND d.defaclobjtype = %(objtype)s
          AND d.defaclnamespace IN (0, (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s))
          AND acl.grantee IN (0, (SELECT oid FROM pg_roles WHERE rolname = %(role)s))
        """,
        {"owner": owner, "objtype": objtype, "schema": schema, "role": role},
    ).fetchall()
    return frozenset(row[0] for row in rows)


def check_default_privileges(conn: psycopg.Connection, owner: str | None = None) -> list[PrivilegeDiff]:
    """Tables and sequences the migration role creates in public later get the application's grants."""
    __tracebackhide__ = True
    owner = owner or migration_role(conn)
    diffs = [
        PrivilegeDiff(
            f"future tables of {owner} in public", DESIRED_TABLE, default_privileges(conn, owner, "r")
        ),
        PrivilegeDiff(
            f"future sequences of {owner} in public", DESIRED_SEQUENCE, default_privileges(conn, owner, "S")
        ),
    ]
    rerun = (
        "SELECT d.defaclrole::regrole, d.defaclnamespace::regnamespace, d.defaclobjtype, acl.grantee::regrole,\n"
        "       acl.privilege_type, acl.is_grantable\n"
        "FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl\n"
        f"WHERE d.defaclrole = '{owner}'::regrole ORDER BY 2, 3, 4, 5;"
    )
    _fail_unless_exact("default privileges", diffs, rerun)
    return diffs
