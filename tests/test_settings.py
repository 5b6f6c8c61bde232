"""One declaration per option: the command line and pytest take every flag from core/settings.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from migration_gate import cli
from migration_gate.core import settings
from migration_gate.core.errors import UsageError
from tests.conftest import run_cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_of_every_command_is_a_declared_setting() -> None:
    for name, parser in subcommands().items():
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            declared = settings.setting(action.dest)  # KeyError: a flag written by hand
            assert action.option_strings == [declared.option], f"{name}: {action.option_strings}"


def test_every_setting_is_an_option_somewhere() -> None:
    used = {option for command in cli.COMMANDS for option in (*command.options, *command.positional)}
    used |= {declared.name for declared in settings.pytest_settings()}
    unused = [
        declared.name
        for declared in settings.SETTINGS
        if declared.on_command_line and declared.name not in used
    ]
    assert unused == []


def test_a_setting_is_read_the_same_way_on_the_command_line_and_in_pytest(tmp_path: Path) -> None:
    # The one parser of its kind: the same words for the same mistake, wherever it is made.
    with pytest.raises(UsageError) as refused:
        settings.setting("lock_timeout").parse("soon")
    done = run_cli("migrate", "--database", "postgresql://nobody@127.0.0.1:1/x", "--lock-timeout", "soon")
    assert done.returncode == 2 and str(refused.value).removeprefix("--lock-timeout ") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("lock_timeout", "500ms", "500ms"),
        ("smoke_delivery_timeout", "2.5", 2.5),
        ("pg_version", "18", 18),
        ("scales", "1_000,20", [1000, 20]),
        ("smoke_actors", "1:10, 2:20", (1, 10, 2, 20)),
        ("port", "0", 0),
    ],
)
def test_each_kind_reads_its_values(name: str, text: str, expected: object) -> None:
    assert settings.setting(name).parse(text) == expected


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("lock_timeout", "5 seconds"),
        ("smoke_delivery_timeout", "0"),
        ("retry_backoff", "nan"),
        ("pg_version", "7"),
        ("scales", "10,-1"),
        ("port", "65536"),
        ("users", "0"),
        ("smoke_actors", "1:10"),
    ],
)
def test_each_kind_refuses_in_one_line_naming_the_option(name: str, text: str) -> None:
    declared = settings.setting(name)
    with pytest.raises(UsageError) as refused:
        declared.parse(text)
    assert str(refused.value).startswith(f"{declared.option} {text!r}: expected")
    assert "\n" not in str(refused.value)


def test_flag_then_environment_then_project_then_default() -> None:
    declared = settings.setting("lock_timeout")
    environ = {"UNUSED": "x"}
    assert settings.resolve(declared, None, environ, {}) == "5s"
    assert settings.resolve(declared, None, environ, {"lock_timeout": "7s"}) == "7s"
    assert settings.resolve(declared, "9s", environ, {"lock_timeout": "7s"}) == "9s"
    version = settings.setting("pg_version")
    assert settings.resolve(version, None, {version.env or "": "18"}, {"pg_version": "15"}) == 18
    # A command's own default: migrate bounds no statement unless told to.
    timeout = settings.setting("statement_timeout")
    assert settings.resolve(timeout, None, {}, {}, "migrate") == "0"
    assert settings.resolve(timeout, None, {}, {}) == "30s"


def test_the_command_line_reads_the_projects_ini_options(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'migrations_dir = "db/migrations"\n'
        'allowed_grantee = """\nreporting:SELECT\nreplicator\n"""\n'
        'unrelated_option = "ignored"\n',
        encoding="utf-8",
    )
    nested = tmp_path / "deeper"
    nested.mkdir()
    found, root = settings.project_options(nested)
    assert root == tmp_path
    assert found["migrations_dir"] == str(tmp_path / "db" / "migrations")  # relative to the file
    grantees = settings.resolve(settings.setting("allowed_grantee"), None, {}, found)
    assert [str(grantee) for grantee in grantees] == ["reporting:SELECT", "replicator"]
    assert "unrelated_option" not in found


def test_a_project_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options\n", encoding="utf-8")
    with pytest.raises(UsageError) as refused:
        settings.project_options(tmp_path)
    assert "not readable TOML" in str(refused.value) and "\n" not in str(refused.value)


def test_a_token_is_never_a_flag_nor_an_ini_option() -> None:
    token = settings.setting("api_token")
    assert not token.on_command_line and token.env == "FLUXOLAB_API_TOKEN"
    flags = {
        action.option_strings[0]
        for p in subcommands().values()
        for action in p._actions
        if action.option_strings
    }
    assert token.option not in flags
