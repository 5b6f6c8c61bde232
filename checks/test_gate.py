"""The gate: every check of the catalog, at every checkpoint where it holds (docs/contract.md §4).

The tests are generated from the catalog (``migration-gate checks`` lists it): the SQL
invariants beside this file and the structure, conservation, index, privilege and ledger
checks. Each test id is the check's name and the checkpoint, such as
``not_null[credentials.workspace_id]-after_007``. A failure is the check's own report:
what it found (the count, the offending rows with their keys), where, and the SQL to run
again by hand.
"""

from __future__ import annotations

from migration_gate.checks.catalog import Check
from migration_gate.plugin.gate import CheckContextFactory


def test_check(check: Check, checkpoint: str, check_context: CheckContextFactory) -> None:
    with check_context(check, checkpoint) as context:
        # The assertion: CheckFailed, an AssertionError carrying what was found, where, and the SQL.
        check.verify(context)
