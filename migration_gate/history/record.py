"""What a run leaves in the history: who it ran against, what each check found, the figures it reported.

One ``RunRecord`` per gate session (``pytest --history``) or playbook/rehearsal
(``playbook --history``). It never holds a password: the target is described by
``dsn.describe`` and the server's own identity (system identifier, version), and a
change record's strings were already scrubbed when it was written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from migration_gate.core.identity import DatabaseIdentity

# A run's kind: what wrote it.
GATE, PLAYBOOK = "gate", "playbook"  # and "rehearse", which writes a playbook's record
# The mode: a disposable database the gate built, or an existing one it read (or a playbook changed).
DISPOSABLE, EXISTING = "disposable", "existing"
# A result's kind: a check of the catalog, a smoke test, or another test of the session.
CHECK, SMOKE, TEST = "check", "smoke", "test"
FAILING = frozenset({"failed", "error"})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Target:
    """The database a run judged, without a password.

    Runs of one target form a series: the history's report compares a run with the runs of
    its own series. An existing database is known by its cluster's system identifier and its
    name (both survive a restart, a new host name or a failover to a replica of it); a
    rehearsal, run on a disposable copy, is filed under its source. Every database the gate
    builds from the seed is new and named by no one, so those all form one series, ``disposable``.
    """

    mode: str
    described: str  # user@host:port/dbname, or the disposable server's installation
    host: str | None = None
    port: int | None = None
    database: str | None = None
    system_identifier: str | None = None
    server_version: str | None = None

    @property
    def series(self) -> str:
        if self.database is None:
            return DISPOSABLE
        # Without pg_control_system() (revoked on some managed services), the address stands in.
        return f"{self.system_identifier or f'{self.host}:{self.port}'}/{self.database}"

    @classmethod
    def of(cls, identity: DatabaseIdentity, described: str, mode: str = EXISTING) -> Target:
        return cls(
            mode,
            described,
            identity.host,
            identity.port,
            identity.database,
            identity.system_identifier,
            identity.server_version,
        )


@dataclass(frozen=True)
class Result:
    """One check (or smoke test) of a run: where it ran, how it ended, what it counted, what it cost."""

    kind: str
    name: str
    checkpoint: str
    outcome: str  # passed, failed, error, skipped
    count: int | None = None  # offending rows (or grants, or objects), when the check counts
    seconds: float = 0.0

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.checkpoint)


@dataclass
class RunRecord:
    """One run, as the history keeps it; ``number`` is its place in the history once stored."""

    kind: str
    target: Target
    started_at: str
    finished_at: str
    seconds: float
    outcome: str
    exit_status: int | None
    ledger_head: str | None
    results: list[Result] = field(default_factory=list)
    # checkpoint → profile code → users (the playbook's audit; figures, never asserted)
    profile_audit: dict[str, dict[str, int]] = field(default_factory=dict)
    # figure (login, superuser, ..., members_of_fluxolab_devmode) → role names
    roles: dict[str, list[str]] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)
    number: int | None = None

    @property
    def failing(self) -> list[Result]:
        return [result for result in self.results if result.failing]

    def label(self) -> str:
        return f"run {self.number} ({self.kind}, {self.started_at})"


def from_change_record(data: dict[str, Any], target: Target, ledger_head: str | None) -> RunRecord:
    """A playbook's or rehearsal's change record (``report.json``'s data) as a run of the history.

    The window's duration is the sum of its steps; each check keeps its catalog name and
    checkpoint, and the invariants their counts at each checkpoint.
    """
    counts: dict[str, dict[str, int]] = data.get("checkpoints") or {}
    results = [
        Result(
            CHECK,
            check["name"],
            check.get("checkpoint") or "",
            check["status"],
            counts.get(check.get("checkpoint") or "", {}).get(check["name"]),
            float(check.get("seconds") or 0.0),
        )
        for check in data.get("checks") or []
    ]
    results += [
        Result(
            SMOKE,
            smoke["name"],
            smoke.get("checkpoint") or "",
            smoke["status"],
            None,
            float(smoke.get("seconds") or 0),
        )
        for smoke in data.get("smoke") or []
    ]
    return RunRecord(
        kind=str(data.get("command") or PLAYBOOK),
        target=target,
        started_at=str(data.get("started_at") or now()),
        finished_at=str(data.get("finished_at") or now()),
        seconds=round(sum(float(step.get("seconds") or 0.0) for step in data.get("steps") or []), 3),
        outcome=str(data.get("outcome")),
        exit_status=data.get("exit_code"),
        ledger_head=ledger_head,
        results=_unique(results),
        profile_audit={point: dict(figures) for point, figures in (data.get("profile_audit") or {}).items()},
        roles={key: list(names) for key, names in (data.get("roles") or {}).items()},
    )


def _unique(results: list[Result]) -> list[Result]:
    """One result per check and checkpoint: a check recorded twice keeps its worst outcome."""
    kept: dict[tuple[str, str, str], Result] = {}
    for result in results:
        if result.key not in kept or (result.failing and not kept[result.key].failing):
            kept[result.key] = result
    return list(kept.values())
