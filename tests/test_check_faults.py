"""Every check of the gate fails on the one fault it exists for, and passes on the untouched database.

A private clone of the migrated gate database (``after_008``) serves the whole module.
Each fault is injected inside a transaction that is rolled back after the test
(PostgreSQL's DDL, GRANTs and even ALTER ROLE are transactional), and the check runs on
that same connection, so it sees the fault and no other test ever does. Faults that
cannot live in a transaction (a failed CREATE INDEX CONCURRENTLY) get a clone of their
own; ledger faults that are edits of files use a copy of migrations/.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from migration_gate.checks import catalog, explain, invariants, ledger_check, privileges, structure
from migration_gate.checks.catalog import CheckContext, CheckSkipped
from migration_gate.checks.failures import CheckFailed
from migration_gate.checks.profile_audit import profile_audit
from migration_gate.core import corrections, dsn, installations, runner
from migration_gate.core.allowed_grantees import parse_allowed_grantees
from migration_gate.core.contract import PUBLIC_TABLES
from migration_gate.core.plan import load_plan
from migration_gate.core.server import DisposableServer
from migration_gate.plugin.databases import CheckpointDatabases, GateDatabases
from tests.conftest import MIGRATED, REPO, rolled_back_context

CATALOG = {check.name: check for check in catalog.load(REPO / "checks")}
INVARIANTS = {name: check.invariant for name, check in CATALOG.items() if check.invariant is not None}
CREDENTIALS = explain.CREDENTIALS_OF_A_WORKSPACE
ACTIVITIES = explain.LATEST_ACTIVITIES_OF_A_WORKSPACE
# Where a fault is injected: a clone of the gate database after the last migration, or the generated volume.
VOLUME = "volume"


@dataclass(frozen=True)
class Fault:
    check: str  # the check's name in the catalog
    what: str  # the fault, in words: the test id
    sql: str  # injects it
    expect: str  # a piece of the failure message that shows the check found this very fault
    where: str = MIGRATED
    # The privilege review: with this --allowed-grantee declared, the same grant passes.
    allowed_by: str | None = None


def _null_written(table: str) -> str:
    return (
        f"ALTER TABLE {table} ALTER COLUMN workspace_id DROP NOT NULL;\n"
        f"UPDATE {table} SET workspace_id = NULL WHERE id = (SELECT min(id) FROM {table})"
    )


def _on_identity_sequence(column: str, statement: str) -> str:
    """``statement`` (with %s for the sequence) applied to the sequence behind ``table.column``."""
    table, _, name = column.partition(".")
    return f"DO $$ BEGIN EXECUTE format('{statement}', pg_get_serial_sequence('public.{table}', '{name}')); END $$"


OWN_DEFAULT = "(SELECT min(id) FROM users)"
# Grants of the faults, to roles the fault creates (and the tests declare).
READ_SECRETS = "GRANT SELECT ON public.credentials TO gate_fault_reader"
OPEN_ARCHIVE = (
    "GRANT USAGE ON SCHEMA legacy_archive TO gate_fault_archivist;"
    " GRANT SELECT ON ALL TABLES IN SCHEMA legacy_archive TO gate_fault_archivist"
)
FUTURE_TABLES_TO_ETL = "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO gate_fault_etl"
# The new schema holding a copy of credentials, secrets included.
REPORTING_COPY = (
    "CREATE SCHEMA reporting; CREATE TABLE reporting.credentials AS SELECT * FROM public.credentials"
)
SECRET_READER = (
    "CREATE FUNCTION public.credential_secret(credential_id bigint) RETURNS text LANGUAGE sql STABLE"
)
SECRET_READER_BODY = "AS 'SELECT secret FROM public.credentials WHERE id = credential_id'"
FAULTS = [
    # Invariants: each breaks exactly one row.
    Fault(
        "users_without_default_workspace",
        "default set to NULL",
        f"UPDATE users SET default_workspace_id = NULL WHERE id = {OWN_DEFAULT}",
        "1 offending row(s)",
    ),
    Fault(
        "default_workspace_not_owned",
        "default pointing at a workspace the user does not own",
        "UPDATE users u SET default_workspace_id = "
        "(SELECT w.id FROM workspaces w WHERE w.owner_id <> u.id ORDER BY w.id LIMIT 1) "
        f"WHERE u.id = {OWN_DEFAULT}",
        "1 offending row(s)",
    ),
    Fault(
        "default_workspace_without_owner_membership",
        "owner membership deleted",
        "DELETE FROM workspace_members m USING users u "
        f"WHERE m.user_id = u.id AND m.workspace_id = u.default_workspace_id AND u.id = {OWN_DEFAULT}",
        "1 offending row(s)",
    ),
    Fault(
        "default_workspace_without_owner_membership",
        "owner membership lowered to member",
        "UPDATE workspace_members m SET profile_id = (SELECT id FROM profiles WHERE code = 'member') "
        f"FROM users u WHERE m.user_id = u.id AND m.workspace_id = u.default_workspace_id AND u.id = {OWN_DEFAULT}",
        "member",
    ),
    Fault(
        "credentials_without_workspace",
        "NOT NULL dropped and NULL written",
        _null_written("credentials"),
        "1 offending",
    ),
    Fault(
        "webhook_registrations_without_workspace",
        "NOT NULL dropped and NULL written",
        _null_written("webhook_registrations"),
        "1 offending",
    ),
    Fault(
        "webhook_events_without_workspace",
        "NOT NULL dropped and NULL written",
        _null_written("webhook_events"),
        "1 offending",
    ),
    Fault(
        "webhook_event_workspace_mismatch",
        "event moved to another workspace",
        "UPDATE webhook_events e SET workspace_id = "
        "(SELECT w.id FROM workspaces w WHERE w.id <> e.workspace_id ORDER BY w.id LIMIT 1) "
        "WHERE e.id = (SELECT min(id) FROM webhook_events)",
        "1 offending",
    ),
    Fault(
        "activities_without_workspace",
        "NOT NULL dropped and NULL written",
        _null_written("activities"),
        "1 offending",
    ),
    # Tenant isolation: a row moved into a workspace its user is not a member of.
    *[
        Fault(
            f"{table}_outside_member_workspace",
            "moved into another tenant's workspace",
            f"UPDATE {table} x SET workspace_id = (SELECT w.id FROM workspaces w WHERE NOT EXISTS "
            "(SELECT FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = x.user_id) "
            f"ORDER BY w.id LIMIT 1) WHERE x.id = (SELECT min(id) FROM {table} WHERE user_id IS NOT NULL)",
            "1 offending row(s)",
        )
        for table in ("credentials", "webhook_registrations", "activities")
    ],
    Fault(
        "activities_outside_member_workspace",
        "its user removed from the workspace (the application's doing)",
        "DELETE FROM workspace_members m USING activities a "
        "WHERE m.workspace_id = a.workspace_id AND m.user_id = a.user_id "
        "AND a.id = (SELECT min(a2.id) FROM activities a2 JOIN workspaces w ON w.id = a2.workspace_id "
        "WHERE a2.user_id IS NOT NULL AND w.owner_id <> a2.user_id)",
        "offending row(s)",
    ),
    Fault(
        "cascading_foreign_keys_without_index",
        "the index behind ON DELETE SET NULL dropped",
        "DROP INDEX idx_activities_user",
        "activities_user_id_fkey",
    ),
    Fault(
        "cascading_foreign_keys_without_index",
        "a cascading key served only by a partial index",
        "DROP INDEX idx_credentials_workspace; CREATE INDEX idx_credentials_workspace ON credentials (workspace_id) "
        "WHERE workspace_id > 0",
        "credentials_workspace_id_fkey",
    ),
    Fault(
        "cascading_foreign_keys_without_index",
        "a new cascading key in legacy_archive without an index",
        "ALTER TABLE legacy_archive.activities ADD CONSTRAINT archived_user_fkey "
        "FOREIGN KEY (user_id) REFERENCES public.users ON DELETE CASCADE",
        "archived_user_fkey",
    ),
    # Referential integrity: the workspace keys, missing, NOT VALID or elsewhere.
    *[
        fault
        for r in structure.REQUIRED_FOREIGN_KEYS
        for fault in (
            Fault(
                f"foreign_key[{r.label}]",
                "foreign key dropped",
                f"ALTER TABLE {r.table} DROP CONSTRAINT {r.table}_{r.column}_fkey",
                "has no foreign key",
            ),
            Fault(
                f"foreign_key[{r.label}]",
                "foreign key re-added NOT VALID",
                f"ALTER TABLE {r.table} DROP CONSTRAINT {r.table}_{r.column}_fkey; "
                f"ALTER TABLE {r.table} ADD CONSTRAINT {r.table}_{r.column}_fkey FOREIGN KEY ({r.column}) "
                "REFERENCES workspaces NOT VALID",
                "only NOT VALID",
            ),
            Fault(
                f"foreign_key[{r.label}]",
                "foreign key pointing at another table",
                "CREATE TABLE public.shadow_workspaces AS SELECT id FROM workspaces; "
                "ALTER TABLE public.shadow_workspaces ADD PRIMARY KEY (id); "
                f"ALTER TABLE {r.table} DROP CONSTRAINT {r.table}_{r.column}_fkey; "
                f"ALTER TABLE {r.table} ADD CONSTRAINT {r.table}_{r.column}_fkey FOREIGN KEY ({r.column}) "
                "REFERENCES public.shadow_workspaces",
                "references public.shadow_workspaces(id), not public.workspaces(id)",
            ),
        )
    ],
    # Indexes.
    *[
        fault
        for q, other in ((CREDENTIALS, "user_id"), (ACTIVITIES, "created_at"))
        for fault in (
            Fault(f"index_definition[{q.index}]", "index dropped", f"DROP INDEX {q.index}", "does not exist"),
            Fault(
                f"index_definition[{q.index}]",
                f"rebuilt on {other} under the same name",
                f"DROP INDEX {q.index}; CREATE INDEX {q.index} ON {q.table} ({other})",
                f"leads with ({other})",
            ),
            Fault(
                f"index_definition[{q.index}]",
                "marked invalid",
                f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.{q.index}'::regclass",
                "not valid",
            ),
            Fault(f"index_usable[{q.index}]", "index dropped", f"DROP INDEX {q.index}", "does not exist"),
            Fault(
                f"index_usable[{q.index}]",
                f"rebuilt on {other} under the same name",
                f"DROP INDEX {q.index}; CREATE INDEX {q.index} ON {q.table} ({other})",
                f"leads with ({other})",
            ),
            # Right name, right columns, but partial: only the plan walk can tell.
            Fault(
                f"index_usable[{q.index}]",
                "rebuilt as a partial index no query can use",
                f"DROP INDEX {q.index}; CREATE INDEX {q.index} ON {q.table} ({', '.join(q.leading_columns)}) "
                "WHERE workspace_id < 0",
                "not usable",
            ),
        )
    ],
    # Structure.
    *[
        Fault(
            f"not_null[{r.label}]",
            "NOT NULL dropped",
            f"ALTER TABLE {r.table} ALTER COLUMN {r.column} DROP NOT NULL",
            "is nullable",
        )
        for r in structure.NOT_NULL_COLUMNS
    ],
    Fault(
        "no_invalid_indexes",
        "index left not ready (an interrupted REINDEX CONCURRENTLY)",
        "UPDATE pg_index SET indisready = false WHERE indexrelid = 'public.idx_webhook_events_workspace'::regclass",
        "idx_webhook_events_workspace",
    ),
    Fault(
        "no_not_valid_constraints",
        "CHECK added NOT VALID in public",
        "ALTER TABLE activities ADD CONSTRAINT activities_action_not_empty CHECK (action <> '') NOT VALID",
        "activities_action_not_empty",
    ),
    Fault(
        "no_not_valid_constraints",
        "foreign key added NOT VALID in legacy_archive",
        "ALTER TABLE legacy_archive.activities ADD CONSTRAINT archived_user_fkey "
        "FOREIGN KEY (user_id) REFERENCES public.users NOT VALID",
        "archived_user_fkey",
    ),
    Fault(
        "activities_payload_gone",
        "payload added back",
        "ALTER TABLE activities ADD COLUMN payload jsonb",
        "payload",
    ),
    Fault(
        "legacy_archive_present",
        "archive table dropped",
        "DROP TABLE legacy_archive.activity_payloads",
        "activity_payloads does not exist",
    ),
    Fault(
        "legacy_archive_present",
        "archived_at dropped",
        "ALTER TABLE legacy_archive.webhook_events DROP COLUMN archived_at",
        "lacks column(s) archived_at",
    ),
    Fault(
        "legacy_archive_present",
        "schema dropped",
        "DROP SCHEMA legacy_archive CASCADE",
        "schema legacy_archive does not exist",
    ),
    Fault(
        "conservation[users]",
        "a user deleted",
        "DELETE FROM users WHERE id = (SELECT max(id) FROM users)",
        "1 row(s) lost",
    ),
    Fault(
        "conservation[profiles]",
        "a profile that was not there before 005",
        "INSERT INTO profiles (code, name) VALUES ('guest', 'Guest')",
        "1 row(s) more",
    ),
    Fault(
        "conservation[workspaces]",
        "a workspace archived",
        "CREATE TABLE legacy_archive.workspaces AS SELECT * FROM public.workspaces LIMIT 1",
        "legacy_archive 1",
    ),
    Fault("conservation[workspace_members]", "memberships deleted", "DELETE FROM workspace_members", "lost"),
    Fault(
        "conservation[credentials]",
        "a credential deleted",
        "DELETE FROM credentials WHERE id = (SELECT min(id) FROM credentials)",
        "1 row(s) lost",
    ),
    Fault(
        "conservation[activities]",
        "an activity deleted",
        "DELETE FROM activities WHERE id = (SELECT min(id) FROM activities)",
        "1 row(s) lost",
    ),
    Fault(
        "conservation[webhook_registrations]",
        "a registration both in public and in the archive",
        "INSERT INTO legacy_archive.webhook_registrations (id, user_id, target_url, event_types, secret, active, created_at) "
        "SELECT id, user_id, target_url, event_types, secret, active, created_at FROM webhook_registrations LIMIT 1",
        "1 row(s) more",
    ),
    Fault(
        "conservation[webhook_events]",
        "an event deleted",
        "DELETE FROM webhook_events WHERE id = (SELECT min(id) FROM webhook_events)",
        "1 row(s) lost",
    ),
    Fault(
        "conservation[activity_payloads]",
        "an archived payload deleted",
        "DELETE FROM legacy_archive.activity_payloads "
        "WHERE activity_id = (SELECT min(activity_id) FROM legacy_archive.activity_payloads)",
        "found in legacy_archive",
    ),
    # Privileges of fluxolab_devmode.
    *[
        Fault(
            f"table_privileges[{table}]",
            "DELETE revoked",
            f"REVOKE DELETE ON {table} FROM fluxolab_devmode",
            "DELETE",
        )
        for table in PUBLIC_TABLES
    ],
    Fault(
        "table_privileges[users]",
        "TRUNCATE granted",
        "GRANT TRUNCATE ON users TO fluxolab_devmode",
        "TRUNCATE",
    ),
    Fault(
        "table_privileges[activities]",
        "TRUNCATE granted to PUBLIC",
        "GRANT TRUNCATE ON activities TO PUBLIC",
        "TRUNCATE",
    ),
    Fault(
        "table_privileges[credentials]",
        "SELECT granted WITH GRANT OPTION",
        "GRANT SELECT ON credentials TO fluxolab_devmode WITH GRANT OPTION",
        "SELECT WITH GRANT OPTION",
    ),
    Fault(
        "table_privileges[webhook_events]",
        "REFERENCES and TRIGGER through a role it belongs to",
        "CREATE ROLE gate_fault_integrations; GRANT REFERENCES, TRIGGER ON webhook_events TO gate_fault_integrations;"
        " GRANT gate_fault_integrations TO fluxolab_devmode",
        "REFERENCES, TRIGGER",
    ),
    *[
        Fault(
            f"sequence_privileges[{column}]",
            "USAGE revoked",
            _on_identity_sequence(column, "REVOKE USAGE ON SEQUENCE %s FROM fluxolab_devmode"),
            "USAGE",
        )
        for column in privileges.CONTRACT_SEQUENCES
    ],
    Fault(
        "sequence_privileges[users.id]",
        "UPDATE granted (setval)",
        _on_identity_sequence("users.id", "GRANT UPDATE ON SEQUENCE %s TO fluxolab_devmode"),
        "UPDATE",
    ),
    Fault(
        "other_relations_privileges",
        "a new table created by a role without default privileges",
        "CREATE ROLE gate_fault_intruder; GRANT CREATE ON SCHEMA public TO gate_fault_intruder;"
        " SET LOCAL ROLE gate_fault_intruder;"
        " CREATE TABLE public.side_channel (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY);"
        " RESET ROLE",
        "table public.side_channel: DELETE, INSERT, SELECT, UPDATE",
    ),
    Fault(
        "other_relations_privileges",
        "a new sequence with its grants revoked",
        "CREATE SEQUENCE public.invoice_numbers; REVOKE ALL ON SEQUENCE public.invoice_numbers FROM fluxolab_devmode",
        "sequence public.invoice_numbers",
    ),
    Fault(
        "database_privileges",
        "CONNECT revoked (from PUBLIC too)",
        "DO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC, fluxolab_devmode', "
        "current_database()); END $$",
        "CONNECT",
    ),
    Fault(
        "database_privileges",
        "CREATE on the database granted",
        "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO fluxolab_devmode', current_database()); END $$",
        "CREATE",
    ),
    Fault(
        "schema_public_privileges",
        "CREATE on public granted",
        "GRANT CREATE ON SCHEMA public TO fluxolab_devmode",
        "CREATE",
    ),
    Fault(
        "schema_public_privileges",
        "USAGE on public revoked (from PUBLIC too)",
        "REVOKE USAGE ON SCHEMA public FROM PUBLIC, fluxolab_devmode",
        "USAGE",
    ),
    Fault(
        "public_cannot_create_in_public",
        "CREATE on public granted to PUBLIC",
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        "CREATE",
    ),
    Fault(
        "legacy_archive_closed",
        "USAGE on the archive granted",
        "GRANT USAGE ON SCHEMA legacy_archive TO fluxolab_devmode",
        "schema legacy_archive: USAGE",
    ),
    Fault(
        "legacy_archive_closed",
        "an archive table made readable",
        "GRANT SELECT ON legacy_archive.activity_payloads TO fluxolab_devmode",
        "table legacy_archive.activity_payloads: SELECT",
    ),
    Fault(
        "legacy_archive_closed",
        "an archive table made readable to PUBLIC",
        "GRANT SELECT ON legacy_archive.activities TO PUBLIC",
        "table legacy_archive.activities: SELECT",
    ),
    Fault(
        "legacy_archive_closed",
        "membership of pg_read_all_data",
        "GRANT pg_read_all_data TO fluxolab_devmode",
        "table legacy_archive.webhook_events: SELECT",
    ),
    *[
        Fault(
            "role_attributes", f"{attribute} granted", f"ALTER ROLE fluxolab_devmode {attribute}", attribute
        )
        for attribute in privileges.ROLE_ATTRIBUTES.values()
    ],
    Fault(
        "role_attributes",
        "member of pg_write_all_data",
        "GRANT pg_write_all_data TO fluxolab_devmode",
        "member of pg_write_all_data",
    ),
    Fault(
        "default_privileges",
        "DELETE revoked from future tables",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE DELETE ON TABLES FROM fluxolab_devmode",
        "DELETE",
    ),
    Fault(
        "default_privileges",
        "TRUNCATE granted on future tables (global default)",
        "ALTER DEFAULT PRIVILEGES GRANT TRUNCATE ON TABLES TO fluxolab_devmode",
        "TRUNCATE",
    ),
    Fault(
        "default_privileges",
        "USAGE revoked from future sequences",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE ON SEQUENCES FROM fluxolab_devmode",
        "USAGE",
    ),
    # The privilege review of every grantee: the five grants first (docs/contract.md §5).
    Fault(
        "grantees[tables]",
        "SELECT on the table of secrets for a role nobody declared",
        f"CREATE ROLE gate_fault_reader; {READ_SECRETS}",
        "table public.credentials: SELECT granted to gate_fault_reader",
        allowed_by="gate_fault_reader:SELECT",
    ),
    *[
        Fault(
            f"grantees[{level}]",
            "USAGE on legacy_archive and SELECT on its tables for another role",
            f"CREATE ROLE gate_fault_archivist; {OPEN_ARCHIVE}",
            expect,
            allowed_by="gate_fault_archivist:USAGE,SELECT",
        )
        for level, expect in (
            ("schemas", "schema legacy_archive: USAGE granted to gate_fault_archivist"),
            ("tables", "table legacy_archive.webhook_registrations: SELECT granted to gate_fault_archivist"),
        )
    ],
    Fault(
        "grantees[columns]",
        "SELECT (id, secret) on credentials for a support role",
        "CREATE ROLE gate_fault_support; GRANT SELECT (id, secret) ON credentials TO gate_fault_support",
        "column public.credentials.secret: SELECT granted to gate_fault_support",
        allowed_by="gate_fault_support:select",
    ),
    Fault(
        "grantees[default_privileges]",
        "every future table of public handed to an ETL role",
        f"CREATE ROLE gate_fault_etl; {FUTURE_TABLES_TO_ETL}",
        "in schema public, future tables: SELECT granted to gate_fault_etl",
        allowed_by="gate_fault_etl",
    ),
    Fault(
        "grantees[schemas]",
        "CREATE on schema public for a developer role",
        "CREATE ROLE gate_fault_developer; GRANT CREATE ON SCHEMA public TO gate_fault_developer",
        "schema public: CREATE granted to gate_fault_developer",
        allowed_by="gate_fault_developer:CREATE",
    ),
    # And the rest of what the levels can hold.
    Fault(
        "grantees[sequences]",
        "UPDATE (setval) on an identity sequence for another role",
        "CREATE ROLE gate_fault_sequencer; "
        + _on_identity_sequence("users.id", "GRANT UPDATE ON SEQUENCE %s TO gate_fault_sequencer"),
        "sequence public.users_id_seq: UPDATE granted to gate_fault_sequencer",
    ),
    Fault(
        "grantees[sequences]",
        "USAGE on a sequence of legacy_archive for the application role",
        "CREATE SEQUENCE legacy_archive.archive_batches; "
        "GRANT USAGE ON SEQUENCE legacy_archive.archive_batches TO fluxolab_devmode",
        "sequence legacy_archive.archive_batches: USAGE granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[tables]",
        "SELECT on the archived payloads for PUBLIC",
        "GRANT SELECT ON legacy_archive.activity_payloads TO PUBLIC",
        "table legacy_archive.activity_payloads: SELECT granted to PUBLIC",
        allowed_by="public:SELECT",
    ),
    Fault(
        "grantees[tables]",
        "a grant to a member of the application role (its own grant, not the role's)",
        "CREATE ROLE gate_fault_app_login IN ROLE fluxolab_devmode; GRANT SELECT ON users TO gate_fault_app_login",
        "table public.users: SELECT granted to gate_fault_app_login",
    ),
    Fault(
        "grantees[tables]",
        "the application role's own SELECT made grantable",
        "GRANT SELECT ON credentials TO fluxolab_devmode WITH GRANT OPTION",
        "table public.credentials: SELECT WITH GRANT OPTION granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[tables]",
        "a view of public readable by another role",
        "CREATE ROLE gate_fault_viewer; CREATE VIEW public.secrets_view AS SELECT secret FROM credentials;"
        " GRANT SELECT ON public.secrets_view TO gate_fault_viewer",
        "view public.secrets_view: SELECT granted to gate_fault_viewer",
    ),
    # has_table_privilege does not see a column grant: only the review does.
    Fault(
        "grantees[columns]",
        "an archived payload column readable by the application role",
        "GRANT SELECT (payload) ON legacy_archive.activities TO fluxolab_devmode",
        "column legacy_archive.activities.payload: SELECT granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[columns]",
        "UPDATE on a column for PUBLIC",
        "GRANT UPDATE (name) ON users TO PUBLIC",
        "column public.users.name: UPDATE granted to PUBLIC",
    ),
    Fault(
        "grantees[schemas]",
        "USAGE on legacy_archive for PUBLIC",
        "GRANT USAGE ON SCHEMA legacy_archive TO PUBLIC",
        "schema legacy_archive: USAGE granted to PUBLIC",
    ),
    Fault(
        "grantees[schemas]",
        "the application role's USAGE on public made grantable",
        "GRANT USAGE ON SCHEMA public TO fluxolab_devmode WITH GRANT OPTION",
        "schema public: USAGE WITH GRANT OPTION granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[default_privileges]",
        "future tables of every schema (legacy_archive too) for the application role",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO fluxolab_devmode",
        "in every schema, future tables: SELECT granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[default_privileges]",
        "future tables of legacy_archive for the application role",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA legacy_archive GRANT SELECT ON TABLES TO fluxolab_devmode",
        "in schema legacy_archive, future tables: SELECT granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[default_privileges]",
        "another owner's future sequences handed to a role",
        "CREATE ROLE gate_fault_loader; CREATE ROLE gate_fault_batch;"
        " ALTER DEFAULT PRIVILEGES FOR ROLE gate_fault_loader IN SCHEMA public"
        " GRANT USAGE ON SEQUENCES TO gate_fault_batch",
        "default privileges of gate_fault_loader in schema public, future sequences: USAGE granted to gate_fault_batch",
    ),
    Fault(
        "grantees[default_privileges]",
        "future functions of every schema executable by another role",
        "CREATE ROLE gate_fault_caller; ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO gate_fault_caller",
        "in every schema, future functions: EXECUTE granted to gate_fault_caller",
    ),
    # Every schema, not only public and legacy_archive: a schema a 009 adds (docs/contract.md §8).
    Fault(
        "grantees[schemas]",
        "a new schema open to PUBLIC",
        f"{REPORTING_COPY}; GRANT USAGE ON SCHEMA reporting TO PUBLIC",
        "schema reporting: USAGE granted to PUBLIC",
        allowed_by="public:USAGE",
    ),
    Fault(
        "grantees[tables]",
        "a copy of credentials, secrets included, in a new schema, readable by PUBLIC",
        f"{REPORTING_COPY}; GRANT SELECT ON reporting.credentials TO PUBLIC",
        "table reporting.credentials: SELECT granted to PUBLIC",
        allowed_by="public:SELECT",
    ),
    Fault(
        "grantees[tables]",
        "a new schema's table handed to the application role (its contract is public only)",
        f"{REPORTING_COPY}; GRANT SELECT ON reporting.credentials TO fluxolab_devmode",
        "table reporting.credentials: SELECT granted to fluxolab_devmode",
    ),
    Fault(
        "grantees[columns]",
        "a secret column of a new schema's table for another role",
        f"CREATE ROLE gate_fault_analyst; {REPORTING_COPY}; GRANT SELECT (secret) ON reporting.credentials TO gate_fault_analyst",
        "column reporting.credentials.secret: SELECT granted to gate_fault_analyst",
    ),
    Fault(
        "grantees[sequences]",
        "a new schema's sequence for PUBLIC",
        "CREATE SCHEMA reporting; CREATE SEQUENCE reporting.batches; GRANT USAGE ON SEQUENCE reporting.batches TO PUBLIC",
        "sequence reporting.batches: USAGE granted to PUBLIC",
    ),
    Fault(
        "grantees[default_privileges]",
        "every future table of a new schema handed to another role",
        "CREATE ROLE gate_fault_reporter; CREATE SCHEMA reporting;"
        " ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO gate_fault_reporter",
        "in schema reporting, future tables: SELECT granted to gate_fault_reporter",
    ),
    Fault(
        "no_invalid_indexes",
        "an invalid index in a new schema",
        f"{REPORTING_COPY}; CREATE INDEX reporting_credentials_name ON reporting.credentials (name);"
        " UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'reporting.reporting_credentials_name'::regclass",
        "reporting_credentials_name",
    ),
    Fault(
        "no_not_valid_constraints",
        "a CHECK left NOT VALID in a new schema",
        f"{REPORTING_COPY}; ALTER TABLE reporting.credentials ADD CONSTRAINT reporting_named CHECK (name <> '') NOT VALID",
        "reporting_named",
    ),
    Fault(
        "cascading_foreign_keys_without_index",
        "a cascading key without an index in a new schema",
        "CREATE SCHEMA reporting; CREATE TABLE reporting.exports (id bigint PRIMARY KEY,"
        " user_id bigint REFERENCES public.users ON DELETE CASCADE)",
        "reporting.exports",
    ),
    # SECURITY DEFINER functions: their owner's rights for whoever may call them (§8).
    Fault(
        "security_definer_functions",
        "a SECURITY DEFINER function returning any credential's secret, PUBLIC's default EXECUTE kept",
        f"{SECRET_READER} SECURITY DEFINER SET search_path = pg_catalog, public {SECRET_READER_BODY}",
        "function public.credential_secret(credential_id bigint), owner postgres, SECURITY DEFINER: "
        "executable by PUBLIC",
        allowed_by="public:EXECUTE",
    ),
    Fault(
        "security_definer_functions",
        "a SECURITY DEFINER function without a fixed search_path, executable by its owner only",
        "CREATE FUNCTION public.purge_activities(target bigint) RETURNS void LANGUAGE sql SECURITY DEFINER"
        " AS 'DELETE FROM activities WHERE workspace_id = target';"
        " REVOKE EXECUTE ON FUNCTION public.purge_activities(bigint) FROM PUBLIC",
        "public.purge_activities(target bigint), owner postgres, SECURITY DEFINER: search_path not fixed",
    ),
    Fault(
        "security_definer_functions",
        "a SECURITY DEFINER function granted to a role nobody declared",
        f"CREATE ROLE gate_fault_caller; {SECRET_READER} SECURITY DEFINER SET search_path = pg_catalog"
        f" {SECRET_READER_BODY}; REVOKE EXECUTE ON FUNCTION public.credential_secret(bigint) FROM PUBLIC;"
        " GRANT EXECUTE ON FUNCTION public.credential_secret(bigint) TO gate_fault_caller",
        "REVOKE EXECUTE ON FUNCTION public.credential_secret(credential_id bigint) FROM gate_fault_caller;",
        allowed_by="gate_fault_caller:EXECUTE",
    ),
    Fault(
        "security_definer_functions",
        "a SECURITY DEFINER function executable by the application role",
        f"{SECRET_READER} SECURITY DEFINER SET search_path = pg_catalog {SECRET_READER_BODY};"
        " REVOKE EXECUTE ON FUNCTION public.credential_secret(bigint) FROM PUBLIC;"
        " GRANT EXECUTE ON FUNCTION public.credential_secret(bigint) TO fluxolab_devmode",
        "executable by fluxolab_devmode",
    ),
    Fault(
        "security_definer_functions",
        "a SECURITY DEFINER procedure in a new schema",
        "CREATE SCHEMA maintenance; CREATE PROCEDURE maintenance.reset_attempts() LANGUAGE sql SECURITY DEFINER"
        " AS 'UPDATE public.webhook_events SET attempts = 0'",
        "ALTER PROCEDURE maintenance.reset_attempts() SET search_path = pg_catalog, public;",
    ),
    # The ledger, from the database's side (file-side faults below).
    Fault(
        "ledger",
        "last migration missing from the ledger (pending)",
        "DELETE FROM migration_gate.ledger WHERE version = (SELECT max(version) FROM migration_gate.ledger)",
        "pending",
    ),
    Fault(
        "ledger",
        "applied out of order",
        "UPDATE migration_gate.ledger SET applied_at = applied_at + interval '1 day' WHERE version = 5",
        "out of order",
    ),
    Fault(
        "ledger",
        "checksum recorded differs from the file",
        "UPDATE migration_gate.ledger SET checksum = repeat('0', 64) WHERE version = 3",
        "edited after it was applied",
    ),
    # Drift: the schema against what its ledger's migrations and corrections build on an empty database.
    Fault(
        "schema_drift",
        "an index added by hand",
        "CREATE INDEX tmp_fix_idx ON activities (action)",
        "index public.tmp_fix_idx on public.activities (action): on the database, not built by the migrations",
    ),
    Fault(
        "schema_drift",
        "a column added by hand",
        "ALTER TABLE credentials ADD COLUMN note text",
        "column public.credentials.note text: on the database, not built by the migrations",
    ),
    Fault(
        "schema_drift",
        "an index dropped by hand",
        "DROP INDEX idx_activities_user",
        "index public.idx_activities_user on public.activities (user_id): built by the migrations, not on the database",
    ),
    Fault(
        "schema_drift",
        "a default changed by hand",
        "ALTER TABLE webhook_events ALTER COLUMN attempts SET DEFAULT 1",
        "column public.webhook_events.attempts: built by the migrations as integer NOT NULL DEFAULT 0, "
        "on the database as integer NOT NULL DEFAULT 1",
    ),
    Fault(
        "schema_drift",
        "a trigger and its function added by hand",
        "CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"
        " CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION public.touch()",
        "trigger public.users.touch: on the database, not built by the migrations",
    ),
    Fault(
        "schema_drift",
        "a correction in the ledger that is not on the database",
        corrections.CREATE_CORRECTIONS.decode()
        + "; INSERT INTO migration_gate.corrections (name, checksum, reason, after_version, sql, duration_ms)"
        " VALUES ('users_name_idx.sql', 'x', 'reports filter by name', 8,"
        " 'CREATE INDEX users_name_idx ON public.users (name)', 1)",
        "index public.users_name_idx on public.users (name): built by the migrations, not on the database",
    ),
]


# "Chosen" at volume: the planner's choice only means something there.
FAULTS += [
    Fault(
        f"index_chosen[{q.index}]",
        what,
        fault.format(index=q.index, table=q.table, columns=", ".join(q.leading_columns)),
        expect,
        VOLUME,
    )
    for q in explain.APPLICATION_QUERIES
    for what, fault, expect in (
        ("index dropped", "DROP INDEX {index}", "does not exist"),
        (
            "rebuilt on another column",
            "DROP INDEX {index}; CREATE INDEX {index} ON {table} (id)",
            "leads with (id)",
        ),
        (
            "rebuilt as a partial index no query can use",
            "DROP INDEX {index}; CREATE INDEX {index} ON {table} ({columns}) WHERE workspace_id < 0",
            "not chosen",
        ),
        # The index is fine, but the database's planner settings make it never worth it.
        ("random_page_cost absurd", "SET LOCAL random_page_cost = 100000", "not chosen"),
    )
]


def run_check(name: str, ctx: CheckContext) -> CheckFailed | None:
    """The check's failure, or None when it passes."""
    try:
        CATALOG[name].verify(ctx)
    except CheckFailed as failure:
        return failure
    return None


