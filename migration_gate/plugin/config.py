"""The gate's settings for pytest: each one an ini option and a --flag of the same name, resolved once.

The settings themselves (name, help, default, environment variable) are declared once in
``migration_gate.core.settings``, which the command line and the playbook read too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from migration_gate.checks.catalog import Check
from migration_gate.checks.grantees import AllowedGrantee, parse_allowed_grantees
from migration_gate.core.errors import UsageError
from migration_gate.core.installations import parse_major
from migration_gate.core.plan import Checkpoint
from migration_gate.core.settings import SETTINGS, default
from migration_gate.history.store import is_postgres


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("migration-gate")
    for setting in SETTINGS:
        flag = "--" + setting.name.replace("_", "-")
        help_text = setting.help + (f" (env {setting.env})" if setting.env else "")
        if setting.flag_only:
            group.addoption(flag, action="store_true", dest=setting.name, default=None, help=help_text)
            parser.addini(setting.name, help_text, type="bool", default=False)
        elif setting.repeatable:
            group.addoption(
                flag,
                action="append",
                dest=setting.name,
                default=None,
                metavar=setting.metavar,
                help=help_text,
            )
            parser.addini(setting.name, help_text + " (one a line)", type="linelist", default=[])
        else:
            group.addoption(
                flag, action="store", dest=setting.name, default=None, metavar=setting.metavar, help=help_text
            )
            parser.addini(setting.name, help_text, default=setting.default)


@dataclass(frozen=True)
class GateConfig:
    rootdir: Path
    migrations_dir: Path
    checks_dir: Path
    legacy_seed: Path
    database_url: str | None
    migrate: bool
    statement_timeout: str
    lock_timeout: str
    pg_ctl: str | None
    pg_version: int | None
    api_url: str | None
    webhook_receiver_url: str | None
    api_token: str | None
    smoke_actors: tuple[int, int, int, int] | None  # USER, WORKSPACE, OTHER_USER, OTHER_WORKSPACE
    smoke_delivery_timeout: float
    summary: Path | None = None  # where the pull request's Markdown summary goes
    summary_append: bool = False  # $GITHUB_STEP_SUMMARY is shared by a job's steps: append to it
    allowed_grantees: tuple[AllowedGrantee, ...] = ()
    history: str | None = None  # --history: an SQLite file (resolved against rootdir) or a postgresql:// URL

    @property
    def disposable(self) -> bool:
        return self.database_url is None


def _seconds(name: str, value: object) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected a number of seconds above 0")
    return seconds


def _actors(value: object) -> tuple[int, int, int, int] | None:
    """USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE, parsed here so that a typo is refused, not skipped."""
    if value is None:
        return None
    pairs = [re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pair) for pair in str(value).split(",")]
    if len(pairs) != 2 or not all(pairs):
        raise UsageError(f"--smoke-actors {str(value)!r}: expected USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE")
    (user, workspace), (other_user, other_workspace) = (
        (int(match[1]), int(match[2])) for match in pairs if match is not None
    )
    return user, workspace, other_user, other_workspace


def _history(value: object, path: Callable[[object], Path]) -> str | None:
    """A history database's URL as it is; a file's path against rootdir, like every other path."""
    if value is None:
        return None
    return str(value) if is_postgres(str(value)) else str(path(value))


def resolve(config: pytest.Config) -> GateConfig:
    """Flag, then environment variable, then ini, then default (the flags of a list replace its ini lines)."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        value = config.getoption(setting.name)
        if value is None and setting.env:
            value = os.environ.get(setting.env) or None
        if value is None:
            value = config.getini(setting.name)
        values[setting.name] = value if value != "" else None
    rootdir = Path(config.rootpath)

    def path(value: object) -> Path:
        candidate = Path(str(value))
        return candidate if candidate.is_absolute() else rootdir / candidate

    gate_config = GateConfig(
        rootdir=rootdir,
        migrations_dir=path(values["migrations_dir"]),
        checks_dir=path(values["checks_dir"]),
        legacy_seed=path(values["legacy_seed"]),
        database_url=values["database_url"],  # type: ignore[arg-type]
        migrate=bool(values["migrate"]),
        statement_timeout=str(values["statement_timeout"] or default("statement_timeout")),
        lock_timeout=str(values["lock_timeout"] or default("lock_timeout")),
        pg_ctl=values["pg_ctl"],  # type: ignore[arg-type]
        pg_version=parse_major(values["pg_version"]),
        api_url=values["api_url"],  # type: ignore[arg-type]
        webhook_receiver_url=values["webhook_receiver_url"],  # type: ignore[arg-type]
        api_token=os.environ.get("FLUXOLAB_API_TOKEN") or None,
        smoke_actors=_actors(values["smoke_actors"]),
        smoke_delivery_timeout=_seconds(
            "smoke_delivery_timeout", values["smoke_delivery_timeout"] or default("smoke_delivery_timeout")
        ),
        allowed_grantees=parse_allowed_grantees(values["allowed_grantee"] or []),  # type: ignore[arg-type]
        history=_history(values["history"], path),
    )
    if values["summary"] is not None:
        gate_config = replace(gate_config, summary=path(values["summary"]))
    elif os.environ.get("GITHUB_STEP_SUMMARY"):
        gate_config = replace(
            gate_config, summary=Path(os.environ["GITHUB_STEP_SUMMARY"]), summary_append=True
        )
    if gate_config.migrate and gate_config.disposable:
        raise UsageError(
            "--migrate only makes sense with --database-url (the disposable database is always migrated)"
        )
    return gate_config


# Where the session keeps its resolved settings, its catalog of checks and the plan's checkpoints.
GATE_CONFIG = pytest.StashKey[GateConfig]()
CATALOG = pytest.StashKey[list[Check] | None]()
POINTS = pytest.StashKey[list[Checkpoint]]()
