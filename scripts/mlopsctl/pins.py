"""Pins and their markers: finding them and rewriting exactly one scalar. Pure text in, text out.

A pin is declared by a marker comment on its own line, right above the value it governs:

    # mlopsctl: model iris-classifier@champion
    - MODEL_URI=models:/iris-classifier/7

    # mlopsctl: image model-server
    - name: ghcr.io/example-org/mlops-platform/model-server
      newTag: 0.1.0

Edits replace only the characters of the pinned value: comments, quoting, key order,
indentation and line endings stay byte for byte. A marker whose target is missing or ambiguous
is an error, and nothing is rewritten. This module imports neither MLflow nor git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from mlopsctl.errors import MlopsctlError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

_MARKER = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*mlopsctl:[ \t]*(?P<body>.*?)[ \t]*$")
_MODEL_BODY = re.compile(r"^model[ \t]+(?P<model>\S+?)@(?P<alias>\S+)$")
_IMAGE_BODY = re.compile(r"^image[ \t]+(?P<image>\S+)$")
_ENTRY_FIELD = re.compile(
    r"^(?P<prefix>[ \t]*(?:-[ \t]+)?(?P<key>name|newName|newTag|digest)[ \t]*:[ \t]*)"
    r"(?P<quote>['\"]?)(?P<value>[^'\"#\s]*)(?P=quote)(?P<rest>[ \t]*(?:#.*)?)$"
)


class PinError(MlopsctlError):
    """A marker or an edit that cannot be carried out; the file is left as it was."""


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


def _plain_scalar(value: str) -> str:
    """`value` as it must be written unquoted to stay a string (a tag of 1.0 is not a number)."""
    try:
        resolved = yaml.safe_load(value)
    except yaml.YAMLError:
        resolved = None
    return value if resolved == value else f'"{value}"'


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


def _entry_fields(lines: list[str], entry: list[int]) -> dict[str, tuple[int, re.Match[str]]]:
    fields: dict[str, tuple[int, re.Match[str]]] = {}
    for index in entry:
        body, _ending = _split_line_ending(lines[index])
        match = _ENTRY_FIELD.match(body)
        if match:
            if match["key"] in fields:
                raise PinError(
                    f"line {index + 1}: {match['key']} appears twice in one images entry"
                )
            fields[match["key"]] = (index, match)
    return fields


def find_pins(text: str, path: str = "<text>") -> list[Pin]:
    """Every marker in the text with the value it governs; an unresolvable marker is an error."""
    lines = text.splitlines(keepends=True)
    pins: list[Pin] = []
    for index, line in enumerate(lines):
        body, _ending = _split_line_ending(line)
        marker = _MARKER.match(body)
        if marker is None:
            continue
        where = f"{path}:{index + 1}"
        target = _next_content_line(lines, index + 1)
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
            value = lines[target][span[0] : span[1]]
            pins.append(
                Pin("model", f"{model['model']}@{model['alias']}", index + 1, target + 1, value)
            )
        elif image:
            check_field(f"{where}: image", image["image"], IMAGE_NAME)
            entry = [] if target is None else _image_entry(lines, target)
            fields = _entry_fields(lines, entry) if entry else {}
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
            pins.append(Pin("image", image["image"], index + 1, value_index + 1, value))
        else:
            expected = "'model NAME@ALIAS' or 'image NAME'"
            raise PinError(f"{where}: unknown marker {marker['body']!r} (expected {expected})")
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
    lines = text.splitlines(keepends=True)
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
    lines = text.splitlines(keepends=True)
    marker_index = pin.marker_line - 1
    target = _next_content_line(lines, marker_index + 1)
    assert target is not None  # find_pins resolved it
    entry = _image_entry(lines, target)
    fields = _entry_fields(lines, entry)

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
