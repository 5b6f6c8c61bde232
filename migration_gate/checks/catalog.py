"""The one catalog of checks: every check of the gate, written once, under one name (docs/contract.md §4).

An entry has one name (a parametrized family is expanded: ``not_null[activities.workspace_id]``),
the migration it holds from, its kind, one line on what fails it, and the function that
verifies it on a connection. A rule family (``checks/rules``, docs/contract.md §8) is one
entry, ``<rule>[*]``, until it meets a database: ``expand`` then makes it one entry per
table it judges there, ``<rule>[<table>]``, leaving out the tables a named check covers.
Three things read this list and nothing else:

- the pytest gate (``checks/test_gate.py``), whose test ids are ``<name>-<checkpoint>``;
- the playbook's validation, which records each result under the same name;
- the fault-injection tests, keyed by the same names, which fail when an entry has no fault.

The SQL invariants of ``checks/*.sql`` are entries too: a new file there is a new entry in
all three, with nothing to write in Python. ``migration-gate checks`` lists the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg

from migration_gate.checks import (
    drift,
    explain,
    grantees,
    invariants,
    ledger_check,
    privileges,
    rules,
    structure,
)
from migration_gate.checks.rules import security_definer_functions
from migration_gate.checks.rules.tenancy import WORKSPACE, TableRule, TenantTable, tenant_tables
from migration_gate.core.allowed_grantees import AllowedGrantee
from migration_gate.core.contract import LEGACY_TABLES, PUBLIC_TABLES
from migration_gate.core.drift import Reference, ReferenceUnavailable
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import Exemption
from migration_gate.core.plan import Migration
from migration_gate.core.text import markdown_table

# Where an entry runs, among the checkpoints whose last migration is at least its ``from``:
EVERY = "every"  # at each of them (after_006, after_007, after_NNN)
LAST = "last"  # only where the application meets the database: the last one
VOLUME = "volume"  # where the planner's choice means something: a realistic volume, after ANALYZE

KINDS = ("invariant", "structure", "integrity", "conservation", "index", "privilege", "ledger", "drift")

Required = TypeVar("Required", bound=structure.RequiredColumn)


class CheckSkipped(Exception):
    """This check cannot say anything here (no pre-005 snapshot, a table too small); the reason says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LegacySnapshot:
    """The database just before 005: rows per legacy table and non-NULL payloads, for conservation."""

    counts: dict[str, int]
    payloads: int

    @classmethod
    def take(cls, conn: psycopg.Connection) -> LegacySnapshot:
        counts = {}
        for table in LEGACY_TABLES:
            row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return cls(counts, structure.legacy_payload_count(conn))


@dataclass
class CheckContext:
    """What a check reads: the connection at its checkpoint, and what it may compare with."""

    conn: psycopg.Connection
    plan: list[Migration]
    checkpoint: str = ""
    where: str = ""  # the checkpoint and database, for the failure's text
    legacy: LegacySnapshot | None = None
    no_legacy_because: str = (
        "conservation needs the pre-005 snapshot, which only the disposable gate database has"
    )
    migrations_dir: str = ""
    # The generated volume is sized for plans to mean something; any other data may be too small.
    realistic_volume: bool = False
    # Roles the operator declares may hold privileges (--allowed-grantee), for the privilege review.
    allowed_grantees: tuple[AllowedGrantee, ...] = ()
    # Where schema_drift builds the expected schema: the gate's own server, or one started for it.
    reference: Reference = field(default_factory=Reference)
    # Tables the operator exempts from a rule, with the reason (--exempt).
    exemptions: tuple[Exemption, ...] = ()

    def exemption(self, rule: str, table: str) -> Exemption | None:
        return next((e for e in self.exemptions if (e.rule, e.table) == (rule, table)), None)

    def snapshot(self) -> LegacySnapshot:
        if self.legacy is None:
            raise CheckSkipped(self.no_legacy_because)
        return self.legacy


Verify = Callable[[CheckContext], object]


