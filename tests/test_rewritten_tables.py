"""008 writes webhook_events and activities as new tables: they must behave as the old ones did.

The application inserts without ids, statuses or dates, so the new tables need the old
defaults, identity sequences that continue past every id ever handed out (archive
included), and the old owner and grants. A table with something a rewrite would not
carry over (a trigger, a policy, a column privilege) is refused before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from migration_gate.core import dsn, runner
from migration_gate.core.errors import MigrationFailed
from migration_gate.core.plan import load_plan
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import REPO

REWRITTEN = ("webhook_events", "activities")

# Every id the old table handed out, wherever 008 put the row.
IDS_EVER = {
    "webhook_events": "SELECT max(id) FROM (SELECT id FROM public.webhook_events"
    " UNION ALL SELECT id FROM legacy_archive.webhook_events) ids",
    "activities": "SELECT max(id) FROM (SELECT id FROM public.activities"
    " UNION ALL SELECT id FROM legacy_archive.activities"
    " UNION ALL SELECT activity_id FROM legacy_archive.activity_payloads) ids",
}

TABLE_FACTS = """
SELECT c.relowner::regrole::text, c.relacl::text,
       s.relowner::regrole::text, s.relacl::text
FROM pg_class c
JOIN pg_class s ON s.oid = pg_get_serial_sequence(c.oid::regclass::text, 'id')::regclass
WHERE c.oid = %s::regclass
"""


@pytest.fixture
def after_008(clone: Callable[[str], str]) -> Iterator[psycopg.Connection]:
    """A private copy of the seeded database after 008, to insert into."""
    with dsn.connect(clone("after_008")) as conn:
        yield conn


def test_new_events_take_the_old_defaults_and_a_fresh_id(after_008: psycopg.Connection) -> None:
    highest = after_008.execute(IDS_EVER["webhook_events"]).fetchone()[0]
    registration, workspace = after_008.execute(
        "SELECT id, workspace_id FROM public.webhook_registrations ORDER BY id LIMIT 1"
    ).fetchone()
    row = after_008.execute(
        "INSERT INTO public.webhook_events (registration_id, event_type, body, workspace_id)"
        " VALUES (%s, 'probe', '{}', %s) RETURNING id, status, attempts, created_at IS NOT NULL",
        (registration, workspace),
    ).fetchone()
    assert row[0] > highest, "the identity sequence must continue past every id 004 handed out"
    assert row[1:] == ("pending", 0, True)
    with pytest.raises(psycopg.errors.CheckViolation, match="webhook_events_status_check"):
        after_008.execute(
            "INSERT INTO public.webhook_events (registration_id, event_type, body, workspace_id, status)"
            " VALUES (%s, 'probe', '{}', %s, 'lost')",
            (registration, workspace),
        )


def test_new_activities_take_the_old_defaults_and_a_fresh_id(after_008: psycopg.Connection) -> None:
    highest = after_008.execute(IDS_EVER["activities"]).fetchone()[0]
    workspace = after_008.execute("SELECT min(id) FROM public.workspaces").fetchone()[0]
    row = after_008.execute(
        "INSERT INTO public.activities (action, workspace_id) VALUES ('probe', %s)"
        " RETURNING id, created_at IS NOT NULL",
        (workspace,),
    ).fetchone()
    assert row[0] > highest, "the identity sequence must continue past every id 004 handed out"
    assert row[1] is True
    for column in ("action", "workspace_id"):
        with pytest.raises(psycopg.errors.NotNullViolation):
            values = {"action": "'probe'", "workspace_id": str(workspace)} | {column: "NULL"}
            after_008.execute(
                f"INSERT INTO public.activities (action, workspace_id) VALUES ({values['action']}, {values['workspace_id']})"
            )


@pytest.mark.parametrize("table", REWRITTEN)
def test_the_new_table_keeps_the_old_owner_and_grants(gate: CheckpointDatabases, table: str) -> None:
    with gate.connect("after_007") as conn:
        before = conn.execute(TABLE_FACTS, (f"public.{table}",)).fetchone()
    with gate.connect("after_008") as conn:
        after = conn.execute(TABLE_FACTS, (f"public.{table}",)).fetchone()
    assert after == before


@pytest.mark.parametrize(
    ("table", "extra", "named"),
    [
        (
            "activities",
            (
                "CREATE FUNCTION public.probe_audit() RETURNS trigger LANGUAGE plpgsql AS"
                " 'BEGIN RETURN NEW; END'",
                "CREATE TRIGGER probe_audit AFTER INSERT ON public.activities"
                " FOR EACH ROW EXECUTE FUNCTION public.probe_audit()",
            ),
            "trigger probe_audit",
        ),
        (
            "webhook_events",
            ("CREATE POLICY probe_policy ON public.webhook_events USING (true)",),
            "policy probe_policy",
        ),
        ("activities", ("ALTER TABLE public.activities ENABLE ROW LEVEL SECURITY",), "row level security"),
        (
            "webhook_events",
            ("GRANT SELECT (status) ON public.webhook_events TO PUBLIC",),
            "privileges on column status",
        ),
    ],
)
def test_008_refuses_a_table_a_rewrite_would_strip(
    clone: Callable[[str], str], table: str, extra: tuple[str, ...], named: str
) -> None:
    url = clone("after_007")
    with dsn.connect(url) as conn:
        for statement in extra:
            conn.execute(statement)
    with pytest.raises(MigrationFailed) as refused:
        runner.migrate(url, load_plan(REPO / "migrations"))
    assert f"008 rewrites {table} into a new table, which would not keep its {named}" in str(refused.value)
    with dsn.connect(url) as conn:
        still = conn.execute(
            "SELECT count(*) FROM pg_attribute"
            " WHERE attrelid = 'public.activities'::regclass AND attname = 'payload' AND NOT attisdropped"
        ).fetchone()[0]
        applied = conn.execute("SELECT max(version) FROM migration_gate.ledger").fetchone()[0]
    assert still == 1, "nothing of 008 may remain after it refused"
    assert applied == 7


BIGINT_MAX = 9223372036854775807


@pytest.mark.parametrize(
    ("payload", "placed"),
    [
        (f'{{"workspace_id": "{BIGINT_MAX}"}}', True),  # 19 significant digits, at the limit
        (f'{{"workspace_id": "000{BIGINT_MAX}"}}', True),  # leading zeros do not count
        (f'{{"workspace_id": {BIGINT_MAX}}}', True),
        (f'{{"workspace_id": {BIGINT_MAX}.0}}', True),
        ('{"workspace_id": 9.223372036854775807e18}', True),
        (f'{{"workspace_id": {BIGINT_MAX - 1}.6}}', False),  # rounds to the workspace, is not it
        (f'{{"workspace_id": "{BIGINT_MAX + 1}"}}', False),  # beyond bigint
        (f'{{"workspace_id": {BIGINT_MAX + 1}}}', False),
        (f'{{"workspace_id": " {BIGINT_MAX}"}}', False),
    ],
)
def test_a_payload_names_a_workspace_at_the_edge_of_bigint_exactly(
    clone: Callable[[str], str], payload: str, placed: bool
) -> None:
    """008 looks the named workspace up by a bigint: a number counts only when integral, a digit
    string only within bigint's range. The edges of that, one by one.

    A workspace whose id is bigint's maximum, and an activity without a user naming it:
    placed there, or (naming nothing) moved to the archive.
    """
    url = clone("after_007")
    with dsn.connect(url) as conn:
        owner = conn.execute("SELECT min(id) FROM public.users").fetchone()[0]
        conn.execute(
            "INSERT INTO public.workspaces (id, owner_id, name) VALUES (%s, %s, 'edge')",
            (BIGINT_MAX, owner),
        )
        activity = conn.execute(
            "INSERT INTO public.activities (user_id, action, payload) VALUES (NULL, 'edge', %s) RETURNING id",
            (payload,),
        ).fetchone()[0]
    runner.migrate(url, load_plan(REPO / "migrations"))
    with dsn.connect(url) as conn:
        landed = conn.execute(
            "SELECT workspace_id FROM public.activities WHERE id = %s", (activity,)
        ).fetchone()
        archived = conn.execute(
            "SELECT count(*) FROM legacy_archive.activities WHERE id = %s", (activity,)
        ).fetchone()[0]
    if placed:
        assert landed == (BIGINT_MAX,) and archived == 0
    else:
        assert landed is None and archived == 1


@pytest.mark.parametrize("table", REWRITTEN)
def test_the_new_table_has_statistics_on_every_column(gate: CheckpointDatabases, table: str) -> None:
    """A new table starts without statistics: 008 gathers them, or the first plans are guesses."""
    with gate.connect("after_008") as conn:
        missing = [
            name
            for (name,) in conn.execute(
                "SELECT a.attname FROM pg_attribute a"
                " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
                " AND NOT EXISTS (SELECT FROM pg_stats s WHERE s.schemaname = 'public'"
                " AND s.tablename = %s AND s.attname = a.attname)",
                (f"public.{table}", table),
            )
        ]
    assert missing == []
