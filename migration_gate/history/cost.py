"""What the history costs, measured: ``python -m migration_gate.history.cost [--runs N] [--postgres URL]``.

Fills a new history with ``--runs`` nights shaped like a nightly run of today's catalog
(71 results, the profile audit, the cluster's roles; one check failing for a stretch and a
second now and then), timing each append as a run makes it (open, append, close), then
times ``migration-gate history`` on it end to end, a process each time as a job would
run it: the text alone, and with ``--html`` over the default window and over every run.
A measurement, not a test: docs/performance.md keeps the figures of this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from migration_gate.history.record import CHECK, EXISTING, SMOKE, TEST, Result, RunRecord, Target, now
from migration_gate.history.store import History

TARGET = Target(EXISTING, "nightly@staging:5432/fluxolab", "staging", 5432, "fluxolab", "7301", "15.8")
ROLES = {
    "login": ["app", "nightly", "postgres"],
    "superuser": ["postgres"],
    "createrole": ["postgres"],
    "bypassrls": ["postgres"],
    "replication": ["postgres"],
    "members_of_fluxolab_devmode": ["app"],
    "members_of_pg_read_all_data": ["nightly"],
    "members_of_pg_write_all_data": [],
}


def night(number: int) -> RunRecord:
    """Night ``number``: 60 checks, 10 smoke tests skipped, one other test; a leak from night 400 to 700."""
    leak = 3 if 400 <= number < 700 else 0
    flaky = 1 if number % 97 == 0 else 0
    results = [Result(CHECK, f"check_{i:02d}", "current", "passed", 0, 0.004) for i in range(58)]
    results += [
        Result(
            CHECK,
            "credentials_outside_member_workspace",
            "current",
            "failed" if leak else "passed",
            leak,
            0.01,
        ),
        Result(
            CHECK,
            "activities_outside_member_workspace",
            "current",
            "failed" if flaky else "passed",
            flaky,
            0.2,
        ),
    ]
    results += [Result(SMOKE, f"test_smoke.py::test_{i}", "", "skipped", None, 0.0) for i in range(10)]
    results.append(Result(TEST, "test_role_report.py::test_role_report[current]", "", "passed", None, 0.01))
    failing = leak or flaky
    return RunRecord(
        "gate",
        TARGET,
        now(),
        now(),
        3.0 + (number % 7) / 10,
        "failed" if failing else "passed",
        1 if failing else 0,
        "008_webhooks_activities_alignment.sql",
        results,
        {"current": {"owner": 1200 + number // 100, "admin": 30}},
        ROLES,
    )


def _history(source: str, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "migration_gate.cli", "history", source, *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):  # 1 is a verdict (the latest night fails), not a failure of the command
        raise SystemExit(f"history failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--postgres", metavar="URL", help="an empty database to keep the history in instead")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each history command, median reported"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="migration-gate-history-cost-") as tmp:
        source = args.postgres or str(Path(tmp) / "nightly.sqlite")
        appends = []
        for number in range(1, args.runs + 1):
            run = night(number)
            started = time.perf_counter()
            with History(source, create=True) as history:
                history.append(run)
            appends.append(time.perf_counter() - started)
        page = str(Path(tmp) / "nightly.html")
        print(f"history: {source if args.postgres is None else 'PostgreSQL'} with {args.runs} runs")
        print(
            f"append (open, append 71 results, commit, close): median {statistics.median(appends) * 1000:.1f} ms, "
            f"last 100 median {statistics.median(appends[-100:]) * 1000:.1f} ms, max {max(appends) * 1000:.1f} ms"
        )
        for label, extra in (
            ("the floor: history --help", ("--help",)),
            ("history (text, last 30)", ()),
            ("history --html (last 30)", ("--html", page)),
            (f"history --html --last {args.runs}", ("--html", page, "--last", str(args.runs))),
        ):
            seconds = statistics.median(_history(source, *extra) for _ in range(args.repeats))
            print(f"{label:<32} {seconds:.3f} s (a process: interpreter start included)")


if __name__ == "__main__":
    main()
