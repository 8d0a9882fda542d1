"""Pin edits on the promotion path: one marker per value, CRLF files kept, tags kustomize reads.

Issue 11, defects 3, 5 and 6.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base import toolchain
from mlopsctl.base.errors import PinError
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.markers import find_pins, set_image, set_model_version
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.edits import ModelChange
from mlopsctl.promote.flows import Landing, run_edits
from mlopsctl.promote.plan import Plan
from mlopsctl.validate.engine import edit_findings
from tests.support.paths import TOOLS_DIR
from tests.support.platform_fixtures import Platform
from tests.support.trees import MINIMAL_CONFIG, write_tree

DIGEST = "sha256:" + "0123456789abcdef" * 4
LOCAL_MODEL_SERVER = "overlays/local/model-server/kustomization.yaml"


# Defect 3: two markers above one value, or a marker not directly above its value.

STACKED_MODEL_MARKERS = (
    "configMapGenerator:\n"
    "  - name: pin\n"
    "    literals:\n"
    "      # mlopsctl: model m@champion\n"
    "      # mlopsctl: model m@challenger\n"
    "      - MODEL_URI=models:/m/3\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            STACKED_MODEL_MARKERS,
            r"^k\.yaml:4: marker 'model m@champion' stands above another marker \(k\.yaml:5\), "
            r"so both would claim the value at k\.yaml:6",
        ),
        (
            "images:\n"
            "  # mlopsctl: image web\n"
            "  # mlopsctl: image web-canary\n"
            "  - name: registry.example.test/web\n"
            "    newTag: 1.0.0\n",
            r"^k\.yaml:2: marker 'image web' stands above another marker \(k\.yaml:3\)",
        ),
        (
            # A plain comment between the two markers hides nothing.
            "literals:\n"
            "  # mlopsctl: model m@champion\n"
            "  # promoted by hand once\n"
            "  # mlopsctl: model m@challenger\n"
            "  - MODEL_URI=models:/m/3\n",
            r"^k\.yaml:2: marker 'model m@champion' stands above another marker \(k\.yaml:4\)",
        ),
        (
            "literals:\n  # mlopsctl: model m@champion\n\n  - MODEL_URI=models:/m/3\n",
            r"^k\.yaml:2: marker 'model m@champion' is not directly above the line it governs "
            r"\(k\.yaml:4\)",
        ),
        (
            "images:\n"
            "  # mlopsctl: image web\n"
            "  # the web front end\n"
            "  - name: registry.example.test/web\n"
            "    newTag: 1.0.0\n",
            r"^k\.yaml:2: marker 'image web' is not directly above the line it governs "
            r"\(k\.yaml:4\)",
        ),
        (
            # Inside an images: entry, a model marker would claim the image's newTag line too.
            "images:\n"
            "  # mlopsctl: image web\n"
            "  - name: registry.example.test/web\n"
            "    # mlopsctl: model m@champion\n"
            "    newTag: models:/m/3\n",
            r"^k\.yaml:5: the value is claimed by two markers, k\.yaml:2 and k\.yaml:4",
        ),
    ],
)
def test_a_value_has_one_marker_directly_above_it_or_the_error_names_both_lines(text, message):
    with pytest.raises(PinError, match=message):
        find_pins(text, "k.yaml")


def test_stacked_markers_edit_nothing():
    for alias in ("champion", "challenger"):
        with pytest.raises(PinError, match="stands above another marker"):
            set_model_version(STACKED_MODEL_MARKERS, "m", alias, "4", "k.yaml")


def test_validate_and_pins_name_both_lines_of_stacked_markers(cli, tmp_path):
    tree = write_tree(
        tmp_path,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "overlays/local/web/kustomization.yaml": STACKED_MODEL_MARKERS,
        },
    )
    where = "overlays/local/web/kustomization.yaml"
    validation = cli("validate", "--repo", str(tree), "--format", "json")
    assert validation.exit_code == 1, validation.stdout + validation.stderr
    [finding] = [f for f in validation.json()["findings"] if f["check"] == "pin-marker"]
    assert finding["file"] == where
    assert finding["message"].startswith(
        f"line 4: marker 'model m@champion' stands above another marker ({where}:5)"
    )
    listing = cli("pins", "--repo", str(tree))
    assert listing.exit_code != 0
    assert f"{where}:4: marker 'model m@champion' stands above another marker ({where}:5)" in (
        listing.stderr
    )


def test_the_promotion_path_refuses_stacked_markers_and_commits_nothing(cli, platform: Platform):
    path = platform.checkout / LOCAL_MODEL_SERVER
    marker = f"      # mlopsctl: model {platform.model}@challenger\n"
    text = path.read_text()
    path.write_text(
        text.replace(marker, f"      # mlopsctl: model {platform.model}@champion\n" + marker)
    )
    platform.commit_and_push("stack two markers")
    before = platform.log()
    result = set_local_model_server_tag(cli, platform, "0.2.0")
    assert result.exit_code != 0
    assert f"{LOCAL_MODEL_SERVER}:24: marker 'model {platform.model}@champion' stands above " in (
        result.stderr
    )
    assert f"({LOCAL_MODEL_SERVER}:25)" in result.stderr
    assert platform.log() == before


def set_local_model_server_tag(cli: Any, platform: Platform, tag: str) -> Any:
    return cli(
        "set-image",
        "--repo",
        str(platform.checkout),
        "--remote",
        str(platform.remote),
        "model-server",
        tag,
        "--env",
        "local",
    )


# Defect 5: CRLF files keep every byte but the value.


def remote_bytes(platform: Platform, path: str) -> bytes:
    """The file on the remote's main, byte for byte (no newline translation on the way)."""
    return subprocess.run(
        ["git", "show", f"main:{path}"], cwd=platform.remote, check=True, capture_output=True
    ).stdout