@pytest.fixture(scope="module")
def volume_clone(disposable_gate: CheckpointDatabases) -> Iterator[str]:
    from migration_gate.data import volume_checkpoint

    with disposable_gate.server.temporary_database("faults_volume") as url:
        volume_checkpoint.fill(url, disposable_gate.plan)
        yield url


@pytest.fixture
def volume(gate: GateDatabases, volume_clone: str) -> Iterator[CheckContext]:
    yield from rolled_back_context(gate, volume_clone, VOLUME, realistic_volume=True)


def test_every_entry_of_the_catalog_has_a_fault_and_every_fault_an_entry() -> None:
    # A check no test can make fail is a defect: a new entry (a new SQL file too) without a fault fails here.
    # The rule families have theirs, failing and passing, in tests/test_rules.py.
    assert {name for name, check in CATALOG.items() if check.family is None} == {
        fault.check for fault in FAULTS
    }


@pytest.mark.parametrize("name", [name for name, check in CATALOG.items() if check.at != catalog.VOLUME])
def test_check_passes_on_the_untouched_clone(context: CheckContext, name: str) -> None:
    failure = run_check(name, context)
    assert failure is None, str(failure)


@pytest.mark.parametrize("name", [name for name, check in CATALOG.items() if check.at == catalog.VOLUME])
def test_check_passes_on_the_untouched_volume(volume: CheckContext, name: str) -> None:
    failure = run_check(name, volume)
    assert failure is None, str(failure)


