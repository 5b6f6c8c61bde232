"""A realistic, deterministic legacy volume at the 004 shape, bulk-loaded with ``COPY``.

Where ``fixtures/legacy_seed.sql`` has one row per dirty case, this has them in
proportion: users owning no, one or several workspaces (with tied and out-of-order
``created_at``), owners without a membership or with a non-owner profile, members who
own nothing, credentials of users in no workspace, registrations whose user was
deleted (with events), activities without a user, and every kind of payload. The same
seed always gives the same rows, ids included.

Loading works the way ``pg_restore`` does: rows are formatted in Python as COPY text
blocks (PostgreSQL parses one block while Python formats the next), indexes that back
no constraint are dropped first and rebuilt once at the end (one sort instead of a
random B-tree insert per row), and foreign keys are not checked row by row
(``session_replication_role = replica``, when the role may set it): the rows are
consistent by construction, and a test checks that they are. All of it is one
transaction.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from migration_gate.core import dsn, ledger
from migration_gate.core.contract import LEGACY_COLUMNS
from migration_gate.core.errors import UsageError

Progress = Callable[[str], None]
T = TypeVar("T")


class _Shares(Generic[T]):
    """Picks each value with its share of a uniform draw in [0, 1)."""

    def __init__(self, shares: tuple[tuple[float, T], ...]) -> None:
        self.bounds: list[float] = []
        self.values: list[T] = []
        total = 0.0
        for share, value in shares:
            total += share
            self.bounds.append(total)
            self.values.append(value)
        self.bounds[-1] = 1.0  # shares that sum to just under 1 still cover every draw

    def pick(self, draw: float) -> T:
        return self.values[bisect.bisect_right(self.bounds, draw)]


# Tables the generator fills, in load order; profiles are 001's reference rows.
TABLES = (
    "users",
    "workspaces",
    "workspace_members",
    "credentials",
    "webhook_registrations",
    "webhook_events",
    "activities",
)
IDENTITY_TABLES = tuple(table for table in TABLES if table != "workspace_members")
LEGACY_VERSIONS = (1, 2, 3, 4)

# Rows per COPY block: large enough to keep the per-call overhead away, small enough
# that PostgreSQL starts parsing early.
BLOCK_ROWS = 5_000

EPOCH_2019 = 1_546_300_800  # 2019-01-01 00:00:00 UTC
DAY = 86_400
YEAR = 365 * DAY

# What users own: (share, kind). "member" owns nothing but belongs to someone's
# workspace; "alone" owns nothing and belongs nowhere (yet has credentials, activities).
OWNERSHIP = _Shares(((0.14, "member"), (0.07, "alone"), (0.59, "one"), (0.20, "several")))
# An owner's row in their own workspace: right, missing, or a lesser profile.
OWNER_MEMBERSHIP = _Shares(((0.86, "owner"), (0.07, "missing"), (0.07, "lesser")))
SHARE_TIED_WORKSPACES = 0.15  # of users owning several, two created at the same instant
SHARE_FOREIGN_OWNER_PROFILE = 0.01  # of extra members, holding `owner` where they own nothing
SHARE_ORPHAN_REGISTRATIONS = 0.12  # of webhook registrations, user deleted (user_id NULL)
SHARE_ACTIVITIES_WITHOUT_USER = 0.05

# Per user and per activity, the other tables' sizes.
CREDENTIALS_PER_USER = (0, 1, 1, 1, 2, 2, 3, 4)
REGISTRATIONS_PER_USER = 0.25
EVENTS_PER_ACTIVITY = 0.25

PROVIDERS = ("github", "slack", "aws", "gcp", "stripe", "azure")
EVENT_TYPES = ("activity.created", "credential.updated", "workspace.joined")
EVENT_STATUSES = _Shares(((0.70, "delivered"), (0.10, "failed"), (0.15, "pending"), (0.05, "processing")))
ACTIONS = ("login", "view", "export", "update", "bulk", "note")

# The payload kinds of docs/contract.md §1 and their shares of all activities, as COPY text. w is
# a workspace the activity's user belongs to (any workspace when it has no user), o one
# they do not belong to, x an id no workspace has, n a number.
PayloadFormat = Callable[[int, int, int, int], str]
PAYLOAD_KINDS: _Shares[PayloadFormat] = _Shares(
    (
        (0.20, lambda w, o, x, n: r"\N"),  # SQL NULL
        (0.20, lambda w, o, x, n: f'{{"page": "dashboard", "ms": {n}}}'),  # an object without workspace_id
        (0.22, lambda w, o, x, n: f'{{"workspace_id": {w}, "page": "board"}}'),  # a number naming theirs
        (0.08, lambda w, o, x, n: f'{{"workspace_id": "{w}"}}'),  # a numeric string
        (0.02, lambda w, o, x, n: f'{{"workspace_id": "00{w}"}}'),  # leading zeros: still digits
        (0.01, lambda w, o, x, n: f'{{"workspace_id": " {w}"}}'),  # a space: not only digits
        (0.01, lambda w, o, x, n: f'{{"workspace_id": {w}.0}}'),  # an integral float
        (0.01, lambda w, o, x, n: f'{{"workspace_id": {w}.5}}'),  # a fractional one
        (0.02, lambda w, o, x, n: f'{{"workspace_id": "ws-{w}"}}'),  # garbage
        (0.02, lambda w, o, x, n: '{"workspace_id": null}'),  # JSON null as the value
        (0.02, lambda w, o, x, n: f'{{"workspace_id": {x}}}'),  # a workspace that does not exist
        (0.04, lambda w, o, x, n: f'{{"workspace_id": {o}}}'),  # one the user is not a member of
        (0.005, lambda w, o, x, n: f'{{"workspace_id": 99999999999999999999{n}}}'),  # beyond bigint
        (0.005, lambda w, o, x, n: '{"workspace_id": "9223372036854775808"}'),  # bigint max + 1, as digits
        (0.01, lambda w, o, x, n: f'{{"workspace_id": {{"id": {w}}}}}'),  # a nested object
        (0.01, lambda w, o, x, n: '{"workspace_id": true}'),  # a boolean
        (0.03, lambda w, o, x, n: f"[{w}, {n}]"),  # an array
        (0.02, lambda w, o, x, n: str(n)),  # a scalar number
        (0.01, lambda w, o, x, n: f'"{w}"'),  # a scalar string
        (0.02, lambda w, o, x, n: "null"),  # JSON null
    )
)


class _Clock:
    """COPY text for UTC instants: each hour formatted once, minutes and seconds looked up."""

    _MINUTES_SECONDS = tuple(f"{m:02d}:{s:02d}+00" for m in range(60) for s in range(60))

    def __init__(self) -> None:
        self._hours: dict[int, str] = {}

    def __call__(self, second: int) -> str:
        hour, rest = divmod(second, 3600)
        prefix = self._hours.get(hour)
        if prefix is None:
            prefix = self._hours[hour] = time.strftime("%Y-%m-%d %H:", time.gmtime(hour * 3600))
        return prefix + self._MINUTES_SECONDS[rest]


@dataclass(frozen=True)
class LegacyVolume:
    """How many rows of what: the sizes ``generate`` derives from users and activities."""

    users: int
    activities: int
    seed: int = 0

    def rng(self, table: str) -> random.Random:
        # One stream per table: a change in how one table is drawn leaves the others be.
        return random.Random(f"migration-gate:{self.seed}:{table}")


class _World:
    """The legacy rows, drawn table by table: each table's method yields its rows as COPY text."""

    def __init__(self, volume: LegacyVolume, profiles: dict[str, int]) -> None:
        self.volume = volume
        self.profiles = profiles
        self.clock = _Clock()
        self.user_created: list[int] = []  # index = user id - 1
        self.ownership: list[str] = []
        self.workspace_owner: list[int] = []  # index = workspace id - 1
        self.workspace_created: list[int] = []
        self.belongs: dict[int, list[int]] = {}  # user id → workspaces they own or are members of
        self.registrations = 0
        self.counts: dict[str, int] = {}

    def blocks(self, table: str) -> Iterator[str]:
        """``table``'s rows as COPY text, in blocks, drawn from the table's own stream; its count kept."""
        rows: Iterator[str] = getattr(self, table)(self.volume.rng(table))
        block: list[str] = []
        count = 0
        for row in rows:
            block.append(row)
            if len(block) == BLOCK_ROWS:
                count += len(block)
                yield "".join(block)
                block = []
        if block:
            count += len(block)
            yield "".join(block)
        self.counts[table] = count

    def users(self, rng: random.Random) -> Iterator[str]:
        n = self.volume.users
        clock = self.clock

        for user_id in range(1, n + 1):
            # Sign-ups spread over 2019-2020, in id order with some jitter.
            created = EPOCH_2019 + (2 * YEAR * user_id) // (n + 1) + int(rng.random() * DAY)
            self.user_created.append(created)
            self.ownership.append(OWNERSHIP.pick(rng.random()))
            yield f"{user_id}\tuser{user_id}@example.com\tUser {user_id}\t{clock(created)}\n"

    def workspaces(self, rng: random.Random) -> Iterator[str]:
        clock = self.clock

        workspace_id = 0
        for index, kind in enumerate(self.ownership):
            if kind not in ("one", "several"):
                continue
            owner = index + 1
            count = 1 if kind == "one" else 2 + int(rng.random() * 4)
            tied = kind == "several" and rng.random() < SHARE_TIED_WORKSPACES
            previous = None
            for number in range(count):
                if tied and number == 1 and previous is not None:
                    created = previous  # same instant as the one before: the id decides
                else:
                    # Any time in the two years after sign-up: ids and created_at disagree often.
                    created = self.user_created[index] + int(rng.random() * 2 * YEAR)
                previous = created
                workspace_id += 1
                self.workspace_owner.append(owner)
                self.workspace_created.append(created)
                self.belongs.setdefault(owner, []).append(workspace_id)
                yield f"{workspace_id}\t{owner}\tWorkspace {workspace_id}\t{clock(created)}\n"

    def workspace_members(self, rng: random.Random) -> Iterator[str]:
        clock = self.clock
        owner_profile = self.profiles["owner"]
        lesser = [self.profiles[code] for code in ("admin", "member", "viewer")]
        ordinary = [self.profiles[code] for code in ("admin", "member", "member", "member", "viewer")]
        workspaces = len(self.workspace_owner)
        users = self.volume.users

        taken: set[tuple[int, int]] = set()

        def member(workspace_id: int, user_id: int, profile: int) -> str:
            taken.add((workspace_id, user_id))
            if self.workspace_owner[workspace_id - 1] != user_id:
                self.belongs.setdefault(user_id, []).append(workspace_id)
            joined = max(self.workspace_created[workspace_id - 1], self.user_created[user_id - 1])
            return f"{workspace_id}\t{user_id}\t{profile}\t{clock(joined + int(rng.random() * YEAR))}\n"

        for workspace_id in range(1, workspaces + 1):
            owner = self.workspace_owner[workspace_id - 1]
            case = OWNER_MEMBERSHIP.pick(rng.random())
            if case == "owner":
                yield member(workspace_id, owner, owner_profile)
            elif case == "lesser":
                yield member(workspace_id, owner, lesser[int(rng.random() * 3)])
            # Colleagues: mostly none or one or two, a few teams.
            for _ in range((0, 0, 1, 1, 2, 3, 5)[int(rng.random() * 7)]):
                user_id = 1 + int(rng.random() * users)
                if (
                    (workspace_id, user_id) in taken
                    or user_id == owner
                    or self.ownership[user_id - 1] == "alone"
                ):
                    continue
                foreign_owner = rng.random() < SHARE_FOREIGN_OWNER_PROFILE
                profile = owner_profile if foreign_owner else ordinary[int(rng.random() * 5)]
                yield member(workspace_id, user_id, profile)
        if not workspaces:
            return
        # Every "member" user belongs somewhere, though they own nothing.
        for index, kind in enumerate(self.ownership):
            user_id = index + 1
            if kind == "member" and user_id not in self.belongs:
                workspace_id = 1 + int(rng.random() * workspaces)
                yield member(workspace_id, user_id, ordinary[int(rng.random() * 5)])

    def credentials(self, rng: random.Random) -> Iterator[str]:
        clock = self.clock

        credential_id = 0
        for index in range(self.volume.users):
            user_id = index + 1
            for _ in range(CREDENTIALS_PER_USER[int(rng.random() * len(CREDENTIALS_PER_USER))]):
                credential_id += 1
                provider = PROVIDERS[int(rng.random() * len(PROVIDERS))]
                created = self.user_created[index] + int(rng.random() * YEAR)
                updated = created + int(rng.random() * YEAR)
                yield (
                    f"{credential_id}\t{user_id}\t{provider}-{credential_id}\t{provider}\t"
                    f"s-{credential_id:08x}\t{clock(created)}\t{clock(updated)}\n"
                )

    def webhook_registrations(self, rng: random.Random) -> Iterator[str]:
        clock = self.clock
        users = self.volume.users
        self.registrations = max(1, round(users * REGISTRATIONS_PER_USER)) if users else 0

        for registration_id in range(1, self.registrations + 1):
            index = int(rng.random() * users)
            created = self.user_created[index] + int(rng.random() * YEAR)
            orphan = rng.random() < SHARE_ORPHAN_REGISTRATIONS
            user = r"\N" if orphan else str(index + 1)
            kinds = rng.random()
            event_types = (
                "{activity.created}"
                if kinds < 0.6
                else "{activity.created,credential.updated}"
                if kinds < 0.95
                else "{}"
            )
            active = "t" if rng.random() < 0.8 else "f"
            yield (
                f"{registration_id}\t{user}\thttps://hooks{registration_id}.example.com/in\t"
                f"{event_types}\twh-{registration_id:08x}\t{active}\t{clock(created)}\n"
            )

    def webhook_events(self, rng: random.Random) -> Iterator[str]:
        clock = self.clock
        count = round(self.volume.activities * EVENTS_PER_ACTIVITY) if self.registrations else 0
        registrations = self.registrations

        for event_id in range(1, count + 1):
            # Busy registrations get most events: skewed towards the low ids.
            registration_id = 1 + int(registrations * rng.random() ** 2)
            status = EVENT_STATUSES.pick(rng.random())
            created = EPOCH_2019 + 3 * YEAR + (YEAR * event_id) // (count + 1)
            if status in ("delivered", "failed"):
                attempts = 1 if status == "delivered" else 1 + int(rng.random() * 5)
                processed = clock(created + 1 + int(rng.random() * 600))
            else:
                attempts = 0 if status == "pending" else 1
                processed = r"\N"
            event_type = EVENT_TYPES[int(rng.random() * 3)]
            yield (
                f"{event_id}\t{registration_id}\t{event_type}\t"
                f'{{"n": {event_id}, "type": "{event_type}"}}\t{status}\t{attempts}\t'
                f"{clock(created)}\t{processed}\n"
            )

    def activities(self, rng: random.Random) -> Iterator[str]:
        draw = rng.random
        clock = self.clock
        count = self.volume.activities
        users = self.volume.users
        workspaces = len(self.workspace_owner)
        belongs = self.belongs
        bounds, formats = PAYLOAD_KINDS.bounds, PAYLOAD_KINDS.values
        without_payload = formats[0]
        span = 2 * YEAR

        for activity_id in range(1, count + 1):
            created = clock(EPOCH_2019 + 2 * YEAR + (span * activity_id) // (count + 1))
            action = ACTIONS[int(draw() * 6)]
            payload_format = formats[bisect.bisect_right(bounds, draw())]
            if draw() >= SHARE_ACTIVITIES_WITHOUT_USER:
                # A few users do most things.
                user_id = 1 + int(users * draw() ** 2)
                user = str(user_id)
                theirs = belongs.get(user_id)
            else:
                user = r"\N"
                theirs = None
            if payload_format is without_payload:
                yield f"{activity_id}\t{user}\t{action}\t\\N\t{created}\n"
                continue
            w = theirs[int(draw() * len(theirs))] if theirs else 1 + int(draw() * workspaces)
            o = 1 + int(draw() * workspaces)
            if theirs and o in theirs:
                o = workspaces + 1  # no such workspace: not theirs either
            payload = payload_format(w, o, workspaces + 1 + int(draw() * 1000), activity_id)
            yield f"{activity_id}\t{user}\t{action}\t{payload}\t{created}\n"


def _refuse_unless_empty_004(conn: psycopg.Connection, target: str) -> dict[str, int]:
    """Profiles by code, once the database is known to be at 004 and to hold no legacy rows."""
    applied = sorted(ledger.read(conn))
    if not applied:
        raise UsageError(
            f"{target} has no migration ledger: run `migration-gate migrate --database URL --to 004` first"
        )
    if tuple(applied) != LEGACY_VERSIONS:
        last = f"{applied[-1]:03d}"
        raise UsageError(
            f"{target} is at {last}, not 004 (ledger versions {', '.join(f'{v:03d}' for v in applied)}): "
            "generate into a database migrated exactly to 004"
        )
    for table in TABLES:
        row = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(table))).fetchone()
        if row and row[0]:
            raise UsageError(
                f"{target} already holds rows in {table}: generate into an empty database at 004"
            )
    profiles: dict[str, int] = dict(conn.execute("SELECT code, id FROM profiles").fetchall())
    missing = {"owner", "admin", "member", "viewer"} - set(profiles)
    if missing:
        raise UsageError(f"{target} lacks the profiles {', '.join(sorted(missing))} that 001 inserts")
    return profiles


