"""An independent Python model of what 005→008 must do (docs/contract.md §2).

Given a legacy dataset at the 004 shape, the model says where every row must end up:
each user's default workspace, each membership's profile, and for each credential,
webhook registration, webhook event and activity either its workspace or
``ARCHIVED``. It shares no code and no SQL with the migrations; the property tests
compare the two on generated datasets.

The one input the model cannot know is the id PostgreSQL gives each personal
workspace 006 creates: the caller passes the ids it found (``personal``), after
checking that exactly the users who owned nothing got one each.

How ``"workspace_id"`` is read (the project's reading of docs/contract.md §2.4, the same as the
hand-written seed's):

* a JSON number names a workspace when its value is an integer in bigint range:
  ``30``, ``30.0`` and ``3e1`` all name 30; ``30.5``, ``1e400`` and ``-30`` name none;
* a JSON string names one when it is ASCII digits only (leading zeros allowed:
  ``"007"`` names 7) and its value fits bigint; ``" 7"``, ``"+7"``, ``"7.0"``, ``""``
  and full-width digits name none;
* anything else (no key, JSON null, booleans, objects, arrays, a payload that is not
  an object, SQL NULL) names none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

BIGINT_MAX: Final = 2**63 - 1
ARCHIVED: Final = "archived"
PROFILES: Final = ("owner", "admin", "member", "viewer")

Placement = int | str  # a workspace id, or ARCHIVED

_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class User:
    id: int
    created_at: datetime


@dataclass(frozen=True)
class Workspace:
    id: int
    owner_id: int
    created_at: datetime


@dataclass(frozen=True)
class Membership:
    workspace_id: int
    user_id: int
    profile: str  # a code of PROFILES


@dataclass(frozen=True)
class Credential:
    id: int
    user_id: int


@dataclass(frozen=True)
class Registration:
    id: int
    user_id: int | None  # None: the user was deleted


@dataclass(frozen=True)
class Event:
    id: int
    registration_id: int
    status: str


@dataclass(frozen=True)
class Activity:
    id: int
    user_id: int | None
    payload: str | None  # JSON text as stored in the jsonb column; None is SQL NULL


@dataclass(frozen=True)
class LegacyDataset:
    """Rows of the legacy tables at 004 (profiles are 001's four)."""

    users: tuple[User, ...] = ()
    workspaces: tuple[Workspace, ...] = ()
    memberships: tuple[Membership, ...] = ()
    credentials: tuple[Credential, ...] = ()
    registrations: tuple[Registration, ...] = ()
    events: tuple[Event, ...] = ()
    activities: tuple[Activity, ...] = ()

    def __repr__(self) -> str:
        singular = {"activities": "activity", "memberships": "membership"}
        sizes = ", ".join(
            f"{len(rows)} {singular.get(name, name.removesuffix('s')) if len(rows) == 1 else name}"
            for name, rows in vars(self).items()
            if rows
        )
        return f"<legacy dataset: {sizes or 'empty'}; its SQL is printed below>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis would print every row as Python; the SQL that reproduces it says more.
        printer.text(repr(self))

    def users_owning_nothing(self) -> set[int]:
        owners = {w.owner_id for w in self.workspaces}
        return {u.id for u in self.users if u.id not in owners}

    def to_sql(self) -> str:
        """INSERTs that recreate this dataset in a database migrated to 004."""
        return _render_sql(self)


@dataclass(frozen=True)
class Expected:
    """Where the model says every row must be after 008."""

    default_workspace: dict[int, int]
    memberships: dict[tuple[int, int], str]  # (workspace, user) → profile code, after 006
    credentials: dict[int, Placement]
    webhook_registrations: dict[int, Placement]
    webhook_events: dict[int, Placement]
    activities: dict[int, Placement]
    workspaces: set[int] = field(default_factory=set)  # every workspace after 006

    def placements(self, table: str) -> dict[int, Placement]:
        """Row id → workspace or ARCHIVED for one of the four tables 005 scopes by workspace."""
        by_table = {
            "credentials": self.credentials,
            "webhook_registrations": self.webhook_registrations,
            "webhook_events": self.webhook_events,
            "activities": self.activities,
        }
        return by_table[table]


def _integral_in_bigint(value: Decimal | int) -> int | None:
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    # Decimal → int truncates exactly; equal means the value had no fractional part.
    whole = int(value)
    if whole != value or not 1 <= whole <= BIGINT_MAX:
        return None
    return whole


def named_workspace(payload: str | None) -> int | None:
    """The workspace id a payload names, by the reading in this module's docstring."""
    if payload is None:
        return None
    document = json.loads(payload, parse_float=Decimal, parse_int=Decimal)
    if not isinstance(document, dict) or "workspace_id" not in document:
        return None
    value = document["workspace_id"]
    if isinstance(value, Decimal):
        # Beyond any bigint long before its digits would cost anything to convert.
        if value.is_finite() and value.adjusted() > 19:
            return None
        return _integral_in_bigint(value)
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        significant = value.lstrip("0")
        if len(significant) > 19:
            return None
        return _integral_in_bigint(int(significant or "0"))
    return None


def expected(dataset: LegacyDataset, personal: Mapping[int, int]) -> Expected:
    """Section 2's rules applied to ``dataset``; ``personal`` is user id → the workspace 006 made them."""
    # 006: the workspaces after it, and who owns what.
    owner_of = {w.id: w.owner_id for w in dataset.workspaces}
    owner_of.update({workspace_id: user_id for user_id, workspace_id in personal.items()})

    # 006: every owner holds `owner` in each workspace they own; other rows stay as they are.
    memberships = {(m.workspace_id, m.user_id): m.profile for m in dataset.memberships}
    for workspace_id, owner_id in owner_of.items():
        memberships[(workspace_id, owner_id)] = "owner"

    # 006: the default is the oldest workspace the user owns, by created_at then id.
    default_workspace: dict[int, int] = {}
    for workspace in sorted(dataset.workspaces, key=lambda w: (w.created_at, w.id)):
        default_workspace.setdefault(workspace.owner_id, workspace.id)
    for user in dataset.users:
        if user.id not in default_workspace:
            default_workspace[user.id] = personal[user.id]

    # 007
    credentials: dict[int, Placement] = {c.id: default_workspace[c.user_id] for c in dataset.credentials}

    # 008: registrations follow their user's default; without a user they are archived,
    # and events go wherever their registration went.
    registrations: dict[int, Placement] = {
        r.id: ARCHIVED if r.user_id is None else default_workspace[r.user_id] for r in dataset.registrations
    }
    events: dict[int, Placement] = {e.id: registrations[e.registration_id] for e in dataset.events}

    # 008: an activity goes where its payload says, if that workspace exists and the
    # activity has no user or its user is a member there (after 006); otherwise to its
    # user's default; with neither, to the archive.
    activities: dict[int, Placement] = {}
    for activity in dataset.activities:
        named = named_workspace(activity.payload)
        if named in owner_of and (activity.user_id is None or (named, activity.user_id) in memberships):
            activities[activity.id] = named
        elif activity.user_id is not None:
            activities[activity.id] = default_workspace[activity.user_id]
        else:
            activities[activity.id] = ARCHIVED

    return Expected(
        default_workspace=default_workspace,
        memberships=memberships,
        credentials=credentials,
        webhook_registrations=registrations,
        webhook_events=events,
        activities=activities,
        workspaces=set(owner_of),
    )


# What an example exercised ---------------------------------------------------------

# Every dirty case of docs/contract.md §1 (and the rules of §2 that handle it) an example
# can exercise; the property test reports which ones each example hit.
DIRTY_CASES: Final = (
    "user owning no workspace",
    "user owning several workspaces",
    "default among workspaces tied on created_at",
    "default is not the owner's lowest workspace id",
    "owner without a membership in their workspace",
    "owner with a non-owner profile in their workspace",
    "owner profile held by a non-owner",
    "credential of a user in no workspace",
    "registration without a user",
    "event of a registration without a user",
    "activity without a user placed by its payload",
    "activity without a user archived",
    "activity placed by its payload, not its user's default",
    "activity naming a workspace its user is not a member of",
    "activity naming a workspace that does not exist",
    "activity naming a workspace 006 creates",
    "payload SQL NULL",
    "payload JSON null",
    "payload not an object",
    "workspace_id JSON null",
    "workspace_id a nested object or array",
    "workspace_id a number naming a workspace",
    "workspace_id an integral number not written as an integer",
    "workspace_id a fractional number",
    "workspace_id a number beyond bigint",
    "workspace_id digits naming a workspace",
    "workspace_id digits with leading zeros naming a workspace",
    "workspace_id digits beyond bigint",
    "workspace_id almost digits (space, sign, dot, non-ASCII digit)",
)


def _workspace_id_cases(payload: str | None) -> set[str]:
    if payload is None:
        return {"payload SQL NULL"}
    # Integers as int, every other number as Decimal: that tells how it was written.
    document = json.loads(payload, parse_float=Decimal)
    if document is None:
        return {"payload JSON null"}
    if not isinstance(document, dict):
        return {"payload not an object"}
    if "workspace_id" not in document:
        return set()
    value = document["workspace_id"]
    named = named_workspace(payload)
    if value is None:
        return {"workspace_id JSON null"}
    if isinstance(value, dict | list):
        return {"workspace_id a nested object or array"}
    if isinstance(value, bool):
        return set()
    if isinstance(value, int | Decimal):
        if named is not None:
            written = "workspace_id an integral number not written as an integer"
            return {
                "workspace_id a number naming a workspace",
                *([written] if isinstance(value, Decimal) else []),
            }
        if isinstance(value, Decimal) and (not value.is_finite() or value != value.to_integral_value()):
            return {"workspace_id a fractional number"}
        return {"workspace_id a number beyond bigint"} if value > BIGINT_MAX else set()
    if named is not None:
        leading = "workspace_id digits with leading zeros naming a workspace"
        return {"workspace_id digits naming a workspace", *([leading] if value.startswith("0") else [])}
    if _ASCII_DIGITS.fullmatch(value):
        significant = value.lstrip("0")
        beyond = len(significant) > 19 or int(significant or "0") > BIGINT_MAX
        return {"workspace_id digits beyond bigint"} if beyond else set()
    if any(ch.isdigit() for ch in value):
        return {"workspace_id almost digits (space, sign, dot, non-ASCII digit)"}
    return set()


def dirty_cases(dataset: LegacyDataset, model: Expected, personal: Mapping[int, int]) -> set[str]:
    """Which of DIRTY_CASES ``dataset`` exercises, judged by the model."""
    cases: set[str] = set()
    owned: dict[int, list[Workspace]] = {}
    for workspace in dataset.workspaces:
        owned.setdefault(workspace.owner_id, []).append(workspace)
    if dataset.users_owning_nothing():
        cases.add("user owning no workspace")
    for owner_id, workspaces in owned.items():
        if len(workspaces) > 1:
            cases.add("user owning several workspaces")
        oldest = min(w.created_at for w in workspaces)
        if sum(w.created_at == oldest for w in workspaces) > 1:
            cases.add("default among workspaces tied on created_at")
        if model.default_workspace[owner_id] != min(w.id for w in workspaces):
            cases.add("default is not the owner's lowest workspace id")
    owner_of = {w.id: w.owner_id for w in dataset.workspaces}
    legacy = {(m.workspace_id, m.user_id): m.profile for m in dataset.memberships}
    for workspace_id, owner_id in owner_of.items():
        profile = legacy.get((workspace_id, owner_id))
        if profile is None:
            cases.add("owner without a membership in their workspace")
        elif profile != "owner":
            cases.add("owner with a non-owner profile in their workspace")
    if any(p == "owner" and owner_of[w] != u for (w, u), p in legacy.items()):
        cases.add("owner profile held by a non-owner")
    in_no_workspace = dataset.users_owning_nothing() - {m.user_id for m in dataset.memberships}
    if any(c.user_id in in_no_workspace for c in dataset.credentials):
        cases.add("credential of a user in no workspace")
    if any(r.user_id is None for r in dataset.registrations):
        cases.add("registration without a user")
    if any(model.webhook_events[e.id] == ARCHIVED for e in dataset.events):
        cases.add("event of a registration without a user")
    for activity in dataset.activities:
        cases |= _workspace_id_cases(activity.payload)
        named = named_workspace(activity.payload)
        placed = model.activities[activity.id]
        if activity.user_id is None:
            cases.add(
                "activity without a user archived"
                if placed == ARCHIVED
                else "activity without a user placed by its payload"
            )
        elif named is not None and placed == named and named != model.default_workspace[activity.user_id]:
            cases.add("activity placed by its payload, not its user's default")
        if named is None:
            continue
        if named not in model.workspaces:
            cases.add("activity naming a workspace that does not exist")
        elif activity.user_id is not None and (named, activity.user_id) not in model.memberships:
            cases.add("activity naming a workspace its user is not a member of")
        if named in personal.values():
            cases.add("activity naming a workspace 006 creates")
    return cases


# Rendering ------------------------------------------------------------------------


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _insert(table: str, columns: str, rows: list[str]) -> str:
    if not rows:
        return ""
    return f"INSERT INTO {table} ({columns}) VALUES\n    " + ",\n    ".join(rows) + ";\n"


def _render_sql(dataset: LegacyDataset) -> str:
    parts = [
        "-- A legacy dataset at the 004 shape. To reproduce: migrate an empty database --to 004,\n"
        "-- run this file with psql -v ON_ERROR_STOP=1 -f, then migrate the rest (005→008).\n",
        _insert(
            "users",
            "id, email, name, created_at",
            [
                f"({u.id}, 'user{u.id}@example.com', 'User {u.id}', {_literal(u.created_at)})"
                for u in dataset.users
            ],
        ),
        _insert(
            "workspaces",
            "id, owner_id, name, created_at",
            [
                f"({w.id}, {w.owner_id}, 'Workspace {w.id}', {_literal(w.created_at)})"
                for w in dataset.workspaces
            ],
        ),
        _insert(
            "workspace_members",
            "workspace_id, user_id, profile_id",
            [
                f"({m.workspace_id}, {m.user_id}, (SELECT id FROM profiles WHERE code = {_literal(m.profile)}))"
                for m in dataset.memberships
            ],
        ),
        _insert(
            "credentials",
            "id, user_id, name, provider, secret",
            [
                f"({c.id}, {c.user_id}, 'credential {c.id}', 'github', 's-{c.id}')"
                for c in dataset.credentials
            ],
        ),
        _insert(
            "webhook_registrations",
            "id, user_id, target_url, event_types, secret",
            [
                f"({r.id}, {_literal(r.user_id)}, 'https://hooks.example.com/{r.id}', "
                f"'{{activity.created}}', 'wh-{r.id}')"
                for r in dataset.registrations
            ],
        ),
        _insert(
            "webhook_events",
            "id, registration_id, event_type, body, status",
            [
                f"({e.id}, {e.registration_id}, 'activity.created', '{{\"n\": {e.id}}}', {_literal(e.status)})"
                for e in dataset.events
            ],
        ),
        _insert(
            "activities",
            "id, user_id, action, payload",
            [
                f"({a.id}, {_literal(a.user_id)}, 'view', {_literal(a.payload)}::jsonb)"
                for a in dataset.activities
            ],
        ),
        "-- Identity sequences continue after the explicit ids, as on a real database.\n",
    ]
    for table in (
        "users",
        "workspaces",
        "credentials",
        "webhook_registrations",
        "webhook_events",
        "activities",
    ):
        parts.append(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) "
            f"FROM {table};\n"
        )
    return "".join(part for part in parts if part)
