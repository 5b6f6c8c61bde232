"""The forecast against the window it forecast: a record at N activities, then 2N and 4N measured.

For each record scale N, on one disposable server: legacy databases at 004 with N, 2N
and 4N activities are generated once each (``window.fill_legacy``), analyzed and
checkpointed as staging is. Then, ``repeats`` times, on fresh copies:

1. ``migration-gate playbook`` at N: the change record, as staging would make it;
2. at 2N and at 4N: ``migration-gate forecast --record … --json`` as an operator runs it
   against production, then ``migration-gate playbook`` on the same copy (its wall clock
   is the measured window), then ``migration-gate restore`` of its backup (the measured
   worst case).

The error is the forecast over the measured, minus one, for the window, the restore and
each step. The target is 25 % at 4x (issue 21).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_gate.bench.window import Playbooks, cli, fill_legacy, playbook, restore, run_timed
from migration_gate.core import dsn
from migration_gate.core.server import DisposableServer
from migration_gate.operations.forecast import MIGRATE_STEP

TARGET_FORECAST_ERROR = 0.25
MULTIPLES = (2, 4)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ForecastPoint:
    """One forecast at ``multiple`` x the record's scale, and what the run there measured."""

    multiple: int
    window_s: float  # forecast
    low_s: float
    high_s: float
    measured_s: float  # the playbook's wall clock
    restore_forecast_s: float
    restore_s: float
    steps: dict[str, tuple[float, float]]  # step → (forecast, measured)

    @property
    def error(self) -> float:
        return self.window_s / self.measured_s - 1

    @property
    def restore_error(self) -> float:
        return self.restore_forecast_s / self.restore_s - 1

    @property
    def in_range(self) -> bool:
        return self.low_s <= self.measured_s <= self.high_s


@dataclass(frozen=True)
class ForecastScale:
    activities: int  # the record's
    points: list[ForecastPoint] = field(default_factory=list)

    def at(self, multiple: int) -> list[ForecastPoint]:
        return [point for point in self.points if point.multiple == multiple]

    def worst_error(self, multiple: int) -> float:
        return max((abs(point.error) for point in self.at(multiple)), default=float("nan"))

    def as_json(self) -> dict[str, Any]:
        by_multiple = {}
        for multiple in MULTIPLES:
            points = self.at(multiple)
            if not points:
                continue
            steps = {
                name: {
                    "forecast_s": round(
                        statistics.median(p.steps[name][0] for p in points if name in p.steps), 3
                    ),
                    "measured_s": round(
                        statistics.median(p.steps[name][1] for p in points if name in p.steps), 3
                    ),
                }
                for name in points[0].steps
            }
            by_multiple[f"{multiple}x"] = {
                "activities": self.activities * multiple,
                "window_forecast_s": [round(p.window_s, 3) for p in points],
                "window_range_s": [[round(p.low_s, 3), round(p.high_s, 3)] for p in points],
                "window_measured_s": [round(p.measured_s, 3) for p in points],
                "window_error": [round(p.error, 4) for p in points],
                "restore_forecast_s": [round(p.restore_forecast_s, 3) for p in points],
                "restore_measured_s": [round(p.restore_s, 3) for p in points],
                "restore_error": [round(p.restore_error, 4) for p in points],
                "steps_median": steps,
            }
        return {"record_activities": self.activities, "runs": len(self.at(MULTIPLES[0])), **by_multiple}


def measured_steps(record: dict[str, Any]) -> dict[str, float]:
    """A change record's steps under the forecast's names."""
    steps = {step["name"]: float(step["seconds"]) for step in record["steps"]}
    found = {
        "preflight": steps.get("preflight", 0.0),
        "backup": steps.get("backup and fingerprint (one snapshot)", 0.0),
    }
    migrations = {m["file_name"]: float(m["seconds"]) for m in record["migrations"]}
    found.update(migrations)
    found["checks"] = steps.get(MIGRATE_STEP, 0.0) - sum(migrations.values())
    found["index plans"] = steps.get("index plans", 0.0)
    found["smoke"] = steps.get("smoke tests", 0.0)
    return found


def forecast_cli(url: str, record: Path, json_path: Path, migrations_dir: Path) -> dict[str, Any]:
    run_timed(
        cli("forecast", "--database", url, "--record", str(record), "--json", str(json_path),
            "--migrations-dir", str(migrations_dir)),
        "the forecast",
    )  # fmt: skip
    data: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return data


def run_forecast(on: Playbooks, activities: int) -> ForecastScale:
    """``repeats`` records at ``activities``, each forecasting 2x and 4x and checked against their runs."""
    scale = ForecastScale(activities)
    with ExitStack() as generated:
        bases: dict[int, str] = {}
        for multiple in (1, *MULTIPLES):
            url = generated.enter_context(on.server.temporary_database(f"forecast_{activities}_x{multiple}"))
            fill_legacy(url, on.plan, activities * multiple, on.seed)
            bases[multiple] = str(dsn.parse(url)["dbname"])
            on.progress(f"forecast: {activities * multiple:,} activities generated")
        for attempt in range(on.repeats):
            with tempfile.TemporaryDirectory(prefix="migration-gate-forecast-") as tmp:
                workdir = Path(tmp)
                (workdir / "record").mkdir()
                with on.server.temporary_database(f"forecast_{activities}_copy", template=bases[1]) as copy:
                    playbook(copy, workdir / "record", on.migrations_dir)
                record_json = workdir / "record" / "record" / "report.json"
                for multiple in MULTIPLES:
                    point = _measure(
                        on.server, bases[multiple], record_json, workdir / f"x{multiple}", on.migrations_dir
                    )
                    scale.points.append(ForecastPoint(multiple, *point))
                    last = scale.points[-1]
                    on.progress(
                        f"forecast {attempt + 1}/{on.repeats}, {activities:,} → {activities * multiple:,}: "
                        f"window forecast {last.window_s:.1f} s ({last.low_s:.1f}-{last.high_s:.1f}), measured "
                        f"{last.measured_s:.1f} s, error {last.error:+.1%}; restore forecast "
                        f"{last.restore_forecast_s:.1f} s, measured {last.restore_s:.1f} s ({last.restore_error:+.1%})"
                    )
    return scale


def _measure(
    server: DisposableServer, base: str, record_json: Path, workdir: Path, migrations_dir: Path
) -> tuple[float, float, float, float, float, float, dict[str, tuple[float, float]]]:
    """On a copy of ``base``: the forecast, then the playbook and the restore it forecast."""
    workdir.mkdir()
    with server.temporary_database(f"{base}_copy", template=base) as copy:
        expected = forecast_cli(copy, record_json, workdir / "forecast.json", migrations_dir)
        measured_s, record = playbook(copy, workdir, migrations_dir)
        restore_s = restore(copy, workdir / "playbook.backup")
    measured = measured_steps(record)
    steps = {
        step["name"]: (float(step["seconds"]), measured[step["name"]])
        for step in expected["steps"]
        if step["name"] in measured
    }
    return (
        float(expected["window_s"]),
        float(expected["low_s"]),
        float(expected["high_s"]),
        measured_s,
        float(expected["restore_s"]),
        restore_s,
        steps,
    )
