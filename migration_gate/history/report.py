"""What the history says: which checks failed, since when, how their counts moved, what is new or resolved.

The report reads the runs of one series (the latest run's target: see ``Target.series``),
the last ``--last`` of them, and for each check that failed among them gives its state in
the latest run, the run its failure began in (looked up beyond the window when it began
earlier), its count run by run, and whether it is new since the previous run that ran it
or resolved since then. Figures are compared with the previous run that reported them:
a role that gained an attribute or a membership, a profile count that moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migration_gate.core import settings
from migration_gate.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from migration_gate.history.record import Result, RunRecord
from migration_gate.history.store import History

DEFAULT_LAST = int(settings.default("last"))
TREND_SHOWN = 20  # points of a trend in the text; the JSON and the page keep all
FIGURE_LINES = 20  # lines per figure before "and N more"
NOT_RUN = "not run"


@dataclass(frozen=True)
class RunRef:
    number: int
    started_at: str

    def __str__(self) -> str:
        return f"run {self.number} ({self.started_at})"


@dataclass
class CheckTrend:
    """One check (at one checkpoint) across the window."""

    kind: str
    name: str
    checkpoint: str
    points: list[Result | None]  # one per run of the window, None where it did not run
    numbers: list[int]  # the window's run numbers, beside the points
    first_failed: RunRef | None = None  # where its latest failure began (possibly before the window)
    last_failed: RunRef | None = None

    @property
    def label(self) -> str:
        return f"{self.name} at {self.checkpoint}" if self.checkpoint else self.name

    @property
    def now(self) -> Result | None:
        return self.points[-1] if self.points else None

    @property
    def state(self) -> str:
        return self.now.outcome if self.now is not None else NOT_RUN

    @property
    def failing(self) -> bool:
        return self.now is not None and self.now.failing

    @property
    def before(self) -> Result | None:
        """Its result in the previous run that ran it."""
        return next((point for point in reversed(self.points[:-1]) if point is not None), None)

    @property
    def before_run(self) -> int | None:
        """The number of the previous run that ran it."""
        ran = [
            number
            for number, point in zip(self.numbers[:-1], self.points[:-1], strict=True)
            if point is not None
        ]
        return ran[-1] if ran else None

    @property
    def new(self) -> bool:
        return self.failing and (self.before is None or not self.before.failing)

    @property
    def resolved(self) -> bool:
        return self.state == "passed" and self.before is not None and self.before.failing

    def trend(self) -> list[str]:
        return [_point(point) for point in self.points]


def _point(point: Result | None) -> str:
    if point is None:
        return "-"
    if point.count is not None and point.outcome in ("passed", "failed"):
        return str(point.count)
    return {"passed": "ok", "failed": "FAIL", "error": "ERR", "skipped": "skip"}.get(
        point.outcome, point.outcome
    )


@dataclass
class Report:
    history: str
    runs: list[RunRecord]
    checks: list[CheckTrend]
    figure_changes: list[str] = field(default_factory=list)
    compared_with: RunRecord | None = None  # the run the figures were compared with
    other_runs: int = 0  # runs of other targets in the same history, not shown
    failing_by_run: dict[int, int] = field(default_factory=dict)  # run number → its failing results

    @property
    def latest(self) -> RunRecord:
        return self.runs[-1]

    @property
    def failing(self) -> list[CheckTrend]:
        return [check for check in self.checks if check.failing]

    @property
    def new(self) -> list[CheckTrend]:
        return [check for check in self.checks if check.new]

    @property
    def resolved(self) -> list[CheckTrend]:
        return [check for check in self.checks if check.resolved]

    @property
    def exit_status(self) -> int:
        """1 while the latest run has a failing check (of those asked about), else 0."""
        return EXIT_FAILED if self.failing else EXIT_OK

    def lines(self) -> list[str]:
        latest = self.latest
        out = [
            f"history {self.history}: the last {len(self.runs)} run(s) of {latest.target.described} "
            f"({latest.target.mode} database)",
            f"latest: {latest.label()}: {latest.outcome}; ledger at {latest.ledger_head or 'nothing applied'}; "
            f"{len(self.failing)} failing check(s)",
        ]
        if self.other_runs:
            out.append(f"({self.other_runs} run(s) of other targets are in this history, not shown)")
        out += ["", f"checks that failed within the window ({len(self.checks)}):" if self.checks else ""]
        if not self.checks:
            out[-1] = f"no check failed in the last {len(self.runs)} run(s)"
        for check in self.checks:
            out.append(f"  {check.label}: {self._state(check)}")
            trend = check.trend()
            shown = (["…"] if len(trend) > TREND_SHOWN else []) + trend[-TREND_SHOWN:]
            out.append(f"    trend (oldest first): {' '.join(shown)}")
        out += [
            "",
            _listed("new since the previous run", self.new),
            _listed("resolved since the previous run", self.resolved),
        ]
        if self.figure_changes and self.compared_with is not None:
            out += ["", f"figures that changed since run {self.compared_with.number}:"]
            out += [f"  {line}" for line in self.figure_changes]
        return out

    @staticmethod
    def _state(check: CheckTrend) -> str:
        now = check.now
        count = f" ({now.count})" if now is not None and now.count is not None else ""
        if check.failing:
            since = f"failing since {check.first_failed}" if check.first_failed else "failing"
            return f"{check.state.upper()} now{count}, {'NEW' if check.new else 'ongoing'}; {since}"
        span = (
            f"failed from {check.first_failed} to {check.last_failed}"
            if check.first_failed and check.last_failed and check.first_failed != check.last_failed
            else f"failed in {check.last_failed}"
        )
        return f"{check.state} now{count}{', resolved' if check.resolved else ''}; {span}"

    def to_json(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "history": self.history,
            "target": latest.target.described,
            "series": latest.target.series,
            "exit_status": self.exit_status,
            "other_runs": self.other_runs,
            "runs": [
                {
                    "number": run.number,
                    "run_id": run.run_id,
                    "kind": run.kind,
                    "mode": run.target.mode,
                    "started_at": run.started_at,
                    "finished_at": run.finished_at,
                    "seconds": run.seconds,
                    "outcome": run.outcome,
                    "exit_status": run.exit_status,
                    "ledger_head": run.ledger_head,
                    "server_version": run.target.server_version,
                    "failing": self.failing_by_run.get(run.number or 0, 0),
                }
                for run in self.runs
            ],
            "checks": [
                {
                    "kind": check.kind,
                    "name": check.name,
                    "checkpoint": check.checkpoint,
                    "state": check.state,
                    "count": check.now.count if check.now is not None else None,
                    "new": check.new,
                    "resolved": check.resolved,
                    "first_failed": _ref(check.first_failed),
                    "last_failed": _ref(check.last_failed),
                    "trend": [
                        None
                        if point is None
                        else {
                            "run": run.number,
                            "outcome": point.outcome,
                            "count": point.count,
                            "seconds": point.seconds,
                        }
                        for run, point in zip(self.runs, check.points, strict=True)
                    ],
                }
                for check in self.checks
            ],
            "new": [check.label for check in self.new],
            "resolved": [check.label for check in self.resolved],
            "figure_changes": self.figure_changes,
            "figures_compared_with": self.compared_with.number if self.compared_with else None,
        }


def _ref(ref: RunRef | None) -> dict[str, Any] | None:
    return {"run": ref.number, "started_at": ref.started_at} if ref else None


def _listed(title: str, checks: list[CheckTrend]) -> str:
    return f"{title} ({len(checks)}): " + (", ".join(check.label for check in checks) or "none")


def build(history: History, last: int = DEFAULT_LAST, check: str | None = None) -> Report:
    """The report over the last ``last`` runs of the latest run's target; ``check``: that check only."""
    latest = history.latest()
    if latest is None:
        raise UsageError(f"history {history.described} holds no run yet")
    series = latest.target.series
    window = history.runs(series, last, names=())
    failed_names, failing_by_run = history.failing(series, window[0].number or 0)
    runs = history.runs(series, last, names={check} if check is not None else failed_names)
    keys = {
        result.key
        for run in runs
        for result in run.results
        if (result.name == check if check is not None else result.failing)
    }
    if check is not None and not keys:
        raise UsageError(f"no check {check!r} in the last {len(runs)} run(s) of history {history.described}")
    checks = []
    for key in sorted(keys, key=lambda k: (k[0] != "check", k[1], k[2])):
        by_run = [next((r for r in run.results if r.key == key), None) for run in runs]
        trend = CheckTrend(*key, points=by_run, numbers=[run.number or 0 for run in runs])
        failed = [run for run, point in zip(runs, by_run, strict=True) if point is not None and point.failing]
        if failed:
            trend.first_failed, trend.last_failed = _streak(history, key, series, failed[-1])
        checks.append(trend)
    report = Report(
        history.described,
        runs,
        checks,
        other_runs=history.run_count() - history.run_count(series),
        failing_by_run=failing_by_run,
    )
    _compare_figures(report)
    return report


