"""Pins and their markers: finding them and rewriting exactly one scalar. Pure text in, text out.

A pin is declared by a marker comment on its own line, directly above the value it governs
(for an image, above the first line of its `images:` entry):

    # mlopsctl: model iris-classifier@champion
    - MODEL_URI=models:/iris-classifier/7

    # mlopsctl: image model-server
    - name: ghcr.io/example-org/mlops-platform/model-server
      newTag: 0.1.0

Edits replace only the characters of the pinned value: comments, quoting, key order,
indentation and line endings (\n or \r\n) stay byte for byte. A marker whose target is missing,
not directly below it, or claimed by another marker too is an error, and nothing is rewritten.
This module imports neither MLflow nor git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from mlopsctl.base.errors import PinError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

_MARKER = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*mlopsctl:[ \t]*(?P<body>.*?)[ \t]*$")
_MODEL_BODY = re.compile(r"^model[ \t]+(?P<model>\S+?)@(?P<alias>\S+)$")
_IMAGE_BODY = re.compile(r"^image[ \t]+(?P<image>\S+)$")
# Lines end where YAML ends them (\r\n, \r or \n), each line keeping its ending: str.splitlines
# would also split at \x85, \u2028 and friends inside a comment, and number lines unlike YAML.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
# What Go's YAML reader (kustomize reads kustomization files with it) takes for a null or a
# bool in a plain scalar: YAML 1.2 core plus the YAML 1.1 words go-yaml still honours.
_GO_YAML_WORDS = re.compile(
    r"^(?:~|null|Null|NULL|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
    r"|on|On|ON|off|Off|OFF|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
# ... and for a number, once it has dropped every underscore as go-yaml does: integers in any
# base Go's strconv knows (0x, 0o, 0b, a leading 0), and YAML 1.2 floats such as 1e3 or 1234e5.
_GO_YAML_NUMBER = re.compile(
    r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+"
    r"|(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)$"
)
_ENTRY_FIELD = re.compile(
    r"^(?P<prefix>[ \t]*(?:-[ \t]+)?(?P<key>name|newName|newTag|digest)[ \t]*:[ \t]*)"
    r"(?P<quote>['\"]?)(?P<value>[^'\"#\s]*)(?P=quote)(?P<rest>[ \t]*(?:#.*)?)$"
)


@dataclass(frozen=True)
class Pin:
    """One marked value: `kind` is "model" or "image"; `follows` is model@alias or image name."""

    kind: str
    follows: str
    marker_line: int  # 1-based
    value_line: int  # 1-based line of the pinned value
    value: str


def check_field(field: str, value: str, pattern: re.Pattern[str]) -> str:
    """Refuse values that could escape their place (paths, YAML, shell), naming the field."""
    if not pattern.match(value):
        raise PinError(f"{field} {value!r} is not valid (expected {pattern.pattern})")
    return value


def reads_back_as_string(value: str) -> bool:
    """Whether `value`, written plain, is read back as this same string by YAML 1.1 and 1.2.

    PyYAML answers for YAML 1.1; kustomize reads YAML 1.2 through go-yaml, which also takes
    1234e5 or 0o17 for a number and refuses the kustomization ("cannot unmarshal number").
    """
    if _GO_YAML_WORDS.match(value) or _GO_YAML_NUMBER.match(value.replace("_", "")):
        return False
    try:
        return bool(yaml.safe_load(value) == value)
    except yaml.YAMLError:
        return False


def _plain_scalar(value: str) -> str:
    """`value` as it must be written to stay a string (a tag of 1.0 or 1e3 is not a number)."""
    return value if reads_back_as_string(value) else f'"{value}"'


def _lines(text: str) -> list[str]:
    return _LINE.findall(text)


def _split_line_ending(line: str) -> tuple[str, str]:
    stripped = line.rstrip("\r\n")
    return stripped, line[len(stripped) :]


def _next_content_line(lines: list[str], start: int) -> int | None:
    for index in range(start, len(lines)):
        body, _ending = _split_line_ending(lines[index])
        if body.strip() and not body.lstrip().startswith("#"):
            return index
    return None


def _model_value_span(line: str, model: str) -> tuple[int, int] | None:
    """Where the version digits of `models:/<model>/<version>` sit in the line."""
    matches = list(
        re.finditer(rf"models:/{re.escape(model)}/(?P<version>[0-9]+)(?![0-9A-Za-z])", line)
    )
    if len(matches) != 1:
        return None
    return matches[0].span("version")


def _image_entry(lines: list[str], start: int) -> list[int]:
    """Indexes of the lines of the `images:` list entry that begins at `start`."""
    first, _ending = _split_line_ending(lines[start])
    dash_indent = len(first) - len(first.lstrip(" \t"))
    if not first.lstrip().startswith("-"):
        return []
    entry = [start]
    for index in range(start + 1, len(lines)):
        body, _ending = _split_line_ending(lines[index])
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        indent = len(body) - len(body.lstrip(" \t"))
        if indent <= dash_indent:
            break
        entry.append(index)
    return entry


def _entry_fields(
    lines: list[str], entry: list[int], path: str
) -> dict[str, tuple[int, re.Match[str]]]:
    fields: dict[str, tuple[int, re.Match[str]]] = {}
    for index in entry:
        body, _ending = _split_line_ending(lines[index])
        match = _ENTRY_FIELD.match(body)
        if match:
            if match["key"] in fields:
                raise PinError(
                    f"{path}:{index + 1}: {match['key']} appears twice in one images entry"
                )
            fields[match["key"]] = (index, match)
    return fields


def find_pins(text: str, path: str = "<text>") -> list[Pin]:
    """Every marker in the text with the value it governs; an unresolvable marker is an error.

    Each marker stands directly above its value and each value has one marker: a marker stacked
    on another would claim the same value, and promotions would flip it between the two forever.
    """
    lines = _lines(text)
    markers = {
        index: marker
        for index, line in enumerate(lines)
        if (marker := _MARKER.match(_split_line_ending(line)[0])) is not None
    }
    pins: list[Pin] = []
    claimed_by: dict[int, int] = {}  # value line index -> index of the marker that claims it
    for index, marker in markers.items():
        where = f"{path}:{index + 1}"
        target = _next_content_line(lines, index + 1)
        below = len(lines) if target is None else target
        stacked = [other for other in markers if index < other < below]
        if stacked:
            value_at = "" if target is None else f" at {path}:{target + 1}"
            raise PinError(
                f"{where}: marker {marker['body']!r} stands above another marker "
                f"({path}:{stacked[0] + 1}), so both would claim the value{value_at}; "
                "give each value exactly one marker, directly above it"
            )
        model = _MODEL_BODY.match(marker["body"])
        image = _IMAGE_BODY.match(marker["body"])
        if model:
            check_field(f"{where}: model name", model["model"], MODEL_NAME)
            check_field(f"{where}: alias", model["alias"], ALIAS)
            span = None if target is None else _model_value_span(lines[target], model["model"])
            if target is None or span is None:
                raise PinError(
                    f"{where}: marker for model {model['model']!r} is not followed by exactly one "
                    f"models:/{model['model']}/<version> value"
                )
            value_index = target
            value = lines[target][span[0] : span[1]]
            pin = Pin("model", f"{model['model']}@{model['alias']}", index + 1, target + 1, value)
        elif image:
            check_field(f"{where}: image", image["image"], IMAGE_NAME)
            entry = [] if target is None else _image_entry(lines, target)
            fields = _entry_fields(lines, entry, path) if entry else {}
            if "name" not in fields:
                raise PinError(
                    f"{where}: marker for image {image['image']!r} is not above an images: entry"
                )
            if "digest" in fields:
                value_index, match = fields["digest"]
                value = f"@{match['value']}"
            elif "newTag" in fields:
                value_index, match = fields["newTag"]
                value = match["value"]
            else:
                raise PinError(
                    f"{where}: the images: entry under the marker has no newTag or digest"
                )
            pin = Pin("image", image["image"], index + 1, value_index + 1, value)
        else:
            expected = "'model NAME@ALIAS' or 'image NAME'"
            raise PinError(f"{where}: unknown marker {marker['body']!r} (expected {expected})")
        assert target is not None  # a value was found below the marker
        if target != index + 1:
            # Lines between a marker and its value leave a reader unsure what the marker governs.
            raise PinError(
                f"{where}: marker {marker['body']!r} is not directly above the line it governs "
                f"({path}:{target + 1}); move it to the line right above"
            )
        if value_index in claimed_by:
            raise PinError(
                f"{path}:{value_index + 1}: the value is claimed by two markers, "
                f"{path}:{claimed_by[value_index] + 1} and {where}; give it exactly one"
            )
        claimed_by[value_index] = index
        pins.append(pin)
    return pins


def _the_one_pin(text: str, kind: str, follows: str, path: str) -> Pin:
    matching = [pin for pin in find_pins(text, path) if pin.kind == kind and pin.follows == follows]
    if len(matching) != 1:
        raise PinError(
            f"{path}: expected one {kind} pin following {follows}, found {len(matching)}"
        )
    return matching[0]


def set_model_version(text: str, model: str, alias: str, version: str, path: str = "<text>") -> str:
    """The text with the version of the one pin that follows model@alias set to `version`."""
    check_field("version", version, VERSION)
    pin = _the_one_pin(text, "model", f"{model}@{alias}", path)
    lines = _lines(text)
    index = pin.value_line - 1
    start, end = _model_value_span(lines[index], model) or (0, 0)
    lines[index] = lines[index][:start] + version + lines[index][end:]
    return "".join(lines)


def set_image(
    text: str, image: str, tag: str | None = None, digest: str | None = None, path: str = "<text>"
) -> str:
    """Point the marked images: entry at a tag or a digest, like `kustomize edit set image`.

    A tag replaces newTag (a digest line goes, as kustomize drops it). A digest replaces or adds
    `digest:` and turns the newTag line into a comment that keeps the tag for readers.
    """
    if (tag is None) == (digest is None):
        raise PinError("give exactly one of a tag and a digest")
    if tag is not None:
        check_field("tag", tag, TAG)
    if digest is not None:
        check_field("digest", digest, DIGEST)
    pin = _the_one_pin(text, "image", image, path)
    lines = _lines(text)
    marker_index = pin.marker_line - 1
    target = _next_content_line(lines, marker_index + 1)
    assert target is not None  # find_pins resolved it
    entry = _image_entry(lines, target)
    fields = _entry_fields(lines, entry, path)

    def replace_value(index: int, match: re.Match[str], value: str) -> None:
        body, ending = _split_line_ending(lines[index])
        start, end = match.span("value")
        written = value if match["quote"] else _plain_scalar(value)
        lines[index] = body[:start] + written + body[end:] + ending

    if tag is not None:
        if "newTag" in fields:
            replace_value(*fields["newTag"], tag)
        else:
            index, match = fields["digest"]
            body, ending = _split_line_ending(lines[index])
            lines[index] = (
                f"{match['prefix'].replace('digest', 'newTag', 1)}{_plain_scalar(tag)}{ending}"
            )
            # The tag kept as a comment beside the digest no longer says anything.
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if re.match(r"^[ \t]*# tag: \S+[ \t]*\r?\n?$", following):
                del lines[index + 1]
            return "".join(lines)
        if "digest" in fields:
            del lines[fields["digest"][0]]
        return "".join(lines)
    assert digest is not None
    if "digest" in fields:
        replace_value(*fields["digest"], digest)
    if "newTag" in fields:
        index, match = fields["newTag"]
        body, ending = _split_line_ending(lines[index])
        indent = body[: len(body) - len(body.lstrip(" \t"))]
        if "digest" in fields:
            lines[index] = f"{indent}# newTag: {match['value']}{ending}"
        else:
            key_start = match.start("key")
            lines[index] = (
                f"{body[:key_start]}digest: {digest}{ending}"
                f"{' ' * key_start}# tag: {match['value']}{ending}"
            )
    return "".join(lines)
