"""The cluster's roles, as the runbook's "no orphan roles" look made readable: figures, not a check.

Who can log in, who holds an attribute that overrides grants (SUPERUSER, CREATEROLE,
BYPASSRLS, REPLICATION), who reads or writes every table through a predefined role, and
who is a member of ``fluxolab_devmode`` (and so reaches everything it reaches). A
cluster's roles are the operator's business, so the gate reports them and asserts
nothing (docs/contract.md §5); the privilege review (``grantees``) is what fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from migration_gate.core.contract import APP_ROLE

# Shown in a line before "and N more"; report.json keeps every name.
NAMES_SHOWN = 10
# Each figure: its key in the change record, the line's label, and the query listing its roles.
_FIGURES = (
    ("login", "roles that can log in", "SELECT rolname FROM pg_roles WHERE rolcanlogin ORDER BY 1"),
    *(
        (
            attribute.lower(),
            f"roles with {attribute}",
            f"SELECT rolname FROM pg_roles WHERE {column} ORDER BY 1",
        )
        for attribute, column in (
            ("SUPERUSER", "rolsuper"),
            ("CREATEROLE", "rolcreaterole"),
            ("BYPASSRLS", "rolbypassrls"),
            ("REPLICATION", "rolreplication"),
        )
    ),
    *(
        (
            f"members_of_{role}",
            f"members of {role}",
            # Direct or through other roles: a member of a member gets the rights too.
            f"""
            WITH RECURSIVE member(oid) AS (
                SELECT m.member FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                WHERE r.rolname = '{role}'
                UNION
                SELECT m.member FROM pg_auth_members m JOIN member ON m.roleid = member.oid
            )
            SELECT rolname FROM pg_roles WHERE oid IN (SELECT oid FROM member) ORDER BY 1
            """,
        )
        for role in (APP_ROLE, "pg_read_all_data", "pg_write_all_data")
    ),
)

# Each figure's label, by its key: for a record read back from JSON.
LABELS = {key: label for key, label, _ in _FIGURES}


@dataclass(frozen=True)
class RoleReport:
    """Each figure's roles, by key (``login``, ``superuser``, ..., ``members_of_fluxolab_devmode``)."""

    roles: dict[str, list[str]]

    def lines(self) -> list[str]:
        """One line per figure: its label, how many, and the first names."""
        width = max(len(label) for _, label, _ in _FIGURES)
        out = []
        for key, label, _ in _FIGURES:
            names = self.roles[key]
            shown = ", ".join(names[:NAMES_SHOWN])
            more = f", and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
            out.append(f"{label:<{width}} {len(names):>3}" + (f": {shown}{more}" if names else ""))
        return out

    def every_role(self) -> set[str]:
        return {name for names in self.roles.values() for name in names}


def role_report(conn: psycopg.Connection) -> RoleReport:
    return RoleReport({key: [row[0] for row in conn.execute(sql).fetchall()] for key, _, sql in _FIGURES})