def _streak(
    history: History, key: tuple[str, str, str], series: str, last: RunRecord
) -> tuple[RunRef, RunRef]:
    """The run where the failure that ``last`` is part of began, and ``last`` itself; runs that did not run the check are passed over."""
    assert last.number is not None
    first = RunRef(last.number, last.started_at)
    for number, started_at, outcome in history.outcomes(key, series, last.number):
        if outcome is None:
            continue
        if outcome not in ("failed", "error"):
            break
        first = RunRef(number, started_at)
    return first, RunRef(last.number, last.started_at)


def _compare_figures(report: Report) -> None:
    """The latest run's figures against the previous run of the window, of its kind and mode, that reported them.

    Of its kind and mode: a rehearsal's copy has the disposable server's own superuser, and a
    playbook audits its checkpoints, not ``current``.
    """
    latest = report.latest
    earlier = [
        run
        for run in report.runs[:-1]
        if (run.roles or run.profile_audit)
        and (run.kind, run.target.mode) == (latest.kind, latest.target.mode)
    ]
    if not earlier or not (latest.roles or latest.profile_audit):
        return
    before = earlier[-1]
    report.compared_with = before
    lines: list[str] = []
    if latest.roles and before.roles:
        for figure in sorted(set(latest.roles) | set(before.roles)):
            now, then = set(latest.roles.get(figure, [])), set(before.roles.get(figure, []))
            what = _figure(figure)
            lines += _capped([f"role {name} gained {what}" for name in sorted(now - then)])
            lines += _capped([f"role {name} lost {what}" for name in sorted(then - now)])
    for checkpoint, figures in sorted(latest.profile_audit.items()):
        if checkpoint not in before.profile_audit:
            continue
        old = before.profile_audit[checkpoint]
        for code in sorted(set(figures) | set(old)):
            if figures.get(code, 0) != old.get(code, 0):
                lines.append(
                    f"profile audit at {checkpoint}: {code} {old.get(code, 0)} → {figures.get(code, 0)}"
                )
    report.figure_changes = lines


def _figure(key: str) -> str:
    """A role report's figure as an attribute: ``superuser`` → SUPERUSER, ``members_of_x`` → membership of x."""
    return (
        f"membership of {key.removeprefix('members_of_')}" if key.startswith("members_of_") else key.upper()
    )


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= FIGURE_LINES:
        return lines
    return [*lines[:FIGURE_LINES], f"and {len(lines) - FIGURE_LINES} more"]
