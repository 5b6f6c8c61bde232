"""Playbook 5.3: create and edit a credential; workspace_id NOT NULL holds in the database itself."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from migration_gate.plugin.smoke import Deployment, expect
from migration_gate.reference.api import APP_ROLE


def test_a_credential_is_created_and_edited_in_its_workspace_and_its_secret_never_returned(
    deployment: Deployment,
) -> None:
    api, actors = deployment.api, deployment.actors
    ws, user = actors.workspace_id, actors.user_id
    secret, new_secret = f"s3cret-{deployment.run_id}", f"r0tated-{deployment.run_id}"

    created = api.request(
        "POST",
        f"/workspaces/{ws}/credentials",
        user=user,
        json_body={"name": deployment.name("credential"), "provider": "github", "secret": secret},
    )
    credential = expect(created, 201)
    assert secret not in created.text, f"the secret came back: {created.text}"
    assert credential["workspace_id"] == ws
    assert credential["name"] == deployment.name("credential")
    assert credential["provider"] == "github"

    edited = api.request(
        "PATCH",
        f"/workspaces/{ws}/credentials/{credential['id']}",
        user=user,
        json_body={"name": deployment.name("credential renamed"), "secret": new_secret},
    )
    after_edit = expect(edited, 200)
    assert new_secret not in edited.text and secret not in edited.text, f"a secret came back: {edited.text}"
    assert after_edit == {**credential, "name": deployment.name("credential renamed")}

    with deployment.db().connect() as conn:
        row = conn.execute(
            "SELECT workspace_id, user_id, name, provider, secret FROM credentials WHERE id = %s",
            (credential["id"],),
        ).fetchone()
    assert row is not None, f"credential {credential['id']} is not in the database"
    workspace_id, user_id, name, provider, stored_secret = row
    assert (workspace_id, user_id, name, provider) == (
        ws,
        user,
        deployment.name("credential renamed"),
        "github",
    )
    if deployment.reference is not None:  # a deployment may store secrets encrypted
        assert stored_secret == new_secret


def test_a_credential_without_a_workspace_is_refused_by_the_database_itself(deployment: Deployment) -> None:
    api, actors = deployment.api, deployment.actors
    credential = expect(
        api.request(
            "POST",
            f"/workspaces/{actors.workspace_id}/credentials",
            user=actors.user_id,
            json_body={"name": deployment.name("not-null probe"), "provider": "slack", "secret": "x"},
        ),
        201,
    )
    database = deployment.writable_db()
    with database.connect() as conn:
        # As the application's role, inside a transaction that is always rolled back.
        for statement, params in (
            ("UPDATE credentials SET workspace_id = NULL WHERE id = %s", (credential["id"],)),
            (
                "INSERT INTO credentials (user_id, workspace_id, name, provider, secret)"
                " VALUES (%s, NULL, 'no workspace', 'slack', 'x')",
                (actors.user_id,),
            ),
        ):
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
                    conn.execute(statement, params)
            except pg_errors.NotNullViolation:
                continue
            except psycopg.Error as exc:
                raise AssertionError(
                    f"{statement!r} as {APP_ROLE} failed, but not on NOT NULL: {exc.sqlstate} {exc}"
                ) from None
            raise AssertionError(
                f"{statement!r} as {APP_ROLE} was accepted: credentials.workspace_id can be left NULL"
            )
        stored = conn.execute(
            "SELECT workspace_id FROM credentials WHERE id = %s", (credential["id"],)
        ).fetchone()
    assert stored == (actors.workspace_id,)
