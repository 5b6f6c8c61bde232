"""``migration-gate``: thin commands over the library. One line per error, exit 2 for usage.

Every option of every command is declared once, in ``migration_gate.core.settings``; a
command here only names the settings it takes (``Command.options``) and which of them it
requires. A value comes from the flag, else the setting's environment variable, else the
project's configuration (``[tool.pytest.ini_options]`` of the nearest pyproject.toml, as
pytest reads it), else the default.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from migration_gate.core import dsn, installations, settings
from migration_gate.core.errors import EXIT_OK, EXIT_USAGE, GateError, UsageError
from migration_gate.core.plan import load_plan
from migration_gate.core.signals import interrupt_on_signals


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (never the whole usage text)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {dsn.redact(message)} (see --help)\n")
        sys.exit(EXIT_USAGE)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_checks(args: argparse.Namespace) -> int:
    import json

    from migration_gate.checks import catalog

    if args.json and args.markdown:
        raise UsageError("--json and --markdown: choose one")
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


def cmd_migrate(args: argparse.Namespace) -> int:
    from migration_gate.core import runner

    plan = load_plan(args.migrations_dir)
    found = _corrections(args.corrections_dir, plan)
    target = dsn.describe(args.database)
    _say(f"migrating {target} from {args.migrations_dir}")
    applied = runner.migrate(
        args.database,
        plan,
        args.from_version,
        args.to_version,
        progress=_say,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
        corrections=found,
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


def cmd_baseline(args: argparse.Namespace) -> int:
    from migration_gate.operations import baseline

    plan = load_plan(args.migrations_dir)
    adopted = baseline.baseline(
        args.database, plan, args.to_version, pg_ctl=args.pg_ctl, pg_version=args.pg_version, progress=_say
    )
    _say(f"recorded {len(adopted)} migration(s) as applied; run 'migration-gate migrate' for the rest")
    return EXIT_OK


def _corrections(directory: Path | None, plan: list[Any]) -> list[Any]:
    from migration_gate.core import corrections

    return corrections.load(directory, plan) if directory is not None else []


def cmd_correct(args: argparse.Namespace) -> int:
    from migration_gate.core import corrections, runner

    plan = load_plan(args.migrations_dir)
    correction = corrections.read_file(args.correction_file, plan)
    done = runner.correct(args.database, correction, lock_timeout=args.lock_timeout, progress=_say)
    if done is None:
        _say(f"{correction.name} is already applied on {dsn.describe(args.database)}: nothing to do")
    else:
        _say(
            f"applied {correction.name} in {done.seconds:.3f} s, recorded after {done.after:03d} "
            f"(sha256 {correction.checksum[:12]}…; reason: {correction.reason})"
        )
    return EXIT_OK


def cmd_serve_api(args: argparse.Namespace) -> int:
    from migration_gate.core.contract import APP_ROLE
    from migration_gate.reference.api import ApiSettings, ReferenceApi
    from migration_gate.reference.webhook_delivery import DeliveryPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    policy = DeliveryPolicy(attempts=args.delivery_attempts, backoff_seconds=args.retry_backoff)
    api = ReferenceApi(ApiSettings(args.database, args.host, args.port, policy)).bind()
    target = dsn.describe(args.database)
    _say(f"serving the reference API on {api.url} as {APP_ROLE} on {target}; Ctrl-C stops")
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        _say("stopped")
    return EXIT_OK


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
    said = []
    if record.stopped_at:
        said.append(f"stopped at {record.stopped_at}: {record.reason} ({record.outcome})")
    after = record.failed_callback("after_window")
    if after is not None:
        # Last, and on the one line: the application may still be in maintenance mode.
        said.append(
            f"the --after-window command {after.describe()}: the application may still be in maintenance mode "
            f"(the database: {record.outcome}; see the record)"
        )
    if record.exit_code and said:
        sys.stderr.write(dsn.scrub("migration-gate: " + "; and ".join(said), secret_url) + "\n")
    return int(record.exit_code if record.exit_code is not None else EXIT_USAGE)


def _smoke(args: argparse.Namespace) -> Any:
    if args.no_smoke:
        return None
    if not args.smoke_dir.is_dir():
        raise UsageError(f"--smoke-dir {args.smoke_dir} does not exist (or pass --no-smoke)")
    from migration_gate.operations.smoke_step import SmokeStep

    return SmokeStep(args.smoke_dir)


def _judging(args: argparse.Namespace) -> dict[str, Any]:
    """What a playbook and a rehearsal both take from their flags, by the name of their options' field."""
    return {
        "report_dir": args.report_dir,
        "migrations_dir": args.migrations_dir,
        "checks_dir": args.checks_dir,
        "allowed_grantees": tuple(args.allowed_grantee),
        "corrections_dir": args.corrections_dir,
        "accept_drift": args.accept_drift,
        "exemptions": tuple(args.exempt),
        "history": args.history,
    }


