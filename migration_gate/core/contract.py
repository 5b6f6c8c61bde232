"""The contract's fixed names (tables, the application role, the archive): one place for all.

Operators and other tools refer to these names (docs/contract.md); every module takes them from here.
"""

from __future__ import annotations

APP_ROLE = "fluxolab_devmode"
ARCHIVE_SCHEMA = "legacy_archive"

# The tables 001-004 create: the legacy schema staging holds today.
LEGACY_TABLES = (
    "users",
    "profiles",
    "workspaces",
    "workspace_members",
    "credentials",
    "activities",
    "webhook_registrations",
    "webhook_events",
)
# The columns of each legacy table that holds data, in the order 001-004 create them.
LEGACY_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "name", "created_at"),
    "workspaces": ("id", "owner_id", "name", "created_at"),
    "workspace_members": ("workspace_id", "user_id", "profile_id", "created_at"),
    "credentials": ("id", "user_id", "name", "provider", "secret", "created_at", "updated_at"),
    "webhook_registrations": ("id", "user_id", "target_url", "event_types", "secret", "active", "created_at"),
    "webhook_events": (
        "id",
        "registration_id",
        "event_type",
        "body",
        "status",
        "attempts",
        "created_at",
        "processed_at",
    ),
    "activities": ("id", "user_id", "action", "payload", "created_at"),
}
# legacy_archive after 008: what moved there keeps its pre-005 columns, plus archived_at;
# the payloads of the activities that stayed are kept by id.
ARCHIVE_TABLES: dict[str, tuple[str, ...]] = {
    **{
        table: (*LEGACY_COLUMNS[table], "archived_at")
        for table in ("webhook_registrations", "webhook_events", "activities")
    },
    "activity_payloads": ("activity_id", "payload"),
}
# 008 leaves the same eight tables in public (and moves what it takes out to the archive).
PUBLIC_TABLES = LEGACY_TABLES
# The tables 005 scopes to a workspace and 007/008 make NOT NULL.
WORKSPACE_SCOPED_TABLES = ("credentials", "webhook_registrations", "webhook_events", "activities")

# The legacy schema staging holds today is the state after this migration (docs/contract.md §1).
LEGACY_VERSION = 4
# The runbook stops after these migrations to count what must be zero (docs/contract.md §3).
PAUSE_AFTER = (6, 7)

# The rules of docs/contract.md §8, by their fixed names (checks/rules: one file each). An
# operator names them in exemptions, and reads them in test ids: <rule>[<table>].
TENANT_SCHEMA = "public"
TABLE_RULES = (
    "tenant_workspace_not_null",
    "tenant_foreign_key",
    "tenant_workspace_index",
    "tenant_member_workspace",
    "tenant_reference_workspace",
)
SECURITY_DEFINER_FUNCTIONS = "security_definer_functions"
