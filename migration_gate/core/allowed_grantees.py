"""Roles the operator declares may hold privileges (``--allowed-grantee ROLE[:PRIVILEGES]``), parsed once.

The privilege review (``checks/grantees.py``) and ``security_definer_functions`` read the
declarations; the settings (``core/settings.py``) parse them, for pytest and the command line alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from migration_gate.core.contract import APP_ROLE
from migration_gate.core.errors import UsageError

PUBLIC = "PUBLIC"  # how a grant to every role (grantee oid 0) is reported and declared
# Every privilege name an ACL of these objects can hold: tables (MAINTAIN from PostgreSQL 17
# on), then sequences, schemas, future functions and types.
PRIVILEGE_NAMES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
    | {"USAGE", "CREATE", "EXECUTE"}
)


class GrantLike(Protocol):
    """What a declaration is held against: one privilege granted to one grantee."""

    @property
    def grantee(self) -> str: ...

    @property
    def privilege(self) -> str: ...

    @property
    def grantable(self) -> bool: ...


@dataclass(frozen=True)
class AllowedGrantee:
    """A role the operator declares: any privilege (``privileges`` None), or only those named."""

    role: str
    privileges: frozenset[str] | None = None

    def allows(self, grant: GrantLike) -> bool:
        if grant.grantee != self.role:
            return False
        if self.privileges is None:
            return True
        # A declared privilege is the privilege alone: handing it on (WITH GRANT OPTION) is more.
        return grant.privilege in self.privileges and not grant.grantable

    def __str__(self) -> str:
        if self.privileges is None:
            return self.role
        return f"{self.role}:{','.join(sorted(self.privileges))}"


def parse_allowed_grantee(text: str) -> AllowedGrantee:
    """``ROLE`` or ``ROLE:PRIV,PRIV``; anything else is one line (UsageError)."""
    value = text.strip()
    role, colon, listed = value.rpartition(":") if ":" in value else (value, "", "")
    role = role.strip()
    refused = f"--allowed-grantee {text!r}"
    expected = "expected ROLE or ROLE:PRIVILEGE,PRIVILEGE (e.g. reporting:SELECT)"
    if not role:
        raise UsageError(f"{refused}: no role name; {expected}")
    if role == APP_ROLE:
        raise UsageError(
            f"{refused}: {APP_ROLE}'s grants are the contract's (docs/contract.md §4.5) "
            "and cannot be widened by a declaration"
        )
    if role.lower() == "public":
        role = PUBLIC
    if not colon:
        return AllowedGrantee(role)
    if not listed.strip():
        raise UsageError(f"{refused}: no privilege after ':'; {expected}")
    names = [name.strip().upper() for name in listed.split(",")]
    unknown = [name for name in names if name not in PRIVILEGE_NAMES]
    if unknown:
        raise UsageError(
            f"{refused}: unknown privilege {', '.join(repr(name) for name in unknown)}; "
            f"expected among {', '.join(sorted(PRIVILEGE_NAMES))}"
        )
    return AllowedGrantee(role, frozenset(names))


def parse_allowed_grantees(values: Iterable[str]) -> tuple[AllowedGrantee, ...]:
    """Every declaration, each parsed once; blank ini lines are nothing."""
    return tuple(parse_allowed_grantee(value) for value in values if value.strip())
