"""``migration-gate forecast``: how long the window will be on a target, from a change record and its catalog.

The record (a playbook's or a rehearsal's ``report.json``) measured every step, every
migration and every statement on staging, and kept each table's rows and bytes as the
run found them (``tables``). The target's catalog gives the same figures for production
(``target_stats``, read-only, never a ``count(*)``). The forecast scales what was measured
by how much more (or less) there is of what it worked on, and keeps what does not depend
on the data fixed. docs/performance.md ("The forecast") has the measurements behind each
rule; in short:

* **each statement** of each migration: its seconds times the ratio (target / record) of
  the rows of the tables it works on, following renames and copies through the
  migrations (``core.schema_walk``: 008's new ``activities`` scales with the old one). The
  first ``STATEMENT_FIXED_S`` of each statement stay fixed (parsing, catalog work, a
  round trip); a statement's ratio is the sum of its tables' rows on the target over
  their sum on the record, so the largest table it reads weighs most. ``ANALYZE`` works on
  a sample of at most ``ANALYZE_SAMPLE_ROWS`` rows a table, and scales with those. Index
  builds were measured against ``r·log r`` and found no worse than linear (see the docs).
* **the checks at the checkpoints**, and the rest of the one transaction (the counts,
  the audits, the commit): by the ratio of all rows, the first ``CHECK_FIXED_S`` of each
  check fixed.
* **the index plans**: ``ANALYZE``'s sample rows, as above; the plans themselves are fixed.
* **the smoke step**: its clean-up's counts scan every table and scale with all rows; the
  tests themselves act on one tenant and stay fixed.
* **the backup** (``pg_dump`` beside the fingerprint) by the bytes of the tables (heap
  and TOAST, not indexes, which a dump does not hold); **preflight** fixed.
* **the restore** (the worst case: a failure after the commit) from the record's own
  restore when it has one, else from its backup: ``RESTORE_OVER_BACKUP`` times the
  backup's seconds, measured on the same machine, scaled by the bytes.

The range of each figure is the error the bench measured for that kind of step
(``BANDS``), not a guess; the window's is the window's own measured error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migration_gate.core.errors import UsageError
from migration_gate.core.plan import Migration
from migration_gate.core.runner import statement_summary
from migration_gate.core.schema_walk import Reading, SchemaWalk
from migration_gate.operations.target_stats import TableSize, TargetStats

# What stays fixed, and what scales: see the module's docstring and docs/performance.md.
STATEMENT_FIXED_S = 0.002
CHECK_FIXED_S = 0.005
# ANALYZE's sample: 300 x default_statistics_target (100) rows, whatever the table's size.
ANALYZE_SAMPLE_ROWS = 30_000
# The restore over the backup step, same machine and data: median of 18 measured runs, 1M-4M (docs).
RESTORE_OVER_BACKUP = 2.4

# How far the measured figure landed from the forecast (below, above), at most, in the bench's
# forecast section (1M -> 2M and 4M, twelve points, docs/performance.md), rounded up to 5 %:
# the range of each figure. "fixed" steps are a few tenths of a second, where noise is relative.
BANDS: dict[str, tuple[float, float]] = {
    "fixed": (0.5, 1.0),
    "migration": (0.25, 0.25),
    "checks": (0.2, 0.2),
    "backup": (0.2, 0.2),
    "smoke": (0.1, 0.1),
    "restore": (0.3, 0.3),
    "window": (0.2, 0.2),
}

RECORD_COMMANDS = ("playbook", "rehearse")
MIGRATE_STEP = "migrate and validate (one transaction)"
BACKUP_STEP = "backup and fingerprint (one snapshot)"
STEP_NAMES = {
    "preflight": "preflight",
    "backup": BACKUP_STEP,
    "index plans": "index plans",
    "smoke": "smoke tests",
}


@dataclass(frozen=True)
class StepForecast:
    name: str
    seconds: float
    low_s: float
    high_s: float
    basis: str

    @classmethod
    def banded(cls, name: str, seconds: float, band: str, basis: str) -> StepForecast:
        under, over = BANDS[band]
        return cls(name, seconds, seconds * (1 - under), seconds * (1 + over), basis)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "low_s": round(self.low_s, 3),
            "high_s": round(self.high_s, 3),
            "basis": self.basis,
        }


@dataclass(frozen=True)
class Forecast:
    """Each step of the window, the window, and the restore it would take on top after a late failure."""

    steps: list[StepForecast]
    restore: StepForecast
    notes: list[str]

    @property
    def window_s(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def low_s(self) -> float:
        return self.window_s * (1 - BANDS["window"][0])

    @property
    def high_s(self) -> float:
        return self.window_s * (1 + BANDS["window"][1])

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 3),
            "low_s": round(self.low_s, 3),
            "high_s": round(self.high_s, 3),
            "restore_s": round(self.restore.seconds, 3),
            "steps": [step.to_json() for step in self.steps],
            "restore": self.restore.to_json(),
            "notes": self.notes,
        }

    def table(self) -> list[str]:
        """The forecast for people: a line a step, the window, the restore."""
        width = max(len(step.name) for step in [*self.steps, self.restore])
        lines = [f"{'step':<{width}}  {'seconds':>9}  {'range':>17}  basis"]
        for step in self.steps:
            lines.append(_line(step, width))
        lines.append(
            f"{'window':<{width}}  {self.window_s:9.1f}  {self.low_s:7.1f} - {self.high_s:7.1f}  "
            "the application is down for all of it"
        )
        lines.append(_line(self.restore, width) + " (on top of the window)")
        return lines + [f"note: {note}" for note in self.notes]

    def summary(self) -> str:
        return (
            f"forecast window {format_seconds(self.window_s)} ({format_seconds(self.low_s)}-"
            f"{format_seconds(self.high_s)}); a restore after a late failure adds {format_seconds(self.restore.seconds)}"
        )


def _line(step: StepForecast, width: int) -> str:
    return f"{step.name:<{width}}  {step.seconds:9.1f}  {step.low_s:7.1f} - {step.high_s:7.1f}  {step.basis}"


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# -- Durations (--window-budget) ---------------------------------------------------------

# -- The record ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What a forecast reads from a change record, checked."""

    path: Path
    data: dict[str, Any]
    start_version: int
    tables: list[TableSize]

    def step(self, name: str) -> dict[str, Any] | None:
        return next((step for step in self.data["steps"] if step["name"] == name), None)


