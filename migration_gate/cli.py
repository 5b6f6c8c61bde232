"""``migration-gate``: thin commands over the library. One line per error, exit 2 for usage."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from migration_gate.core import dsn, installations, settings
from migration_gate.core.errors import EXIT_OK, EXIT_USAGE, GateError, UsageError
from migration_gate.core.installations import parse_major
from migration_gate.core.plan import load_plan
from migration_gate.core.signals import interrupt_on_signals

DEFAULT_MIGRATIONS_DIR = settings.default("migrations_dir")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (never the whole usage text)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {dsn.redact(message)} (see --help)\n")
        sys.exit(EXIT_USAGE)


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database", required=True, metavar="URL", help="postgresql://user:password@host:port/dbname"
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _major(text: str) -> int:
    try:
        major = parse_major(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--pg-version ")) from None
    assert major is not None
    return major


def _add_server_choice(parser: argparse.ArgumentParser, default: str) -> None:
    """--pg-ctl and --pg-version: which installation the disposable server runs on."""
    parser.add_argument(
        "--pg-ctl",
        metavar="PATH",
        help=f"pg_ctl of the disposable server (default ${installations.PG_CTL_ENV}, then by --pg-version)",
    )
    parser.add_argument(
        "--pg-version",
        type=_major,
        metavar="N",
        help=f"the disposable server's PostgreSQL major, among those found "
        f"(default ${installations.PG_VERSION_ENV}, else {default}; see 'migration-gate servers')",
    )


def cmd_servers(args: argparse.Namespace) -> int:
    found = installations.installations()
    if not found:
        raise UsageError(installations.INSTALL_HINT)
    if args.majors:
        for major in dict.fromkeys(i.major for i in found):
            _say(str(major))
        return EXIT_OK
    for index, installation in enumerate(found):
        default = "  (default)" if index == 0 else ""
        _say(f"{installation.major:<3} {installation.describe()}{default}")
    return EXIT_OK


def _add_servers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "servers",
        help="the PostgreSQL installations found for the disposable server, the default first",
        description="Each PostgreSQL installation found (--pg-ctl's environment variable, PATH, "
        "/usr/lib/postgresql/*/bin, PyPI's), the one used by default first; --pg-version N picks the first of N.",
    )
    parser.add_argument(
        "--majors", action="store_true", help="only the major versions, one per line, the default first"
    )
    parser.set_defaults(handler=cmd_servers)


def cmd_migrate(args: argparse.Namespace) -> int:
    from migration_gate.core import runner

    plan = load_plan(args.migrations_dir)
    target = dsn.describe(args.database)
    _say(f"migrating {target} from {args.migrations_dir}")
    applied = runner.migrate(
        args.database,
        plan,
        args.from_,
        args.to,
        progress=_say,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
    )
    if args.statement_timings:
        for result in applied:
            for timing in result.statements:
                _say(
                    f"  {result.migration.file_name}:{timing.line:<5} {timing.seconds:8.3f} s  {timing.summary}"
                )
    total = sum(result.seconds for result in applied)
    _say(f"applied {len(applied)} migration(s) in {total:.3f} s")
    return EXIT_OK


def _add_migrate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "migrate",
        help="apply pending migrations, one transaction per file, recorded in the ledger",
        description="Apply the pending migrations between --from and --to (inclusive) to --database.",
    )
    _add_database(parser)
    parser.add_argument(
        "--from", dest="from_", metavar="X", help="first migration: 006 or 006_workspace_defaults.sql"
    )
    parser.add_argument("--to", metavar="Y", help="last migration (inclusive)")
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    parser.add_argument(
        "--statement-timings", action="store_true", help="also print each statement's duration"
    )
    _add_lock_timeout(parser)
    parser.add_argument(
        "--statement-timeout",
        type=_duration,
        default="0",
        metavar="DURATION",
        help="stop any statement that runs longer (default 0: no limit)",
    )
    parser.set_defaults(handler=cmd_migrate)


def _duration(text: str) -> str:
    """A PostgreSQL duration setting: 0, 500ms, 5s, 2min (a bare number is milliseconds)."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?", text.strip()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 5s, 500ms, 2min; 0 waits forever)")
    return text.strip()


def _add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=_duration,
        default=settings.default("lock_timeout"),
        metavar="DURATION",
        help="give up on a lock the application holds after this long, then retry the migration with "
        "back-off, a few times within a budget (default 5s; 0 waits forever)",
    )


