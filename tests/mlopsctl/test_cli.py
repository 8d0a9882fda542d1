from pathlib import Path

from tests.support.trees import MINIMAL_CONFIG, write_tree


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("mlopsctl ")


def test_unknown_command_is_a_usage_error(cli):
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "invalid choice" in result.stderr


def test_outside_a_platform_repository_says_so(cli, tmp_path: Path):
    result = cli("validate", "--repo", str(tmp_path))
    assert result.exit_code == 2
    assert "no mlopsctl.yaml" in result.stderr


def test_root_argument_outside_the_repository_is_refused(cli, tmp_path: Path):
    repository = write_tree(tmp_path / "repo", {"mlopsctl.yaml": MINIMAL_CONFIG})
    result = cli("render", "--repo", str(repository), str(tmp_path))
    assert result.exit_code == 2
    assert "outside the repository" in result.stderr


def test_root_argument_without_kustomization_is_refused(cli, tmp_path: Path):
    repository = write_tree(tmp_path / "repo", {"mlopsctl.yaml": MINIMAL_CONFIG, "empty/x": ""})
    result = cli("render", "--repo", str(repository), str(repository / "empty"))
    assert result.exit_code == 2
    assert "no kustomization.yaml" in result.stderr


def test_an_unknown_environment_is_refused_before_anything_runs(cli):
    from tests.support.paths import REPOSITORY

    for command in ("status", "promote"):
        result = cli(
            command, "--repo", str(REPOSITORY), "--env", "qa", "--mlflow-uri", "http://127.0.0.1:9"
        )
        assert result.exit_code == 2
        assert "--env 'qa' is not one of ['local', 'staging', 'production']" in result.stderr
