"""The cluster's roles (the runbook's "no orphan roles" look; docs/contract.md §5): reported as figures, never asserted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks.role_report import role_report


@pytest.mark.holds_from(3, last_only=True)
def test_role_report(
    open_checkpoint: Callable[..., Any],
    checkpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    with open_checkpoint(checkpoint, 3, "the role report") as conn:
        report = role_report(conn)
        roles = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}
        session_user = conn.execute("SELECT session_user").fetchone()
    # Shown in the terminal summary (one property a line, in order), and kept in JUnit XML.
    for line in report.lines():
        record_property("role_report", line)
    record_property("role_figures", report.roles)  # the same, as data, for --history
    # Figures, not a verdict: only that they are roles of this cluster, and the gate's own login among them.
    assert report.every_role() <= roles
    assert session_user is not None and session_user[0] in report.roles["login"]
