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


def test_a_command_starts_without_the_other_commands_code():
    """`mlopsctl promote` does not pay at start-up for the local run's cluster code, the
    promoter's HTTP server or the bootstrap's Kubernetes client."""
    import subprocess
    import sys

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from mlopsctl.cli import main\n"
            "assert main(['promote', '--help']) == 0\n"
            "print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert "--mirror-dir" in probe.stdout  # promote's own arguments, whole
    loaded = set(probe.stdout.split())
    assert "mlopsctl.commands.promote" in loaded
    for elsewhere in (
        "mlopsctl.commands.up",
        "mlopsctl.localrun.run",
        "mlopsctl.commands.serve",
        "mlopsctl.service.http",
        "mlopsctl.commands.bootstrap",
        "mlopsctl.bootstrap.cluster",
    ):
        assert elsewhere not in loaded, elsewhere


def test_an_option_of_another_command_is_still_refused(cli):
    result = cli("promote", "--listen", "127.0.0.1:1")  # serve's option, not promote's
    assert result.exit_code == 2
    assert "unrecognized arguments: --listen" in result.stderr