@pytest.mark.parametrize("fault", FAULTS, ids=[f"{fault.check}: {fault.what}" for fault in FAULTS])
def test_check_fails_on_its_fault(request: pytest.FixtureRequest, fault: Fault) -> None:
    ctx: CheckContext = request.getfixturevalue("volume" if fault.where == VOLUME else "context")
    ctx.conn.execute(fault.sql.encode())
    failure = run_check(fault.check, ctx)
    assert failure is not None, f"{fault.check} passed although {fault.what}"
    assert fault.expect in str(failure), str(failure)


GRANTEE_FAULTS = [fault for fault in FAULTS if fault.allowed_by is not None]


def _declaring(ctx: CheckContext, *declarations: str) -> CheckContext:
    """The same connection, with roles declared as --allowed-grantee declares them."""
    return dataclasses.replace(ctx, allowed_grantees=parse_allowed_grantees(declarations))


@pytest.mark.parametrize(
    "fault", GRANTEE_FAULTS, ids=[f"{fault.check}: {fault.allowed_by}" for fault in GRANTEE_FAULTS]
)
def test_a_declared_grantee_makes_the_same_grant_pass(context: CheckContext, fault: Fault) -> None:
    assert fault.allowed_by is not None
    context.conn.execute(fault.sql.encode())
    assert run_check(fault.check, context) is not None, "the grant passes even undeclared"
    failure = run_check(fault.check, _declaring(context, "someone_else", fault.allowed_by))
    assert failure is None, str(failure)


