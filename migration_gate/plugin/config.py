"""The gate's settings for pytest: each one an ini option and a --flag of the same name, resolved once.

The settings themselves (name, help, default, environment variable) are declared once in
``migration_gate.core.settings``, which the command line and the playbook read too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from migration_gate.checks.catalog import Check
from migration_gate.core.allowed_grantees import AllowedGrantee
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import Exemption
from migration_gate.core.plan import Checkpoint
from migration_gate.core.settings import pytest_settings
from migration_gate.core.settings import resolve as resolve_setting
from migration_gate.history.store import is_postgres

# GitHub's own variable: a job's steps append their summaries to the file it names.
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("migration-gate")
    for setting in pytest_settings():
        help_text = setting.help + (f" (env {setting.env})" if setting.env else "")
        if setting.on_command_line:
            if setting.switch:
                group.addoption(
                    setting.option, action="store_true", dest=setting.name, default=None, help=help_text
                )
            else:
                group.addoption(
                    setting.option,
                    action="append" if setting.repeatable else "store",
                    dest=setting.name,
                    default=None,
                    metavar=setting.value_name,
                    help=help_text,
                )
        if not setting.on_command_line:
            continue  # environment only: a token belongs in neither a command line nor a file in the repository
        if setting.switch:
            parser.addini(setting.name, help_text, type="bool", default=False)
        elif setting.repeatable:
            parser.addini(setting.name, help_text + " (one a line)", type="linelist", default=[])
        else:
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
    corrections_dir: Path | None = None  # applied at their places (disposable, or with --migrate)
    exemptions: tuple[Exemption, ...] = ()  # tables the operator exempts from a rule, with the reason

    @property
    def disposable(self) -> bool:
        return self.database_url is None


def _history(value: str | None, path: Callable[[Path], Path]) -> str | None:
    """A history database's URL as it is; a file's path against rootdir, like every other path."""
    if value is None:
        return None
    return value if is_postgres(value) else str(path(Path(value)))


def resolve(config: pytest.Config) -> GateConfig:
    """Flag, then environment variable, then ini, then default (the flags of a list replace its ini lines)."""
    ini = {}
    for setting in pytest_settings():
        if not setting.on_command_line:
            continue
        raw = config.getini(setting.name)
        if raw not in ("", [], None) and not (setting.switch and raw is False):
            ini[setting.name] = raw
    values = {
        setting.name: resolve_setting(
            setting,
            config.getoption(setting.name) if setting.on_command_line else None,
            os.environ,
            ini,
        )
        for setting in pytest_settings()
    }
    rootdir = Path(config.rootpath)

    def path(value: Path) -> Path:
        return value if value.is_absolute() else rootdir / value

    gate_config = GateConfig(
        rootdir=rootdir,
        migrations_dir=path(values["migrations_dir"]),
        checks_dir=path(values["checks_dir"]),
        legacy_seed=path(values["legacy_seed"]),
        database_url=values["database_url"],
        migrate=values["migrate"],
        statement_timeout=values["statement_timeout"],
        lock_timeout=values["lock_timeout"],
        pg_ctl=str(values["pg_ctl"]) if values["pg_ctl"] else None,
        pg_version=values["pg_version"],
        api_url=values["api_url"],
        webhook_receiver_url=values["webhook_receiver_url"],
        api_token=values["api_token"],
        smoke_actors=values["smoke_actors"],
        smoke_delivery_timeout=values["smoke_delivery_timeout"],
        allowed_grantees=tuple(values["allowed_grantee"]),
        exemptions=tuple(values["exempt"]),
        history=_history(values["history"], path),
    )
    if values["corrections_dir"] is not None:
        gate_config = replace(gate_config, corrections_dir=path(values["corrections_dir"]))
    if values["summary"] is not None:
        gate_config = replace(gate_config, summary=path(values["summary"]))
    elif os.environ.get(GITHUB_STEP_SUMMARY):
        gate_config = replace(gate_config, summary=Path(os.environ[GITHUB_STEP_SUMMARY]), summary_append=True)
    if gate_config.migrate and gate_config.disposable:
        raise UsageError(
            "--migrate only makes sense with --database-url (the disposable database is always migrated)"
        )
    return gate_config


# Where the session keeps its resolved settings, its catalog of checks and the plan's checkpoints.
GATE_CONFIG = pytest.StashKey[GateConfig]()
CATALOG = pytest.StashKey[list[Check] | None]()
POINTS = pytest.StashKey[list[Checkpoint]]()