def load_record(path: Path) -> Record:
    """A playbook's or rehearsal's report.json, with what a forecast needs; UsageError otherwise."""
    what = f"--record {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"{what}: not a change record (cannot read it as JSON: {reason})") from None
    if (
        not isinstance(data, dict)
        or data.get("command") not in RECORD_COMMANDS
        or not isinstance(data.get("steps"), list)
        or not isinstance(data.get("migrations"), list)
    ):
        raise UsageError(f"{what}: not a change record (report.json of migration-gate playbook or rehearse)")
    if data.get("start_version") is None or not data.get("tables"):
        raise UsageError(
            f"{what}: this change record has no table sizes (written by an older migration-gate): "
            "record a new rehearsal or staging run"
        )
    try:
        tables = [TableSize.from_json(table) for table in data["tables"]]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{what}: not a change record (its tables cannot be read)") from None
    return Record(path, data, int(data["start_version"]), tables)


def check_target(record: Record, target: TargetStats) -> None:
    """The forecast compares like with like: the target must start where the record's run started."""
    if target.version != record.start_version:
        raise UsageError(
            f"{target.database} is at {target.version:03d} (its ledger), but the record's run started at "
            f"{record.start_version:03d}: a forecast needs a record of the same migrations from the same start"
        )


def _pending_of(record: Record, plan: list[Migration]) -> list[tuple[Migration, dict[str, Any]]]:
    """The record's migrations, each with its file; refuses files that changed since the record."""
    by_name = {m.file_name: m for m in plan}
    expected = [m for m in plan if m.version > record.start_version]
    recorded = {m["file_name"]: m for m in record.data["migrations"]}
    missing = [m.file_name for m in expected if m.file_name not in recorded]
    if missing:
        stopped = record.data.get("stopped_at")
        why = f" (its run stopped at {stopped})" if stopped else ""
        raise UsageError(
            f"--record {record.path}: no timings for {', '.join(missing)}{why}: record a run that applies them"
        )
    pairs = []
    for name, measured in recorded.items():
        migration = by_name.get(name)
        if migration is None:
            raise UsageError(f"--record {record.path}: {name} is not in the migrations directory")
        lines = {statement.line: statement for statement in migration.statements()}
        for timing in measured["statements"]:
            statement = lines.get(timing["line"])
            if statement is None or statement_summary(statement.sql) != timing["statement"]:
                raise UsageError(
                    f"--record {record.path}: {name} has changed since the record (line {timing['line']}): "
                    "record a run of the migrations as they are"
                )
        pairs.append((migration, measured))
    return pairs


