"""A cluster initialised once per PostgreSQL installation and OS user, copied for every disposable server.

``initdb`` is most of a disposable server's start (0.6-1.5 s of CPU here, more on a busy
machine), and a gate session, a nightly run's ``schema_drift``, a rehearsal and ``make
test`` start many. The cluster ``initdb`` makes depends only on the server build (the
digest of its ``postgres`` binary, so that copies of one installation share a template),
the options it is given and the OS user that runs it, so the first start keeps one in
the temporary directory and every later start copies it (a tenth of a second).

The template is used only when it is what this process would have made: a directory of
the expected owner, closed to everyone else (mode 0700, as initdb leaves it), holding
``PG_VERSION``. Anything else (another user's, a half-built one) is passed over, and the
server is initialised the ordinary way. A template is built beside its final place and
renamed into it, so two processes building at once never see half of one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "migration-gate-cluster-"


def private_directory(path: Path, uid: int) -> bool:
    """Whether ``path`` is a directory itself (not a symlink), owned by ``uid`` and closed to everyone else."""
    try:
        found = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == uid and stat.S_IMODE(found.st_mode) & 0o077 == 0


@functools.cache
def _build_of(bindir: Path) -> str:
    """The server build, by the digest of its ``postgres`` binary: copies of one installation
    (a venv's, a staged copy) share one template instead of leaving one each in /tmp."""
    try:
        with (bindir / "postgres").open("rb") as binary:
            return hashlib.file_digest(binary, "sha256").hexdigest()
    except OSError:
        return str(bindir)


@dataclass(frozen=True)
class ClusterTemplate:
    """Where the template of one installation, initdb options and OS user lives, and who must own it."""

    path: Path
    uid: int
    gid: int

    @classmethod
    def for_server(cls, bindir: Path, version: str, options: str, uid: int, gid: int) -> ClusterTemplate:
        build = _build_of(bindir.resolve())
        key = hashlib.sha256(f"{build}\0{version}\0{options}\0{uid}".encode()).hexdigest()[:16]
        return cls(Path(tempfile.gettempdir()) / f"{PREFIX}{version}-{key}", uid, gid)

    def ready(self) -> bool:
        """Whether a whole template of the expected owner, closed to others, is there."""
        return private_directory(self.path, self.uid) and (self.path / "PG_VERSION").is_file()

    def build(self, initdb: Callable[[Path], None]) -> None:
        """``initdb(pgdata)`` into a private directory beside the template's place, then renamed into it."""
        building = Path(tempfile.mkdtemp(prefix=f"{self.path.name}-building-", dir=self.path.parent))
        try:
            self._own(building)
            initdb(building / "data")
            with contextlib.suppress(OSError):  # another process renamed its own first: keep that one
                os.rename(building / "data", self.path)
        finally:
            shutil.rmtree(building, ignore_errors=True)

    def copy_to(self, datadir: Path) -> None:
        """A new cluster at ``datadir`` (absent yet), the template's copy, owned by the server's OS user."""
        shutil.copytree(self.path, datadir, symlinks=True)
        if os.geteuid() != self.uid:
            for directory, _, files in os.walk(datadir):
                self._own(Path(directory))
                for name in files:
                    self._own(Path(directory) / name)

    def _own(self, path: Path) -> None:
        if os.geteuid() != self.uid:
            os.lchown(path, self.uid, self.gid)