def cmd_serve_api(args: argparse.Namespace) -> int:
    import logging

    from migration_gate.reference.api import APP_ROLE, ApiSettings, ReferenceApi
    from migration_gate.reference.webhook_delivery import DeliveryPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    policy = DeliveryPolicy(max_attempts=args.delivery_attempts, backoff_seconds=args.retry_backoff)
    api = ReferenceApi(ApiSettings(args.database, args.host, args.port, policy)).bind()
    target = dsn.describe(args.database)
    _say(f"serving the reference API on {api.url} as {APP_ROLE} on {target}; Ctrl-C stops")
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        _say("stopped")
    return EXIT_OK


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _add_serve_api(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve-api",
        help="serve the reference API of smoke/openapi.yaml against a migrated database",
        description="Serve the API the smoke tests speak, acting on --database as fluxolab_devmode.",
    )
    _add_database(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8080, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--delivery-attempts", type=_positive_int, default=5, metavar="N", help="attempts, then failed"
    )
    parser.add_argument(
        "--retry-backoff", type=_seconds, default=1.0, metavar="SECONDS", help="first retry delay (doubles)"
    )
    parser.set_defaults(handler=cmd_serve_api)


def cmd_generate(args: argparse.Namespace) -> int:
    from migration_gate.data import volume

    _say(
        f"generating {args.users} users and {args.activities} activities (seed {args.seed}) into "
        f"{dsn.describe(args.database)}"
    )
    started = time.perf_counter()
    counts = volume.generate(args.database, args.users, args.activities, args.seed, progress=_say)
    seconds = time.perf_counter() - started
    rows = sum(counts.values())
    _say(f"loaded {rows} rows in {seconds:.3f} s ({rows / seconds:,.0f} rows/s)")
    return EXIT_OK


def _add_generate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate",
        help="fill an empty database at 004 with a realistic, deterministic legacy volume (COPY)",
        description="Load legacy rows with every dirty case of docs/contract.md §1 into --database, migrated to 004 "
        "and empty; other tables grow in proportion to --users and --activities.",
    )
    _add_database(parser)
    parser.add_argument("--users", type=_positive_int, required=True, metavar="N")
    parser.add_argument("--activities", type=_positive_int, required=True, metavar="M")
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, metavar="S", help="same seed, same rows (default 0)"
    )
    parser.set_defaults(handler=cmd_generate)


def _scrubbed_say(secret_url: str) -> Callable[[str], None]:
    return lambda line: _say(dsn.scrub(line, secret_url))


