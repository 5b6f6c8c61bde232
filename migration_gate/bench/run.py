"""``migration-gate bench``: every section run, the targets judged, the table and the JSON.

The sections: per scale, 005→008 against bulk-loading the volume (``scales``); the gate
against its floor (``floor``); the whole maintenance window against the runbook by hand
(``window``); the forecast against the windows it forecast (``forecast_accuracy``). Performance is judged here, never in a timed test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_gate.bench.floor import GateRun, run_gate
from migration_gate.bench.forecast_accuracy import (
    MULTIPLES,
    TARGET_FORECAST_ERROR,
    ForecastScale,
    run_forecast,
)
from migration_gate.bench.scales import ScaleRun, median_run, run_scale
from migration_gate.bench.window import TARGET_WINDOW_RATIO, Playbooks, WindowScale, run_window
from migration_gate.core.errors import UsageError
from migration_gate.core.installations import find_installation
from migration_gate.core.plan import Migration
from migration_gate.core.server import DisposableServer

Progress = Callable[[str], None]

# Targets of issue 6, judged here and never in a timed test.
TARGET_RATIO = 1.0
TARGET_RATIO_AT_1M = 0.5
TARGET_GROWTH_1M_OVER_100K = 12.0
TARGET_GATE_OVER_FLOOR = 2.0


@dataclass(frozen=True)
class BenchResult:
    scales: list[ScaleRun]
    gate: GateRun | None
    window: list[WindowScale] = field(default_factory=list)
    forecast: list[ForecastScale] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "scales": [scale.as_json() for scale in self.scales],
            "gate": self.gate.as_json() if self.gate else None,
            "window": [scale.as_json() for scale in self.window],
            "forecast": [scale.as_json() for scale in self.forecast],
        }

    def verdicts(self) -> list[tuple[str, bool]]:
        """Each target of issue 6 this run can judge, and whether it was met."""
        found: list[tuple[str, bool]] = []
        for scale in self.scales:
            limit = TARGET_RATIO_AT_1M if scale.activities >= 1_000_000 else TARGET_RATIO
            found.append(
                (
                    f"migrate_s / load_s at {scale.activities:,} = {scale.ratio:.2f} (<= {limit})",
                    scale.ratio <= limit,
                )
            )
        by_scale = {scale.activities: scale for scale in self.scales}
        if 100_000 in by_scale and 1_000_000 in by_scale:
            growth = by_scale[1_000_000].migrate_s / by_scale[100_000].migrate_s
            found.append(
                (
                    f"migrate_s at 1M / at 100k = {growth:.1f} (<= {TARGET_GROWTH_1M_OVER_100K:g})",
                    growth <= TARGET_GROWTH_1M_OVER_100K,
                )
            )
        if self.gate:
            found.append(
                (
                    f"gate / floor = {self.gate.ratio:.2f} (<= {TARGET_GATE_OVER_FLOOR:g})",
                    self.gate.ratio <= TARGET_GATE_OVER_FLOOR,
                )
            )
        for window in self.window:
            found.append(
                (
                    f"window: playbook / by hand at {window.activities:,} = {window.ratio:.2f} (<= {TARGET_WINDOW_RATIO:g})",
                    window.ratio <= TARGET_WINDOW_RATIO,
                )
            )
        for forecast in self.forecast:
            worst = forecast.worst_error(MULTIPLES[-1])
            found.append(
                (
                    f"forecast: worst window error from {forecast.activities:,} to {forecast.activities * MULTIPLES[-1]:,} "
                    f"= {worst:.1%} (<= {TARGET_FORECAST_ERROR:.0%})",
                    worst <= TARGET_FORECAST_ERROR,
                )
            )
        return found

    def table(self) -> list[str]:
        names = [m.file_name[:3] for m in self.scales[0].migrations] if self.scales else []
        header = f"{'activities':>10} {'rows':>9} {'load_s':>8} {'migrate_s':>9} {'ratio':>6}  " + "  ".join(
            f"{name + ' s':>7} {'lock':>6}" for name in names
        )
        lines = [header]
        for scale in self.scales:
            cells = "  ".join(f"{m.seconds:7.3f} {m.lock_seconds:6.3f}" for m in scale.migrations)
            lines.append(
                f"{scale.activities:>10} {scale.rows:>9} {scale.load_s:8.3f} {scale.migrate_s:9.3f} "
                f"{scale.ratio:6.2f}  {cells}"
            )
        if self.gate:
            lines.append(
                f"gate: floor {self.gate.floor_s:.3f} s (pg_ctl + psql), gate {self.gate.gate_s:.3f} s "
                f"(DisposableServer + runner), ratio {self.gate.ratio:.2f}"
            )
        for window in self.window:
            data = window.as_json()
            steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in data["playbook_steps"].items())
            lines.append(
                f"window at {window.activities:,}: by hand {data['by_hand_s']:.3f} s, playbook {data['playbook_s']:.3f} s, "
                f"ratio {data['ratio']:.2f} ({steps}); restore {data['restore_s']:.3f} s for {data['backup_bytes']} bytes"
            )
        for forecast in self.forecast:
            for point in forecast.points:
                lines.append(
                    f"forecast from {forecast.activities:,} to {forecast.activities * point.multiple:,}: window "
                    f"{point.window_s:.1f} s ({point.low_s:.1f}-{point.high_s:.1f}) against {point.measured_s:.1f} s "
                    f"measured, error {point.error:+.1%}{'' if point.in_range else ' (outside the range)'}; restore "
                    f"{point.restore_forecast_s:.1f} s against {point.restore_s:.1f} s ({point.restore_error:+.1%})"
                )
        return lines


def bench(
    plan: list[Migration],
    scales: list[int],
    seed: int = 0,
    gate_runs: int = 3,
    pg_ctl: str | None = None,
    progress: Progress = lambda line: None,
    repeats: int = 1,
    window_scales: list[int] | None = None,
    migrations_dir: Path | None = None,
    pg_version: object = None,
    forecast_scales: list[int] | None = None,
) -> BenchResult:
    """Measure every scale (``repeats`` times, medians kept) on one disposable server, then the gate.

    With ``window_scales``, also the whole window: the playbook against the runbook by hand
    (``window``), ``repeats`` pairs per scale, from the files of ``migrations_dir``. With
    ``forecast_scales``, a record at each and the forecast checked at 2x and 4x (``forecast_accuracy``).
    """
    if not any(m.version == 4 for m in plan) or plan[-1].version <= 4:
        raise UsageError("the benchmark needs migrations 001-004 and at least one after them")
    installation = find_installation(pg_ctl, pg_version)
    progress(f"on {installation.describe()}")
    results = []
    windows = []
    forecasts = []
    with DisposableServer(installation=installation) as server:
        for activities in scales:
            runs = [run_scale(server, plan, activities, seed, progress) for _ in range(max(1, repeats))]
            results.append(median_run(runs))
        if window_scales or forecast_scales:
            assert migrations_dir is not None, "a whole window runs the playbook on the files of a directory"
            on = Playbooks(server, plan, migrations_dir, seed, max(1, repeats), progress)
            windows += [run_window(on, activities) for activities in window_scales or ()]
            forecasts += [run_forecast(on, activities) for activities in forecast_scales or ()]
    gate = run_gate(installation, plan, gate_runs, progress) if gate_runs else None
    return BenchResult(results, gate, windows, forecasts)


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