# -- The model ---------------------------------------------------------------------------


class Scaling:
    """Ratios of the target to the record, by table."""

    def __init__(self, record: list[TableSize], target: list[TableSize]) -> None:
        self.record = {t.name: t for t in record}
        self.target = {t.name: t for t in target}

    def _sum(self, side: dict[str, TableSize], tables: frozenset[str] | None, measure: str) -> float:
        names = side if tables is None else tables
        return float(sum(_measure(side[name], measure) for name in names if name in side))

    def ratio(self, tables: frozenset[str] | None = None, measure: str = "rows") -> float:
        """Target over record for ``tables`` (every table: None), by rows, bytes or ANALYZE's sample rows."""
        before = self._sum(self.record, tables, measure)
        return self._sum(self.target, tables, measure) / before if before > 0 else 1.0

    def largest(self, tables: frozenset[str]) -> str:
        known = [name for name in tables if name in self.record]
        if not known:
            return "no table"
        name = max(known, key=lambda n: self.record[n].rows)
        return f"{name.removeprefix('public.')} x{self.ratio(frozenset({name})):.2f}"


def _measure(table: TableSize, measure: str) -> float:
    if measure == "rows":
        return table.rows
    if measure == "data bytes":  # what pg_dump and the fingerprint read: heap and TOAST
        return table.total_bytes - table.index_bytes
    if measure == "sampled rows":
        return min(table.rows, ANALYZE_SAMPLE_ROWS)
    raise ValueError(measure)


def scaled(seconds: float, fixed: float, ratio: float) -> float:
    """``fixed`` seconds stay; the rest scales."""
    kept = min(seconds, fixed)
    return kept + (seconds - kept) * ratio


def _migration(
    migration: Migration, measured: dict[str, Any], readings: list[Reading], scaling: Scaling
) -> StepForecast:
    by_line = {reading.line: reading for reading in readings}
    total, statements_s, heaviest, heaviest_s = 0.0, 0.0, frozenset[str](), -1.0
    for timing in measured["statements"]:
        reading = by_line[timing["line"]]
        measure = "sampled rows" if reading.kind == "ANALYZE" else "rows"
        seconds = float(timing["seconds"])
        statements_s += seconds
        total += scaled(
            seconds, STATEMENT_FIXED_S, scaling.ratio(reading.bases, measure) if reading.bases else 1.0
        )
        if seconds > heaviest_s:
            heaviest, heaviest_s = reading.bases, seconds
    total += max(float(measured["seconds"]) - statements_s, 0.0)  # the savepoint and the ledger row
    basis = (
        f"{len(measured['statements'])} statements, each by the rows it works on "
        f"(slowest: {scaling.largest(heaviest)})"
    )
    return StepForecast.banded(migration.file_name, total, "migration", basis)


