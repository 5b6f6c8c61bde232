"""Rules, not lists: what every tenant table and every function must be, read from the catalog.

Tomorrow's migrations add tables, functions and schemas no check names (docs/contract.md
§8). Each rule family here is one file: one set-based query over ``pg_catalog`` for
every object it judges, returning what is wrong with each and the SQL that fixes it, as
Supabase's splinter keeps its lints. ``TABLE_RULES`` is the one list of the families that
judge tenant tables; the catalog (``checks/catalog.py``) lists each once as
``<rule>[*]`` and, where it runs, expands it to ``<rule>[<table>]`` for every table it
finds there, leaving out the tables a named check already judges for the same thing
(its ``covers``). ``security_definer_functions`` judges every function at once under its
fixed name.

An operator exempts one table from one rule, with a reason, in the project's
configuration (``exempt``): ``tenant_workspace_index[audit_log]: append-only, read by id``.
An exempted pair is skipped with that reason, never passed in silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from migration_gate.checks.rules import (
    tenant_foreign_key,
    tenant_member_workspace,
    tenant_reference_workspace,
    tenant_workspace_index,
    tenant_workspace_not_null,
)
from migration_gate.checks.rules.tenancy import TENANT_SCHEMA, TableRule
from migration_gate.core.errors import UsageError

# The families' names are fixed: operators write them in exemptions and read them in test ids.
TABLE_RULES: tuple[TableRule, ...] = (
    tenant_workspace_not_null.RULE,
    tenant_foreign_key.RULE,
    tenant_workspace_index.RULE,
    tenant_member_workspace.RULE,
    tenant_reference_workspace.RULE,
)

_EXEMPTION = re.compile(r"^(?P<rule>[^\[\]:]*)\[(?P<table>[^\[\]]*)\]\s*(?::(?P<reason>.*))?$")
EXEMPTION_SYNTAX = "RULE[TABLE]: REASON (e.g. tenant_workspace_index[audit_log]: append-only, read by id)"


def table_rule(name: str) -> TableRule | None:
    return next((rule for rule in TABLE_RULES if rule.name == name), None)


@dataclass(frozen=True)
class Exemption:
    """One table the operator exempts from one rule, and why."""

    rule: str
    table: str
    reason: str

    @property
    def pair(self) -> str:
        return f"{self.rule}[{self.table}]"

    def __str__(self) -> str:
        return f"{self.pair}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "table": self.table, "reason": self.reason}


def parse_exemption(text: str) -> Exemption:
    """``RULE[TABLE]: REASON``; anything else is one line (UsageError)."""
    refused = f"--exempt {text!r}"
    match = _EXEMPTION.match(text.strip())
    if match is None:
        raise UsageError(f"{refused}: expected {EXEMPTION_SYNTAX}")
    rule, table, reason = match["rule"].strip(), match["table"].strip(), (match["reason"] or "").strip()
    if table_rule(rule) is None:
        raise UsageError(
            f"{refused}: unknown rule {rule!r}; an exemption names one of "
            f"{', '.join(known.name for known in TABLE_RULES)}"
        )
    table = table.removeprefix(f"{TENANT_SCHEMA}.")
    if not table or "." in table or any(character.isspace() for character in table):
        raise UsageError(
            f"{refused}: {table or 'no table'!r} is not a table of {TENANT_SCHEMA}; expected {EXEMPTION_SYNTAX}"
        )
    if not reason:
        raise UsageError(f"{refused}: no reason; an exemption says why, {EXEMPTION_SYNTAX}")
    return Exemption(rule, table, reason)


def parse_exemptions(values: Iterable[str]) -> tuple[Exemption, ...]:
    """Every declaration, each parsed once (blank ini lines are nothing); a pair declared twice is refused."""
    exemptions = tuple(parse_exemption(value) for value in values if value.strip())
    seen: set[str] = set()
    for exemption in exemptions:
        if exemption.pair in seen:
            raise UsageError(f"--exempt {exemption.pair} is declared twice: one reason per exemption")
        seen.add(exemption.pair)
    return exemptions
