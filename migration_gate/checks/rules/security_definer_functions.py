"""``security_definer_functions``: who may run a function with its owner's rights (docs/contract.md §8).

A ``SECURITY DEFINER`` function or procedure runs with its owner's privileges, whoever
calls it. In every schema of the database but the system's, an extension's and the gate's
own, each one must

- fix its ``search_path`` (``proconfig``): otherwise a caller who can create an object in a
  schema on its path (or a temporary one) makes the function run their code as its owner;
- be executable by no role but its owner: PostgreSQL grants EXECUTE to PUBLIC on every new
  function (``acldefault('f', owner)`` stands for an ACL never set), so, undone, every
  role that can connect gets the owner's rights through it. A role may be declared with
  ``--allowed-grantee ROLE:EXECUTE``.

An ordinary (SECURITY INVOKER) function gives its caller nothing it did not have:
PUBLIC's EXECUTE on it is fine, and it is not read here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from migration_gate.checks.failures import CheckFailed
from migration_gate.checks.grantees import Grant, allowed
from migration_gate.core.allowed_grantees import PUBLIC, AllowedGrantee
from migration_gate.core.contract import SECURITY_DEFINER_FUNCTIONS
from migration_gate.core.schema import GATE_SCHEMA, OWN_SCHEMAS

NAME = SECURITY_DEFINER_FUNCTIONS
SAFE_SEARCH_PATH = "pg_catalog, public"

SECURITY_DEFINERS_SQL = f"""
WITH own AS ({OWN_SCHEMAS})
SELECT format('%%I.%%I(%%s)', s.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS signature,
       CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END AS kind,
       s.nspname AS schema, pg_get_userbyid(p.proowner) AS owner,
       EXISTS (SELECT FROM unnest(p.proconfig) AS setting WHERE setting LIKE 'search\\_path=%%') AS fixes_search_path,
       coalesce((SELECT json_agg(json_build_object(
                            'grantee', CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(e.grantee)::text END,
                            'grantable', e.is_grantable,
                            'grantor', pg_get_userbyid(e.grantor)::text)
                        ORDER BY e.grantee)
                 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS e
                 WHERE e.privilege_type = 'EXECUTE' AND e.grantee <> p.proowner), '[]'::json) AS executors
FROM pg_proc p
JOIN own s ON s.oid = p.pronamespace
WHERE p.prosecdef
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1
"""


@dataclass(frozen=True)
class SecurityDefiner:
    """One SECURITY DEFINER function or procedure, and who besides its owner may EXECUTE it."""

    signature: str
    kind: str  # FUNCTION or PROCEDURE, as ALTER and REVOKE spell it
    schema: str
    owner: str
    fixes_search_path: bool
    executors: tuple[Grant, ...]

    def refused(self, declared: Sequence[AllowedGrantee]) -> list[Grant]:
        return [grant for grant in self.executors if not allowed(grant, declared)]

    def fault(self, declared: Sequence[AllowedGrantee]) -> str | None:
        problems = []
        refused = self.refused(declared)
        if refused:
            problems.append(
                "executable by "
                + ", ".join(
                    grant.grantee + (" (WITH GRANT OPTION)" if grant.grantable else "") for grant in refused
                )
            )
        if not self.fixes_search_path:
            problems.append("search_path not fixed")
        if not problems:
            return None
        return f"{self.kind.lower()} {self.signature}, owner {self.owner}, SECURITY DEFINER: {'; '.join(problems)}"

    def fix(self, declared: Sequence[AllowedGrantee]) -> list[str]:
        """The SQL that makes it pass."""
        lines = []
        if not self.fixes_search_path:
            lines.append(f"ALTER {self.kind} {self.signature} SET search_path = {SAFE_SEARCH_PATH};")
        grantees = sorted({_role(grant.grantee) for grant in self.refused(declared)})
        if grantees:
            lines.append(f"REVOKE EXECUTE ON {self.kind} {self.signature} FROM {', '.join(grantees)};")
        return lines


def _role(name: str) -> str:
    """A role as SQL spells it: PUBLIC, a plain name, or a quoted one."""
    if name == PUBLIC or re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def security_definers(conn: psycopg.Connection) -> list[SecurityDefiner]:
    found = []
    for signature, kind, schema, owner, fixes, executors in conn.execute(
        SECURITY_DEFINERS_SQL, {"exclude": [GATE_SCHEMA]}
    ).fetchall():
        grants = executors if isinstance(executors, list) else json.loads(executors)
        found.append(
            SecurityDefiner(
                signature,
                kind,
                schema,
                owner,
                bool(fixes),
                tuple(
                    Grant(
                        "function",
                        f"{kind.lower()} {signature}",
                        schema,
                        "f",
                        grant["grantee"],
                        "EXECUTE",
                        bool(grant["grantable"]),
                        grant["grantor"],
                        to_owner=False,
                    )
                    for grant in grants
                ),
            )
        )
    return found


def rerun_sql() -> str:
    return (
        SECURITY_DEFINERS_SQL.replace("%(exclude)s", f"ARRAY['{GATE_SCHEMA}']").replace("%%", "%").strip()
        + ";"
    )


def check(conn: psycopg.Connection, declared: Sequence[AllowedGrantee] = ()) -> list[SecurityDefiner]:
    """Fail on every SECURITY DEFINER function that does not fix its search_path or that others may run."""
    __tracebackhide__ = True
    functions = security_definers(conn)
    at_fault = [(function, function.fault(declared)) for function in functions]
    at_fault = [(function, fault) for function, fault in at_fault if fault is not None]
    if not at_fault:
        return functions
    declared_text = ", ".join(str(allowance) for allowance in declared) or "none"
    raise CheckFailed(
        NAME,
        f"{len(at_fault)} SECURITY DEFINER function(s) at fault: "
        + "; ".join(f"{function.signature}" for function, _ in at_fault),
        [
            ("functions at fault", "\n".join(fault for _, fault in at_fault if fault)),
            (
                "SQL that fixes it",
                "\n".join(line for function, _ in at_fault for line in function.fix(declared)),
            ),
            (
                "allowed",
                f"its owner; {PUBLIC} nowhere (PostgreSQL grants it EXECUTE on every new function: revoke it, or "
                "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC); declared with "
                f"--allowed-grantee ROLE:EXECUTE: {declared_text}",
            ),
            ("SQL to run again by hand", rerun_sql()),
        ],
        count=len(at_fault),
    )