@dataclass(frozen=True)
class Family:
    """A rule family in the catalog: the rule, and the tables named checks already judge for it."""

    rule: TableRule
    covered: frozenset[str]

    def tables(self, found: list[TenantTable]) -> list[TenantTable]:
        """The tenant tables this rule judges itself: those it applies to, but for the covered ones."""
        return [table for table in found if self.rule.applies(table) and table.name not in self.covered]

    def judge(self, ctx: CheckContext, table: str | None) -> list[str]:
        """Judge ``table`` (None: every table it judges here); an exempted table is skipped with its reason."""
        __tracebackhide__ = True
        if table is not None:
            exempt = ctx.exemption(self.rule.name, table)
            if exempt is not None:
                raise CheckSkipped(f"exempt: {exempt.reason}")
        found = self.tables(tenant_tables(ctx.conn, None if table is None else [table]))
        if table is not None and not found:
            raise CheckSkipped(f"public.{table} is no longer a table {self.rule.name} judges here")
        return self.rule.judge(ctx.conn, [t for t in found if ctx.exemption(self.rule.name, t.name) is None])


@dataclass(frozen=True)
class Check:
    """One entry of the catalog."""

    name: str
    from_version: int
    kind: str
    fails_when: str
    verify: Verify = field(repr=False, compare=False)
    at: str = EVERY
    # The playbook runs it once its transaction has committed: the plan of a query cannot use
    # an index built in the same transaction after updates to its table (indcheckxmin).
    after_commit: bool = False
    invariant: invariants.Invariant | None = field(default=None, repr=False, compare=False)
    # The playbook runs it in its preflight, on the database as found, before the backup (not in the window).
    preflight: bool = False
    # What this named check judges in a rule's stead: ("tenant_foreign_key", "credentials").
    covers: tuple[tuple[str, str], ...] = ()
    # A rule family's entry (``table`` None, named ``<rule>[*]``) or one of its expansions.
    family: Family | None = field(default=None, repr=False, compare=False)
    table: str | None = None

    def __repr__(self) -> str:
        return self.name

    @property
    def judges(self) -> tuple[tuple[str, str], ...]:
        """The (rule, table) pairs this entry judges: its own for a rule's expansion, what a named check covers."""
        if self.family is not None and self.table is not None:
            return ((self.family.rule.name, self.table),)
        return self.covers

    def holds_at(self, version: int) -> bool:
        return self.from_version <= version

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "from": f"{self.from_version:03d}",
            "kind": self.kind,
            "fails_when": self.fails_when,
        }


def _invariant(invariant: invariants.Invariant) -> Check:
    return Check(
        invariant.name,
        invariant.from_version,
        "invariant",
        f"any row: {invariant.meaning}",
        lambda ctx: invariants.check(ctx.conn, invariant, ctx.where),
        at=LAST if invariant.at == "last" else EVERY,
        invariant=invariant,
        covers=invariant.covers,
    )


def _required(
    required: Required,
    check: str,
    kind: str,
    fails_when: str,
    verify: Callable[[psycopg.Connection, Required], object],
    rule: str,
) -> Check:
    """``<check>[<table>.<column>]`` on a column the contract names; where it is workspace_id, ``rule`` skips it."""
    return Check(
        f"{check}[{required.label}]",
        required.from_version,
        kind,
        f"public.{required.label} {fails_when}",
        lambda ctx: verify(ctx.conn, required),
        covers=((rule, required.table),) if required.column == WORKSPACE else (),
    )


def _conservation(table: str) -> Check:
    relation = ">=" if table in structure.GROWING_TABLES else "="
    return Check(
        f"conservation[{table}]",
        structure.ARCHIVE_FROM_VERSION,
        "conservation",
        f"rows of {table} before 005 {relation} rows in public + legacy_archive does not hold",
        lambda ctx: structure.check_conservation(ctx.conn, table, ctx.snapshot().counts),
        at=LAST,
    )


