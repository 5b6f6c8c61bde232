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
configuration (``exempt``, parsed in ``core/exemptions.py``):
``tenant_workspace_index[audit_log]: append-only, read by id``. An exempted pair is skipped
with that reason, never passed in silence.
"""

from __future__ import annotations

from migration_gate.checks.rules import (
    tenant_foreign_key,
    tenant_member_workspace,
    tenant_reference_workspace,
    tenant_workspace_index,
    tenant_workspace_not_null,
)
from migration_gate.checks.rules.tenancy import TableRule

# In the order, and under the fixed names, of core/contract.py's TABLE_RULES (a test keeps them equal).
TABLE_RULES: tuple[TableRule, ...] = (
    tenant_workspace_not_null.RULE,
    tenant_foreign_key.RULE,
    tenant_workspace_index.RULE,
    tenant_member_workspace.RULE,
    tenant_reference_workspace.RULE,
)
