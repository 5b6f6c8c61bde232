"""The backup's record, ``<backup>.meta.json``: whose backup it is (a restore goes nowhere else) and what it held."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migration_gate.core.errors import UsageError
from migration_gate.core.identity import DatabaseIdentity

METADATA_SUFFIX = ".meta.json"


@dataclass
class BackupMetadata:
    """What the sidecar ``<backup>.meta.json`` records: whose backup this is, and what it held."""

    identity: DatabaseIdentity
    fingerprint: dict[str, Any]
    pg_dump_version: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity.to_json(),
            "fingerprint": self.fingerprint,
            "pg_dump_version": self.pg_dump_version,
            "created_at": self.created_at,
        }


def metadata_path(backup: Path) -> Path:
    return backup.with_name(backup.name + METADATA_SUFFIX)


def write_metadata(backup: Path, metadata: BackupMetadata) -> Path:
    path = metadata_path(backup)
    path.write_text(json.dumps(metadata.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metadata(backup: Path) -> BackupMetadata:
    path = metadata_path(backup)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BackupMetadata(
            DatabaseIdentity.from_json(data["identity"]),
            data["fingerprint"],
            data["pg_dump_version"],
            data["created_at"],
        )
    except FileNotFoundError:
        raise UsageError(
            f"no {path.name} beside {backup.name}: only a backup taken by 'migration-gate playbook' "
            "records which database it may be restored into"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable backup record ({type(exc).__name__})") from None


def verify_target(metadata: BackupMetadata, target: DatabaseIdentity, backup: Path) -> None:
    """Refuse (exit 2) to restore ``backup`` into any database but the one it was taken from."""
    if not target.same_database_as(metadata.identity):
        raise UsageError(
            f"refusing to restore {backup.name}: it was taken from {metadata.identity.describe()}, "
            f"not from {target.describe()}"
        )