def _disable_row_by_row_foreign_keys(conn: psycopg.Connection) -> bool:
    """Skip per-row FK triggers for this transaction when the role may (superusers)."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def _drop_plain_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop the loaded tables' indexes that back no constraint; the statements that rebuild them."""
    indexes = conn.execute(
        """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indrelid = ANY (%s::regclass[])
          AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        ORDER BY c.relname
        """,
        (list(TABLES),),
    ).fetchall()
    for schema, name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
    return [definition for _, _, definition in indexes]


def generate(
    url: str,
    users: int,
    activities: int,
    seed: int = 0,
    progress: Progress = lambda line: None,
) -> dict[str, int]:
    """Fill the empty database at ``url`` (migrated to 004) with a legacy volume; rows per table."""
    if users < 1 or activities < 0:
        raise UsageError("--users must be at least 1 and --activities at least 0")
    target = dsn.describe(url)
    volume = LegacyVolume(users, activities, seed)
    with dsn.connect(url, autocommit=False) as conn:
        profiles = _refuse_unless_empty_004(conn, target)
        fast = _disable_row_by_row_foreign_keys(conn)
        # Truncating the (empty) tables in this transaction lets COPY FREEZE write rows
        # already frozen, as years-old staging rows are: no hint-bit rewrite afterwards.
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(table) for table in TABLES))
        )
        plain_indexes = _drop_plain_indexes(conn)
        world = _World(volume, profiles)
        for table in TABLES:
            started = time.perf_counter()
            statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(
                sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in LEGACY_COLUMNS[table])
            )
            # The queued writer sends from a thread: Python formats the next block meanwhile.
            cursor = conn.cursor()
            with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
                for block in world.blocks(table):
                    copy.write(block)
            progress(
                f"{table:<22} {world.counts[table]:>10} rows {time.perf_counter() - started:8.3f} s"
                + ("" if fast else " (foreign keys checked row by row: not a superuser)")
            )
        started = time.perf_counter()
        for definition in plain_indexes:
            conn.execute(definition.encode())
        progress(f"{len(plain_indexes)} indexes rebuilt {time.perf_counter() - started:25.3f} s")
        for table in IDENTITY_TABLES:
            # Keep the identity sequences past the explicit ids, as on a real database.
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({table}, 'id'), coalesce(max(id), 0) + 1, false) "
                    "FROM {ident}"
                ).format(table=sql.Literal(table), ident=sql.Identifier(table))
            )
        conn.commit()
    return dict(world.counts)
