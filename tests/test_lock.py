"""requirements.lock, what `make` and CI install from, keeps up with pyproject.toml's ranges.

A clone made in six months must install what CI tested: every package pinned, with its
hashes. pyproject.toml keeps ranges for those who `pip install migration-gate`; when a
range moves past the lock (a new dependency, a raised floor), `make test` fails here until
`make lock` is run again.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

LOCK = REPO / "requirements.lock"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def pins() -> dict[str, tuple[Version, Marker | None, int]]:
    """Name → (version, marker, number of hashes) of every entry of the lock."""
    found: dict[str, tuple[Version, Marker | None, int]] = {}
    current = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match["name"])
            marker = Marker(match["marker"]) if match["marker"] else None
            found[current] = (Version(match["version"]), marker, 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            version, marker, hashes = found[current]
            found[current] = (version, marker, hashes + 1)
    return found


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml makes: dependencies, the extras make installs, the build backend."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    texts = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["dev"],
        *project["project"]["optional-dependencies"]["server"],
        *project["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


def unmet(
    requirements: list[Requirement], locked: dict[str, tuple[Version, Marker | None, int]]
) -> list[str]:
    """The requirements no pin of the lock satisfies, each with why."""
    found = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in locked:
            found.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            found.append(f"{requirement}: the lock pins {locked[name][0]}")
    return found


def test_every_range_of_pyproject_is_met_by_a_pin_of_the_lock() -> None:
    problems = unmet(declared(), pins())
    assert problems == [], (
        "requirements.lock no longer satisfies pyproject.toml; run `make lock`: " + "; ".join(problems)
    )


def test_a_range_the_lock_does_not_meet_is_caught() -> None:
    # The check can fail: a floor raised past the pinned version, or a new dependency.
    locked = pins()
    raised = Requirement(f"pytest>{locked['pytest'][0]}")
    assert unmet([raised, Requirement("a-package-nobody-locked>=1")], locked) == [
        f"{raised}: the lock pins {locked['pytest'][0]}",
        "a-package-nobody-locked>=1: not in the lock",
    ]


def test_every_pin_has_its_hashes() -> None:
    locked = pins()
    assert len(locked) > 30
    assert [name for name, (_, _, hashes) in locked.items() if hashes == 0] == []


def test_this_environment_is_the_lock() -> None:
    """What `make` installed is exactly what the lock pins (for this platform's markers)."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(
            f"this interpreter ({sys.prefix}) is not the .venv make installs from the lock (tox, say)"
        )
    different = []
    for name, (version, marker, _) in pins().items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            different.append(f"{name}: not installed")
            continue
        if installed != version:
            different.append(f"{name}: {installed} installed, {version} locked")
    assert different == []
