from pathlib import Path

import pytest

from mlopsctl.config import load_config
from mlopsctl.errors import MlopsctlError
from tests.conftest import MINIMAL_CONFIG, REPOSITORY


def test_the_repository_config_loads():
    config = load_config(REPOSITORY)
    assert config.environments == ("local", "staging", "production")
    assert config.kubernetes_version == "1.35"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository: [\n", "not valid YAML"),
        (MINIMAL_CONFIG.replace('"1.35"', '"latest"'), "kubernetesVersion"),
        (MINIMAL_CONFIG + "colour: blue\n", "'colour' was unexpected"),
        (MINIMAL_CONFIG.replace("[local]", "[Local]"), "environments.0"),
        (MINIMAL_CONFIG + "validate:\n  skipSchemas:\n    - kind: Foo\n", "validate.skipSchemas.0"),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local: {mode: merge}\n",
            "promotion.environments.local.mode: 'merge' is not one of ['commit', 'pull-request']",
        ),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local: {mode: commit}\n"
            "    qa: {mode: commit}\n",
            "promotion.environments.qa: not one of the environments",
        ),
        (
            MINIMAL_CONFIG.replace("[local]", "[local, staging]")
            + "promotion:\n  environments:\n    local: {mode: commit}\n",
            "promotion.environments: no policy for 'staging'",
        ),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local:\n      mode: commit\n"
            "      gates: {minMetrics: {accuracy: high}}\n",
            "promotion.environments.local.gates.minMetrics.accuracy",
        ),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, expected: str):
    (tmp_path / "mlopsctl.yaml").write_text(text)
    with pytest.raises(MlopsctlError) as raised:
        load_config(tmp_path)
    assert str(tmp_path / "mlopsctl.yaml") in str(raised.value)
    assert expected in str(raised.value)
