"""Every option of the gate, declared once: its name, meaning, kind, default and environment variable.

From each declaration come the ``--flag`` of the command line (``migration_gate.cli``,
for the commands that list it), the pytest ``--flag`` and ini option of the same name
(``migration_gate.plugin.config``, for the settings marked ``pytest``), the parsing of a
value (one parser per kind, so a duration or a number of seconds is read the same way
everywhere) and the option tables of the docs (``docs/options.md``, which a test keeps
equal to this table). A value comes from the flag, else the environment variable, else
the project's configuration (``[tool.pytest.ini_options]`` of the nearest
``pyproject.toml``), else the default: on the command line and in pytest alike.
"""

from __future__ import annotations

import argparse
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_gate.core.allowed_grantees import parse_allowed_grantee
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import parse_exemption

# -- One parser per kind of value --------------------------------------------------------
# Each takes the text as given and returns the value, or raises ValueError with what was
# expected; Setting.parse turns that into one line naming the option.

_DURATION = re.compile(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?")


def _duration(text: str) -> str:
    """A PostgreSQL duration setting: 0, 500ms, 5s, 2min (a bare number is milliseconds)."""
    if not _DURATION.fullmatch(text.strip()):
        raise ValueError("expected a duration such as 5s, 500ms or 2min (0 waits forever)")
    return text.strip()


_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)(h|min|m|s)")
_SPAN_UNITS = {"h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0}


def _span(text: str) -> float:
    """A length of time with its units, in seconds: 45min, 1h30min, 90s, 1.5h (a bare number is refused)."""
    compact = text.strip().lower().replace(" ", "")
    parts = _SPAN_PART.findall(compact)
    if not compact or "".join(f"{n}{u}" for n, u in parts) != compact:
        raise ValueError("expected a length of time with its unit, such as 45min, 1h30min or 90s")
    seconds = sum(float(number) * _SPAN_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError("expected a length of time above zero")
    return seconds


def _seconds(text: str) -> float:
    """A number of seconds above 0 (a fraction allowed), finite."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError("expected a number of seconds above 0")
    return seconds


def _integer(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        stripped = text.strip().replace("_", "")
        if not stripped.isdigit() or int(stripped) < minimum:
            raise ValueError(f"expected {what}")
        return int(stripped)

    return parse


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return int(text)


def _major(text: str) -> int:
    if not text.strip().isdigit() or not 10 <= int(text) <= 99:
        raise ValueError("expected a PostgreSQL major version such as 15 or 18")
    return int(text)


def _scales(text: str) -> list[int]:
    parts = [part.strip().replace("_", "") for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError("expected a comma-separated list of positive integers")
    return [int(part) for part in parts]


def _actors(text: str) -> tuple[int, int, int, int]:
    """USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE, parsed here so that a typo is refused, not skipped."""
    pairs = [re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pair) for pair in text.split(",")]
    if len(pairs) != 2 or not all(pairs):
        raise ValueError("expected USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE")
    (user, workspace), (other_user, other_workspace) = (
        (int(match[1]), int(match[2])) for match in pairs if match is not None
    )
    return user, workspace, other_user, other_workspace


def _grantee(text: str) -> object:
    try:
        return parse_allowed_grantee(text)
    except UsageError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def _exemption(text: str) -> object:
    try:
        return parse_exemption(text)
    except UsageError as exc:  # its text holds ': ' itself
        raise ValueError(str(exc).removeprefix(f"--exempt {text!r}: ")) from None


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a value")
    return text


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


# kind → (parser, the word the docs use for a value of it)
KINDS: dict[str, tuple[Callable[[str], Any], str]] = {
    "text": (_text, "TEXT"),
    "url": (_text, "URL"),
    "path": (lambda text: Path(_text(text)), "PATH"),
    "duration": (_duration, "DURATION"),
    "seconds": (_seconds, "SECONDS"),
    "span": (_span, "DURATION"),
    "count": (_integer(1, "a positive integer"), "N"),
    "natural": (_integer(0, "a non-negative integer"), "N"),
    "port": (_port, "PORT"),
    "major": (_major, "N"),
    "scales": (_scales, "N,N,..."),
    "actors": (_actors, "U:W,U2:W2"),
    "grantee": (_grantee, "ROLE[:PRIVILEGES]"),
    "exemption": (_exemption, "'RULE[TABLE]: REASON'"),
    "flag": (_flag, ""),
}
# Kinds whose flag may be given again, each time adding one (an ini option takes one a line).
REPEATABLE = frozenset({"grantee", "exemption"})


@dataclass(frozen=True)
class Setting:
    """One option, everywhere it exists."""

    name: str
    help: str
    default: str | None = None
    env: str | None = None
    kind: str = "text"
    metavar: str | None = None
    pytest: bool = False  # also a pytest --flag and ini option of the same name
    flag: str | None = None  # the flag's spelling when it is not --<name> (--json for json_file)
    # A command's own default, where it differs (migrate bounds no statement by default).
    defaults: Mapping[str, str] = field(default_factory=dict)
    on_command_line: bool = True  # False: read from the environment only (a token never goes in ps)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def switch(self) -> bool:
        return self.kind == "flag"

    @property
    def repeatable(self) -> bool:
        return self.kind in REPEATABLE

    @property
    def value_name(self) -> str:
        return self.metavar or KINDS[self.kind][1]

    def default_for(self, command: str | None = None) -> str | None:
        return self.defaults.get(command or "", self.default)

    def parse(self, value: object) -> Any:
        """The value of a flag, variable, ini line or default, by this setting's kind; one line if it is wrong."""
        if value is None:
            return [] if self.repeatable else (False if self.switch else None)
        if isinstance(value, bool) and self.switch:
            return value
        if self.repeatable:
            values = value if isinstance(value, list | tuple) else [value]
            return [self._one(str(item)) for item in values if str(item).strip()]
        return self._one(str(value))

    def _one(self, text: str) -> Any:
        parser = KINDS[self.kind][0]
        try:
            return parser(text)
        except ValueError as exc:
            raise UsageError(f"{self.option} {text!r}: {exc}") from None


SETTINGS = (
    # -- What is judged -------------------------------------------------------------------
    Setting(
        "migrations_dir",
        "directory of the NNN_name.sql migrations to judge",
        "migrations",
        kind="path",
        metavar="DIR",
        pytest=True,
    ),
    Setting(
        "checks_dir",
        "directory of the SQL invariants (checks/*.sql) of the catalog",
        "checks",
        kind="path",
        metavar="DIR",
        pytest=True,
    ),
    Setting(
        "legacy_seed",
        "SQL file of legacy data loaded at 004 before 005 runs",
        "fixtures/legacy_seed.sql",
        kind="path",
        metavar="FILE",
        pytest=True,
    ),
    Setting(
        "corrections_dir",
        "directory of corrections: SQL files each with a '-- reason:' line and optionally '-- after: NNN', "
        "applied at their place in the plan and kept in the ledger (docs/window.md)",
        kind="path",
        metavar="DIR",
        pytest=True,
    ),
    Setting(
        "smoke_dir",
        "the smoke tests (smoke/*.py and their openapi.yaml)",
        "smoke",
        kind="path",
        metavar="DIR",
    ),
    Setting("no_smoke", "leave out the smoke tests of runbook section 5 (the record says so)", kind="flag"),
    # -- Which database ---------------------------------------------------------------------
    Setting(
        "database_url",
        "run the gate against this existing database (read-only) instead of a disposable one",
        env="FLUXOLAB_DATABASE_URL",
        kind="url",
        pytest=True,
    ),
    Setting(
        "database", "the database: postgresql://user:password@host:port/dbname", kind="url", metavar="URL"
    ),
    Setting("source", "the database to copy (only ever read)", kind="url"),
    Setting(
        "migrate",
        "with --database-url: apply pending migrations first (for rehearsals on a copy)",
        kind="flag",
        pytest=True,
    ),
    Setting(
        "statement_timeout",
        "stop any statement that runs longer: on an existing database, every session the gate opens "
        "(read-only); for migrate, each migration's statements (0: no limit)",
        "30s",
        kind="duration",
        pytest=True,
        defaults={"migrate": "0"},
    ),
    Setting(
        "lock_timeout",
        "how long a migration waits for a lock the application holds before it gives up and retries "
        "with back-off, a few times within a budget (PostgreSQL's syntax: 5s, 500ms; 0 waits forever)",
        "5s",
        kind="duration",
        pytest=True,
    ),
    # -- The disposable server --------------------------------------------------------------
    Setting(
        "pg_ctl",
        "pg_ctl of the disposable server (default: PATH, /usr/lib/postgresql/*/bin, then PyPI's)",
        env="MIGRATION_GATE_PG_CTL",
        kind="path",
        metavar="PATH",
        pytest=True,
    ),
    Setting(
        "pg_version",
        "the disposable server's PostgreSQL major version, among the installations found (e.g. 15 or 18; "
        "see 'migration-gate servers')",
        env="MIGRATION_GATE_PG_VERSION",
        kind="major",
        pytest=True,
    ),
    Setting(
        "pg_os_user",
        "as root: the OS user the disposable server runs as (default postgres when it exists, else nobody)",
        env="MIGRATION_GATE_PG_OS_USER",
        on_command_line=False,
    ),
    Setting(
        "pg_bindir",
        "the directory of pg_dump, pg_restore and psql of the target's major (default: found beside an "
        "installation of that major, then the usual directories and PATH)",
        env="MIGRATION_GATE_PG_BINDIR",
        kind="path",
        on_command_line=False,
    ),
    Setting(
        "hypothesis_profile",
        "the Hypothesis profile of the property tests: ci (120 derandomized examples) or nightly (5,000); "
        "Hypothesis' own --hypothesis-profile flag wins",
        "ci",
        env="HYPOTHESIS_PROFILE",
        on_command_line=False,
    ),
    # -- The smoke tests against a deployment -------------------------------------------------
    Setting(
        "api_url",
        "smoke-test this deployment of the API instead of the reference one",
        env="FLUXOLAB_API_URL",
        kind="url",
        pytest=True,
    ),
    Setting(
        "api_token",
        "the bearer token the smoke tests send to --api-url (environment only: never on a command line)",
        env="FLUXOLAB_API_TOKEN",
        pytest=True,
        on_command_line=False,
    ),
    Setting(
        "webhook_receiver_url",
        "with --api-url: a URL the deployment can deliver webhooks to",
        kind="url",
        pytest=True,
    ),
    Setting(
        "smoke_actors",
        "with --api-url: the two users the smoke tests act as, USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE "
        "(default: two found in --database-url)",
        env="FLUXOLAB_SMOKE_ACTORS",
        kind="actors",
        pytest=True,
    ),
    Setting(
        "smoke_delivery_timeout",
        "seconds the smoke tests wait for a webhook delivery to be delivered or failed",
        "60",
        env="FLUXOLAB_SMOKE_DELIVERY_TIMEOUT",
        kind="seconds",
        pytest=True,
    ),
    # -- What is reported -------------------------------------------------------------------
    Setting(
        "summary",
        "write a Markdown summary for the pull request to FILE (default: appended to $GITHUB_STEP_SUMMARY "
        "when that is set)",
        kind="path",
        metavar="FILE",
        pytest=True,
    ),
    Setting(
        "allowed_grantee",
        "a role that may hold privileges besides their owner and fluxolab_devmode, and run a SECURITY DEFINER "
        "function with ROLE:EXECUTE: ROLE (any privilege) or ROLE:PRIVILEGE,PRIVILEGE (only those); repeatable "
        "(in the ini file, one a line; the flags replace them)",
        kind="grantee",
        pytest=True,
    ),
    Setting(
        "history",
        "append this run to the history at SOURCE: an SQLite file (created on first use) or the "
        "postgresql:// URL of a history database, never the database under test (docs/history.md)",
        env="MIGRATION_GATE_HISTORY",
        metavar="SOURCE",
        pytest=True,
    ),
    Setting(
        "exempt",
        "exempt one tenant table from one rule, saying why, e.g. 'tenant_workspace_index[audit_log]: "
        "append-only, read by id': the pair is skipped with its reason and listed in the summary and the "
        "change record; repeatable (in the ini file, one a line; the flags replace them)",
        kind="exemption",
        pytest=True,
    ),
    # -- The playbook -----------------------------------------------------------------------
    Setting(
        "backup", "a new file for pg_dump --format=custom (never overwritten)", kind="path", metavar="FILE"
    ),
    Setting("report_dir", "where report.json and report.md go (a new directory)", kind="path", metavar="DIR"),
    Setting("yes", "restore the backup without asking if a failure needs it", kind="flag"),
    Setting("allow_active_sessions", "run although sessions of fluxolab_devmode are connected", kind="flag"),
    Setting(
        "before_window",
        "shell command run after the preflight, before the backup (e.g. maintenance mode on); if it fails, "
        "the run stops with nothing changed",
        metavar="CMD",
    ),
    Setting(
        "after_window",
        "shell command run at the end whatever happened (e.g. maintenance mode off); if it fails after a "
        "success, exit 3",
        metavar="CMD",
    ),
    Setting("callback_timeout", "stop a window command that runs longer", "300", kind="seconds"),
    Setting(
        "accept_drift",
        "run although schema_drift finds the database differs from what its ledger builds; NOTE (why) goes "
        "into the change record",
        metavar="NOTE",
    ),
    Setting(
        "forecast_from",
        "print the window's forecast at preflight, from a staging or rehearsal change record",
        kind="path",
        metavar="REPORT_JSON",
    ),
    Setting(
        "window_budget",
        "with --forecast-from: stop before the backup (exit 2) when the forecast window is longer "
        "(e.g. 45min, 1h30min)",
        kind="span",
    ),
    Setting(
        "baseline",
        "the source was migrated to this version by another runner (no ledger): adopt the copy first",
        metavar="Y",
    ),
    # -- migrate and baseline -----------------------------------------------------------------
    Setting("from_version", "first migration: 006 or 006_workspace_defaults.sql", flag="--from", metavar="X"),
    Setting("to_version", "last migration (inclusive)", flag="--to", metavar="Y"),
    Setting("correction_file", "the correction's SQL file", kind="path", metavar="FILE"),
    Setting("statement_timings", "also print each statement's duration", kind="flag"),
    # -- serve-api --------------------------------------------------------------------------
    Setting("host", "address to bind", "127.0.0.1", metavar="HOST"),
    Setting("port", "port to bind; 0 picks a free one", "8080", kind="port"),
    Setting("delivery_attempts", "webhook delivery attempts before an event is failed", "5", kind="count"),
    Setting("retry_backoff", "seconds before the first delivery retry (doubling)", "1", kind="seconds"),
    # -- generate and bench -------------------------------------------------------------------
    Setting("users", "legacy users to generate", kind="count"),
    Setting("activities", "legacy activities to generate", kind="count"),
    Setting(
        "seed", "the generator's seed: the same seed gives the same rows", "0", kind="natural", metavar="S"
    ),
    Setting(
        "scales", "numbers of activities for the migrations' section", "10000,100000,1000000", kind="scales"
    ),
    Setting(
        "window_scales",
        "activities at which the whole playbook is timed against the runbook by hand",
        "100000,500000,1000000",
        kind="scales",
    ),
    Setting("no_window", "leave the window section out", kind="flag"),
    Setting(
        "forecast_scales",
        "activities of the records whose forecasts are checked against the measured window at 2N and 4N",
        "1000000",
        kind="scales",
    ),
    Setting("no_forecast", "leave the forecast section out", kind="flag"),
    Setting("repeats", "runs per scale on a fresh database each, medians reported", "1", kind="count"),
    Setting(
        "gate_runs",
        "runs of the gate and its floor, median reported (0 leaves them out)",
        "3",
        kind="natural",
    ),
    # -- forecast and notice ---------------------------------------------------------------------
    Setting(
        "record",
        "a playbook's or rehearsal's change record (report.json)",
        kind="path",
        metavar="REPORT_JSON",
    ),
    Setting("output", "write it there instead of the standard output", kind="path", metavar="FILE"),
    # -- history ------------------------------------------------------------------------------
    Setting("last", "the window: the last N runs of the latest run's target", "30", kind="count"),
    Setting("check", "only this check (its name in the catalog)", metavar="NAME"),
    Setting(
        "html_file",
        "also write one self-contained page with the charts",
        kind="path",
        flag="--html",
        metavar="FILE",
    ),
    Setting(
        "notify_url",
        'post each change (a new failure, one resolved) once, as Slack\'s {"text": ...}; never printed '
        "(it carries a token)",
        kind="url",
    ),
    Setting(
        "json_file", "also write the results as JSON to FILE", kind="path", flag="--json", metavar="FILE"
    ),
    # -- checks and servers -------------------------------------------------------------------
    Setting("json", "a JSON list of {name, from, kind, fails_when}", kind="flag"),
    Setting("markdown", "the Markdown table the docs show", kind="flag"),
    Setting("majors", "only the major versions, one per line, the default first", kind="flag"),
)

_BY_NAME = {declared.name: declared for declared in SETTINGS}


def setting(name: str) -> Setting:
    """The declaration of setting ``name`` (refusing a name that is not declared)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no setting {name!r}") from None


def default(name: str) -> str:
    """The default of setting ``name`` (refusing a name that has none)."""
    declared = setting(name)
    if declared.default is None:
        raise KeyError(f"setting {name!r} has no default")
    return declared.default


def env(name: str) -> str:
    """The environment variable of setting ``name``."""
    declared = setting(name)
    if not declared.env:
        raise KeyError(f"setting {name!r} has no environment variable")
    return declared.env


def pytest_settings() -> list[Setting]:
    return [declared for declared in SETTINGS if declared.pytest]


# -- The project's configuration -----------------------------------------------------------


def project_options(start: Path) -> tuple[dict[str, Any], Path | None]:
    """``[tool.pytest.ini_options]`` of the nearest ``pyproject.toml`` at or above ``start``, and its directory.

    The command line reads the same ini options pytest reads, so an exemption or an allowed
    grantee declared there holds for the playbook too. Only this project's settings are taken.
    """
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{candidate}: not readable TOML ({exc})") from None
        options = data.get("tool", {}).get("pytest", {}).get("ini_options")
        if options is None:
            continue
        found = {key: value for key, value in options.items() if key in _BY_NAME}
        for key, value in found.items():  # a path in the file is relative to the file's directory
            if _BY_NAME[key].kind == "path" and isinstance(value, str) and not Path(value).is_absolute():
                found[key] = str(directory / value)
        return found, directory
    return {}, None


def resolve(
    declared: Setting,
    given: object,
    environ: Mapping[str, str],
    ini: Mapping[str, Any],
    command: str | None = None,
) -> Any:
    """The flag, else the environment variable, else the ini option, else the default; parsed."""
    value = given
    if (value is None or value == []) and declared.env:
        value = environ.get(declared.env) or None
    if (value is None or value == []) and declared.name in ini:
        raw = ini[declared.name]
        value = raw.splitlines() if declared.repeatable and isinstance(raw, str) else raw
    if (value is None or value == []) and declared.default_for(command) is not None:
        value = declared.default_for(command)
    return declared.parse(value)


# -- The command line ---------------------------------------------------------------------


def _argparse_type(declared: Setting) -> Callable[[str], str]:
    """Checks the text at parse time (argparse names the option); Setting.parse reads it afterwards."""

    def check(text: str) -> str:
        try:
            declared.parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{declared.option} ")) from None
        return text

    return check


def add_arguments(
    parser: argparse.ArgumentParser,
    command: str,
    names: Iterable[str],
    required: Iterable[str] = (),
    positional: Iterable[str] = (),
) -> None:
    """The flags of ``command`` (and its positional arguments), each from its declaration; values stay
    text until ``resolve``."""
    for name in positional:
        declared = setting(name)
        parser.add_argument(
            name, type=_argparse_type(declared), metavar=declared.value_name, help=declared.help
        )
    must = set(required)
    for name in names:
        declared = setting(name)
        if not declared.on_command_line:
            continue
        default = declared.default_for(command)
        help_text = declared.help
        if default is not None and not declared.switch:
            help_text += f" (default {default})"
        if declared.env:
            help_text += f" (env {declared.env})"
        if declared.switch:
            parser.add_argument(declared.option, dest=name, action="store_true", default=None, help=help_text)
        elif declared.repeatable:
            parser.add_argument(
                declared.option,
                dest=name,
                action="append",
                type=_argparse_type(declared),
                default=None,
                metavar=declared.value_name,
                help=help_text,
            )
        else:
            parser.add_argument(
                declared.option,
                dest=name,
                type=_argparse_type(declared),
                default=None,
                metavar=declared.value_name,
                required=name in must,
                help=help_text,
            )
