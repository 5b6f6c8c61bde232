"""The change record (runbook section 7, docs/contract.md §7): ``report.json`` for tools, ``report.md`` for people.

Written whatever the outcome, it says what ran, how long each step and migration took,
what each migration added, altered or dropped (and, for each table it added, the rules
that judged it), every invariant's count at each checkpoint, the profile audit, each
check's result, the exemptions, the backup, and, when the run stopped, where and why and
what state the database is in.
Every string goes through ``dsn.scrub`` on the way out: no password reaches a report.

It exists from the first step: written when the run starts and again at every step and
migration, each time to a temporary file renamed over the last one, so a run killed
outright (kill -9, the OOM killer, a CI time limit) leaves a whole record that says it
did not finish, and in which step and migration.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migration_gate.checks.role_report import LABELS
from migration_gate.core import dsn
from migration_gate.core.schema import ADDED, ALTERED, DROPPED, Change
from migration_gate.core.text import markdown_table
from migration_gate.operations.squads_message import closing

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"

# outcome → what it means for the database
OUTCOMES: dict[str, str] = {
    "not_finished": "the run did not finish, or is still running: killed (kill -9, out of memory, a lost "
    "session) in the step and migration named below; PostgreSQL rolls back an open transaction, but check the "
    "database before anything else",
    "interrupted": "a signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run: the database's state is said below",
    "unexpected_error": "the run could not go on (an error that is no verdict on the migrations): check the database",
    "migrated_and_validated": "every pending migration is applied and every check passed",
    "migrated_and_validated_without_smoke": "every pending migration is applied and every check passed, but the "
    "smoke tests did NOT run: the runbook's section 5 is not done (why below, under Smoke tests)",
    "rolled_back": "stopped before committing: the database is exactly as it was (verified)",
    "restored": "stopped after committing: the backup was restored and the database is exactly as it was (verified)",
    "needs_restore": "stopped, and the database is NOT as it was: restore the backup (command below)",
    "not_started": "stopped before migrating: nothing in the database was changed",
    "cleanup_not_proven": "migrated and validated, but the smoke step's clean-up could not be proven: rows it made "
    "may remain (listed below); remove them, or restore the backup",
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StepRecord:
    name: str
    status: str = "running"  # ok, failed, skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class CheckRecord:
    """One check's result: ``passed``, ``failed`` (with what a person needs) or ``skipped`` (with why)."""

    name: str  # the catalog's name of the check
    status: str
    summary: str = ""
    details: str = ""
    checkpoint: str = ""  # where it ran: after_006, after_007, after_NNN, current
    seconds: float = 0.0  # what it cost the window


@dataclass
class CallbackRecord:
    """A window command (``--before-window``, ``--after-window``): what ran, how it ended, its output's tail."""

    command: str
    status: str = "running"  # ok, failed, timed out, interrupted, could not start
    exit_status: int | None = None  # the shell's; negative: killed by that signal
    seconds: float = 0.0
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """``failed (exit status 3)``, ``timed out after 300 s``."""
        if self.status == "failed":
            return f"failed (exit status {self.exit_status})"
        if self.status == "timed out":
            return f"timed out after {self.seconds:.0f} s"
        return self.status


@dataclass
class MigrationRecord:
    file_name: str
    seconds: float
    statements: list[dict[str, Any]] = field(default_factory=list)
    # What it added, altered or dropped: {action, kind, name, parent, before, after} (core.schema.Change).
    changes: list[dict[str, str]] = field(default_factory=list)
    # Each table it added → each rule that judged it → passed, failed, or skipped: <why>.
    new_tables: dict[str, dict[str, str]] = field(default_factory=dict)
    # operations.migration_effects: tables locked (seconds), rewritten (how), rows written per table.
    locked: dict[str, float] = field(default_factory=dict)
    rewritten: dict[str, str] = field(default_factory=dict)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)