def test_a_grantee_declared_for_some_privileges_is_refused_any_other(context: CheckContext) -> None:
    context.conn.execute(
        "CREATE ROLE gate_fault_reporting; GRANT SELECT, INSERT ON credentials TO gate_fault_reporting;"
        " GRANT SELECT ON users TO gate_fault_reporting WITH GRANT OPTION"
    )
    failure = run_check("grantees[tables]", _declaring(context, "gate_fault_reporting:SELECT"))
    assert failure is not None and failure.count == 2, str(failure)
    refused = dict(failure.sections)["grants not allowed"].splitlines()
    assert refused == [
        "table public.credentials: INSERT granted to gate_fault_reporting (by postgres)",
        # A declared privilege is the privilege alone: handing it on is more.
        "table public.users: SELECT WITH GRANT OPTION granted to gate_fault_reporting (by postgres)",
    ]
    assert "declared with --allowed-grantee: gate_fault_reporting:SELECT" in str(failure)
    assert run_check("grantees[tables]", _declaring(context, "gate_fault_reporting")) is None


@pytest.fixture
def maintain_context(disposable_gate: CheckpointDatabases, context: CheckContext) -> Iterator[CheckContext]:
    """The session's server when it knows MAINTAIN (17 and newer), else a newer one installed here, migrated."""
    if context.conn.info.server_version >= privileges.MAINTAIN_FROM_SERVER_VERSION:
        yield context
        return
    newer = [found for found in installations.installations() if found.major >= 17]
    if not newer:
        pytest.skip(
            "MAINTAIN is a table privilege from PostgreSQL 17 on, and no such server is installed here"
        )
    plan = disposable_gate.plan
    with DisposableServer(installation=newer[0]) as server, server.temporary_database("maintain") as url:
        runner.migrate(url, plan)
        with dsn.connect(url) as conn, conn.transaction(force_rollback=True):
            yield CheckContext(conn, plan, MIGRATED)


