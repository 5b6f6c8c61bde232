"""Drift: a database's schema against what its migrations and corrections build on an empty database.

The one comparison behind ``schema_drift`` (the nightly run, the playbook's preflight)
and ``baseline`` (a database another runner migrated is exactly at a version): the
expected schema is built on a disposable server, read with ``schema.snapshot`` (owners
and grants left out: the grantee review covers them), and compared object by object
with the database's. Each difference is one sentence::

    index public.tmp_fix_idx on public.activities (action): on the database, not built by the migrations

The disposable server is the caller's when it has one (the gate's own), else one
started for the build, of the database's major when it is installed here; otherwise the
nearest, and the build says which. An expected schema depends only on the files' text,
the server's build and this module's code, so it is built once for each: kept in the
process, and on disk for the next process of the same OS user (a directory of the
temporary directory that only that user can enter; a file that is not theirs, or not
exactly what was asked for, is passed over and the schema built again).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from migration_gate.core import dsn, ledger, runner, schema
from migration_gate.core.cluster_template import private_directory
from migration_gate.core.corrections import Correction
from migration_gate.core.errors import UsageError
from migration_gate.core.installations import Installation, installation_for
from migration_gate.core.plan import Migration
from migration_gate.core.server import DisposableServer

Progress = Callable[[str], None]

ON_DATABASE = "on the database, not built by the migrations"
NOT_ON_DATABASE = "built by the migrations, not on the database"
# A definition longer than this (a function's body) is said to differ; the details show how.
SHORT_DEFINITION = 100


class ReferenceUnavailable(UsageError):
    """No disposable server could start to build the expected schema on (nothing to compare with)."""


@dataclass(frozen=True)
class Expected:
    """The schema a database should have, and what it was built from and on."""

    schema: dict[tuple[str, str], schema.SchemaObject]
    built_from: str  # "001→008 and 1 correction"
    server: str  # "PostgreSQL 15.18 (PATH, /usr/lib/postgresql/15/bin)"
    note: str | None = None  # said when the server's major is not the database's


@dataclass(frozen=True)
class Reference:
    """Where an expected schema is built: ``server`` when the caller runs one, else one started for it."""

    server: DisposableServer | None = None
    pg_ctl: str | None = None
    pg_version: object = None

    def expected(
        self,
        migrations: Sequence[Migration],
        corrections: Sequence[Correction],
        database_major: int,
        progress: Progress = lambda line: None,
    ) -> Expected:
        """What ``migrations``, with each correction right after the migration it names, build on an empty database."""
        installation, note = self._installation(database_major)
        if note:
            progress(note)
        key = (
            str(installation.bindir),
            installation.version,
            tuple((m.version, m.checksum) for m in migrations),
            tuple((c.name, c.checksum, c.after) for c in corrections),
        )
        built = _BUILT.get(key)
        if built is None:
            built = _DiskCache.read(key)
            if built is not None:
                progress(
                    f"{built.built_from} as built earlier on a disposable {built.server}, to compare against"
                )
        if built is None:
            what = describe_build(migrations, corrections)
            progress(f"building {what} on a disposable {installation.describe()} to compare against")
            if self.server is not None:
                objects = _build(self.server, migrations, corrections)
            else:
                objects = _build_on_a_server_of_its_own(installation, migrations, corrections)
            built = Expected(objects, what, installation.describe())
            _DiskCache.write(key, built)
        _BUILT[key] = built
        return Expected(built.schema, built.built_from, built.server, note)

    def _installation(self, database_major: int) -> tuple[Installation, str | None]:
        if self.server is not None:
            ours = self.server.installation
            if ours.major == database_major:
                return ours, None
            return ours, f"the database runs PostgreSQL {database_major}: building on {ours.describe()}"
        try:
            return installation_for(database_major, self.pg_ctl, self.pg_version)
        except UsageError as exc:
            raise ReferenceUnavailable(str(exc)) from None


_BUILT: dict[object, Expected] = {}
CACHE_PREFIX = "migration-gate-expected-"


@cache
def _code() -> str:
    """What the snapshot and the build are made by: a change to either makes every cached schema stale."""
    made_by = hashlib.sha256()
    for module in (schema, runner):
        made_by.update(Path(str(module.__file__)).read_bytes())
    made_by.update(Path(__file__).read_bytes())
    return made_by.hexdigest()


class _DiskCache:
    """Expected schemas kept for the next process of the same OS user; anything doubtful is passed over."""

    @staticmethod
    def _directory() -> Path | None:
        path = Path(tempfile.gettempdir()) / f"{CACHE_PREFIX}{os.getuid()}"
        with contextlib.suppress(OSError):
            path.mkdir(mode=0o700, exist_ok=True)
        return path if private_directory(path, os.getuid()) else None

    @staticmethod
    def _name(key: object) -> tuple[str, str]:
        text = json.dumps([_code(), key])
        return text, hashlib.sha256(text.encode()).hexdigest() + ".json"

    @classmethod
    def read(cls, key: object) -> Expected | None:
        directory = cls._directory()
        if directory is None:
            return None
        text, name = cls._name(key)
        try:
            fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as file:
                if os.fstat(file.fileno()).st_uid != os.getuid():
                    return None
                kept = json.loads(file.read())
            if kept["key"] != text:
                return None
            objects = [schema.SchemaObject(*(str(part) for part in row)) for row in kept["objects"]]
            return Expected({o.key: o for o in objects}, str(kept["built_from"]), str(kept["server"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def write(cls, key: object, expected: Expected) -> None:
        """Written beside its place and renamed into it; a cache that cannot be written is only slower."""
        directory = cls._directory()
        if directory is None:
            return
        text, name = cls._name(key)
        kept = {
            "key": text,
            "built_from": expected.built_from,
            "server": expected.server,
            "objects": [[o.kind, o.name, o.parent, o.definition] for o in expected.schema.values()],
        }
        with contextlib.suppress(OSError):
            fd, partial = tempfile.mkstemp(prefix=".writing-", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    json.dump(kept, file)
                os.replace(partial, directory / name)
            except OSError:
                os.unlink(partial)
                raise


def describe_build(migrations: Sequence[Migration], corrections: Sequence[Correction]) -> str:
    """``001→008 and 2 correction(s)``: what an expected schema is built from."""
    applied = f"{migrations[0].label}→{migrations[-1].label}" if migrations else "no migration"
    return applied + (f" and {len(corrections)} correction(s)" if corrections else "")


def _build(
    server: DisposableServer, migrations: Sequence[Migration], corrections: Sequence[Correction]
) -> dict[tuple[str, str], schema.SchemaObject]:
    """Apply them on a new database of ``server``, in order, read its schema, drop it."""
    with server.temporary_database("expected") as url, dsn.connect(url) as conn:
        ledger.ensure(conn)  # the runner's apply keeps its ledger; the snapshot leaves it out
        runner.apply_corrections(conn, _following(None, migrations, corrections), 0, _quiet)
        for migration in migrations:
            runner.apply(conn, migration)
            following = _following(migration, migrations, corrections)
            runner.apply_corrections(conn, following, migration.version, _quiet)
        return schema.snapshot(conn)


def _quiet(line: str) -> None:
    """The build's own progress is not the caller's: one line says what is built."""


def _following(
    migration: Migration | None, migrations: Sequence[Migration], corrections: Sequence[Correction]
) -> list[Correction]:
    """The corrections that ran right after ``migration`` (None: before any), the last one at or before their place."""
    versions = [m.version for m in migrations]

    def place(correction: Correction) -> int | None:
        before = [v for v in versions if v <= (correction.after or 0)]
        return before[-1] if before else None

    wanted = migration.version if migration is not None else None
    return [c for c in corrections if place(c) == wanted]


def _build_on_a_server_of_its_own(
    installation: Installation, migrations: Sequence[Migration], corrections: Sequence[Correction]
) -> dict[tuple[str, str], schema.SchemaObject]:
    try:
        server = DisposableServer(installation=installation).start()
    except UsageError as exc:
        raise ReferenceUnavailable(str(exc)) from None
    try:
        return _build(server, migrations, corrections)
    finally:
        server.stop()


# -- Saying what differs ------------------------------------------------------------------


def _short(definition: str) -> bool:
    return len(definition) <= SHORT_DEFINITION and "\n" not in definition


def phrase(change: schema.Change) -> str:
    """One difference, from the database's side: on it and not built, built and not on it, or defined otherwise."""
    if change.action == schema.ADDED:
        return f"{change.object.describe()}: {ON_DATABASE}"
    if change.action == schema.DROPPED:
        return f"{change.object.describe()}: {NOT_ON_DATABASE}"
    assert change.before is not None and change.after is not None
    subject = f"{change.kind} {change.object.name}"
    if not _long(change):
        return (
            f"{subject}: built by the migrations as {change.before.definition}, "
            f"on the database as {change.after.definition}"
        )
    return f"{subject}: defined otherwise on the database than by the migrations (see how below)"


def _long(change: schema.Change) -> bool:
    """An altered object whose definitions are too long for one line."""
    return (
        change.before is not None
        and change.after is not None
        and not (_short(change.before.definition) and _short(change.after.definition))
    )


def how_they_differ(changes: Iterable[schema.Change]) -> str:
    """A unified diff of each long definition that differs (a function's body), for the details."""
    parts = []
    for change in changes:
        if change.action != schema.ALTERED or not _long(change):
            continue
        assert change.before is not None and change.after is not None
        parts.append(
            "\n".join(
                difflib.unified_diff(
                    change.before.definition.splitlines(),
                    change.after.definition.splitlines(),
                    f"{change.object.name} (built by the migrations)",
                    f"{change.object.name} (on the database)",
                    lineterm="",
                )
            )
        )
    return "\n\n".join(parts)


def first_differences(changes: Sequence[schema.Change], limit: int = 5) -> str:
    """The first few differences in one line, and how many more there are."""
    shown = [phrase(change) for change in changes[:limit]]
    hidden = len(changes) - len(shown)
    return "; ".join(shown) + (f"; … and {hidden} more" if hidden > 0 else "")
