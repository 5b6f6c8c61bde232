"""``migration-gate``: thin commands over the library. One line per error, exit 2 for usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from migration_gate import dsn
from migration_gate.errors import EXIT_OK, EXIT_USAGE, GateError
from migration_gate.plan import load_plan

DEFAULT_MIGRATIONS_DIR = "migrations"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (never the whole usage text)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {dsn.redact(message)} (see --help)\n")
        sys.exit(EXIT_USAGE)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    from migration_gate import runner

    plan = load_plan(args.migrations_dir)
    target = dsn.describe(args.database)
    _say(f"migrating {target} from {args.migrations_dir}")
    applied = runner.migrate(args.database, plan, args.from_, args.to, progress=_say)
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
    parser.add_argument(
        "--database", required=True, metavar="URL", help="postgresql://user:password@host:port/dbname"
    )
    parser.add_argument(
        "--from", dest="from_", metavar="X", help="first migration: 006 or 006_workspace_defaults.sql"
    )
    parser.add_argument("--to", metavar="Y", help="last migration (inclusive)")
    parser.add_argument("--migrations-dir", type=Path, default=Path(DEFAULT_MIGRATIONS_DIR), metavar="DIR")
    parser.add_argument(
        "--statement-timings", action="store_true", help="also print each statement's duration"
    )
    parser.set_defaults(handler=cmd_migrate)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_migrate]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="migration-gate", description="Gate FluxoLab's PostgreSQL migrations 001→008.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    secret_url = getattr(args, "database", None) or getattr(args, "source", None)
    try:
        return int(args.handler(args))
    except GateError as exc:
        sys.stderr.write(f"migration-gate: {dsn.scrub(str(exc), secret_url)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("migration-gate: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
