"""The history as one page that works offline: inline CSS and SVG, no script, no font or image from elsewhere.

It shows what the text report says, and draws it: each check that failed within the
window, its count run by run (a check without a count is drawn 1 when failing, 0 when
passing), and the duration of each run, the gate's and the playbook's windows apart.
A point's tooltip (SVG ``<title>``, no script) names its run.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from migration_gate.history.record import GATE, RunRecord
from migration_gate.history.report import CheckTrend, Report

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 34
FAIL, PASS, GATE_COLOUR, WINDOW_COLOUR = "#c62828", "#2e7d32", "#1565c0", "#ef6c00"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1b1b1b; max-width: 60rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; } h3 { font-size: 1rem; margin-bottom: .3rem; }
table { border-collapse: collapse; font-size: .9rem; } td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }
.failing { color: #c62828; font-weight: bold; } .passing { color: #2e7d32; } .muted { color: #666; }
svg text { font-size: 11px; fill: #444; } .legend span { margin-right: 1rem; }
"""


@dataclass(frozen=True)
class Point:
    index: int  # the run's place in the window
    value: float
    alarm: bool
    tooltip: str


@dataclass(frozen=True)
class Line:
    label: str
    colour: str
    points: list[Point]


def page(report: Report) -> str:
    latest = report.latest
    state = (
        f'<span class="failing">{len(report.failing)} failing check(s)</span>'
        if report.failing
        else '<span class="passing">no failing check</span>'
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>migration-gate history: {escape(latest.target.described)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>migration-gate history: {escape(latest.target.described)}</h1>",
        f"<p>{escape(report.history)}: the last {len(report.runs)} run(s) ({escape(latest.target.mode)} database). "
        f"Latest: {escape(latest.label())}, {escape(latest.outcome)}, ledger at "
        f"{escape(latest.ledger_head or 'nothing applied')}: {state}.</p>",
    ]
    if report.other_runs:
        out.append(
            f'<p class="muted">{report.other_runs} run(s) of other targets are in this history, not shown.</p>'
        )
    out += [
        f"<p>New since the previous run: {_names(report.new)}. Resolved since the previous run: {_names(report.resolved)}.</p>",
        f"<h2>Checks that failed within the window ({len(report.checks)})</h2>",
    ]
    if report.checks:
        out += _table(report)
        for check in report.checks:
            out += [
                f"<h3>{escape(check.label)}</h3>",
                _chart(f"{check.label}: offending rows by run", [_counts(check, report.runs)], report.runs),
            ]
    else:
        out.append(f'<p class="passing">No check failed in the last {len(report.runs)} run(s).</p>')
    if report.figure_changes and report.compared_with is not None:
        out.append(f"<h2>Figures that changed since run {report.compared_with.number}</h2><ul>")
        out += [f"<li>{escape(line)}</li>" for line in report.figure_changes]
        out.append("</ul>")
    out += ["<h2>Durations</h2>", _chart("seconds by run", _durations(report.runs), report.runs)]
    out.append(
        f'<p class="legend"><span style="color:{GATE_COLOUR}">● the gate (pytest session)</span>'
        f'<span style="color:{WINDOW_COLOUR}">● the playbook\'s window</span></p>'
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _names(checks: list[CheckTrend]) -> str:
    return escape(", ".join(check.label for check in checks)) or "none"


def _table(report: Report) -> list[str]:
    rows = ["<table><tr><th>check</th><th>now</th><th>count</th><th>failing since</th><th>change</th></tr>"]
    for check in report.checks:
        now = check.now
        change = "new" if check.new else "resolved" if check.resolved else "ongoing" if check.failing else ""
        rows.append(
            f'<tr><td>{escape(check.label)}</td><td class="{"failing" if check.failing else "passing"}">'
            f"{escape(check.state)}</td><td>{'' if now is None or now.count is None else now.count}</td>"
            f"<td>{escape(str(check.first_failed or ''))}</td><td>{change}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _counts(check: CheckTrend, runs: list[RunRecord]) -> Line:
    points = [
        Point(
            index,
            float(point.count if point.count is not None else int(point.failing)),
            point.failing,
            f"run {run.number} ({run.started_at}): {point.outcome}"
            + (f", {point.count} offending" if point.count is not None else ""),
        )
        for index, (run, point) in enumerate(zip(runs, check.points, strict=True))
        if point is not None
    ]
    return Line("offending rows", FAIL, points)


def _durations(runs: list[RunRecord]) -> list[Line]:
    def line(label: str, colour: str, gate: bool) -> Line:
        return Line(
            label,
            colour,
            [
                Point(
                    index,
                    run.seconds,
                    False,
                    f"run {run.number} ({run.kind}, {run.started_at}): {run.seconds:.2f} s",
                )
                for index, run in enumerate(runs)
                if (run.kind == GATE) == gate
            ],
        )

    return [line("the gate", GATE_COLOUR, True), line("the playbook's window", WINDOW_COLOUR, False)]


def _nice(top: float) -> float:
    """A round upper bound for the axis: 1, 2, 5 times a power of ten."""
    if top <= 0:
        return 1.0
    scale = 10 ** len(str(int(top))) / 10
    return next(step * scale for step in (1, 2, 5, 10) if step * scale >= top)


def _chart(title: str, lines: list[Line], runs: list[RunRecord]) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice(max((p.value for line in lines for p in line.points), default=0.0))
    span = max(len(runs) - 1, 1)

    def x(index: int) -> float:
        return LEFT + plot_w * (index / span if len(runs) > 1 else 0.5)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    out = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT + plot_w}" y2="{TOP}" stroke="#eee"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top:g}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h + 4}" text-anchor="end">0</text>',
    ]
    if runs:
        step = max(1, len(runs) // 8)
        labelled = list(range(0, len(runs), step))
        if len(runs) - 1 - labelled[-1] > step // 2:  # the last run too, unless its label would overlap
            labelled.append(len(runs) - 1)
        for index in labelled:
            out.append(
                f'<text x="{x(index):.1f}" y="{HEIGHT - 12}" text-anchor="middle">run {runs[index].number}</text>'
            )
    for line in lines:
        if len(line.points) > 1:
            path = " ".join(f"{x(p.index):.1f},{y(p.value):.1f}" for p in line.points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{line.colour}" stroke-width="1.5"/>')
        for p in line.points:
            colour = FAIL if p.alarm else (PASS if line.colour == FAIL else line.colour)
            out.append(
                f'<circle cx="{x(p.index):.1f}" cy="{y(p.value):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(p.tooltip)}</title></circle>"
            )
    out.append("</svg>")
    return "\n".join(out)