def forecast(record: Record, target: TargetStats, plan: list[Migration], smoke: bool = True) -> Forecast:
    """Each step's seconds on ``target``, from ``record`` (see the module for the model).

    ``smoke=False``: the run it is for skips the smoke tests (``--no-smoke``), and so does the forecast.
    """
    check_target(record, target)
    pending = _pending_of(record, plan)
    scaling = Scaling(record.tables, target.tables)
    walk = SchemaWalk({table.name: [] for table in record.tables})
    rows_ratio = scaling.ratio()
    bytes_ratio = scaling.ratio(measure="data bytes")
    notes: list[str] = []
    steps: list[StepForecast] = []

    def fixed(key: str) -> None:
        step = record.step(STEP_NAMES[key])
        if step is not None:
            steps.append(
                StepForecast.banded(key, float(step["seconds"]), "fixed", "as recorded: no table read")
            )

    fixed("preflight")
    backup = record.step(BACKUP_STEP)
    if backup is None:
        raise UsageError(f"--record {record.path}: its run has no backup step to scale")
    backup_s = float(backup["seconds"])
    steps.append(
        StepForecast.banded(
            "backup",
            backup_s * bytes_ratio,
            "backup",
            f"pg_dump and fingerprint, by the tables' bytes x{bytes_ratio:.2f}",
        )
    )
    migrations_s = 0.0
    for migration, measured in pending:
        step = _migration(migration, measured, walk.read(migration), scaling)
        migrations_s += float(measured["seconds"])
        steps.append(step)
    validate = record.step(MIGRATE_STEP)
    if validate is not None:
        rest = max(float(validate["seconds"]) - migrations_s, 0.0)
        fixed_part = min(rest, CHECK_FIXED_S * len(record.data.get("checks", [])))
        steps.append(
            StepForecast.banded(
                "checks",
                scaled(rest, fixed_part, rows_ratio),
                "checks",
                f"checks, counts and audits at the checkpoints, by all rows x{rows_ratio:.2f}",
            )
        )
    plans = record.step(STEP_NAMES["index plans"])
    if plans is not None:
        ratio = scaling.ratio(measure="sampled rows")
        steps.append(
            StepForecast.banded(
                "index plans",
                float(plans["seconds"]) * ratio,
                "fixed",
                f"ANALYZE's sample, at most {ANALYZE_SAMPLE_ROWS:,} rows a table x{ratio:.2f}",
            )
        )
    if smoke:
        steps.append(_smoke(record, rows_ratio, notes))
    leftover = float(record.data.get("seconds") or 0.0) - sum(
        float(s["seconds"]) for s in record.data["steps"]
    )
    if leftover > 0:
        steps.append(
            StepForecast.banded("the command (records, connections)", leftover, "fixed", "as recorded")
        )
    return Forecast(steps, _restore(record, backup_s, bytes_ratio), notes)


def _smoke(record: Record, rows_ratio: float, notes: list[str]) -> StepForecast:
    step = record.step(STEP_NAMES["smoke"])
    if step is None:
        notes.append("the record's run had no smoke step (--no-smoke): the window leaves it out")
        return StepForecast("smoke", 0.0, 0.0, 0.0, "not in the record")
    seconds = float(step["seconds"])
    cleanup = float((record.data.get("smoke_cleanup") or {}).get("seconds") or 0.0)
    cleanup = min(cleanup, seconds)
    return StepForecast.banded(
        "smoke",
        seconds - cleanup + cleanup * rows_ratio,
        "smoke",
        f"tests fixed ({seconds - cleanup:.1f} s); the clean-up's counts by all rows x{rows_ratio:.2f}",
    )


def _restore(record: Record, backup_s: float, bytes_ratio: float) -> StepForecast:
    done = record.data.get("restore") or {}
    name = "restore (worst case)"
    if done.get("performed") and done.get("seconds"):
        return StepForecast.banded(
            name,
            float(done["seconds"]) * bytes_ratio,
            "restore",
            f"the record's restore, by the bytes x{bytes_ratio:.2f}",
        )
    return StepForecast.banded(
        name,
        backup_s * RESTORE_OVER_BACKUP * bytes_ratio,
        "restore",
        f"{RESTORE_OVER_BACKUP:g} x the record's backup, by the bytes x{bytes_ratio:.2f}",
    )