def with_crlf(platform: Platform) -> bytes:
    path = platform.checkout / LOCAL_MODEL_SERVER
    original = path.read_bytes().replace(b"\n", b"\r\n")
    path.write_bytes(original)
    platform.commit_and_push("CRLF line endings")
    assert remote_bytes(platform, LOCAL_MODEL_SERVER) == original
    return original


def differing_bytes(before: bytes, after: bytes) -> list[int]:
    assert len(before) == len(after)
    return [index for index, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]


def test_set_image_in_a_crlf_file_changes_the_tag_bytes_only(cli, platform: Platform):
    original = with_crlf(platform)
    result = set_local_model_server_tag(cli, platform, "0.2.0")
    assert result.exit_code == 0, result.stdout + result.stderr
    edited = remote_bytes(platform, LOCAL_MODEL_SERVER)
    assert edited == original.replace(b"newTag: 0.1.0\r\n", b"newTag: 0.2.0\r\n")
    value = original.index(b"0.1.0")
    assert differing_bytes(original, edited) == [value + 2]  # 0.1.0 -> 0.2.0


def test_a_model_promotion_in_a_crlf_file_changes_the_version_bytes_only(platform: Platform):
    original = with_crlf(platform)
    change = ModelChange(
        "local",
        LOCAL_MODEL_SERVER,
        platform.model,
        "challenger",
        "0",
        ModelVersion(platform.model, "7", "READY", "run-7", "models:/m/7"),
        {},
        {},
    )
    report = run_edits(
        None,
        toolchain.resolve(TOOLS_DIR),
        str(platform.remote),
        lambda _clone, _config: Plan(edits=[change]),
        Landing(log=lambda _line: None, validator=edit_findings),
    )
    assert report.ok, [outcome.result for outcome in report.outcomes]
    edited = remote_bytes(platform, LOCAL_MODEL_SERVER)
    uri = f"models:/{platform.model}/".encode()
    assert edited == original.replace(uri + b"0\r\n", uri + b"7\r\n")
    assert differing_bytes(original, edited) == [original.index(uri) + len(uri)]


def test_pure_edits_keep_crlf_endings_through_digests_and_back():
    text = (
        "images:\r\n"
        "  # mlopsctl: image web\r\n"
        "  - name: registry.example.test/web\r\n"
        "    newTag: 1.0.0\r\n"
        "resources:\r\n"
        "  - deployment.yaml\r\n"
    )
    with_digest = set_image(text, "web", digest=DIGEST)
    assert with_digest == text.replace(
        "newTag: 1.0.0\r\n", f"digest: {DIGEST}\r\n    # tag: 1.0.0\r\n"
    )
    assert set_image(with_digest, "web", tag="1.0.0") == text
    assert set_image(with_digest, "web", tag="1e3") == text.replace("1.0.0", '"1e3"')


def test_line_numbers_count_yaml_line_breaks_only():
    # U+2028 and U+0085 are not line breaks to YAML 1.2 or to an editor: the pin is on line 3.
    text = (
        "# a note\u2028with odd breaks\x85inside\n"
        "literals:\n# mlopsctl: model m@a\n- U=models:/m/1\n"
    )
    [pin] = find_pins(text)
    assert (pin.marker_line, pin.value_line) == (3, 4)


# Defect 6: tags quoted so that kustomize (YAML 1.2, through go-yaml) reads them as strings.


