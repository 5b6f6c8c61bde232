"""Hypothesis strategies for legacy datasets at the 004 shape, every dirty case in play.

Small on purpose: a handful of users and workspaces with ids and instants drawn from
narrow ranges, so that ties, out-of-order ``created_at``, memberships that happen to be
the owner's, and payloads naming a workspace that exists (or that 006 is about to
create) all come up often, and shrinking ends in a dataset a person can read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from migration_gate.data.model import (
    PROFILES,
    Activity,
    Credential,
    Event,
    LegacyDataset,
    Membership,
    Registration,
    User,
    Workspace,
)

MAX_WORKSPACE_ID = 12
EPOCH = datetime(2021, 1, 1, tzinfo=UTC)
EVENT_STATUSES = ("pending", "processing", "delivered", "failed")

# Few distinct instants: ties are the point.
instants = st.integers(min_value=0, max_value=3).map(lambda day: EPOCH + timedelta(days=day))

BIGINT_EDGES = (2**63 - 1, 2**63, 10**20 + 1, -(2**63))


def workspace_numbers(nameable: list[int]) -> st.SearchStrategy[int]:
    """Ids a payload may name: half the time one that exists (or that 006 creates), else any."""
    anything = st.one_of(
        st.integers(min_value=-2, max_value=MAX_WORKSPACE_ID + 8), st.sampled_from(BIGINT_EDGES)
    )
    return st.one_of(st.sampled_from(nameable), anything) if nameable else anything


def spellings(n: int) -> st.SearchStrategy[str]:
    """JSON texts for a "workspace_id" of n: the ones that name it, and the near misses that do not."""
    return st.sampled_from(
        [
            str(n),  # names n
            f"{n}.0",  # names n: integral
            f"{n * 10}e-1",  # names n: integral
            f"{n}.5",  # fractional
            f"{n}.0000000000000000000001",  # fractional, beyond float precision
            json.dumps(str(n)),  # names n: digits
            json.dumps("00" + str(n)),  # names n: digits, leading zeros
            json.dumps("0" * 25 + str(n)),  # names n: 25 zeros do not make it big
            json.dumps(f" {n}"),  # a space
            json.dumps(f"{n} "),
            json.dumps(f"+{n}"),  # a sign
            json.dumps(f"{n}.0"),  # a dot
            json.dumps(f"{n}\n"),  # a trailing newline
            json.dumps({"id": n}),  # nested
            json.dumps([n]),  # an array
        ]
    )


# Strings that are digits, nearly digits, or not digits at all.
_NEAR_DIGITS = "0123456789 +-.e\n\t\u0663\uff13a"  # Arabic-Indic and full-width threes


def workspace_id_fragments(nameable: list[int]) -> st.SearchStrategy[str]:
    """The JSON text of a payload's "workspace_id": numbers, strings and everything else."""
    return st.one_of(
        workspace_numbers(nameable).flatmap(spellings),
        st.text(alphabet=_NEAR_DIGITS, max_size=6).map(json.dumps),
        st.sampled_from(["null", "true", "false", "[]", "{}", '""']),
        # Numbers and digit strings beyond bigint, or integral but astronomically large.
        st.sampled_from(["9223372036854775808", "-9223372036854775809", "99999999999999999999999", "1e400"]),
        st.sampled_from(['"9223372036854775808"', '"99999999999999999999"', json.dumps("1" + "0" * 40)]),
        st.sampled_from(["9223372036854775807", '"9223372036854775807"', "0", "-0", "1e-400", "-1e400"]),
    )


# One of each kind of payload docs/contract.md §1 lists, as in the hand-written seed: drawn often
# enough that every kind is in play in every run, whatever else the run draws.
CATALOGUE = (
    None,
    "null",
    "[1, 2, 3]",
    "42",
    '"hello"',
    "{}",
    '{"workspaceId": 1}',
    '{"workspace_id": null}',
    '{"page": "x", "workspace_id": null}',
    '{"workspace_id": 999}',
    '{"workspace_id": "999"}',
    '{"workspace_id": true}',
    '{"workspace_id": "abc"}',
    '{"workspace_id": {"id": 1}}',
    '{"workspace_id": [1]}',
    '{"workspace_id": 1.5}',
    '{"workspace_id": 1e400}',
    '{"workspace_id": 99999999999999999999999}',
    '{"workspace_id": "99999999999999999999999"}',
    '{"workspace_id": "9223372036854775808"}',
    '{"workspace_id": -1}',
    '{"workspace_id": " 1"}',
    '{"workspace_id": "\\uff11"}',
)


def _object(fragment: str, extra: str, first: bool) -> str:
    if first:
        return f'{{"workspace_id": {fragment}{extra}}}'
    return f'{{"page": "x"{extra}, "workspace_id": {fragment}}}'


