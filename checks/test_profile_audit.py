"""The playbook's profile audit (runbook section 3, last query; docs/contract.md §4.7): reported as figures, never asserted as zero."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks.profile_audit import profile_audit


@pytest.mark.holds_from(6)
def test_profile_audit(
    open_checkpoint: Callable[..., Any],
    checkpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    with open_checkpoint(checkpoint, 6, "the profile audit") as conn:
        audit = profile_audit(conn, checkpoint)
        codes = {row[0] for row in conn.execute("SELECT code FROM public.profiles")}
        users = conn.execute("SELECT count(*) FROM public.users").fetchone()
    # Shown in the terminal summary by checks/conftest.py, and kept in JUnit XML.
    record_property("profile_audit", audit.line())
    record_property("profile_figures", (checkpoint, audit.figures))  # the same, as data, for --history
    # Figures, not a verdict: only that they are figures of this database's profiles and users.
    assert set(audit.figures) <= codes
    assert users is not None and audit.total <= users[0]
