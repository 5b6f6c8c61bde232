"""The fingerprint sees a changed row whatever its digest, and a backup's record says which digest it used."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from migration_gate.core import dsn
from migration_gate.core.identity import identify
from migration_gate.operations import client_tools, fingerprint
from migration_gate.plugin.databases import CheckpointDatabases


@pytest.mark.parametrize("digest", sorted(fingerprint.DIGESTS))
def test_each_digest_sees_one_changed_row_and_nothing_else(
    gate: CheckpointDatabases, clone: Callable[[str], str], digest: str
) -> None:
    url = clone(gate.last)
    with dsn.connect(url) as conn:
        tools = client_tools.find_tools(identify(conn).server_major, [gate.server.pg_ctl.parent])
    before = fingerprint.take(url, tools, digest=digest)
    assert fingerprint.differences(before, fingerprint.take(url, tools, digest=digest)) == []
    with dsn.connect(url) as conn:
        conn.execute(
            "UPDATE public.credentials SET name = name || '.' WHERE id = (SELECT min(id) FROM public.credentials)"
        )
    assert fingerprint.differences(before, fingerprint.take(url, tools, digest=digest)) == [
        "table public.credentials: same "
        + str(before.tables["public.credentials"][0])
        + " rows, different contents"
    ]


def test_a_record_from_before_the_digest_was_named_is_read_as_md5() -> None:
    data = fingerprint.Fingerprint((), "", {}, {}, 0).to_json()
    assert data["digest"] == fingerprint.DIGEST
    del data["digest"]
    assert fingerprint.Fingerprint.from_json(data).digest == "md5-64"


def test_a_table_whose_rows_cannot_be_hashed_as_they_are_falls_back_to_their_text(
    gate: CheckpointDatabases, clone: Callable[[str], str]
) -> None:
    url = clone(gate.last)
    with dsn.connect(url) as conn:
        conn.execute("CREATE TABLE public.places (id int, at point, doc json)")
        conn.execute("INSERT INTO public.places VALUES (1, '(1,2)', '{\"a\": 1}'), (2, '(3,4)', '[]')")
        tools = client_tools.find_tools(identify(conn).server_major, [gate.server.pg_ctl.parent])
    before = fingerprint.take(url, tools)
    assert before.digest == "hash_record"
    with dsn.connect(url) as conn:
        conn.execute("UPDATE public.places SET at = '(5,6)' WHERE id = 2")
    assert fingerprint.differences(before, fingerprint.take(url, tools)) == [
        "table public.places: same 2 rows, different contents"
    ]
