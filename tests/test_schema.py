"""The schema snapshot: every object the migrations can make, compared by definition, nothing of anyone else's."""

from __future__ import annotations

from collections.abc import Callable

from migration_gate.core import dsn, schema


def test_a_change_of_each_kind_is_seen_and_named(clone: Callable[[str], str]) -> None:
    url = clone("after_008")
    with dsn.connect(url) as conn:
        before = schema.snapshot(conn, grants=True)
        conn.execute(
            "CREATE INDEX tmp_fix_idx ON public.activities (action);"
            " ALTER TABLE public.credentials ADD COLUMN note text DEFAULT 'x';"
            " ALTER TABLE public.webhook_events ALTER COLUMN attempts SET DEFAULT 1;"
            " DROP INDEX public.idx_activities_user;"
            " CREATE SCHEMA reporting;"
            " CREATE TYPE reporting.mood AS ENUM ('ok', 'bad');"
            " CREATE VIEW reporting.secrets AS SELECT id, secret FROM public.credentials;"
            " CREATE FUNCTION reporting.f(x integer) RETURNS integer LANGUAGE sql SECURITY DEFINER AS 'SELECT x';"
            " CREATE FUNCTION reporting.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"
            " CREATE TRIGGER touch BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION reporting.touch();"
            " GRANT SELECT ON reporting.secrets TO PUBLIC"
        )
        after = schema.snapshot(conn, grants=True)
    lines = [change.line() for change in schema.diff(before, after)]
    assert "added index public.tmp_fix_idx on public.activities (action)" in lines
    assert "dropped index public.idx_activities_user on public.activities (user_id)" in lines
    assert "added column public.credentials.note text DEFAULT 'x'::text" in lines
    assert (
        "altered column public.webhook_events.attempts: 'integer NOT NULL DEFAULT 0' → 'integer NOT NULL DEFAULT 1'"
        in lines
    )
    assert "added schema reporting" in lines
    assert "added type reporting.mood enum ('ok', 'bad')" in lines
    assert "added view reporting.secrets" in lines
    assert "added function reporting.f(x integer)" in lines
    assert "added trigger public.users.touch" in lines
    assert "added grant of SELECT on view reporting.secrets to PUBLIC" in lines
    # PostgreSQL's default EXECUTE for PUBLIC on a new function is a grant like any other.
    assert "added grant of EXECUTE on function reporting.f(x integer) to PUBLIC" in lines
    # In order: schemas, types, ..., grants last.
    kinds = [change.kind for change in schema.diff(before, after)]
    assert kinds == sorted(kinds, key=schema.KINDS.index)


def test_definitions_do_not_depend_on_the_search_path(clone: Callable[[str], str]) -> None:
    url = clone("after_008")
    with dsn.connect(url) as conn:
        usual = schema.snapshot(conn)
        conn.execute("SET search_path = legacy_archive")
        odd = schema.snapshot(conn)
        assert conn.execute("SHOW search_path").fetchone() == ("legacy_archive",)  # put back
    assert schema.diff(usual, odd) == []
    fk = usual[("constraint", "public.credentials.credentials_workspace_id_fkey")]
    assert "REFERENCES public.workspaces(id)" in fk.definition


def test_grants_only_when_asked_and_never_the_gate_schema_or_extensions(clone: Callable[[str], str]) -> None:
    url = clone("after_008")
    with dsn.connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public")
        objects = schema.snapshot(conn)
        with_grants = schema.snapshot(conn, grants=True)
    assert not any(kind == "grant" for kind, _ in objects)
    assert ("grant", "table public.credentials to fluxolab_devmode") in with_grants
    assert not any(name.startswith("migration_gate") for _, name in with_grants)
    assert not any("digest" in name for _, name in with_grants), "pgcrypto's functions are the extension's"
    assert ("table", "public.credentials") in objects