def judged_new_tables(
    changes: list[dict[str, str]], results: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Each table ``changes`` add, with the outcome of each rule that judged it (``results``: table → rule → outcome).

    The rules judge the tenant tables of public, by bare name; a table elsewhere gets none.
    """
    added = [c["name"] for c in changes if c["action"] == ADDED and c["kind"] == "table"]
    return {
        name: dict(results.get(name.removeprefix("public."), {})) if name.startswith("public.") else {}
        for name in added
    }


MAX_CHANGE_LINE = 300


def changes_markdown(migrations: list[dict[str, Any]], heading: str = "##") -> list[str]:
    """What each migration changed, and the rules that judged each table it added: a reviewer's section.

    ``migrations`` are ``{file_name, changes, new_tables}`` (a change record's, or the pytest
    gate's); one row each, then each one's changes in a collapsed list.
    """
    if not any(migration.get("changes") for migration in migrations):
        return []
    out = [
        f"{heading} What each migration changed",
        "",
        "Read from the catalog before and after each migration: tables, columns, indexes, constraints, "
        "functions, schemas and grants.",
        "",
    ]
    rows = []
    for migration in migrations:
        counts = Counter(change["action"] for change in migration["changes"])
        judged = migration.get("new_tables", {})
        tables = [
            f"`{table}`: " + _outcomes(judged.get(table))
            for table in judged_new_tables(migration["changes"], {})
        ]
        rows.append(
            [
                f"`{migration['file_name']}`",
                counts[ADDED],
                counts[ALTERED],
                counts[DROPPED],
                "; ".join(tables) or "-",
            ]
        )
    out += _table(
        ["migration", "added", "altered", "dropped", "new tables: the rules that judged them"], rows
    )
    for migration in migrations:
        if not migration["changes"]:
            continue
        lines = [Change.from_json(change).line() for change in migration["changes"]]
        out += [
            f"<details><summary><code>{migration['file_name']}</code>: {len(lines)} change(s)</summary>",
            "",
            *(f"- `{_clip(line)}`" for line in lines),
            "",
            "</details>",
            "",
        ]
    return out


def _outcomes(outcomes: dict[str, str] | None) -> str:
    if outcomes is None:  # the run stopped before the last checkpoint, where the rules run
        return "not judged: the rules run at the last checkpoint"
    return ", ".join(f"{rule} {outcome}" for rule, outcome in outcomes.items()) or (
        "no rule judged it (not a tenant table of public)"
    )


def _clip(line: str) -> str:
    line = " ".join(line.replace("`", "'").split())
    return line if len(line) <= MAX_CHANGE_LINE else line[: MAX_CHANGE_LINE - 1] + "…"


def exemptions_markdown(exemptions: list[dict[str, str]], heading: str = "##") -> list[str]:
    """Every exemption the operator declared, with its reason (docs/contract.md §8)."""
    if not exemptions:
        return []
    return [
        f"{heading} Exemptions ({len(exemptions)})",
        "",
        *(f"- `{e['rule']}[{e['table']}]`: {e['reason']}" for e in exemptions),
        "",
    ]


@dataclass
class ChangeRecord:
    command: str
    target: str
    run_id: str | None = (
        None  # MIGRATION_GATE_RUN_ID for the window commands; migration_gate.runs; its session's name
    )
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    outcome: str = "not_finished"
    exit_code: int | None = None
    # Where the run is (or was, when it was killed): the step, and the migration in progress.
    in_progress: dict[str, str | None] = field(default_factory=lambda: {"step": None, "migration": None})
    database: str | None = None  # what the run left the database as, once it is known
    stopped_at: str | None = None
    reason: str | None = None
    identity: dict[str, Any] | None = None
    # The ledger's head and every table's rows and bytes when the run started (operations.target_stats).
    start_version: int | None = None
    tables: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None  # the whole run, preflight to the last record
    forecast: dict[str, Any] | None = None  # --forecast-from: what the window was expected to take
    warnings: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    backup: dict[str, Any] | None = None
    migrations: list[MigrationRecord] = field(default_factory=list)
    # Each correction this run applied: name, reason, checksum, declared and actual place, seconds.
    corrections: list[dict[str, Any]] = field(default_factory=list)
    # --accept-drift: the operator's note and the differences accepted (None: no drift, or not accepted).
    accepted_drift: dict[str, Any] | None = None
    # The window commands by name (before_window, after_window), as they ran.
    callbacks: dict[str, CallbackRecord] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, int]] = field(default_factory=dict)
    profile_audit: dict[str, dict[str, int]] = field(default_factory=dict)
    # The cluster's roles at the last checkpoint, by figure (login, superuser, ...): reported, not asserted.
    roles: dict[str, list[str]] = field(default_factory=dict)
    checks: list[CheckRecord] = field(default_factory=list)
    smoke: list[CheckRecord] = field(default_factory=list)
    # What the smoke step created and removed, per table, and whether the removal is proven.
    smoke_cleanup: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    restore: dict[str, Any] | None = None
    next_action: str | None = None
    rehearsal: dict[str, Any] | None = None
    # Tables the operator exempts from a rule: {rule, table, reason}.
    exemptions: list[dict[str, str]] = field(default_factory=list)

    _autosave: tuple[Path, str | None] | None = field(default=None, repr=False, compare=False)

    @contextmanager
    def step(self, name: str, progress: Callable[[str], None] = lambda line: None) -> Iterator[StepRecord]:
        """Time a step; an exception marks it failed (and goes on up). Saved as it starts and ends."""
        record = StepRecord(name)
        self.steps.append(record)
        self.in_progress = {"step": name, "migration": None}
        progress(f"== {name}")
        self.save()
        started = time.perf_counter()
        try:
            yield record
        except BaseException:
            record.status = "failed"
            raise
        else:
            if record.status == "running":
                record.status = "ok"
        finally:
            record.seconds = round(time.perf_counter() - started, 3)
            self.save()

    def migrating(self, file_name: str | None) -> None:
        """The migration now running (None: none), saved at once: a kill -9 leaves it in the record."""
        self.in_progress["migration"] = file_name
        self.save()

    def failed_callback(self, name: str) -> CallbackRecord | None:
        """The window command ``name`` when it ran and did not end well."""
        ran = self.callbacks.get(name)
        return ran if ran is not None and not ran.ok else None

    def stop(self, where: str, reason: str, outcome: str, exit_code: int) -> None:
        self.stopped_at, self.reason, self.outcome, self.exit_code = where, reason, outcome, exit_code
        self.save()

    def autosave(self, directory: Path, secret_url: str | None) -> None:
        """From now on every step, migration and stop rewrites the record in ``directory``."""
        self._autosave = (directory, secret_url)
        self.save()

    def save(self) -> None:
        if self._autosave is not None:
            self.write(*self._autosave)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_autosave")
        data["meaning"] = OUTCOMES.get(self.outcome, "")
        data["squads_message"] = closing(data)  # runbook section 7, ready to paste
        return data

    def write(self, directory: Path, secret_url: str | None) -> tuple[Path, Path]:
        """``report.json`` and ``report.md`` in ``directory`` (created), every string scrubbed, each atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        data = _scrubbed(self.to_json(), secret_url)
        json_path = directory / JSON_NAME
        md_path = directory / MARKDOWN_NAME
        _replace(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        _replace(md_path, markdown(data))
        return json_path, md_path


def _replace(path: Path, text: str) -> None:
    """Write, then rename over ``path``: a reader (or a crash) sees the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _scrubbed(value: Any, secret_url: str | None) -> Any:
    if isinstance(value, str):
        return dsn.scrub(value, secret_url)
    if isinstance(value, dict):
        return {key: _scrubbed(item, secret_url) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item, secret_url) for item in value]
    return value


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A section's Markdown table, and the blank line that ends it."""
    return [*markdown_table(headers, rows), ""]


def _figures(value: Any) -> str:
    """A fingerprint summary in a line; anything else as it is."""
    if isinstance(value, dict) and "schema_sha256" in value:
        return (
            f"{value['rows']} rows in {value['tables']} tables, {value['sequences']} sequences, "
            f"{value['large_objects']} large objects, schema sha256 {value['schema_sha256'][:16]}…"
        )
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    """The change record for people, from the (already scrubbed) JSON data."""
    out = [f"# Change record: migration-gate {data['command']}", ""]
    out += [f"- **Outcome:** {data['outcome']}: {data['meaning']}"]
    out += [f"- **Database:** {data['target']}"]
    if data.get("identity"):
        ident = data["identity"]
        out += [
            f"- **Server:** PostgreSQL {ident['server_version']}, system identifier "
            f"{ident.get('system_identifier') or 'unknown'}, database OID {ident['database_oid']}"
        ]
    if data.get("database"):
        out += [f"- **The database now:** {data['database']}"]
    in_progress = data.get("in_progress") or {}
    if data["outcome"] == "not_finished" and in_progress.get("step"):
        migration = f", migration {in_progress['migration']}" if in_progress.get("migration") else ""
        out += [f"- **In progress:** step {in_progress['step']}{migration}"]
    out += [f"- **Started:** {data['started_at']}; **finished:** {data['finished_at'] or 'not yet'}"]
    out += [f"- **Exit code:** {data['exit_code']}", ""]
    if data.get("stopped_at"):
        out += [
            "## Where it stopped, and why",
            "",
            f"Stopped at **{data['stopped_at']}**: {data['reason']}",
            "",
        ]
    if data.get("next_action"):
        out += ["## What to do now", "", "```", data["next_action"], "```", ""]
    if data.get("warnings"):
        out += ["## Warnings", ""] + [f"- {w}" for w in data["warnings"]] + [""]
    if data.get("accepted_drift"):
        accepted = data["accepted_drift"]
        out += ["## Schema drift accepted (--accept-drift)", "", f"Note: {accepted['note']}", ""]
        out += ["```", *accepted["differences"], "```", ""]
    if data.get("callbacks"):
        out += ["## Window commands", ""]
        out += _table(
            ["when", "command", "status", "exit status", "seconds"],
            [
                [name, f"`{c['command']}`", c["status"], c["exit_status"], f"{c['seconds']:.3f}"]
                for name, c in data["callbacks"].items()
            ],
        )
        for name, ran in data["callbacks"].items():
            if ran["output_tail"]:
                out += [f"### {name}: the end of its output", "", "```", ran["output_tail"], "```", ""]
    if data.get("rehearsal"):
        out += ["## Rehearsal", ""] + [f"- **{k}:** {v}" for k, v in data["rehearsal"].items()] + [""]
    out += ["## Steps", ""]
    out += _table(
        ["step", "status", "seconds", "detail"],
        [[s["name"], s["status"], f"{s['seconds']:.3f}", s["detail"]] for s in data["steps"]],
    )
    if data.get("backup"):
        out += ["## Backup", ""] + [f"- **{k}:** {v}" for k, v in data["backup"].items()] + [""]
    if data["migrations"]:
        out += ["## Migrations", ""]
        out += _table(
            ["file", "seconds"], [[m["file_name"], f"{m['seconds']:.3f}"] for m in data["migrations"]]
        )
        out += changes_markdown(data["migrations"])
    out += exemptions_markdown(data.get("exemptions", []))
    if data.get("corrections"):
        out += ["## Corrections", ""]
        out += _table(
            ["correction", "after", "reason", "sha256", "seconds"],
            [
                [
                    c["name"],
                    f"{c['applied_after']:03d}",
                    c["reason"],
                    c["checksum"][:16] + "…",
                    f"{c['seconds']:.3f}",
                ]
                for c in data["corrections"]
            ],
        )
    if data["checkpoints"]:
        names = sorted({name for counts in data["checkpoints"].values() for name in counts})
        points = list(data["checkpoints"])
        out += ["## Invariants at each checkpoint (offending rows; must be 0)", ""]
        rows = [[name] + [data["checkpoints"][p].get(name, "-") for p in points] for name in names]
        out += _table(["invariant", *points], rows)
    if data["profile_audit"]:
        out += ["## Profile audit (memberships in each user's default workspace, by profile)", ""]
        codes = sorted({code for counts in data["profile_audit"].values() for code in counts})
        points = list(data["profile_audit"])
        out += _table(
            ["profile", *points], [[c] + [data["profile_audit"][p].get(c, 0) for p in points] for c in codes]
        )
    if data.get("roles"):
        out += ["## Roles of the cluster (reported, not asserted)", ""]
        out += _table(
            ["figure", "roles", "names"],
            [
                [LABELS.get(key, key), len(names), ", ".join(names) or "-"]
                for key, names in data["roles"].items()
            ],
        )
    for title, key in (("Checks", "checks"), ("Smoke tests", "smoke")):
        if data[key]:
            out += [f"## {title}", ""]
            out += _table(
                ["check", "checkpoint", "result", "summary"],
                [[c["name"], c.get("checkpoint") or "-", c["status"], c["summary"]] for c in data[key]],
            )
            for check in data[key]:
                if check["status"] == "failed" and check["details"]:
                    where = f" at {check['checkpoint']}" if check.get("checkpoint") else ""
                    out += [f"### {check['name']}{where}", "", "```", check["details"], "```", ""]
    cleanup = data.get("smoke_cleanup")
    if cleanup and cleanup.get("created") is not None and "removed" in cleanup:
        out += ["## What the smoke step made, and removed", ""]
        out += [
            f"- **Tenant:** run {cleanup.get('run_id')}, users {cleanup.get('users')}, workspaces {cleanup.get('workspaces')}",
            f"- **Proven:** {'yes: every business table holds exactly the rows it held before' if cleanup.get('proven') else 'NO'}",
            "",
        ]
        out += _table(
            ["table", "created", "removed"],
            [[table, count, cleanup["removed"].get(table, 0)] for table, count in cleanup["created"].items()],
        )
        if cleanup.get("problems"):
            out += [f"- {problem}" for problem in cleanup["problems"]] + [""]
    if data.get("fingerprint"):
        fp = data["fingerprint"]
        out += ["## Is the database exactly as it was?", ""]
        out += [f"- **{k}:** {_figures(v)}" for k, v in fp.items() if k != "differences"]
        if fp.get("differences"):
            out += ["", "```", *fp["differences"], "```"]
        out += [""]
    if data.get("restore"):
        out += ["## Restore", ""] + [f"- **{k}:** {v}" for k, v in data["restore"].items()] + [""]
    if data.get("forecast"):
        expected = data["forecast"]
        out += ["## Forecast (--forecast-from)", ""]
        out += [
            f"- **Window:** {expected['window_s']:.1f} s forecast ({expected['low_s']:.1f}-{expected['high_s']:.1f}); "
            f"this run took {data.get('seconds') or 0:.1f} s",
            f"- **Restore in the worst case:** {expected['restore_s']:.1f} s",
            "",
        ]
    out += ["## Message to the squads (runbook section 7, ready to paste)", "", data["squads_message"]]
    return "\n".join(out).rstrip() + "\n"