def _confirmer(assume_yes: bool) -> Callable[[str], bool]:
    """--yes confirms; otherwise ask on a terminal, and without one refuse (never restore unasked)."""

    def confirm(question: str) -> bool:
        if assume_yes:
            return True
        if not sys.stdin.isatty():
            _say("no terminal to ask on and no --yes: not restoring")
            return False
        try:
            answer = input(f"{question} [y/N] ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _conclude(record: Any, secret_url: str) -> int:
    """The last lines of a playbook or rehearsal: where the record is, and one error line when it stopped."""
    from migration_gate.operations.report import OUTCOMES

    _say(f"outcome: {record.outcome}: {OUTCOMES.get(record.outcome, '')}")
    if record.next_action:
        _say(f"to restore: {record.next_action}")
    if record.exit_code:
        sys.stderr.write(
            dsn.scrub(
                f"migration-gate: stopped at {record.stopped_at}: {record.reason} ({record.outcome})",
                secret_url,
            )
            + "\n"
        )
    return int(record.exit_code if record.exit_code is not None else EXIT_USAGE)


def _smoke(args: argparse.Namespace) -> Any:
    if args.no_smoke:
        return None
    if not args.smoke_dir.is_dir():
        raise UsageError(f"--smoke-dir {args.smoke_dir} does not exist (or pass --no-smoke)")
    from migration_gate.operations.smoke_step import SmokeStep

    return SmokeStep(args.smoke_dir)


def _window_budget(text: str) -> float:
    from migration_gate.operations.forecast import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_playbook(args: argparse.Namespace) -> int:
    from migration_gate.operations import playbook, preflight

    if args.window_budget is not None and args.forecast_from is None:
        raise UsageError(
            "--window-budget needs --forecast-from REPORT_JSON: a budget is judged against a forecast"
        )

    options = preflight.PlaybookOptions(
        database_url=args.database,
        backup_path=args.backup,
        report_dir=args.report_dir,
        migrations_dir=args.migrations_dir,
        checks_dir=args.checks_dir,
        assume_yes=args.yes,
        allow_active_sessions=args.allow_active_sessions,
        smoke=_smoke(args),
        smoke_skipped_because="--no-smoke",
        lock_timeout=args.lock_timeout,
        allowed_grantees=tuple(args.allowed_grantees),
        forecast_from=args.forecast_from,
        window_budget=args.window_budget,
    )
    record = playbook.run(options, _scrubbed_say(args.database), _confirmer(args.yes))
    return _conclude(record, args.database)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from migration_gate.operations import rehearse

    options = rehearse.RehearsalOptions(
        source_url=args.source,
        report_dir=args.report_dir,
        migrations_dir=args.migrations_dir,
        checks_dir=args.checks_dir,
        smoke_dir=None if args.no_smoke else args.smoke_dir,
        pg_ctl=args.pg_ctl,
        pg_version=args.pg_version,
        baseline=args.baseline,
        allowed_grantees=tuple(args.allowed_grantees),
    )
    record = rehearse.rehearse(options, _scrubbed_say(args.source))
    return _conclude(record, args.source)


def cmd_restore(args: argparse.Namespace) -> int:
    from migration_gate.operations import playbook

    differences = playbook.restore_from_backup(
        args.database, args.backup, progress=_scrubbed_say(args.database),
        confirm=_confirmer(args.yes),
    )  # fmt: skip
    if differences:
        for line in differences:
            _say(line)
        raise GateError(
            f"restored, but the database still differs from the backup in {len(differences)} way(s)"
        )
    _say("restored and verified: the database is exactly what the backup holds (schema and data)")
    return EXIT_OK


def _allowed_grantee(text: str) -> Any:
    from migration_gate.checks.grantees import parse_allowed_grantee

    try:
        return parse_allowed_grantee(text)
    except UsageError as exc:  # argparse says which option, then this one line
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--allowed-grantee ")) from None


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="where report.json and report.md go (a new directory)",
    )
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    parser.add_argument(
        "--checks-dir",
        type=Path,
        default=Path(settings.default("checks_dir")),
        metavar="DIR",
        help="the invariants (default checks/)",
    )
    parser.add_argument(
        "--smoke-dir",
        type=Path,
        default=Path("smoke"),
        metavar="DIR",
        help="the smoke tests (default smoke/)",
    )
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke tests (the record says so)")
    allowed = settings.setting("allowed_grantee")
    parser.add_argument(
        "--allowed-grantee",
        dest="allowed_grantees",
        action="append",
        type=_allowed_grantee,
        default=[],
        metavar=allowed.metavar,
        help=allowed.help,
    )


def _add_playbook(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "playbook",
        help="the staging runbook: preflight, backup, migrate and validate in one transaction, smoke, record",
        description=(
            "Back up --database, apply the pending migrations and check the invariants after 006, after 007 "
            "and at the end, all in one transaction (any failure rolls back, verified), smoke-test, and write "
            "the change record. Exit 0 migrated and validated; 1 stopped (database as before, or restored); "
            "2 usage, connection or preflight problem, nothing touched."
        ),
    )
    _add_database(parser)
    parser.add_argument(
        "--backup",
        required=True,
        type=Path,
        metavar="FILE",
        help="a new file for pg_dump --format=custom (never overwritten)",
    )
    parser.add_argument(
        "--yes", action="store_true", help="restore the backup without asking if a failure needs it"
    )
    parser.add_argument(
        "--allow-active-sessions",
        action="store_true",
        help="run although fluxolab_devmode sessions are connected",
    )
    _add_lock_timeout(parser)
    parser.add_argument(
        "--forecast-from",
        type=Path,
        metavar="REPORT_JSON",
        help="print the window's forecast at preflight, from a staging or rehearsal change record",
    )
    parser.add_argument(
        "--window-budget",
        type=_window_budget,
        metavar="DURATION",
        help="with --forecast-from: stop before the backup (exit 2) when the forecast window is longer "
        "(e.g. 45min, 1h30min)",
    )
    _add_run_options(parser)
    parser.set_defaults(handler=cmd_playbook)


def _add_rehearse(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "rehearse",
        help="the playbook on a disposable copy of --source (read only): how 005→008 would go there",
        description="Dump --source read-only, restore it into a disposable PostgreSQL, run the playbook there.",
    )
    parser.add_argument(
        "--source", required=True, metavar="URL", help="the database to copy (only ever read)"
    )
    _add_server_choice(parser, "the source's major when installed here")
    parser.add_argument(
        "--baseline",
        metavar="Y",
        help="the source was migrated to Y by another runner (no ledger): adopt the copy first (see baseline)",
    )
    _add_run_options(parser)
    parser.set_defaults(handler=cmd_rehearse)