def test_maintain_is_reviewed_where_the_server_has_it(maintain_context: CheckContext) -> None:
    context = maintain_context
    context.conn.execute(
        "CREATE ROLE gate_fault_janitor; GRANT MAINTAIN ON activities TO gate_fault_janitor, fluxolab_devmode"
    )
    review = run_check("grantees[tables]", context)
    assert review is not None and "table public.activities: MAINTAIN granted to gate_fault_janitor" in str(
        review
    )
    assert "table public.activities: MAINTAIN granted to fluxolab_devmode" in str(review)
    effective = run_check("table_privileges[activities]", context)
    assert effective is not None and "extra" in str(effective) and "MAINTAIN" in str(effective)


def test_invariant_failure_reports_count_capped_sample_with_keys_and_sql(context: CheckContext) -> None:
    context.conn.execute(
        "INSERT INTO users (email, name) SELECT 'nodefault' || n || '@example.com', 'No Default ' || n "
        "FROM generate_series(1, 15) AS n"
    )
    result = invariants.run(context.conn, INVARIANTS["users_without_default_workspace"], "after_008 (clone)")
    failure = result.failure()
    sections = dict(failure.sections)
    assert result.count == 15 and len(result.sample) == 10
    assert result.columns[0] == "user_id"
    assert sections["count"] == "15"
    assert "offending rows (first 10 of 15)" in sections
    sample = sections["offending rows (first 10 of 15)"]
    assert sample.splitlines()[0].startswith("user_id") and len(sample.splitlines()) == 12
    assert "FROM public.users" in sections["SQL to run again by hand"]
    assert "users_without_default_workspace.sql, on after_008 (clone)" in sections["SQL to run again by hand"]
    # The SQL shown is the SQL that found them: rerunning it by hand finds the same rows.
    rerun = context.conn.execute(INVARIANTS["users_without_default_workspace"].sql).fetchall()
    assert len(rerun) == 15 and [row[0] for row in rerun[:10]] == [row[0] for row in result.sample]


