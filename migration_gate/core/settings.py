"""Every setting of the gate, declared once: its name, what it means, its default, its environment variable.

pytest derives from each a ``--flag`` and an ini option of the same name
(``migration_gate.plugin.config``); the command line and the playbook take their
defaults from here, so a default is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str | None = None
    env: str | None = None
    flag_only: bool = False  # a boolean switch
    repeatable: bool = False  # a list: the flag given again adds one, the ini option takes one a line
    metavar: str | None = None


SETTINGS = (
    Setting("migrations_dir", "directory of the NNN_name.sql migrations to judge", "migrations"),
    Setting("checks_dir", "directory of the SQL invariants (checks/*.sql) of the catalog", "checks"),
    Setting(
        "legacy_seed", "SQL file of legacy data loaded at 004 before 005 runs", "fixtures/legacy_seed.sql"
    ),
    Setting(
        "database_url",
        "run the gate against this existing database (read-only) instead of a disposable one",
        env="FLUXOLAB_DATABASE_URL",
    ),
    Setting(
        "migrate",
        "with --database-url: apply pending migrations first (for rehearsals on a copy)",
        flag_only=True,
    ),
    Setting("statement_timeout", "statement_timeout for sessions on an existing database", "30s"),
    Setting(
        "lock_timeout",
        "how long a migration waits for a lock the application holds before it gives up and retries "
        "(PostgreSQL's syntax: 5s, 500ms; 0 waits forever)",
        "5s",
    ),
    Setting(
        "pg_ctl",
        "path to pg_ctl for the disposable server (default: PATH, /usr/lib/postgresql/*/bin, then PyPI's)",
        env="MIGRATION_GATE_PG_CTL",
    ),
    Setting(
        "pg_version",
        "the disposable server's PostgreSQL major version, among the installations found (e.g. 15 or 18)",
        env="MIGRATION_GATE_PG_VERSION",
    ),
    Setting(
        "api_url",
        "smoke-test this deployment of the API instead of the reference one",
        env="FLUXOLAB_API_URL",
    ),
    Setting("webhook_receiver_url", "with --api-url: a URL the deployment can deliver webhooks to"),
    Setting(
        "smoke_actors",
        "with --api-url: the two users the smoke tests act as, USER:WORKSPACE,OTHER_USER:OTHER_WORKSPACE "
        "(default: two found in --database-url)",
        env="FLUXOLAB_SMOKE_ACTORS",
    ),
    Setting(
        "summary",
        "write a Markdown summary for the pull request to FILE (default: appended to $GITHUB_STEP_SUMMARY "
        "when that is set)",
    ),
    Setting(
        "smoke_delivery_timeout",
        "seconds the smoke tests wait for a webhook delivery to be delivered or failed",
        "60",
        env="FLUXOLAB_SMOKE_DELIVERY_TIMEOUT",
    ),
    Setting(
        "allowed_grantee",
        "a role that may hold privileges in public and legacy_archive besides their owner and fluxolab_devmode: "
        "ROLE (any privilege) or ROLE:PRIVILEGE,PRIVILEGE (only those); repeatable",
        repeatable=True,
        metavar="ROLE[:PRIVILEGES]",
    ),
    Setting(
        "history",
        "append this run to the history at SOURCE: an SQLite file (created on first use) or the "
        "postgresql:// URL of a history database, never the database under test (docs/history.md)",
        env="MIGRATION_GATE_HISTORY",
        metavar="SOURCE",
    ),
)


def setting(name: str) -> Setting:
    """The declaration of setting ``name`` (refusing a name that is not declared)."""
    for declared in SETTINGS:
        if declared.name == name:
            return declared
    raise KeyError(f"no setting {name!r}")


def default(name: str) -> str:
    """The default of setting ``name`` (refusing a name that is not declared)."""
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
