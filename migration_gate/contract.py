"""The contract's fixed names (tables, the application role, the archive): one place for all.

Operators and other tools refer to these names; every module takes them from here.
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
# 008 leaves the same eight tables in public (and moves what it takes out to the archive).
PUBLIC_TABLES = LEGACY_TABLES
# The tables 005 scopes to a workspace and 007/008 make NOT NULL.
WORKSPACE_SCOPED_TABLES = ("credentials", "webhook_registrations", "webhook_events", "activities")
