"""The maintenance window: the whole playbook against the runbook done by hand, on copies of one database.

The application is down for the whole window, so what counts is the wall clock of
everything between stopping it and starting it again. For each scale, a legacy database
at 004 is generated once (``volume``), analyzed and checkpointed, then copied
(``CREATE DATABASE … TEMPLATE``) for each run, the two ways interleaved so that load
elsewhere on the machine hits both alike:

* **by hand**, as the seed's runbook does it: ``pg_dump --format=custom``, then
  ``psql -1 -v ON_ERROR_STOP=1 -f`` for each pending migration, then the runbook's
  section 3 queries;
* **the playbook**: ``migration-gate playbook --yes`` as an operator runs it (preflight,
  backup, migrations with their checkpoints, every check of the catalog, the index plans,
  the smoke tests), its own steps read back from its change record.

Then, on the playbook's copy, ``migration-gate restore`` of its backup: what a failure
after the commit costs, against the backup's size. The client tools are the server's own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_gate.bench.scales import ACTIVITIES_PER_USER
from migration_gate.core import dsn, runner
from migration_gate.core.errors import UsageError
from migration_gate.core.plan import Migration
from migration_gate.core.server import DisposableServer
from migration_gate.data import volume

TARGET_WINDOW_RATIO = 1.25  # issue 14: the playbook within 1.25 times the runbook by hand

# The runbook's section 3, as it is written (docs/contract.md §6 says what two of them are).
RUNBOOK_QUERIES = """
SELECT COUNT(*) AS usuarios_sem_default FROM public.users WHERE default_workspace_id IS NULL;
SELECT COUNT(*) AS credentials_sem_workspace FROM public.credentials WHERE workspace_id IS NULL;
SELECT u.id, u.default_workspace_id, w.id AS workspace_id, (u.default_workspace_id = w.id) AS coerente
FROM public.users u JOIN public.workspaces w ON w.owner_id = u.id;
SELECT p.code, COUNT(*) FROM public.workspace_members wm JOIN public.profiles p ON p.id = wm.profile_id
JOIN public.users u ON u.id = wm.user_id WHERE u.default_workspace_id = wm.workspace_id GROUP BY p.code;
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WindowRun:
    """One copy done by hand and one by the playbook, and the restore of the playbook's backup."""

    by_hand_s: float
    playbook_s: float
    steps: dict[str, float]
    restore_s: float
    backup_bytes: int

    @property
    def ratio(self) -> float:
        return self.playbook_s / self.by_hand_s


@dataclass(frozen=True)
class WindowScale:
    activities: int
    runs: list[WindowRun] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in self.runs))

    @property
    def ratio(self) -> float:
        return self.median("playbook_s") / self.median("by_hand_s")

    def as_json(self) -> dict[str, Any]:
        steps = {
            name: statistics.median(run.steps.get(name, 0.0) for run in self.runs)
            for name in self.runs[0].steps
        }
        return {
            "activities": self.activities,
            "by_hand_s": round(self.median("by_hand_s"), 3),
            "playbook_s": round(self.median("playbook_s"), 3),
            "ratio": round(self.ratio, 3),
            "playbook_steps": {name: round(seconds, 3) for name, seconds in steps.items()},
            "restore_s": round(self.median("restore_s"), 3),
            "backup_bytes": int(statistics.median(run.backup_bytes for run in self.runs)),
            "runs": len(self.runs),
        }


