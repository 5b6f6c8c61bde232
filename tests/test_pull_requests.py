"""Pull requests the gate has never seen: the issue's six harmful ones fail by name, three good ones pass.

Each pull request is a real migration file after 008 in a copy of ``migrations/``, judged
by the real gate in a subprocess (``pytest checks --migrations-dir COPY``), as CI judges
one. A harmful one must fail the checks that find it, and each failure must name the
table or the function, and the rows or the grant at fault; a good one must pass
everything.

One gate run judges the six harmful ones together (009 to 014) and one the three good
ones (009 to 011): a run costs a server and nine databases, and these changes only add
objects, each judged by name. So every failure of the harmful run must be one a pull
request expects, and each one expected must be there; and what passes together passes
alone, since adding objects can only add findings.

Left out of these runs, for time: the property test (``make gate`` runs it; it replays
005 to the last migration on generated datasets) and the generated volume (``index_chosen``:
the planner's choice, which none of these touches).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Run, once_per_run, run_cli, run_pytest
from tests.test_playbook import one_error_line

WITHOUT = "not volume and not agree_with_the_model"


@dataclass(frozen=True)
class PullRequest:
    name: str  # its migration's file name, after the number
    sql: str
    failing: tuple[str, ...] = ()  # the checks it must fail at the last checkpoint; () for a good one
    shown: tuple[str, ...] = ()  # what the failures must say: the table or function, rows or grant


HARMFUL = [
    PullRequest(
        "api_keys",
        """
-- API keys per workspace, moved over from the credentials; workspace_id references nothing.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint NOT NULL,
    name         text NOT NULL,
    token_hash   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_api_keys_workspace ON api_keys (workspace_id);
INSERT INTO api_keys (workspace_id, name, token_hash)
SELECT c.workspace_id + 1000, c.name, md5(c.secret) FROM credentials c;
""",
        ("tenant_foreign_key[api_keys]",),
        (
            r"tenant_foreign_key\[api_keys\]: public\.api_keys\.workspace_id has no foreign key: \d+ row\(s\) "
            r"name a workspace that does not exist",
            r"id +\| workspace_id",
        ),
    ),
    PullRequest(
        "notes",
        """
-- Notes: a welcome note for every user, all in the first workspace.
CREATE TABLE notes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    user_id      bigint REFERENCES users ON DELETE SET NULL,
    body         text NOT NULL
);
CREATE INDEX idx_notes_workspace ON notes (workspace_id);
CREATE INDEX idx_notes_user ON notes (user_id);
INSERT INTO notes (workspace_id, user_id, body)
SELECT (SELECT min(id) FROM workspaces), u.id, 'welcome' FROM users u;
""",
        ("tenant_member_workspace[notes]",),
        (
            r"tenant_member_workspace\[notes\]: \d+ row\(s\) of public\.notes sit in a workspace their user is "
            r"not a member of",
            r"id +\| user_id +\| workspace_id",
        ),
    ),
    PullRequest(
        "audit_events",
        """
-- An audit trail, backfilled from the activities by their user's default workspace.
CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint REFERENCES workspaces ON DELETE CASCADE,
    action       text NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX idx_audit_events_workspace ON audit_events (workspace_id, created_at);
INSERT INTO audit_events (workspace_id, action, created_at)
SELECT u.default_workspace_id, a.action, a.created_at
FROM activities a LEFT JOIN users u ON u.id = a.user_id;
""",
        ("tenant_workspace_not_null[audit_events]",),
        (
            r"tenant_workspace_not_null\[audit_events\]: public\.audit_events\.workspace_id is nullable: "
            r"\d+ row\(s\) have no workspace",
            r"\d+ +\| NULL",
        ),
    ),
    PullRequest(
        "credential_secret",
        """
