"""The message to the squads that closes the window (runbook section 7), from the change record, ready to paste.

Section 7 asks to bring the application back and announce the result, with the run's
figures attached (time taken, counts verified, tests' results). The change record ends
with that message, for success and for failure alike: what happened, whether the
application may come back, what moved to ``legacy_archive`` (counted by PostgreSQL as the
migrations wrote it, not estimated), and where the record is.
"""

from __future__ import annotations

from typing import Any

# Outcomes after which the database is exactly as before the window: the old application may come back.
AS_BEFORE = ("rolled_back", "restored", "not_started")
MIGRATED = ("migrated_and_validated", "migrated_and_validated_without_smoke", "cleanup_not_proven")


def _seconds(data: dict[str, Any]) -> str:
    seconds = data.get("seconds")
    if seconds is None:
        seconds = sum(float(step.get("seconds", 0)) for step in data.get("steps", []))
    minutes, rest = divmod(round(float(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def archived(data: dict[str, Any]) -> dict[str, int]:
    """Rows now in each ``legacy_archive`` table, from the migrations' own counts (and the tables they moved there)."""
    start = {table["name"]: int(table["rows"]) for table in data.get("tables", [])}
    found: dict[str, int] = {}
    for migration in data.get("migrations", []):
        for old, new in (migration.get("renamed") or {}).items():
            if new.startswith("legacy_archive.") and old in start:
                found[new] = found.get(new, 0) + start[old]
        for table, counts in (migration.get("rows") or {}).items():
            if table.startswith("legacy_archive."):
                found[table] = found.get(table, 0) + int(counts["inserted"]) - int(counts["deleted"])
    return dict(sorted(found.items()))


def _checks(data: dict[str, Any]) -> str:
    checks = data.get("checks", [])
    passed = sum(1 for check in checks if check["status"] == "passed")
    failed = sum(1 for check in checks if check["status"] == "failed")
    points = ", ".join(data.get("checkpoints", {})) or "none"
    return f"{passed} check(s) passed, {failed} failed (checkpoints: {points})"


def _smoke(data: dict[str, Any]) -> str:
    smoke = data.get("smoke", [])
    counts = {
        status: sum(1 for s in smoke if s["status"] == status) for status in ("passed", "failed", "skipped")
    }
    if not counts["passed"] and not counts["failed"]:
        why = smoke[0]["summary"] if smoke else "not reached"
        return f"smoke tests (runbook section 5) did NOT run: {why}"
    return f"smoke tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"


def closing(data: dict[str, Any]) -> str:
    """The message, in Markdown, for whatever outcome ``data`` (a change record's JSON) has."""
    database = (data.get("identity") or {}).get("database") or data.get("target", "the database")
    outcome = data.get("outcome", "not_finished")
    migrations = [m["file_name"] for m in data.get("migrations", [])]
    applied = f"{migrations[0][:3]}-{migrations[-1][:3]}" if migrations else "no migration"
    lines: list[str] = []
    if outcome in MIGRATED:
        lines.append(f"**Maintenance of {database}: done.** Migrations {applied} are applied and validated.")
        if outcome == "migrated_and_validated":
            lines.append("The application can be brought back now (runbook section 7).")
        elif outcome == "migrated_and_validated_without_smoke":
            lines.append(
                "The smoke tests did NOT run: check webhooks, activities and credentials by hand "
                "(runbook section 5) before the application takes traffic."
            )
        else:
            lines.append(
                "The smoke step's clean-up could not be proven: remove what it lists before reopening."
            )
        moved = archived(data)
        if moved:
            lines.append(
                "Moved to legacy_archive: "
                + "; ".join(f"{table.split('.', 1)[1]} {rows:,}" for table, rows in moved.items())
                + "."
            )
        lines.append("Integrations frozen for the window (webhooks) may resume.")
    else:
        where = f" at {data['stopped_at']}" if data.get("stopped_at") else ""
        lines.append(
            f"**Maintenance of {database}: NOT completed{where}.** {data.get('reason') or ''}".rstrip()
        )
        state = data.get("database") or "unknown: check it before anything else"
        lines.append(f"The database: {state}.")
        if outcome in AS_BEFORE:
            lines.append(
                "The application can come back on its current version; the integrations stay frozen "
                "until a new window is scheduled."
            )
        else:
            lines.append("Keep the application stopped: the database needs attention first.")
            if data.get("next_action"):
                lines.append(f"To restore: `{data['next_action']}`")
    lines.append(
        f"Figures: window {_seconds(data)}; {_checks(data)}; {_smoke(data)}. "
        f"Change record: run {data.get('run_id') or '-'}, outcome `{outcome}`."
    )
    return "\n\n".join(lines)