def test_profile_audit_reports_what_it_finds_and_is_not_a_check(context: CheckContext) -> None:
    before = profile_audit(context.conn, "after_008")
    context.conn.execute(
        "UPDATE workspace_members m SET profile_id = (SELECT id FROM profiles WHERE code = 'admin') "
        f"FROM users u WHERE m.user_id = u.id AND m.workspace_id = u.default_workspace_id AND u.id = {OWN_DEFAULT}"
    )
    after = profile_audit(context.conn, "after_008")
    assert after.figures.get("admin", 0) == before.figures.get("admin", 0) + 1
    assert after.figures["owner"] == before.figures["owner"] - 1
    assert after.total == before.total


@pytest.fixture
def private_clone(clone: Callable[[str], str]) -> str:
    """A clone of its own, for a fault that must be committed."""
    return clone("after_008")


def test_a_failed_create_index_concurrently_leaves_an_invalid_index_that_fails_the_check(
    private_clone: str,
) -> None:
    with dsn.connect(private_clone) as conn:
        assert structure.check_no_invalid_indexes(conn) == []
        # Two credentials share a workspace, so a unique index fails half-built and stays, invalid.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY credentials_one_per_workspace ON credentials (workspace_id)"
            )
        with pytest.raises(CheckFailed) as failed:
            structure.check_no_invalid_indexes(conn)
    assert "credentials_one_per_workspace" in str(failed.value)


