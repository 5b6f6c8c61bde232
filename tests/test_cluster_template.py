"""A disposable server's cluster is a copy of one initialised once, and only of one that is what initdb would make."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from migration_gate.core import dsn, installations
from migration_gate.core.cluster_template import ClusterTemplate
from migration_gate.core.server import DisposableServer


def fake_initdb(calls: list[Path]) -> object:
    def initdb(pgdata: Path) -> None:
        calls.append(pgdata)
        pgdata.mkdir(mode=0o700)
        (pgdata / "PG_VERSION").write_text("15\n")
        (pgdata / "base").mkdir()
        (pgdata / "base" / "1").write_text("a file of the cluster\n")

    return initdb


def template_in(tmp_path: Path) -> ClusterTemplate:
    return ClusterTemplate(tmp_path / "template", os.geteuid(), os.getegid())


def test_the_first_start_builds_the_template_and_every_copy_is_whole(tmp_path: Path) -> None:
    template, calls = template_in(tmp_path), []
    assert not template.ready()
    template.build(fake_initdb(calls))  # type: ignore[arg-type]
    assert template.ready() and len(calls) == 1 and calls[0].parent != template.path.parent
    assert sorted(path.name for path in tmp_path.iterdir()) == ["template"]  # the building directory is gone
    template.copy_to(tmp_path / "data")
    assert (tmp_path / "data" / "base" / "1").read_text() == "a file of the cluster\n"
    assert oct((tmp_path / "data").stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path.chmod(0o755), id="open-to-others"),
        pytest.param(lambda path: (path / "PG_VERSION").unlink(), id="half-built"),
        pytest.param(lambda path: (shutil.rmtree(path), path.write_text("not a directory")), id="a-file"),
    ],
)
def test_a_template_that_is_not_what_initdb_makes_is_passed_over(tmp_path: Path, spoil: object) -> None:
    template = template_in(tmp_path)
    template.build(fake_initdb([]))  # type: ignore[arg-type]
    spoil(template.path)  # type: ignore[operator]
    assert not template.ready()


def test_someone_elses_template_is_passed_over(tmp_path: Path) -> None:
    template = template_in(tmp_path)
    template.build(fake_initdb([]))  # type: ignore[arg-type]
    assert not ClusterTemplate(template.path, template.uid + 1, template.gid).ready()


def test_servers_started_from_the_template_are_separate_working_clusters() -> None:
    with DisposableServer() as first, DisposableServer(installation=first.installation) as second:
        template = first.executor.template  # type: ignore[attr-defined]
        assert template is not None and template.ready()
        with dsn.connect(first.url()) as conn:
            conn.execute("CREATE DATABASE only_in_the_first")
        with dsn.connect(second.url()) as conn:
            names = {row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
        assert "only_in_the_first" not in names and first.base != second.base
    assert not (template.path / "base" / "only_in_the_first").exists()


def test_copies_of_one_installation_share_a_template_and_another_build_does_not(tmp_path: Path) -> None:
    installed = installations.find_installation().bindir
    copy, other = tmp_path / "copy" / "bin", tmp_path / "other" / "bin"
    copy.mkdir(parents=True)
    other.mkdir(parents=True)
    shutil.copy2(installed / "postgres", copy / "postgres")
    (other / "postgres").write_bytes((installed / "postgres").read_bytes() + b"\0")

    def template(bindir: Path) -> Path:
        return ClusterTemplate.for_server(bindir, "15.0", "--no-sync", os.getuid(), os.getgid()).path

    assert template(copy) == template(installed), "a staged copy of the same build made a template of its own"
    assert template(other) != template(installed)
