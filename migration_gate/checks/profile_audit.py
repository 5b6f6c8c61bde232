"""The playbook's audit of profiles per default workspace (runbook section 3, last query): figures, not a check.

How many users hold each profile in their own default workspace. After 006 every user
should be an owner there, but the playbook reads it as a distribution, so the gate
reports it and never asserts it is zero (docs/contract.md §4.7, §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

PROFILE_AUDIT_SQL = """
SELECT p.code, count(*) AS users
FROM public.workspace_members wm
JOIN public.profiles p ON p.id = wm.profile_id
JOIN public.users u ON u.id = wm.user_id
WHERE u.default_workspace_id = wm.workspace_id
GROUP BY p.code
ORDER BY p.code
""".strip()


@dataclass(frozen=True)
class ProfileAudit:
    """Users per profile code in their default workspace, at one checkpoint."""

    checkpoint: str
    figures: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.figures.values())

    def line(self) -> str:
        shown = ", ".join(f"{code} {count}" for code, count in self.figures.items()) or "no rows"
        return f"{self.checkpoint:<10} {shown} (total {self.total})"


def profile_audit(conn: psycopg.Connection, checkpoint: str = "") -> ProfileAudit:
    rows = conn.execute(PROFILE_AUDIT_SQL).fetchall()
    return ProfileAudit(checkpoint, {str(code): int(count) for code, count in rows})