def run_timed(command: list[str], what: str) -> float:
    """Run a command to its end; its wall clock, or UsageError with its last line."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise UsageError(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return seconds


def by_hand(server: DisposableServer, url: str, pending: list[Migration], workdir: Path) -> float:
    """The runbook as the seed does it: dump, each file in one transaction with psql, then section 3."""
    psql = [server.binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={url}"]
    started = time.perf_counter()
    run_timed(
        [
            server.binary("pg_dump"),
            "--format=custom",
            f"--file={workdir / 'by-hand.backup'}",
            f"--dbname={url}",
        ],
        "pg_dump",
    )
    for migration in pending:
        run_timed(
            [*psql, "--single-transaction", "-f", str(migration.path)], f"psql -f {migration.file_name}"
        )
    run_timed([*psql, "-c", RUNBOOK_QUERIES], "the runbook's queries")
    return time.perf_counter() - started


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "migration_gate.cli", *args]


def playbook(url: str, workdir: Path, migrations_dir: Path) -> tuple[float, dict[str, Any]]:
    """``migration-gate playbook --yes`` as an operator runs it: its wall clock and its change record."""
    backup, record = workdir / "playbook.backup", workdir / "record"
    seconds = run_timed(
        cli("playbook", "--database", url, "--backup", str(backup), "--report-dir", str(record), "--yes",
            "--migrations-dir", str(migrations_dir)),
        "the playbook",
    )  # fmt: skip
    data: dict[str, Any] = json.loads((record / "report.json").read_text(encoding="utf-8"))
    if data["outcome"] != "migrated_and_validated":
        raise UsageError(f"the playbook did not pass on the copy: {data['outcome']}: {data.get('reason')}")
    return seconds, data


def restore(url: str, backup: Path) -> float:
    """A failure after the commit: the playbook's backup restored into its database, verified."""
    return run_timed(cli("restore", "--database", url, "--backup", str(backup), "--yes"), "the restore")


def fill_legacy(url: str, plan: list[Migration], activities: int, seed: int) -> None:
    """The empty database at ``url`` to 004 with the generated legacy volume, analyzed and checkpointed as staging is."""
    runner.migrate(url, plan, stop="004")
    volume.generate(url, max(1, activities // ACTIVITIES_PER_USER), activities, seed)
    with dsn.connect(url) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


@dataclass(frozen=True)
class Playbooks:
    """What a section that runs whole playbooks works with: a server, the files, the volume's seed, how often."""

    server: DisposableServer
    plan: list[Migration]
    migrations_dir: Path
    seed: int
    repeats: int
    progress: Progress


def run_window(on: Playbooks, activities: int) -> WindowScale:
    """``repeats`` pairs of runs (by hand, playbook) on copies of one generated legacy database."""
    pending = [m for m in on.plan if m.version > 4]
    scale = WindowScale(activities)
    with on.server.temporary_database(f"window_{activities}") as url:
        base = str(dsn.parse(url)["dbname"])
        fill_legacy(url, on.plan, activities, on.seed)
        for attempt in range(on.repeats):
            with (
                tempfile.TemporaryDirectory(prefix="migration-gate-window-") as tmp,
                on.server.temporary_database(f"window_{activities}_hand", template=base) as by_hand_copy,
                on.server.temporary_database(f"window_{activities}_playbook", template=base) as playbook_copy,
            ):
                workdir = Path(tmp)
                # Interleaved, the order alternating: neither way always runs on a warmer machine.
                order = ("hand", "playbook") if attempt % 2 == 0 else ("playbook", "hand")
                times: dict[str, float] = {}
                record: dict[str, Any] = {}
                for way in order:
                    if way == "hand":
                        times[way] = by_hand(on.server, by_hand_copy, pending, workdir)
                    else:
                        times[way], record = playbook(playbook_copy, workdir, on.migrations_dir)
                restore_s = restore(playbook_copy, workdir / "playbook.backup")
                run = WindowRun(
                    times["hand"],
                    times["playbook"],
                    {step["name"]: float(step["seconds"]) for step in record["steps"]},
                    restore_s,
                    int(record["backup"]["bytes"]),
                )
            scale.runs.append(run)
            on.progress(
                f"{activities:>9} activities, window {attempt + 1}/{on.repeats}: by hand {run.by_hand_s:.3f} s, "
                f"playbook {run.playbook_s:.3f} s (ratio {run.ratio:.2f}); restore {run.restore_s:.3f} s "
                f"for a {run.backup_bytes}-byte backup"
            )
    return scale