def _index_checks(query: explain.ApplicationQuery) -> list[Check]:
    index, version = query.index, query.from_version
    columns = ", ".join(query.leading_columns)
    return [
        Check(
            f"index_definition[{index}]",
            version,
            "index",
            f"{index} missing, invalid, not on {query.table} or not leading with ({columns})",
            lambda ctx: explain.check_definition(ctx.conn, query),
            covers=(("tenant_workspace_index", query.table),)
            if query.leading_columns[0] == WORKSPACE
            else (),
        ),
        Check(
            f"index_usable[{index}]",
            version,
            "index",
            f"even with enable_seqscan off, the plan of {query.name} does not scan {index}",
            lambda ctx: explain.check_usable(ctx.conn, query),
            after_commit=True,
        ),
        Check(
            f"index_chosen[{index}]",
            version,
            "index",
            f"at a realistic volume after ANALYZE, the planner does not choose {index} for {query.name}",
            lambda ctx: _chosen(ctx, query),
            at=VOLUME,
            after_commit=True,
        ),
    ]


def _chosen(ctx: CheckContext, query: explain.ApplicationQuery) -> object:
    too_small = None if ctx.realistic_volume else explain.too_small_for_chosen(ctx.conn, query)
    if too_small is not None:
        raise CheckSkipped(too_small)
    return explain.check_chosen(ctx.conn, query)


def _relation_privileges(
    kind: str, target: str, grants: str, check: Callable[[psycopg.Connection, str], object]
) -> Check:
    """``<kind>_privileges[<target>]``: exactly ``grants`` for the application on one relation of the contract."""
    return Check(
        f"{kind}_privileges[{target}]",
        3,
        "privilege",
        f"{privileges.APP_ROLE} lacks or exceeds {grants}",
        lambda ctx: check(ctx.conn, target),
        at=LAST,
    )


def _other_relations(ctx: CheckContext) -> object:
    contract_sequences = {
        privileges.identity_sequence(ctx.conn, column) for column in privileges.CONTRACT_SEQUENCES
    }
    skip = {*PUBLIC_TABLES, *(name for name in contract_sequences if name)}
    return privileges.check_every_relation(ctx.conn, "public", skip=skip)


def _grantees(level: grantees.Level) -> Check:
    """One level of the privilege review of every grantee (docs/contract.md §5)."""
    return Check(
        level.check,
        3,
        "privilege",
        f"a grant {level.where} to a role other than the owner, "
        f"{privileges.APP_ROLE} within its contract, or an --allowed-grantee",
        lambda ctx: level.review(ctx.conn, ctx.allowed_grantees),
        at=LAST,
    )


def _schema_drift(ctx: CheckContext) -> object:
    __tracebackhide__ = True
    try:
        return drift.check_schema_drift(ctx.conn, ctx.plan, ctx.reference)
    except ReferenceUnavailable as exc:
        raise CheckSkipped(f"no disposable server could start to build the expected schema: {exc}") from None


