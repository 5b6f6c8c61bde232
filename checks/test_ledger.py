"""Every file in the migrations directory (--migrations-dir) applied, in order, with its checksum now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks import ledger_check
from migration_gate.core.errors import GateError
from migration_gate.core.plan import load_plan
from migration_gate.plugin.config import GateConfig


@pytest.mark.holds_from(1, last_only=True)
def test_every_migration_applied_in_order_unedited(
    gate_config: GateConfig, open_checkpoint: Callable[..., Any], checkpoint: str
) -> None:
    try:
        plan = load_plan(gate_config.migrations_dir)
    except GateError as exc:
        pytest.fail(f"cannot read the migrations directory: {exc}", pytrace=False)
    with open_checkpoint(checkpoint, 1, "the ledger") as conn:
        lines = ledger_check.check_ledger(conn, plan, str(gate_config.migrations_dir))
    assert [line.file_name for line in lines] == [migration.file_name for migration in plan]