def cmd_playbook(args: argparse.Namespace) -> int:
    from migration_gate.operations import playbook, preflight

    if args.window_budget is not None and args.forecast_from is None:
        raise UsageError(
            "--window-budget needs --forecast-from REPORT_JSON: a budget is judged against a forecast"
        )

    options = preflight.PlaybookOptions(
        database_url=args.database,
        backup_path=args.backup,
        assume_yes=args.yes,
        allow_active_sessions=args.allow_active_sessions,
        smoke=_smoke(args),
        smoke_skipped_because="--no-smoke",
        lock_timeout=args.lock_timeout,
        before_window=args.before_window,
        after_window=args.after_window,
        callback_timeout=args.callback_timeout,
        forecast_from=args.forecast_from,
        window_budget=args.window_budget,
        **_judging(args),
    )
    record = playbook.run(options, _scrubbed_say(args.database), _confirmer(args.yes))
    return _conclude(record, args.database)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from migration_gate.operations import rehearse

    options = rehearse.RehearsalOptions(
        source_url=args.source,
        smoke_dir=None if args.no_smoke else args.smoke_dir,
        pg_ctl=args.pg_ctl,
        pg_version=args.pg_version,
        baseline=args.baseline,
        **_judging(args),
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


def _warn(line: str) -> None:
    sys.stderr.write(f"migration-gate: warning: {line}\n")


def _output(option: str, path: Path | None) -> None:
    """Refuse, before anything is written or posted, an output file that cannot be written."""
    if path is None:
        return
    parent = path.absolute().parent
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write there (a file in an existing, writable directory)")


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from migration_gate.history import html, notify, report
    from migration_gate.history.store import History

    if args.notify_url is not None:
        notify.check_url(args.notify_url)
    _output("--json", args.json_file)
    _output("--html", args.html_file)
    with History(args.history) as history:
        history.verify()
        found = report.build(history, args.last, args.check)
        for line in found.lines():
            _say(line)
        if args.json_file is not None:
            args.json_file.write_text(json.dumps(found.to_json(), indent=2) + "\n", encoding="utf-8")
            _say(f"wrote {args.json_file}")
        if args.html_file is not None:
            args.html_file.write_text(html.page(found), encoding="utf-8")
            _say(f"wrote {args.html_file}")
        if args.notify_url is not None:
            posted = notify.notify(history, found, args.notify_url, _warn)
            _say(f"posted {len(posted)} change(s) to --notify-url")
    return found.exit_status


def _write(option: str, path: Path, text: str) -> None:
    """A command's output file, or one line (exit 2) saying why it cannot be written."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    _say(f"wrote {path}")


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
    if args.json_file:
        _write("--json", args.json_file, json.dumps(expected.to_json(), indent=2) + "\n")
    return EXIT_OK


def cmd_notice(args: argparse.Namespace) -> int:
    from migration_gate.operations import notice

    text = notice.notice(args.database, load_plan(args.migrations_dir), args.record)
    if args.output:
        _write("--output", args.output, text)
    else:
        print(text, end="")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from migration_gate.bench import run as bench

    plan = load_plan(args.migrations_dir)
    scales = args.scales
    _say(f"benchmark of {args.migrations_dir} at {', '.join(f'{s:,}' for s in scales)} activities")
    window_scales = [] if args.no_window else args.window_scales
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
        forecast_scales=[] if args.no_forecast else args.forecast_scales,
    )
    _say("")
    for line in result.table():
        _say(line)
    for verdict, met in result.verdicts():
        _say(f"{'met    ' if met else 'MISSED '} {verdict}")
    if args.json_file:
        bench.write_json(result, args.json_file)
        _say(f"wrote {args.json_file}")
    return EXIT_OK


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, the settings it takes (and requires), and its handler."""

    name: str
    help: str
    description: str
    handler: Callable[[argparse.Namespace], int]
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    secret: str | None = None
    positional: tuple[
        str, ...
    ] = ()  # settings given without a flag, in this order  # the setting holding a URL whose password must never be printed


SERVER_CHOICE = ("pg_ctl", "pg_version")
RUN_OPTIONS = (
    "report_dir",
    "migrations_dir",
    "checks_dir",
    "smoke_dir",
    "no_smoke",
    "allowed_grantee",
    "corrections_dir",
    "accept_drift",
    "exempt",
    "history",
)

COMMANDS = (
    Command(
        "checks",
        "list the catalog of checks: name, the migration it holds from, kind, what fails it",
        "The one catalog the pytest gate, the playbook and the fault tests all run: "
        "the SQL invariants of --checks-dir and the built-in checks.",
        cmd_checks,
        ("checks_dir", "json", "markdown"),
    ),
    Command(
        "servers",
        "the PostgreSQL installations found for the disposable server, the default first",
        "Each PostgreSQL installation found (--pg-ctl's environment variable, PATH, "
        "/usr/lib/postgresql/*/bin, PyPI's), the one used by default first; --pg-version N picks the first of N.",
        cmd_servers,
        ("majors",),
    ),
    Command(
        "migrate",
        "apply pending migrations, one transaction per file, recorded in the ledger",
        "Apply the pending migrations between --from and --to (inclusive) to --database.",
        cmd_migrate,
        (
            "database",
            "from_version",
            "to_version",
            "migrations_dir",
            "corrections_dir",
            "statement_timings",
            "lock_timeout",
            "statement_timeout",
        ),
        ("database",),
        "database",
    ),
    Command(
        "correct",
        "apply one correction now, in one transaction under the runner's lock, and keep it in the ledger",
        "Apply FILE (a correction: '-- reason:' and optionally '-- after: NNN', docs/window.md) to "
        "--database now and record it in migration_gate.corrections, so that schema_drift expects it and "
        "--corrections-dir replays it elsewhere at its place. Already applied: nothing to do; edited since: exit 2.",
        cmd_correct,
        ("database", "migrations_dir", "lock_timeout"),
        ("database",),
        "database",
        ("correction_file",),
    ),
    Command(
        "baseline",
        "adopt a database migrated by another runner: record 001→Y in the ledger without running them",
        "Record 001→Y as applied in --database's ledger, once a disposable build of 001→Y shows its catalog "
        "(schemas, tables, columns, constraints, indexes) is exactly the database's. Nothing runs, and "
        "any difference refuses the baseline with exit 2.",
        cmd_baseline,
        ("database", "to_version", "migrations_dir", *SERVER_CHOICE),
        ("database", "to_version"),
        "database",
    ),
    Command(
        "serve-api",
        "serve the reference API of smoke/openapi.yaml against a migrated database",
        "Serve the API the smoke tests speak, acting on --database as fluxolab_devmode.",
        cmd_serve_api,
        ("database", "host", "port", "delivery_attempts", "retry_backoff"),
        ("database",),
        "database",
    ),
    Command(
        "generate",
        "fill an empty database at 004 with a realistic, deterministic legacy volume (COPY)",
        "Load legacy rows with every dirty case of docs/contract.md §1 into --database, migrated to 004 "
        "and empty; other tables grow in proportion to --users and --activities.",
        cmd_generate,
        ("database", "users", "activities", "seed"),
        ("database", "users", "activities"),
        "database",
    ),
    Command(
        "playbook",
        "the staging runbook: preflight, backup, migrate and validate in one transaction, smoke, record",
        "Back up --database, apply the pending migrations and check the invariants after 006, after 007 "
        "and at the end, all in one transaction (any failure rolls back, verified), smoke-test, and write "
        "the change record. Exit 0 migrated and validated; 1 stopped (database as before, or restored); "
        "2 usage, connection or preflight problem (schema drift included), nothing touched; 3 migrated and "
        "validated, but the --after-window command failed.",
        cmd_playbook,
        (
            "database",
            "backup",
            "yes",
            "allow_active_sessions",
            "lock_timeout",
            "before_window",
            "after_window",
            "callback_timeout",
            "forecast_from",
            "window_budget",
            *RUN_OPTIONS,
        ),
        ("database", "backup", "report_dir"),
        "database",
    ),
    Command(
        "rehearse",
        "the playbook on a disposable copy of --source (read only): how 005→008 would go there",
        "Dump --source read-only, restore it into a disposable PostgreSQL, run the playbook there.",
        cmd_rehearse,
        ("source", *SERVER_CHOICE, "baseline", *RUN_OPTIONS),
        ("source", "report_dir"),
        "source",
    ),
    Command(
        "restore",
        "restore a playbook backup into the database it was taken from, and verify it",
        "Restore --backup (taken by 'migration-gate playbook') into --database, only if it is the database "
        "it came from.",
        cmd_restore,
        ("database", "backup", "yes"),
        ("database", "backup"),
        "database",
    ),
    Command(
        "forecast",
        "how long the window will be on --database, from a staging or rehearsal change record",
        "Read --database's catalog statistics read-only (never a count), scale each step, migration and "
        "statement of --record by the rows and bytes it works on, and print each step's seconds with a range, "
        "the window's, and the restore's in the worst case (docs/production.md).",
        cmd_forecast,
        ("database", "record", "json_file", "migrations_dir"),
        ("database", "record"),
        "database",
    ),
    Command(
        "notice",
        "the squads' notice before the window: what the pending migrations remove, archive, lock, and freeze",
        "Read --database read-only (catalog statistics, never a count) and write Markdown ready to send: the "
        "pending migrations, the tables and columns they remove, what moves to legacy_archive with estimated "
        "rows, the tables locked, the integrations to freeze and, with --record, the expected window.",
        cmd_notice,
        ("database", "record", "output", "migrations_dir"),
        ("database",),
        "database",
    ),
    Command(
        "history",
        "what the nightly runs remember: failing checks since when, trends, new and resolved, figures",
        "Report the last runs kept in SOURCE (an SQLite file or a postgresql:// URL, as given to --history): "
        "each check that failed among them, its state now, the run its failure began in, its count run by "
        "run, what is new or resolved since the previous run, and the figures that changed. Exit 1 while the "
        "latest run has a failing check, else 0; 2 for a SOURCE that is not a history (docs/history.md).",
        cmd_history,
        ("last", "check", "json_file", "html_file", "notify_url"),
        positional=("history",),
    ),
    Command(
        "bench",
        "time 005→008 against bulk-loading the legacy volume, and the gate against its floor",
        "For each scale (activities; users and the rest in proportion) on a disposable server: "
        "load_s (COPY of the generated legacy volume), migrate_s (005→008) and each migration's time and "
        "longest ACCESS EXCLUSIVE lock on a pre-existing table; then the gate against pg_ctl + psql; "
        "then the whole window against the runbook by hand; then forecasts from a record at N against the "
        "measured window at 2N and 4N.",
        cmd_bench,
        (
            "scales",
            "window_scales",
            "no_window",
            "forecast_scales",
            "no_forecast",
            "json_file",
            "seed",
            "gate_runs",
            "repeats",
            "migrations_dir",
            *SERVER_CHOICE,
        ),
    ),
)


def options_markdown() -> str:
    """Every option as docs/options.md shows it: flag, environment variable, default, where, meaning."""
    from migration_gate.core.text import markdown_table

    rows = []
    for declared in settings.SETTINGS:
        flagged = [c.name for c in COMMANDS if declared.name in c.options]
        positional = [c.name for c in COMMANDS if declared.name in c.positional]
        where = []
        if declared.pytest:
            where.append("pytest, ini" if declared.on_command_line else "pytest")
        where += [f"`{name}`" for name in flagged]
        where += [f"`{name}` (as `{declared.value_name}`)" for name in positional]
        if not declared.on_command_line:
            flag = "(environment only)"
        elif declared.switch:
            flag = f"`{declared.option}`"
        else:
            flag = f"`{declared.option} {declared.value_name}`"
        defaults = [f"`{declared.default}`"] if declared.default is not None else []
        defaults += [f"`{own}` for `{command}`" for command, own in declared.defaults.items()]
        rows.append(
            [
                flag,
                f"`{declared.env}`" if declared.env else "",
                "; ".join(defaults),
                ", ".join(where),
                declared.help,
            ]
        )
    lines = markdown_table(["option", "environment", "default", "where", "meaning"], rows)
    return "\n".join(lines) + "\n"


def usage_markdown() -> str:
    """Each command's usage, as argparse prints it, for docs/commands.md."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    blocks = []
    for command in COMMANDS:
        sub = action.choices[command.name]
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        blocks.append(f"- `{command.name}`: {command.help}\n\n  ```\n  {usage}\n  ```")
    return "\n".join(blocks) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="migration-gate", description="Gate FluxoLab's PostgreSQL migrations 001→008.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        settings.add_arguments(sub, command.name, command.options, command.required, command.positional)
        sub.set_defaults(handler=command.handler, spec=command)
    return parser


def resolve(args: argparse.Namespace, command: Command) -> argparse.Namespace:
    """Each of the command's settings: the flag, else its environment variable, else the project's, else the default."""
    ini, _ = settings.project_options(Path.cwd())
    for name in (*command.positional, *command.options):
        value = settings.resolve(
            settings.setting(name), getattr(args, name, None), os.environ, ini, command.name
        )
        setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interrupt_on_signals()
    command: Command = args.spec
    secret_url = getattr(args, command.secret, None) if command.secret else None
    try:
        return int(args.handler(resolve(args, command)))
    except GateError as exc:
        message = dsn.scrub(str(exc), secret_url)
        notify_url = getattr(args, "notify_url", None)
        if notify_url:  # it carries the channel's token
            message = message.replace(notify_url, "(--notify-url)")
        sys.stderr.write(f"migration-gate: {message}\n")
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