def builtin_checks() -> list[Check]:
    """Every entry that is not a SQL file: structure, conservation, indexes, privileges, the ledger."""
    role = privileges.APP_ROLE
    return [
        *(
            _required(
                column,
                "not_null",
                "structure",
                "missing or nullable",
                structure.check_not_null,
                "tenant_workspace_not_null",
            )
            for column in structure.NOT_NULL_COLUMNS
        ),
        Check(
            "no_invalid_indexes",
            1,
            "structure",
            "an index in any schema but the system's is invalid or not ready",
            lambda ctx: structure.check_no_invalid_indexes(ctx.conn),
        ),
        Check(
            "no_not_valid_constraints",
            1,
            "structure",
            "a constraint in any schema but the system's is left NOT VALID",
            lambda ctx: structure.check_no_invalid_constraints(ctx.conn),
        ),
        Check(
            "activities_payload_gone",
            structure.PAYLOAD_GONE_FROM_VERSION,
            "structure",
            "public.activities still has its payload column",
            lambda ctx: structure.check_payload_gone(ctx.conn),
        ),
        Check(
            "legacy_archive_present",
            structure.ARCHIVE_FROM_VERSION,
            "structure",
            "legacy_archive or one of its tables or columns is missing",
            lambda ctx: structure.check_archive_present(ctx.conn),
        ),
        *(
            _required(
                key,
                "foreign_key",
                "integrity",
                f"has no validated foreign key to {key.references}(id)",
                structure.check_foreign_key,
                "tenant_foreign_key",
            )
            for key in structure.REQUIRED_FOREIGN_KEYS
        ),
        *(_conservation(table) for table in LEGACY_TABLES),
        Check(
            "conservation[activity_payloads]",
            structure.ARCHIVE_FROM_VERSION,
            "conservation",
            "a non-NULL legacy payload is not in legacy_archive",
            lambda ctx: structure.check_payloads_conserved(ctx.conn, ctx.snapshot().payloads),
            at=LAST,
        ),
        *(check for query in explain.APPLICATION_QUERIES for check in _index_checks(query)),
        *(
            _relation_privileges(
                "table", table, f"SELECT, INSERT, UPDATE, DELETE on public.{table}", privileges.check_table
            )
            for table in PUBLIC_TABLES
        ),
        *(
            _relation_privileges(
                "sequence",
                column,
                f"USAGE, SELECT on the sequence of public.{column}",
                privileges.check_identity_sequence,
            )
            for column in privileges.CONTRACT_SEQUENCES
        ),
        Check(
            "other_relations_privileges",
            3,
            "privilege",
            f"a table or sequence of public the contract does not name lacks or exceeds {role}'s grants",
            _other_relations,
            at=LAST,
        ),
        Check(
            "database_privileges",
            3,
            "privilege",
            f"{role} lacks CONNECT on the database, or has CREATE",
            lambda ctx: privileges.check_database(ctx.conn),
            at=LAST,
        ),
        Check(
            "schema_public_privileges",
            3,
            "privilege",
            f"{role} lacks USAGE on schema public, or has CREATE",
            lambda ctx: privileges.check_public_schema(ctx.conn),
            at=LAST,
        ),
        Check(
            "public_cannot_create_in_public",
            3,
            "privilege",
            "PUBLIC (every role) has CREATE on schema public",
            lambda ctx: privileges.check_public_role_cannot_create(ctx.conn),
            at=LAST,
        ),
        Check(
            "legacy_archive_closed",
            5,
            "privilege",
            f"{role} has any access to legacy_archive, its tables or sequences",
            lambda ctx: privileges.check_archive_closed(ctx.conn),
            at=LAST,
        ),
        Check(
            "role_attributes",
            3,
            "privilege",
            f"{role} has SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS, or belongs to another role",
            lambda ctx: privileges.check_role_attributes(ctx.conn),
            at=LAST,
        ),
        Check(
            "default_privileges",
            3,
            "privilege",
            f"future tables or sequences of the migrating role in public would not get exactly {role}'s grants",
            lambda ctx: privileges.check_default_privileges(ctx.conn),
            at=LAST,
        ),
        *(_grantees(level) for level in grantees.LEVELS),
        Check(
            security_definer_functions.NAME,
            1,
            "privilege",
            "a SECURITY DEFINER function or procedure in any schema but the system's does not fix its "
            "search_path, or a role other than its owner (PUBLIC by default) or an --allowed-grantee "
            "ROLE:EXECUTE may execute it",
            lambda ctx: security_definer_functions.check(ctx.conn, ctx.allowed_grantees),
            at=LAST,
        ),
        Check(
            "ledger",
            1,
            "ledger",
            "a migration file pending, edited since it was applied, renamed, unknown or applied out of order",
            lambda ctx: ledger_check.check_ledger(ctx.conn, ctx.plan, ctx.migrations_dir),
            at=LAST,
        ),
        Check(
            drift.NAME,
            1,
            "drift",
            "the schema differs from what the ledger's migrations and corrections build on an empty database",
            _schema_drift,
            at=LAST,
            preflight=True,
        ),
    ]


def _rule_family(rule: TableRule, covered: frozenset[str]) -> Check:
    """A rule family as one entry, ``<rule>[*]``: every tenant table it judges, until ``expand`` splits it."""
    family = Family(rule, covered)
    return Check(
        f"{rule.name}[*]",
        1,
        rule.kind,
        f"{rule.fails_when}; at the last checkpoint, for each tenant table of public",
        lambda ctx: family.judge(ctx, None),
        at=LAST,
        family=family,
    )