def _add_restore(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "restore",
        help="restore a playbook backup into the database it was taken from, and verify it",
        description="Restore --backup (taken by 'migration-gate playbook') into --database, only if it is the database it came from.",
    )
    _add_database(parser)
    parser.add_argument(
        "--backup",
        required=True,
        type=Path,
        metavar="FILE",
        help="the backup file (its .meta.json beside it)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(handler=cmd_restore)


def cmd_forecast(args: argparse.Namespace) -> int:
    import json

    from migration_gate.operations import forecast, target_stats

    record = forecast.load_record(args.record)
    plan = load_plan(args.migrations_dir)
    target = target_stats.read(args.database)
    expected = forecast.forecast(record, target, plan)
    _say(f"forecast for {dsn.describe(args.database)} at {target.version:03d}, from {args.record}")
    for line in expected.table():
        _say(line)
    if args.json:
        _write("--json", args.json, json.dumps(expected.to_json(), indent=2) + "\n")
    return EXIT_OK


def _write(option: str, path: Path, text: str) -> None:
    """A command's output file, or one line (exit 2) saying why it cannot be written."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    _say(f"wrote {path}")


def _add_forecast(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "forecast",
        help="how long the window will be on --database, from a staging or rehearsal change record",
        description="Read --database's catalog statistics read-only (never a count), scale each step, "
        "migration and statement of --record by the rows and bytes it works on, and print each step's "
        "seconds with a range, the window's, and the restore's in the worst case.",
    )
    _add_database(parser)
    parser.add_argument(
        "--record",
        required=True,
        type=Path,
        metavar="REPORT_JSON",
        help="a playbook's or rehearsal's report.json",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the forecast as JSON")
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    parser.set_defaults(handler=cmd_forecast)


def cmd_notice(args: argparse.Namespace) -> int:
    from migration_gate.operations import notice

    text = notice.notice(args.database, load_plan(args.migrations_dir), args.record)
    if args.output:
        _write("--output", args.output, text)
    else:
        print(text, end="")
    return EXIT_OK


def _add_notice(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "notice",
        help="the squads' notice before the window: what the pending migrations remove, archive, lock, and freeze",
        description="Read --database read-only (catalog statistics, never a count) and write Markdown ready to "
        "send: the pending migrations, the tables and columns they remove, what moves to legacy_archive with "
        "estimated rows, the tables locked, the integrations to freeze and, with --record, the expected window.",
    )
    _add_database(parser)
    parser.add_argument(
        "--record",
        type=Path,
        metavar="REPORT_JSON",
        help="a staging or rehearsal change record: the window, measured shares",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write the notice there instead of stdout"
    )
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    parser.set_defaults(handler=cmd_notice)


def cmd_bench(args: argparse.Namespace) -> int:
    from migration_gate.bench import run as bench
    from migration_gate.bench.forecast_accuracy import DEFAULT_FORECAST_SCALES
    from migration_gate.bench.scales import DEFAULT_SCALES
    from migration_gate.bench.window import DEFAULT_WINDOW_SCALES

    plan = load_plan(args.migrations_dir)
    scales = args.scales or list(DEFAULT_SCALES)
    _say(f"benchmark of {args.migrations_dir} at {', '.join(f'{s:,}' for s in scales)} activities")
    window_scales = [] if args.no_window else (args.window_scales or list(DEFAULT_WINDOW_SCALES))
    result = bench.bench(
        plan,
        scales,
        args.seed,
        args.gate_runs,
        pg_ctl=args.pg_ctl,
        progress=_say,
        repeats=args.repeats,
        window_scales=window_scales,
        migrations_dir=args.migrations_dir,
        pg_version=args.pg_version,
        forecast_scales=[] if args.no_forecast else (args.forecast_scales or list(DEFAULT_FORECAST_SCALES)),
    )
    _say("")
    for line in result.table():
        _say(line)
    for verdict, met in result.verdicts():
        _say(f"{'met    ' if met else 'MISSED '} {verdict}")
    if args.json:
        bench.write_json(result, args.json)
        _say(f"wrote {args.json}")
    return EXIT_OK


def _scales(text: str) -> list[int]:
    parts = [part.strip().replace("_", "") for part in text.split(",")]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"not a comma-separated list of positive integers: {text!r}")
    return [int(part) for part in parts]


def _add_bench(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="time 005→008 against bulk-loading the legacy volume, and the gate against its floor",
        description="For each scale (activities; users and the rest in proportion) on a disposable server: "
        "load_s (COPY of the generated legacy volume), migrate_s (005→008) and each migration's time and "
        "longest ACCESS EXCLUSIVE lock on a pre-existing table; then the gate against pg_ctl + psql.",
    )
    parser.add_argument(
        "--scales",
        type=_scales,
        metavar="N,N,...",
        help="numbers of activities (default 10000,100000,1000000)",
    )
    parser.add_argument(
        "--window-scales",
        type=_scales,
        metavar="N,N,...",
        help="activities at which the whole playbook is timed against the runbook by hand "
        "(default 100000,500000,1000000)",
    )
    parser.add_argument("--no-window", action="store_true", help="leave the window section out")
    parser.add_argument(
        "--forecast-scales",
        type=_scales,
        metavar="N,N,...",
        help="activities of the records whose forecasts are checked against the measured window at 2N and 4N "
        "(default 1000000)",
    )
    parser.add_argument("--no-forecast", action="store_true", help="leave the forecast section out")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S")
    parser.add_argument(
        "--gate-runs",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="runs of the gate and its floor, median reported (0 skips them; default 3)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=1,
        metavar="N",
        help="runs per scale on a fresh database each, medians reported (default 1)",
    )
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    _add_server_choice(parser, "the first found")
    parser.set_defaults(handler=cmd_bench)


def cmd_baseline(args: argparse.Namespace) -> int:
    from migration_gate.operations import baseline

    plan = load_plan(args.migrations_dir)
    adopted = baseline.baseline(
        args.database, plan, args.to, pg_ctl=args.pg_ctl, pg_version=args.pg_version, progress=_say
    )
    _say(f"recorded {len(adopted)} migration(s) as applied; run 'migration-gate migrate' for the rest")
    return EXIT_OK


def _add_baseline(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "baseline",
        help="adopt a database migrated by another runner: record 001→Y in the ledger without running them",
        description=(
            "Record 001→Y as applied in --database's ledger, once a disposable build of 001→Y shows its catalog "
            "(schemas, tables, columns, constraints, indexes) is exactly the database's. Nothing runs, and "
            "any difference refuses the baseline with exit 2."
        ),
    )
    _add_database(parser)
    parser.add_argument("--to", required=True, metavar="Y", help="the last migration already applied: 004")
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    _add_server_choice(parser, "the database's major when installed here")
    parser.set_defaults(handler=cmd_baseline)


def cmd_checks(args: argparse.Namespace) -> int:
    import json

    from migration_gate.checks import catalog

    entries = catalog.load(args.checks_dir)
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], indent=2))
    elif args.markdown:
        print(catalog.markdown(entries), end="")
    else:
        width = max(len(entry.name) for entry in entries)
        for entry in entries:
            _say(f"{entry.name:<{width}}  {entry.from_version:03d}  {entry.kind:<12}  {entry.fails_when}")
    return EXIT_OK


def _add_checks(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "checks",
        help="list the catalog of checks: name, the migration it holds from, kind, what fails it",
        description="The one catalog the pytest gate, the playbook and the fault tests all run: "
        "the SQL invariants of --checks-dir and the built-in checks.",
    )
    parser.add_argument(
        "--checks-dir",
        type=Path,
        default=Path(settings.default("checks_dir")),
        metavar="DIR",
        help="the SQL invariants (default checks/)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a JSON list of {name, from, kind, fails_when}")
    output.add_argument("--markdown", action="store_true", help="the table the README shows")
    parser.set_defaults(handler=cmd_checks)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_checks,
    _add_servers,
    _add_migrate,
    _add_baseline,
    _add_serve_api,
    _add_generate,
    _add_playbook,
    _add_rehearse,
    _add_restore,
    _add_forecast,
    _add_notice,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="migration-gate", description="Gate FluxoLab's PostgreSQL migrations 001→008.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interrupt_on_signals()
    secret_url = getattr(args, "database", None) or getattr(args, "source", None)
    try:
        return int(args.handler(args))
    except GateError as exc:
        sys.stderr.write(f"migration-gate: {dsn.scrub(str(exc), secret_url)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("migration-gate: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return EXIT_OK


def run() -> NoReturn:
    """The console script: main(), then out without the interpreter's teardown.

    Unloading pytest, openapi-core and the rest after a playbook costs a quarter of a second,
    and the application is down until the command returns. Everything the command writes is
    closed (records are written atomically), so only the standard streams are flushed.
    """
    code = main()
    with contextlib.suppress(BrokenPipeError):  # the reader went away: the code stands
        sys.stdout.flush()
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
