"""The history's own schema, in versions: each step is applied once, in order, and never edited.

A new history gets every step; one written by an older migration-gate gets the steps it
lacks, in the same transaction that reads it, so it is upgraded whole or not at all and
its runs are never lost. The version lives in ``history_meta`` beside a ``format`` row
that tells a history from any other database holding a table of that name.

The same statements serve SQLite and PostgreSQL: ``{p}`` is the tables' prefix (the
``migration_gate_history`` schema on PostgreSQL), ``{id}`` the type of a generated key.
JSON figures are kept as text, which both read the same way.
"""

from __future__ import annotations

FORMAT = "migration-gate history"
META = "history_meta"
PG_SCHEMA = "migration_gate_history"

# Version 1: runs, their results and their figures.
_V1 = (
    "CREATE TABLE {p}history_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE {p}runs (
        id {id},
        run_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        series TEXT NOT NULL,
        mode TEXT NOT NULL,
        target TEXT NOT NULL,
        host TEXT,
        port INTEGER,
        database_name TEXT,
        system_identifier TEXT,
        server_version TEXT,
        ledger_head TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        exit_status INTEGER,
        profile_audit TEXT NOT NULL,
        roles TEXT NOT NULL
    )""",
    "CREATE INDEX {p}runs_by_series ON {p}runs (series, id)",
    """CREATE TABLE {p}results (
        run BIGINT NOT NULL REFERENCES {p}runs (id),
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        checkpoint TEXT NOT NULL,
        outcome TEXT NOT NULL,
        count BIGINT,
        seconds DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run, kind, name, checkpoint)
    )""",
    "CREATE INDEX {p}results_by_check ON {p}results (name, checkpoint, run)",
)
# Version 2: what was posted to --notify-url, so that asking again posts nothing.
_V2 = (
    """CREATE TABLE {p}notifications (
        change_key TEXT PRIMARY KEY,
        run BIGINT NOT NULL REFERENCES {p}runs (id),
        posted_at TEXT NOT NULL,
        message TEXT NOT NULL
    )""",
)
STEPS: tuple[tuple[str, ...], ...] = (_V1, _V2)
VERSION = len(STEPS)


def statements(since: int, *, prefix: str, generated_key: str) -> list[str]:
    """The statements that bring a history at version ``since`` (0: none yet) to ``VERSION``."""
    # PostgreSQL puts an index in its table's schema: the index's own name takes no prefix.
    return [
        statement.replace("INDEX {p}", "INDEX ").format(p=prefix, id=generated_key)
        for step in STEPS[since:]
        for statement in step
    ]
