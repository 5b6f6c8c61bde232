"""Tables the operator exempts from a rule (``--exempt 'RULE[TABLE]: REASON'``), parsed once.

The rules of docs/contract.md §8 judge every tenant table; an operator may exempt one table
from one rule, saying why, in the project's configuration or on the command line. The
settings (``core/settings.py``) parse each declaration here, for pytest and the command
line alike; the catalog refuses one a named check judges, and the rule skips the pair with
its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migration_gate.core.contract import TABLE_RULES, TENANT_SCHEMA
from migration_gate.core.errors import UsageError

SYNTAX = "RULE[TABLE]: REASON (e.g. tenant_workspace_index[audit_log]: append-only, read by id)"
_EXEMPTION = re.compile(r"^(?P<rule>[^\[\]:]*)\[(?P<table>[^\[\]]*)\]\s*(?::(?P<reason>.*))?$", re.S)


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
        raise UsageError(f"{refused}: expected {SYNTAX}")
    rule, table, reason = match["rule"].strip(), match["table"].strip(), (match["reason"] or "").strip()
    if rule not in TABLE_RULES:
        raise UsageError(
            f"{refused}: unknown rule {rule!r}; an exemption names one of {', '.join(TABLE_RULES)}"
        )
    table = table.removeprefix(f"{TENANT_SCHEMA}.")
    if not table or "." in table or any(character.isspace() for character in table):
        raise UsageError(
            f"{refused}: {table or 'no table'!r} is not a table of {TENANT_SCHEMA}; expected {SYNTAX}"
        )
    if not reason:
        raise UsageError(f"{refused}: no reason; an exemption says why, {SYNTAX}")
    return Exemption(rule, table, reason)