def test_an_invalid_index_under_the_contract_name_fails_its_definition(private_clone: str) -> None:
    with dsn.connect(private_clone) as conn:
        conn.execute("DROP INDEX idx_credentials_workspace")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_credentials_workspace ON credentials (workspace_id)"
            )
        with pytest.raises(CheckFailed) as failed:
            explain.check_usable(conn, CREDENTIALS)
    assert "not valid" in str(failed.value)


# The ledger against edited copies of the migrations directory.


def _edit_applied_file(directory: Path) -> None:
    path = directory / "003_business_core.sql"
    path.write_text(path.read_text() + "\n-- a harmless-looking edit after it was applied\n")


def _add_pending_file(directory: Path) -> None:
    (directory / "009_pending.sql").write_text("CREATE TABLE pending_thing (id int);\n")


def _remove_applied_file(directory: Path) -> None:
    last = sorted(directory.glob("*.sql"))[-1]
    last.unlink()


def _rename_applied_file(directory: Path) -> None:
    (directory / "002_workspaces.sql").rename(directory / "002_workspaces_v2.sql")


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (_edit_applied_file, r"003_business_core\.sql +\| edited after it was applied"),
        (_add_pending_file, r"009_pending\.sql +\| pending: not applied"),
        (_remove_applied_file, r"008_\w+\.sql +\| unknown: applied, but no such file"),
        (
            _rename_applied_file,
            r"002_workspaces_v2\.sql +\| renamed: the ledger applied it as 002_workspaces\.sql",
        ),
    ],
    ids=["applied file edited", "new file pending", "applied file removed", "applied file renamed"],
)
def test_ledger_fails_on_a_changed_migrations_directory(
    context: CheckContext, migrations_copy: Path, edit: Callable[[Path], None], expect: str
) -> None:
    assert ledger_check.check_ledger(context.conn, load_plan(migrations_copy))
    edit(migrations_copy)
    with pytest.raises(CheckFailed) as failed:
        ledger_check.check_ledger(context.conn, load_plan(migrations_copy), str(migrations_copy))
    assert re.search(expect, str(failed.value)), str(failed.value)


