"""The `mlopsctl` entry point: its version, its commands, and usage errors. What each command
checks of its own arguments is in tests/mlopsctl/commands/, the exit code of each error in
base/test_errors.py."""

from mlopsctl.cli import COMMANDS


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("mlopsctl ")


def test_unknown_command_is_a_usage_error(cli):
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "invalid choice" in result.stderr


def test_help_lists_every_command_and_exits_0(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"    {name} " in result.stdout, name


def test_no_command_is_a_usage_error(cli):
    result = cli()
    assert result.exit_code == 2
    assert "the following arguments are required: command" in result.stderr
