"""A migrated database at a realistic volume: where "the planner chooses the index" means something.

001→004, the generated legacy volume (``migration_gate.volume``), then the rest of the
plan and ``ANALYZE``, as staging will be after the maintenance window.
"""

from __future__ import annotations

import time

from migration_gate.core import dsn, runner
from migration_gate.core.plan import Migration
from migration_gate.data import volume

# ≥ 100k activities over thousands of workspaces; the same seed gives the same rows.
USERS = 5_000
ACTIVITIES = 100_000
SEED = 8


def fill(
    url: str,
    plan: list[Migration],
    users: int = USERS,
    activities: int = ACTIVITIES,
    seed: int = SEED,
    progress: runner.Progress = lambda line: None,
) -> None:
    """Bring the empty database at ``url`` to the plan's last migration through the volume, analyzed."""
    started = time.perf_counter()
    runner.migrate(url, plan, stop="004")
    counts = volume.generate(url, users=users, activities=activities, seed=seed)
    runner.migrate(url, plan)
    with dsn.connect(url) as conn:
        conn.execute("ANALYZE")
    progress(
        f"volume database {dsn.describe(url)}: {counts.get('activities', 0)} activities, "
        f"{counts.get('users', 0)} users, migrated and analyzed in {time.perf_counter() - started:.1f} s"
    )