@st.composite
def payloads(draw: st.DrawFn, nameable: list[int]) -> str | None:
    """An activity's payload as jsonb text: every kind docs/contract.md §1 lists."""
    kind = draw(
        st.sampled_from(["sql_null", "json_null", "object", "object", "object", "other_object", "not_object"])
    )
    if kind == "sql_null":
        return None
    if kind == "json_null":
        return "null"
    if kind == "object":
        extra = draw(st.sampled_from(["", ', "page": "board"', ', "nested": {"workspace_id": 1}']))
        return _object(draw(workspace_id_fragments(nameable)), extra, draw(st.booleans()))
    if kind == "other_object":
        return draw(
            st.sampled_from(["{}", '{"workspaceId": 1}', '{"workspace": {"id": 1}}', '{"foo": "bar"}'])
        )
    # Not an object at all, though some look as if they name a workspace.
    numbers = workspace_numbers(nameable)
    return draw(
        st.one_of(
            st.sampled_from(["true", "[]", '[{"workspace_id": 1}]']),
            numbers.map(str),
            numbers.map(lambda n: json.dumps(str(n))),
            numbers.map(lambda n: json.dumps([n, {"workspace_id": n}])),
        )
    )


@st.composite
def aimed_activities(draw: st.DrawFn, targets: list[tuple[int | None, int]]) -> tuple[int | None, str]:
    """An activity whose payload names (or nearly names) a workspace its user belongs to."""
    user_id, workspace_id = draw(st.sampled_from(targets))
    return user_id, _object(draw(spellings(workspace_id)), "", draw(st.booleans()))


@st.composite
def legacy_datasets(draw: st.DrawFn) -> LegacyDataset:
    """A legacy dataset at 004 with users owning zero, one or several workspaces, and the rest."""
    user_count = draw(
        st.sampled_from([0, 1, 2, 3, 4, 5]) if draw(st.integers(0, 9)) == 0 else st.integers(1, 5)
    )
    users = tuple(User(i, draw(instants)) for i in range(1, user_count + 1))
    user_ids = [u.id for u in users]

    workspaces: tuple[Workspace, ...] = ()
    if users:
        ids = draw(st.lists(st.integers(1, MAX_WORKSPACE_ID), unique=True, max_size=7))
        # Inserted in the drawn order: neither ids nor rows follow created_at.
        workspaces = tuple(Workspace(i, draw(st.sampled_from(user_ids)), draw(instants)) for i in ids)

    memberships: tuple[Membership, ...] = ()
    if workspaces:
        pairs = draw(
            st.lists(
                st.tuples(st.sampled_from([w.id for w in workspaces]), st.sampled_from(user_ids)),
                unique=True,
                max_size=8,
            )
        )
        # Owners among them get whatever profile is drawn: missing and non-owner rows are the point.
        memberships = tuple(Membership(w, u, draw(st.sampled_from(PROFILES))) for w, u in pairs)

    credentials: tuple[Credential, ...] = ()
    if users:
        owners = draw(st.lists(st.sampled_from(user_ids), max_size=4))
        credentials = tuple(Credential(100 + i, u) for i, u in enumerate(owners))

    # Registrations whose user was deleted (None) are as likely as any user's.
    registration_users = draw(st.lists(st.sampled_from([None, *user_ids]), max_size=4))
    registrations = tuple(Registration(200 + i, u) for i, u in enumerate(registration_users))

    events: tuple[Event, ...] = ()
    if registrations:
        event_rows = draw(
            st.lists(
                st.tuples(st.sampled_from([r.id for r in registrations]), st.sampled_from(EVENT_STATUSES)),
                max_size=5,
            )
        )
        events = tuple(Event(300 + i, r, s) for i, (r, s) in enumerate(event_rows))

    # Payloads name the legacy workspaces, and the ids 006 gives the personal workspaces
    # it creates (the identity sequence continues after the highest id).
    highest = max((w.id for w in workspaces), default=0)
    nameable = [w.id for w in workspaces] + list(range(highest + 1, highest + 3))
    anything = st.tuples(st.sampled_from([None, *user_ids]), payloads(nameable))
    # Half aimed: at a workspace the user is in (a member, or its owner after 006) or, with
    # no user, at any workspace, including those 006 creates (the path where the payload
    # decides); or at one the user is not in (where it must not).
    belongs = {(m.user_id, m.workspace_id) for m in memberships} | {(w.owner_id, w.id) for w in workspaces}
    strangers = [(u, w.id) for w in workspaces for u in user_ids if (u, w.id) not in belongs]
    targets: list[tuple[int | None, int]] = [*sorted(belongs), *strangers]
    targets += [(None, workspace_id) for workspace_id in nameable]
    catalogue = st.tuples(st.sampled_from([None, *user_ids]), st.sampled_from(CATALOGUE))
    kinds = [anything, catalogue, aimed_activities(targets)] if targets else [anything, catalogue]
    activity_rows = draw(st.lists(st.one_of(kinds), max_size=10))
    activities = tuple(Activity(400 + i, u, p) for i, (u, p) in enumerate(activity_rows))

    return LegacyDataset(users, workspaces, memberships, credentials, registrations, events, activities)