-- Lets the delivery worker read a secret without SELECT on credentials.
CREATE FUNCTION public.credential_secret(credential_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$ SELECT secret FROM public.credentials WHERE id = credential_id $$;
""",
        ("security_definer_functions",),
        (
            r"function public\.credential_secret\(credential_id bigint\), owner \w+, SECURITY DEFINER: "
            r"executable by PUBLIC",
            r"REVOKE EXECUTE ON FUNCTION public\.credential_secret\(credential_id bigint\) FROM PUBLIC;",
        ),
    ),
    PullRequest(
        "purge_activities",
        """
-- Support can purge a workspace's activity log.
CREATE FUNCTION purge_workspace_activities(target bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM activities WHERE workspace_id = target;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;
""",
        ("security_definer_functions",),
        (
            r"function public\.purge_workspace_activities\(target bigint\), owner \w+, SECURITY DEFINER: "
            r"executable by PUBLIC; search_path not fixed",
            r"ALTER FUNCTION public\.purge_workspace_activities\(target bigint\) SET search_path = pg_catalog, public;",
        ),
    ),
    PullRequest(
        "reporting",
        """
-- A reporting copy of the credentials, for the BI tool.
CREATE SCHEMA reporting;
CREATE TABLE reporting.credentials AS
SELECT id, workspace_id, name, provider, secret, created_at FROM public.credentials;
GRANT USAGE ON SCHEMA reporting TO PUBLIC;
GRANT SELECT ON reporting.credentials TO PUBLIC;
""",
        ("grantees[schemas]", "grantees[tables]"),
        (
            r"schema reporting: USAGE granted to PUBLIC",
            r"table reporting\.credentials: SELECT granted to PUBLIC",
        ),
    ),
]

GOOD = [
    PullRequest(
        "api_keys",
        """
-- API keys: one per credential, in its workspace, for its user.
CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    credential_id bigint REFERENCES credentials ON DELETE CASCADE,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_api_keys_workspace ON api_keys (workspace_id);
CREATE INDEX idx_api_keys_user ON api_keys (user_id);
CREATE INDEX idx_api_keys_credential ON api_keys (credential_id);
INSERT INTO api_keys (workspace_id, user_id, credential_id, name)
SELECT c.workspace_id, c.user_id, c.id, c.name || ' key' FROM credentials c;
""",
    ),
    PullRequest(
        "activity_counts",
        """
-- How many activities a workspace has: an ordinary function, its caller's rights.
CREATE FUNCTION public.workspace_activity_count(target bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT count(*) FROM public.activities WHERE workspace_id = target $$;
""",
    ),
    PullRequest(
        "maintenance",
        """
-- The migrating role's own bookkeeping, in a schema of its own, granted to nobody.
CREATE SCHEMA maintenance;
CREATE TABLE maintenance.batches (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    note       text
);
CREATE FUNCTION maintenance.open_batches() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT count(*) FROM maintenance.batches $$;
""",
    ),
]


def migrations_with(directory: Path, pull_requests: list[PullRequest]) -> Path:
    """A copy of migrations/ with the pull requests after 008, in order: 009, 010, ..."""
    migrations = directory / "migrations"
    shutil.copytree(REPO / "migrations", migrations)
    for number, pull_request in enumerate(pull_requests, start=9):
        (migrations / f"{number:03d}_{pull_request.name}.sql").write_text(pull_request.sql.lstrip())
    return migrations


def judge(migrations: Path, *extra: str, only: str = "") -> Run:
    selected = f"{WITHOUT} and ({only})" if only else WITHOUT
    return run_pytest("checks", "-k", selected, "-rfEs", "--migrations-dir", str(migrations), *extra)


_FAILED = re.compile(
    r"^FAILED checks/test_gate\.py::test_check\[(?P<name>.+)-(?P<point>after_\d{3}|current|volume)\]"
)


def failed_tests(run: Run) -> set[tuple[str, str]]:
    """(check, checkpoint) of every failed test of the gate."""
    return {(m["name"], m["point"]) for m in map(_FAILED.match, run.stdout.splitlines()) if m}


@dataclass(frozen=True)
class Judged:
    run: Run
    summary: str


def judged(tmp_path_factory: pytest.TempPathFactory, pull_requests: list[PullRequest], *extra: str) -> Judged:
    directory = tmp_path_factory.mktemp("pull-requests")
    summary = directory / "summary.md"
    run = judge(migrations_with(directory, pull_requests), "--summary", str(summary), *extra)
    return Judged(run, summary.read_text() if summary.exists() else "")


def judged_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, pull_requests: list[PullRequest]
) -> Judged:
    """``judged``, once for the whole run whichever xdist worker asks first: the tests only read the verdict."""

    def judge_and_keep(directory: Path) -> None:
        verdict = judged(tmp_path_factory, pull_requests)
        kept = {"run": dataclasses.asdict(verdict.run), "summary": verdict.summary}
        (directory / "judged.json").write_text(json.dumps(kept), encoding="utf-8")

    kept = json.loads((once_per_run(tmp_path_factory, name, judge_and_keep) / "judged.json").read_text())
    return Judged(Run(**kept["run"]), kept["summary"])


@pytest.fixture(scope="module")
def harmful(tmp_path_factory: pytest.TempPathFactory) -> Judged:
    """The six harmful pull requests, as 009 to 014 of one plan: each fails checks that name it."""
    return judged_once(tmp_path_factory, "harmful-pull-requests", HARMFUL)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Judged:
    """The three good pull requests, as 009 to 011 of one plan."""
    return judged_once(tmp_path_factory, "good-pull-requests", GOOD)


def test_the_harmful_pull_requests_fail_the_gate_and_nothing_else_does(harmful: Judged) -> None:
    assert harmful.run.returncode == 1, harmful.run.output[-4000:]
    last = f"after_{8 + len(HARMFUL):03d}"
    assert failed_tests(harmful.run) == {(name, last) for pr in HARMFUL for name in pr.failing}, (
        harmful.run.stdout[-6000:]
    )


@pytest.mark.parametrize("pull_request", HARMFUL, ids=[pr.name for pr in HARMFUL])
def test_a_harmful_pull_request_fails_by_name(harmful: Judged, pull_request: PullRequest) -> None:
    failed = {name for name, _ in failed_tests(harmful.run)}
    assert set(pull_request.failing) <= failed, harmful.run.stdout[-6000:]
    for shown in pull_request.shown:
        assert re.search(shown, harmful.run.stdout), (
            f"{shown!r} not in the failures:\n{harmful.run.stdout[-6000:]}"
        )


def test_the_good_pull_requests_pass_the_gate(good: Judged) -> None:
    assert good.run.returncode == 0, good.run.output[-6000:]
    assert f"after_{8 + len(GOOD):03d}" in good.run.stdout


@pytest.mark.parametrize("number, pull_request", list(enumerate(GOOD, start=9)), ids=[pr.name for pr in GOOD])
def test_the_summary_says_what_each_good_pull_request_changed(
    good: Judged, number: int, pull_request: PullRequest
) -> None:
    file_name = f"{number:03d}_{pull_request.name}.sql"
    assert re.search(rf"^\| `{file_name}` \| [1-9]\d* \| 0 \| 0 \|", good.summary, re.M), good.summary
    assert f"<summary><code>{file_name}</code>" in good.summary


def test_the_summary_says_how_each_rule_judged_a_new_tenant_table(good: Judged) -> None:
    changed = good.summary.split("### What each migration changed", 1)[1]
    row = next(line for line in changed.splitlines() if line.startswith("| `009_api_keys.sql` |"))
    for rule in (
        "tenant_workspace_not_null",
        "tenant_foreign_key",
        "tenant_workspace_index",
        "tenant_member_workspace",
        "tenant_reference_workspace",
    ):
        assert f"{rule} passed" in row, row
    changes = good.summary.split("<summary><code>009_api_keys.sql</code>", 1)[1].split("</details>", 1)[0]
    assert "- `added table public.api_keys`" in changes
    assert re.search(r"- `added constraint public\.api_keys\.api_keys_workspace_id_fkey FOREIGN KEY", changes)
    assert "- `added index public.idx_api_keys_workspace on public.api_keys (workspace_id)`" in changes
    # Default privileges gave the application role its grants on the new table: shown, not guessed.
    assert (
        "- `added grant of DELETE, INSERT, SELECT, UPDATE on table public.api_keys to fluxolab_devmode`"
        in changes
    )
    # A table outside public is no tenant table: said so, not left blank.
    assert "`maintenance.batches`: no rule judged it (not a tenant table of public)" in good.summary


def test_an_exempted_table_is_skipped_with_its_reason_and_listed_in_the_summary(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    reason = "append-only, read by id"
    audit_log = PullRequest(
        "audit_log",
        "CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " workspace_id bigint NOT NULL REFERENCES workspaces, entry text NOT NULL);\n",
    )
    exempted = judged(
        tmp_path_factory, [audit_log], "--exempt", f"tenant_workspace_index[audit_log]: {reason}"
    )
    assert exempted.run.returncode == 0, exempted.run.output[-4000:]
    assert re.search(rf"SKIPPED .*tenant_workspace_index\[audit_log\]: exempt: {reason}", exempted.run.stdout)
    assert f"### Exemptions (1)\n\n- `tenant_workspace_index[audit_log]`: {reason}" in exempted.summary
    assert f"tenant_workspace_index skipped: exempt: {reason}" in exempted.summary


def test_a_malformed_exemption_is_a_pytest_usage_error_in_one_line() -> None:
    run = run_pytest("checks/test_gate.py", "--collect-only", "--exempt", "tenant_workspace_index[audit_log]")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.output
    assert one_error_line(run) == (
        "ERROR: --exempt 'tenant_workspace_index[audit_log]': no reason; an exemption says why, RULE[TABLE]: "
        "REASON (e.g. tenant_workspace_index[audit_log]: append-only, read by id)"
    ), run.output


def test_a_plan_error_is_still_reported_clearly_at_collection(tmp_path: Path) -> None:
    migrations = migrations_with(tmp_path, [PullRequest("broken", "CREATE TABLE broken (id int;\n")])
    run = judge(migrations, only="tenant_ or ledger")
    assert run.returncode == 1, run.output[-4000:]
    # The rules stay one test each, and fail with the gate's own error.
    assert re.search(
        r"ERROR checks/test_gate\.py::test_check\[tenant_foreign_key\[\*\]-after_009\]", run.stdout
    )
    assert "building the gate database failed: 009_broken.sql:1:" in run.stdout, run.stdout[-4000:]


@pytest.mark.parametrize("command", ["playbook", "rehearse"])
@pytest.mark.parametrize(
    ("exemption", "message"),
    [
        (
            "tenant_indexes[audit_log]: old",
            "argument --exempt: 'tenant_indexes[audit_log]: old': unknown rule",
        ),
        (
            "tenant_workspace_index[credentials]: too big",
            "--exempt tenant_workspace_index[credentials]: index_definition[idx_credentials_workspace] judges",
        ),
    ],
    ids=["unknown rule", "a pair a named check judges"],
)
def test_a_refused_exemption_is_exit_2_for_the_command_line_and_nothing_is_written(
    command: str, exemption: str, message: str, tmp_path: Path
) -> None:
    target = ["--database", "postgresql://nobody@127.0.0.1:1/staging", "--backup", str(tmp_path / "b")]
    if command == "rehearse":
        target = ["--source", "postgresql://nobody@127.0.0.1:1/staging"]
    report = tmp_path / "record"
    run = run_cli(command, *target, "--report-dir", str(report), "--exempt", exemption)
    assert run.returncode == 2, run.output
    assert message in one_error_line(run)
    assert not report.exists() and not (tmp_path / "b").exists()