def _covered(entries: list[Check], checks_dir: Path | str) -> dict[str, frozenset[str]]:
    """Rule → the tables named checks judge for it (a ``covers`` naming no rule family is refused)."""
    covered: dict[str, set[str]] = {rule.name: set() for rule in rules.TABLE_RULES}
    for entry in entries:
        for rule, table in entry.covers:
            if rule not in covered:
                raise invariants.InvariantFileError(
                    f"{checks_dir}: {entry.name} covers {rule}[{table}], but there is no rule {rule!r} "
                    f"(the rules: {', '.join(covered)})"
                )
            covered[rule].add(table)
    return {rule: frozenset(tables) for rule, tables in covered.items()}


def load(checks_dir: Path | str) -> list[Check]:
    """The catalog: the SQL invariants of ``checks_dir`` (a malformed file is refused), the rest, the rules."""
    entries = [_invariant(invariant) for invariant in invariants.load(checks_dir)] + builtin_checks()
    covered = _covered(entries, checks_dir)
    entries += [_rule_family(rule, covered[rule.name]) for rule in rules.TABLE_RULES]
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise invariants.InvariantFileError(
                f"{checks_dir}: two checks named {entry.name!r}: a check file may not take a built-in check's name"
            )
        seen.add(entry.name)
    return entries


def _judging(entry: Check, table: str, holds_from: int) -> Check:
    family = entry.family
    assert family is not None
    return Check(
        f"{family.rule.name}[{table}]",
        holds_from,
        entry.kind,
        entry.fails_when,
        lambda ctx: family.judge(ctx, table),
        at=LAST,
        family=family,
        table=table,
    )


def expand(entries: Iterable[Check], conn: psycopg.Connection, holds_from: int) -> list[Check]:
    """Each rule family's entry replaced by one per table it judges on ``conn``: ``<rule>[<table>]``.

    The tenant tables are read once, from the catalog. The rules judge the schema the plan
    leaves, so each expansion holds from the plan's last migration (``holds_from``): on an
    existing database that is not there yet, it is skipped with that reason.
    """
    entries = list(entries)
    found = tenant_tables(conn) if any(entry.family and entry.table is None for entry in entries) else []
    expanded: list[Check] = []
    for entry in entries:
        if entry.family is None or entry.table is not None:
            expanded.append(entry)
        else:
            expanded += [_judging(entry, table.name, holds_from) for table in entry.family.tables(found)]
    return expanded


def check_exemptions(catalog: Iterable[Check], exemptions: Iterable[Exemption]) -> None:
    """Refuse (UsageError) a pair declared twice, and an exemption for a table a named check judges."""
    exemptions = list(exemptions)
    pairs = [exemption.pair for exemption in exemptions]
    twice = sorted({pair for pair in pairs if pairs.count(pair) > 1})
    if twice:
        raise UsageError(f"--exempt {twice[0]} is declared twice: one reason per exemption")
    for entry in catalog:
        for exemption in exemptions:
            if (exemption.rule, exemption.table) in entry.covers:
                raise UsageError(
                    f"--exempt {exemption.pair}: {entry.name} judges {exemption.table} for {exemption.rule}, "
                    "not the rule, and a named check of the contract cannot be exempted"
                )


def at_checkpoint(catalog: Iterable[Check], version: int, *, last: bool) -> list[Check]:
    """The entries that run at a checkpoint whose last migration is ``version`` (the last one, or not)."""
    return [check for check in catalog if check.holds_at(version) and (check.at == EVERY or last)]


def markdown(catalog: Iterable[Check]) -> str:
    """The catalog as the README's table: name, from, kind, what fails it."""
    rows = [
        [f"`{check.name}`", f"{check.from_version:03d}", check.kind, check.fails_when] for check in catalog
    ]
    return "\n".join(markdown_table(["check", "from", "kind", "what fails it"], rows)) + "\n"
