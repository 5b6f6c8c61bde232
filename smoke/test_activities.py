"""Playbook 5.2: an action writes an audit row in the workspace of the request; the log reads newest first."""

from __future__ import annotations

from datetime import datetime

from migration_gate.plugin.smoke import Deployment, expect


def test_an_action_records_an_activity_in_the_workspace_of_the_request(deployment: Deployment) -> None:
    api, actors = deployment.api, deployment.actors
    ws, other_ws = actors.workspace_id, actors.other_workspace_id

    credential = expect(
        api.request(
            "POST",
            f"/workspaces/{ws}/credentials",
            user=actors.user_id,
            json_body={"name": deployment.name("audited"), "provider": "stripe", "secret": "x"},
        ),
        201,
    )

    latest = expect(api.request("GET", f"/workspaces/{ws}/activities?limit=1", user=actors.user_id), 200)
    assert latest["activities"], f"no activity in workspace {ws} after a write there"
    assert len(latest["activities"]) == 1, f"limit=1 gave {len(latest['activities'])} activities"
    activity = latest["activities"][0]
    assert activity["workspace_id"] == ws, (
        f"the activity of a write in workspace {ws} is in another: {activity}"
    )
    assert activity["action"] == "credential.created", activity
    assert activity.get("user_id", actors.user_id) == actors.user_id, activity

    elsewhere = expect(
        api.request("GET", f"/workspaces/{other_ws}/activities?limit=50", user=actors.other_user_id), 200
    )
    assert activity["id"] not in [a["id"] for a in elsewhere["activities"]], (
        f"activity {activity['id']} of workspace {ws} is listed in workspace {other_ws}"
    )

    with deployment.db().connect() as conn:
        row = conn.execute(
            "SELECT workspace_id, user_id, action FROM activities WHERE id = %s", (activity["id"],)
        ).fetchone()
        stored = conn.execute(
            "SELECT workspace_id FROM credentials WHERE id = %s", (credential["id"],)
        ).fetchone()
    assert row == (ws, actors.user_id, "credential.created"), (
        f"activity {activity['id']} in the database: {row}"
    )
    assert stored == (ws,)


def test_the_activity_log_is_newest_first_and_limited(deployment: Deployment) -> None:
    api, actors = deployment.api, deployment.actors
    ws = actors.workspace_id
    credential = expect(
        api.request(
            "POST",
            f"/workspaces/{ws}/credentials",
            user=actors.user_id,
            json_body={"name": deployment.name("log 0"), "provider": "aws", "secret": "x"},
        ),
        201,
    )
    for step in (1, 2):
        expect(
            api.request(
                "PATCH",
                f"/workspaces/{ws}/credentials/{credential['id']}",
                user=actors.user_id,
                json_body={"name": deployment.name(f"log {step}")},
            ),
            200,
        )

    two = expect(api.request("GET", f"/workspaces/{ws}/activities?limit=2", user=actors.user_id), 200)
    three = expect(api.request("GET", f"/workspaces/{ws}/activities?limit=3", user=actors.user_id), 200)
    assert len(two["activities"]) == 2, f"limit=2 gave {len(two['activities'])} activities"
    assert [a["action"] for a in three["activities"]] == [
        "credential.updated",
        "credential.updated",
        "credential.created",
    ], three
    assert two["activities"] == three["activities"][:2]
    stamps = [datetime.fromisoformat(a["created_at"]) for a in three["activities"]]
    assert stamps == sorted(stamps, reverse=True), f"not newest first: {stamps}"

    with deployment.db().connect() as conn:
        newest = conn.execute(
            "SELECT id FROM activities WHERE workspace_id = %s ORDER BY created_at DESC, id DESC LIMIT 3",
            (ws,),
        ).fetchall()
    assert [a["id"] for a in three["activities"]] == [row[0] for row in newest]


def test_every_successful_write_records_exactly_one_activity(deployment: Deployment) -> None:
    api, actors = deployment.api, deployment.actors
    ws, user = actors.workspace_id, actors.user_id
    credential_body = {"name": deployment.name("each write"), "provider": "github", "secret": "x"}
    webhook_body = {
        "target_url": "https://example.invalid/each-write",
        "event_types": ["smoke.ping"],
        "secret": "x",
    }

    def count() -> int | None:
        if deployment.database is None:
            return None
        with deployment.database.connect() as conn:
            row = conn.execute("SELECT count(*) FROM activities WHERE workspace_id = %s", (ws,)).fetchone()
        return None if row is None else int(row[0])

    recorded: list[tuple[str, int | None, int | None]] = []
    ids: dict[str, int] = {}
    writes = [
        ("credential.created", "POST", "/credentials", credential_body, 201, "credential"),
        ("credential.updated", "PATCH", "/credentials/{credential}", {"secret": "y"}, 200, None),
        ("webhook.created", "POST", "/webhooks", webhook_body, 201, "webhook"),
        (
            "webhook_event.fired",
            "POST",
            "/webhooks/{webhook}/events",
            {"event_type": "smoke.ping", "body": {}},
            202,
            None,
        ),
    ]
    for action, method, path, body, status, remember in writes:
        before = count()
        reply = expect(
            api.request(method, f"/workspaces/{ws}" + path.format(**ids), user=user, json_body=body), status
        )
        if remember:
            ids[remember] = reply["id"]
        latest = expect(api.request("GET", f"/workspaces/{ws}/activities?limit=1", user=user), 200)[
            "activities"
        ]
        assert latest and latest[0]["action"] == action, (
            f"{method} {path} recorded {latest} instead of {action}"
        )
        assert latest[0]["workspace_id"] == ws and latest[0].get("user_id", user) == user, latest
        recorded.append((action, before, count()))

    deployment.db()  # skips from here when there is no database to count in
    wrong = [(action, before, after) for action, before, after in recorded if after != (before or 0) + 1]
    assert not wrong, f"writes that did not add exactly one activity row (action, before, after): {wrong}"