def generated_tags() -> list[str]:
    """Tags a YAML reader may take for something else, and ordinary ones, from a fixed seed."""
    generator = random.Random(11)
    tags = ["1234e5", "123e4567", "1e3", "1E5", "0e0", "1e-3", "1_0e5", "e123", "123e"]
    for _ in range(40):  # digits with one e, as short git SHAs sometimes are
        digits = "".join(generator.choice("0123456789") for _ in range(generator.randint(2, 11)))
        position = generator.randint(0, len(digits))
        tags.append(digits[:position] + "e" + digits[position:])
    tags += ["0", "00", "007", "0123", "089", "0999", "1234567", "0000000", "12345678901234567890"]
    tags += ["0x1F", "0X1f", "0xdeadbeef", "0o17", "0O17", "0o777", "0b101", "0B11", "0x_1f"]
    tags += ["1_000", "1__2", "_1", "1_", "1.0", "1.", "10.25", "1.5e3", "1.0_1"]
    tags += ["true", "True", "TRUE", "false", "yes", "Yes", "YES", "no", "on", "On", "off"]
    tags += ["y", "Y", "n", "N", "null", "Null", "NULL", "NaN", "nan", "Infinity", "inf"]
    tags += ["2001-12-14", "2024-1-2", "20240102", "1.2.3", "0.1.0", "1.2.3-rc.1", "v1.2.3"]
    tags += ["1.2.3_build.5", "latest", "main", "sha-1a2b3c4", "abc1234", "deadbee"]
    for length in (7, 7, 7, 8, 12, 40):  # plain hex SHAs
        tags.append("".join(generator.choice("0123456789abcdef") for _ in range(length)))
    return list(dict.fromkeys(tags))


def overlay_with_images(count: int) -> dict[str, str]:
    """A kustomization with `count` marked images entries (odd ones pinned by digest)."""
    entries = []
    containers = []
    for index in range(count):
        entries.append(f"  # mlopsctl: image image-{index}\n")
        entries.append(f"  - name: registry.example.test/image-{index}\n")
        if index % 2:
            entries.append(f"    digest: {DIGEST}\n    # tag: 0.1.0\n")
        else:
            entries.append("    newTag: 0.1.0\n")
        containers.append(
            f"        - name: c{index}\n          image: registry.example.test/image-{index}\n"
        )
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
        "  selector:\n    matchLabels: {app: web}\n  template:\n"
        "    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n"
    )
    return {
        "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n" + "".join(entries),
        "deployment.yaml": deployment + "".join(containers),
    }


def rendered_images(directory: Path, tags: Sequence[str]) -> list[str] | str:
    """Each tag written by set_image into its own entry, rendered by kustomize: the images, or
    kustomize's error."""
    files = overlay_with_images(len(tags))
    text = files["kustomization.yaml"]
    for index, tag in enumerate(tags):
        text = set_image(text, f"image-{index}", tag=tag, path="kustomization.yaml")
    files["kustomization.yaml"] = text
    write_tree(directory, files)
    pinned = {pin.follows: pin.value for pin in find_pins(text)}
    assert pinned == {f"image-{index}": tag for index, tag in enumerate(tags)}
    result = render_root(directory, ".", toolchain.resolve(TOOLS_DIR), allow_network=False)
    if result.error is not None:
        return result.error
    [deployment] = list(yaml.safe_load_all(result.output))
    return [
        container["image"] for container in deployment["spec"]["template"]["spec"]["containers"]
    ]


def test_kustomize_renders_every_generated_tag_exactly_as_set(tmp_path):
    tags = generated_tags()
    expected = [f"registry.example.test/image-{index}:{tag}" for index, tag in enumerate(tags)]
    images = rendered_images(tmp_path / "all", tags)
    if images != expected:
        # One kustomize run for every tag is fast; on a failure, find the tags at fault.
        wrong = {}
        for index, tag in enumerate(tags):
            alone = rendered_images(tmp_path / f"tag-{index}", [tag])
            if alone != [f"registry.example.test/image-0:{tag}"]:
                wrong[tag] = alone
        pytest.fail(f"kustomize does not read these tags back as written: {wrong}")


@pytest.mark.parametrize("tag", [".5", "~", "", "-1", "+1", "1:2", "v1 2"])
def test_tags_that_are_not_image_tags_are_refused(tag):
    text = "images:\n# mlopsctl: image web\n- name: web\n  newTag: 1.0.0\n"
    with pytest.raises(PinError, match=r"^tag .* is not valid"):
        set_image(text, "web", tag=tag)