def test_a_random_page_cost_fault_still_leaves_the_index_usable(volume: CheckContext) -> None:
    # Usable and chosen answer different questions: costs decide "chosen" only.
    volume.conn.execute("SET LOCAL random_page_cost = 100000")
    assert explain.uses_index(explain.check_usable(volume.conn, ACTIVITIES), ACTIVITIES.index)


def test_chosen_is_asserted_on_the_volume_whatever_its_size(volume: CheckContext) -> None:
    """The volume is sized for plans to matter; on the database's own data a small table is a skip."""
    assert explain.too_small_for_chosen(volume.conn, CREDENTIALS, min_rows=1_000) is None
    assert run_check(f"index_chosen[{CREDENTIALS.index}]", volume) is None


def test_chosen_is_skipped_with_a_reason_on_a_small_table(context: CheckContext) -> None:
    reason = explain.too_small_for_chosen(context.conn, CREDENTIALS)
    assert reason is not None and "rows (< 10000)" in reason
    with pytest.raises(CheckSkipped) as skipped:
        CATALOG[f"index_chosen[{CREDENTIALS.index}]"].verify(context)
    assert skipped.value.reason == reason
    context.conn.execute("CREATE TABLE public.never_analyzed AS SELECT 1 AS id")
    unknown = explain.ApplicationQuery("probe", "none", "never_analyzed", ("id",), "SELECT 1", 1)
    assert "never been analyzed" in (explain.too_small_for_chosen(context.conn, unknown) or "")


def test_explain_leaves_no_prepared_statement_and_survives_a_leftover(context: CheckContext) -> None:
    # A statement left prepared by an interrupted run must not make the next EXPLAIN fail.
    context.conn.execute("PREPARE migration_gate_application_query(bigint) AS SELECT $1")
    plan = explain.explain(context.conn, CREDENTIALS, seqscan=False)
    assert explain.uses_index(plan, CREDENTIALS.index)
    assert context.conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    assert context.conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
