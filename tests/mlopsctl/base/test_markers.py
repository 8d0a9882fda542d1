"""The pin editor: exactly the pinned scalar changes, every other byte stays."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlopsctl.base.errors import PinError
from mlopsctl.base.markers import find_pins, reads_back_as_string, set_image, set_model_version
from tests.support.paths import REPOSITORY

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
COMMENT_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="\r\n\x85\u2028\u2029", exclude_categories=("Cs", "Cc")
    ),
    max_size=30,
)
DIGEST = "sha256:" + "0123456789abcdef" * 4


@st.composite
def documents_with_a_model_pin(draw: st.DrawFn) -> tuple[str, str, int]:
    """(text, line ending, index of the pinned line) for a kustomization-like document."""
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    indent = " " * draw(st.sampled_from([2, 4]))
    quote = draw(st.sampled_from(["", "'", '"']))
    version = draw(st.integers(min_value=1, max_value=10**6))
    before = draw(st.lists(st.tuples(WORDS, WORDS, COMMENT_TEXT), max_size=4))
    after = draw(st.lists(st.tuples(WORDS, COMMENT_TEXT), max_size=4))
    lines = []
    for key, value, comment in before:
        lines.append(f"{key}_{len(lines)}: {value}  # {comment}")
        lines.append(f"#{comment}")
    lines.append("configMapGenerator:")
    lines.append(f"{indent}- name: pin")
    lines.append(f"{indent}  literals:")
    lines.append(f"{indent}    #   mlopsctl: model iris-classifier@champion   ")
    pinned = len(lines)
    trailing = draw(st.sampled_from(["", "  # pinned by the promoter"]))
    lines.append(
        f"{indent}    - {quote}MODEL_URI=models:/iris-classifier/{version}{quote}{trailing}"
    )
    for key, comment in after:
        lines.append(f"{indent}    - {key}=x  # {comment}")
    return ending.join(lines) + ending, ending, pinned


@settings(max_examples=200, deadline=None)
@given(documents_with_a_model_pin(), st.integers(min_value=1, max_value=10**9))
def test_setting_a_model_version_changes_only_the_version(case, new_version):
    text, ending, pinned = case
    edited = set_model_version(text, "iris-classifier", "champion", str(new_version))
    old_lines = text.split(ending)
    new_lines = edited.split(ending)
    assert len(old_lines) == len(new_lines)
    for index, (old, new) in enumerate(zip(old_lines, new_lines, strict=True)):
        if index != pinned:
            assert old == new
    prefix = old_lines[pinned].split("models:/iris-classifier/")[0]
    assert new_lines[pinned].startswith(prefix + f"models:/iris-classifier/{new_version}")
    assert old_lines[pinned].split("models:/iris-classifier/")[1].lstrip("0123456789") == (
        new_lines[pinned].split("models:/iris-classifier/")[1].lstrip("0123456789")
    )
    literals = yaml.safe_load(edited)["configMapGenerator"][0]["literals"]
    assert literals[0] == f"MODEL_URI=models:/iris-classifier/{new_version}"
    assert find_pins(edited)[0].value == str(new_version)


@st.composite
def documents_with_an_image_pin(draw: st.DrawFn) -> str:
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    indent = " " * draw(st.sampled_from([2, 4]))
    quote = draw(st.sampled_from(["", "'", '"']))
    tag = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
    if not quote and not reads_back_as_string(tag):
        quote = '"'  # a correct document quotes a tag kustomize or PyYAML would not read as text
    comment = draw(COMMENT_TEXT)
    lines = [
        f"# {comment}",
        "images:",
        f"{indent}# mlopsctl: image web",
        f"{indent}- name: registry.example.test/web",
        f"{indent}  newTag: {quote}{tag}{quote}  # {comment}",
        f"{indent}- name: registry.example.test/other",
        f"{indent}  newTag: 9.9.9",
        "resources:",
        f"{indent}- deployment.yaml",
    ]
    return ending.join(lines) + ending


@settings(max_examples=200, deadline=None)
@given(
    documents_with_an_image_pin(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
)
def test_setting_an_image_tag_changes_only_the_tag(text, tag):
    old_tag = find_pins(text)[0].value
    edited = set_image(text, "web", tag=tag)
    assert yaml.safe_load(edited)["images"][0]["newTag"] == tag
    assert yaml.safe_load(edited)["images"][1] == yaml.safe_load(text)["images"][1]
    back = set_image(edited, "web", tag=old_tag)
    assert yaml.safe_load(back) == yaml.safe_load(text)
    if reads_back_as_string(tag):  # no quotes had to be added for the new tag
        assert back == text


@settings(max_examples=100, deadline=None)
@given(documents_with_an_image_pin())
def test_a_digest_keeps_the_tag_as_a_comment_and_round_trips(text):
    old_tag = find_pins(text)[0].value
    with_digest = set_image(text, "web", digest=DIGEST)
    entry = yaml.safe_load(with_digest)["images"][0]
    assert entry == {"name": "registry.example.test/web", "digest": DIGEST}
    assert f"# tag: {old_tag}" in with_digest
    assert find_pins(with_digest)[0].value == f"@{DIGEST}"
    back = set_image(with_digest, "web", tag=old_tag)
    assert yaml.safe_load(back) == yaml.safe_load(text)  # quoting may differ, values may not


def test_the_repository_pins():
    text = (REPOSITORY / "overlays/production/model-server/kustomization.yaml").read_text()
    pins = {pin.kind: pin for pin in find_pins(text)}
    assert pins["model"].follows == "iris-classifier@champion"
    assert pins["image"].follows == "model-server"


def test_a_pin_of_version_0_is_read_and_the_first_promotion_moves_it():
    text = "literals:\n  # mlopsctl: model m@champion\n  - URI=models:/m/0  # none yet\n"
    [pin] = find_pins(text)
    assert pin.value == "0"
    edited = set_model_version(text, "m", "champion", "1")
    assert edited == text.replace("models:/m/0", "models:/m/1")
    # Back to "nothing promoted" is not a promotion: a version is never set to 0.
    with pytest.raises(PinError, match=r"^version '0' is not valid"):
        set_model_version(edited, "m", "champion", "0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# mlopsctl: model m@champion\n", "is not followed by exactly one"),
        ("# mlopsctl: model m@champion\n- URI=models:/other/3\n", "is not followed by exactly one"),
        ("# mlopsctl: image web\nresources: []\n", "is not above an images: entry"),
        ("images:\n# mlopsctl: image web\n- name: web\n", "has no newTag or digest"),
        ("# mlopsctl: promote everything\n", "unknown marker"),
        ("# mlopsctl: model ../etc@champion\n- U=models:/../etc/1\n", "model name"),
        (
            "images:\n# mlopsctl: image web\n- name: web\n  newTag: 1\n  newTag: 2\n",
            "appears twice",
        ),
    ],
)
def test_markers_without_a_clear_target_are_errors(text, message):
    with pytest.raises(PinError, match=message):
        find_pins(text, "overlay/kustomization.yaml")


def test_two_pins_following_the_same_alias_are_ambiguous():
    text = (
        "# mlopsctl: model m@champion\n- A=models:/m/1\n"
        "# mlopsctl: model m@champion\n- B=models:/m/2\n"
    )
    with pytest.raises(PinError, match="expected one model pin following m@champion, found 2"):
        set_model_version(text, "m", "champion", "3")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda t: set_model_version(t, "m", "champion", "3\n- injected: true"), "version"),
        (lambda t: set_model_version(t, "m", "champion", "0"), "version"),
        (lambda t: set_image(t, "web", tag="1.0; rm -rf /"), "tag"),
        (lambda t: set_image(t, "web", tag="1.0\nx: y"), "tag"),
        (lambda t: set_image(t, "web", digest="sha256:abc"), "digest"),
    ],
)
def test_bad_values_are_refused_naming_the_field(call, field):
    text = (
        "# mlopsctl: model m@champion\n- A=models:/m/1\n"
        "images:\n# mlopsctl: image web\n- name: web\n  newTag: 1.0\n"
    )
    with pytest.raises(PinError, match=f"^{field} "):
        call(text)
